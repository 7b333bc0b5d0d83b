// The per-ISA kernels of layer norm and RMS norm, as a table of plain function pointers.
//
// A tensor is `rows` rows of `len` contiguous features. The reductions are the seg
// reductions of core/run_kernels.hpp over one row (or one piece of a long row) at a
// time, 16 double lanes each. The element-wise kernels take per-row coefficients and
// per-feature weights; every one is IEEE float operations in a fixed order, the same
// bits on every ISA.
#pragma once

#include <cstdint>

namespace nk {

// Per-row coefficients of the element-wise passes, one value per row of the call:
//   normalize: y = ((x - mean_hi) * r + c) * w + b
//   diff_src:  dx = ((dy * w - k1) - (x - mean_hi) * k2) * r
//   columns:   ds += dy * ((x - mean_hi) * r),  db += dy
// Layer norm: mean_hi is the row's mean rounded to float (x - mean_hi keeps its digits
// under a large offset), r its invstd and c = -(mean - mean_hi) * invstd what the
// rounding lost. RMS norm: mean_hi = c = k1 = 0, r = invrms, b = 0.
struct RowCoefs {
    const float *mean_hi, *r, *c, *k1, *k2;
};

// Column sums of backward (diff_scale, diff_shift) over the rows of one call: float
// partials of kColumnRows rows at a time (`part_s`, `part_b`, `len` floats each), added
// to the double sums `sum_s`, `sum_b` after every kColumnRows rows and at the call's end.
// A null sum_b: no diff_shift.
struct ColumnSums {
    float *part_s, *part_b;
    double *sum_s, *sum_b;
};
constexpr int64_t kColumnRows = 8;

struct LayerNormKernelTable {
    // Seg reductions (core/run_kernels.hpp): acc1 += x - pivot, acc2 += (x - pivot)^2, and
    // acc1 += g, acc2 += g * (x - mean) with g = dy * w; one run, or `runs` rows of `len`.
    void (*stats_seg)(const float* x, int64_t rows, int64_t len, int64_t stride, float pivot, double* acc1,
                      double* acc2);
    void (*stats_seg_double)(const float* x, int64_t rows, int64_t len, int64_t stride, float pivot, double* acc1,
                             double* acc2);
    void (*stats_runs)(const float* x, int64_t runs, int64_t len, const float* pivot, double* acc1, double* acc2);
    void (*grad_seg)(const float* x, const float* dy, const float* w, int64_t len, float mean, double* acc1,
                     double* acc2);
    void (*grad_seg_double)(const float* x, const float* dy, const float* w, int64_t rows, int64_t len,
                            int64_t stride, float mean, double* acc1, double* acc2);
    void (*grad_runs)(const float* x, const float* dy, const float* w, int64_t runs, int64_t len, const float* mean,
                      double* acc1, double* acc2);

    // y = a + b over n values (the residual add).
    void (*add)(const float* a, const float* b, float* y, int64_t n);
    // `rows` rows of `len` features (stride len); w, b: len values each.
    void (*normalize)(const float* x, float* y, int64_t rows, int64_t len, const RowCoefs& k, const float* w,
                      const float* b);
    // diff_src (when dx is not null) and the column sums (when cols is not null) of
    // `rows` rows; the call starts a new block of kColumnRows rows.
    void (*backward)(const float* x, const float* dy, float* dx, int64_t rows, int64_t len, const RowCoefs& k,
                     const float* w, const ColumnSums* cols);
};

const LayerNormKernelTable& layer_norm_kernels_scalar();
const LayerNormKernelTable& layer_norm_kernels_sse4_2();
const LayerNormKernelTable& layer_norm_kernels_avx2();
const LayerNormKernelTable& layer_norm_kernels_avx512();

} // namespace nk
