// The per-ISA kernels of layer norm and RMS norm, as a table of plain function pointers.
//
// A tensor is `rows` rows of `len` contiguous features. The reductions are core's
// (core/run_kernel_table.hpp); the element-wise kernels here take per-row coefficients
// and per-feature weights, IEEE float operations in a fixed order, the same bits on
// every ISA.
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

// Column sums of backward (diff_scale, diff_shift) over the rows of an item: float
// partials of kColumnRows rows at a time (`part_s`, `part_b`, `len` floats each), added
// to the double sums `sum_s`, `sum_b` after each kColumnRows rows of the item and at its
// end. A call covers rows [row, row + rows) of the item (the partials carry from call to
// call), the last one when ends_item. A null sum_b: no diff_shift.
struct ColumnSums {
    float *part_s, *part_b;
    double *sum_s, *sum_b;
    int64_t row;
    bool ends_item;
};
constexpr int64_t kColumnRows = 8;

// The inputs of the next block of rows, at the same element offsets as this call's (null:
// none), `element_bytes` per element (float32 or a 2-byte storage type): the element-wise
// passes, whose inputs are in cache, ask for them, so that reading the next block from
// memory overlaps this one's second pass. Never changes a result.
struct NextBlock {
    const char *a, *b;
    int64_t element_bytes;
};

struct LayerNormKernelTable {
    // y = a + b over n values (the residual add).
    void (*add)(const float* a, const float* b, float* y, int64_t n);
    // `rows` rows of `len` features (stride len); w, b: len values each.
    void (*normalize)(const float* x, float* y, int64_t rows, int64_t len, const RowCoefs& k, const float* w,
                      const float* b, const NextBlock& next);
    // diff_src (when dx is not null) and the column sums (when cols is not null) of `rows` rows.
    void (*backward)(const float* x, const float* dy, float* dx, int64_t rows, int64_t len, const RowCoefs& k,
                     const float* w, const ColumnSums* cols, const NextBlock& next);
};

const LayerNormKernelTable& layer_norm_kernels_scalar();
const LayerNormKernelTable& layer_norm_kernels_sse4_2();
const LayerNormKernelTable& layer_norm_kernels_avx2();
const LayerNormKernelTable& layer_norm_kernels_avx512();

} // namespace nk
