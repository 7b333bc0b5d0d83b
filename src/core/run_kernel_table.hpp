// The per-ISA kernels every op shares (core/run_kernels.hpp), as a table of plain
// function pointers: the seg reductions over runs of values (16 double lanes each), the
// lane reductions (one double lane per position of a row), and the element-wise passes
// over runs (one coefficient per run) and lanes (per-lane coefficient arrays). All are
// IEEE operations in a fixed order: the same bits on every ISA.
#pragma once

#include "core/isa.hpp"

#include <cstdint>

namespace nk {

// Per-lane arrays of the rows kernels (pivots, accumulators, coefficients) hold at
// least this many entries past `width`, so whole registers may be read and written.
constexpr int64_t kRowsLanePadding = 64;

// Coefficients of diff_runs / diff_lanes, one per run or per lane:
//   dx = ((dy * w - k1) - (x - mh) * k2) * r
struct RunCoefs {
    const float *mh, *w, *k1, *k2, *r;
};

struct RunKernelTable {
    // acc1 += x - pivot, acc2 += (x - pivot)^2 over `rows` runs of len, `stride` apart.
    void (*stats_seg)(const float* x, int64_t rows, int64_t len, int64_t stride, float pivot, double* acc1,
                      double* acc2);
    void (*stats_seg_double)(const float* x, int64_t rows, int64_t len, int64_t stride, float pivot, double* acc1,
                             double* acc2);
    // stats_seg of `runs` consecutive runs, each with its own pivot[q] and 16 lanes at acc + 16 q,
    // written (not added to: the lanes need no zeroing).
    void (*stats_runs)(const float* x, int64_t runs, int64_t len, const float* pivot, double* acc1, double* acc2);
    // acc1 += g, acc2 += g * (x - mean), g = dy * w[i] (dy when w is null), one run of len.
    void (*grad_seg)(const float* x, const float* dy, const float* w, int64_t len, float mean, double* acc1,
                     double* acc2);
    void (*grad_seg_double)(const float* x, const float* dy, const float* w, int64_t rows, int64_t len,
                            int64_t stride, float mean, double* acc1, double* acc2);
    // grad_seg of `runs` consecutive runs with mean[q], written as stats_runs.
    void (*grad_runs)(const float* x, const float* dy, const float* w, int64_t runs, int64_t len, const float* mean,
                      double* acc1, double* acc2);

    // Run q of `runs` consecutive runs of len: y = (x - mh[q]) * a[q] + b[q].
    void (*affine_runs)(const float* x, float* y, int64_t runs, int64_t len, const float* mh, const float* a,
                        const float* b);
    void (*diff_runs)(const float* x, const float* dy, float* dx, int64_t runs, int64_t len, const RunCoefs& k);
    // `rows` rows of `width` lanes, `stride` apart, lane l with coefficients [l].
    void (*affine_lanes)(const float* x, float* y, int64_t rows, int64_t width, int64_t stride, const float* mh,
                         const float* a, const float* b);
    void (*diff_lanes)(const float* x, const float* dy, float* dx, int64_t rows, int64_t width, int64_t stride,
                       const RunCoefs& k);
    // Per lane, terms in double: acc1 += x - pivot[l], acc2 += (x - pivot[l])^2; and
    // acc1 += dy, acc2 += dy * (x - mean[l]).
    void (*lane_stats)(const float* x, int64_t rows, int64_t width, int64_t stride, const float* pivot,
                       double* acc1, double* acc2);
    void (*lane_grads)(const float* x, const float* dy, int64_t rows, int64_t width, int64_t stride,
                       const float* mean, double* acc1, double* acc2);
    // The rows reductions (lane arrays padded by kRowsLanePadding), added to acc: float
    // terms flushed into double every 8 rows, or (*_double) every term in double.
    // acc1 += x - pivot[l], acc2 += (x - pivot[l])^2; and acc1 += g, acc2 += g * (x - mean[l])
    // with g = dy, zeroed where mask <= 0 when mask is given (batch norm's fused ReLU).
    void (*rows_stats)(const float* x, int64_t rows, int64_t width, int64_t stride, const float* pivot,
                       double* acc1, double* acc2);
    void (*rows_stats_double)(const float* x, int64_t rows, int64_t width, int64_t stride, const float* pivot,
                              double* acc1, double* acc2);
    void (*rows_grads)(const float* x, const float* dy, const float* mask, int64_t rows, int64_t width,
                       int64_t stride, const float* mean, double* acc1, double* acc2);
    void (*rows_grads_double)(const float* x, const float* dy, const float* mask, int64_t rows, int64_t width,
                              int64_t stride, const float* mean, double* acc1, double* acc2);
    // Whether every one of `lanes` lanes' float-term sums of `count` values passes the
    // checks of core/moments.hpp (else the double terms are needed).
    bool (*rows_stats_trusted)(double count, const double* s1, const double* s2, int64_t lanes);
    bool (*rows_grads_trusted)(double count, const double* s1, const double* s2, int64_t lanes);
};

const RunKernelTable& run_kernels_scalar();
const RunKernelTable& run_kernels_sse4_2();
const RunKernelTable& run_kernels_avx2();
const RunKernelTable& run_kernels_avx512();
// The table for a call's ISA.
const RunKernelTable& run_kernels(Isa isa);

} // namespace nk
