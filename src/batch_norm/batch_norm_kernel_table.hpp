// The per-ISA batch-norm kernels, as a table of plain function pointers.
//
// Two access shapes cover every layout:
//  - "seg": one contiguous run of a single channel (channels-first rows);
//    reductions use 16 lanes, lane = position in the run mod 16.
//  - "rows": `rows` rows of `width` lanes, `stride` floats apart (channels-last,
//    NC); lane = position in the row, so each lane is one channel (or one copy of a
//    channel when short rows are packed together).
// Reduction lanes accumulate in double, in row order, identically on every ISA.
#pragma once

#include <cstdint>

namespace nk {

// Coefficients of the element-wise passes, per lane (rows) or per call (seg):
//   normalize: dst = ((src - mean_hi) - mean_lo) * a + b
//   diff_src:  dx = ((dy - k1) - ((x - mean_hi) - mean_lo) * k2) * a
//   scale:     dx = dy * a
struct ElementwiseCoefs {
    const float* mean_hi;
    const float* mean_lo;
    const float* a;
    const float* b;
    const float* k1;
    const float* k2;
};

struct BatchNormKernelTable {
    // acc1 += x - pivot, acc2 += (x - pivot)^2 (16 lanes).
    void (*stats_seg)(const float* x, int64_t len, double pivot, double* acc1, double* acc2);
    // Per lane j < width: acc1[j] += x - pivot[j], acc2[j] += (x - pivot[j])^2.
    void (*stats_rows)(const float* x, int64_t rows, int64_t width, int64_t stride,
                       const double* pivot, double* acc1, double* acc2);
    // acc1 += dy, acc2 += dy * (x - mean) (16 lanes).
    void (*grad_seg)(const float* x, const float* dy, int64_t len, double mean, double* acc1,
                     double* acc2);
    void (*grad_rows)(const float* x, const float* dy, int64_t rows, int64_t width,
                      int64_t stride, const double* mean, double* acc1, double* acc2);

    // Element-wise passes. seg: coefficient pointers address one value each.
    void (*normalize_seg)(const float* x, float* y, int64_t len, const ElementwiseCoefs& k);
    void (*normalize_rows)(const float* x, float* y, int64_t rows, int64_t width,
                           int64_t stride, const ElementwiseCoefs& k);
    void (*diff_src_seg)(const float* x, const float* dy, float* dx, int64_t len,
                         const ElementwiseCoefs& k);
    void (*diff_src_rows)(const float* x, const float* dy, float* dx, int64_t rows,
                          int64_t width, int64_t stride, const ElementwiseCoefs& k);
    void (*scale_seg)(const float* dy, float* dx, int64_t len, const ElementwiseCoefs& k);
    void (*scale_rows)(const float* dy, float* dx, int64_t rows, int64_t width, int64_t stride,
                       const ElementwiseCoefs& k);
};

const BatchNormKernelTable& batch_norm_kernels_scalar();
const BatchNormKernelTable& batch_norm_kernels_sse4_2();
const BatchNormKernelTable& batch_norm_kernels_avx2();
const BatchNormKernelTable& batch_norm_kernels_avx512();

} // namespace nk
