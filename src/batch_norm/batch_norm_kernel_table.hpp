// The per-ISA batch-norm kernels, as a table of plain function pointers.
//
// Two access shapes cover every layout, both over `rows` runs `stride` floats apart:
//  - "seg": runs of `len` values of one channel (channels-first); reductions use 16
//    lanes, lane = position in the run mod 16; coefficients are one value each.
//  - "rows": runs of `width` lanes (channels-last, NC); lane = position in the run,
//    so each lane is one channel (or one copy of a channel when short rows are packed
//    together); coefficients are per-lane arrays.
// Reduction lanes accumulate in run order, identically on every ISA: terms in float
// flushed into double sums at fixed points, or (the *_double kernels) terms in double.
#pragma once

#include "core/run_kernel_table.hpp" // kRowsLanePadding

#include <cstdint>

namespace nk {


// Coefficients of the element-wise passes:
//   normalize: dst = (src - mean_hi) * a + b
//   diff_src:  dx = ((dy - k1) - (x - mean_hi) * k2) * a
//   scale:     dx = dy * a
// mean_hi is the mean rounded to float, so src - mean_hi keeps its digits under a large
// common offset; in training, b = shift - (mean - mean_hi) * a (in double) carries the
// rest of the mean. (Backward's mean is save_mean, a float already.)
struct ElementwiseCoefs {
    const float* mean_hi;
    const float* a;
    const float* b;
    const float* k1;
    const float* k2;
    // Write the results with non-temporal stores (whole aligned registers): for outputs
    // too large to stay in the last-level cache. Never changes a result.
    bool stream;
    // Wide rows: prefetch the inputs 8 KB ahead (for inputs read from the L3 or memory;
    // from the L2 the prefetches only cost). Never changes a result.
    bool prefetch;
    // Forward: dst = relu(normalized [+ residual]) (NK_BN_FUSE_RELU).
    bool relu;
};

// Reductions over the runs of one item into 16 (seg) or `width` (rows) double lanes.
using StatsSegFn = void (*)(const float* x, int64_t rows, int64_t len, int64_t stride, float pivot,
                            double* acc1, double* acc2);
using StatsRowsFn = void (*)(const float* x, int64_t rows, int64_t width, int64_t stride,
                             const float* pivot, double* acc1, double* acc2);
// Gradient sums take `mask`, the fused ReLU's dst at the offsets of dy (null: no ReLU):
// dy counts only where mask > 0 (or is NaN).
using GradSegFn = void (*)(const float* x, const float* dy, const float* mask, int64_t rows, int64_t len,
                           int64_t stride, float mean, double* acc1, double* acc2);
using GradRowsFn = void (*)(const float* x, const float* dy, const float* mask, int64_t rows, int64_t width,
                            int64_t stride, const float* mean, double* acc1, double* acc2);
// Seg reductions over `runs` consecutive runs of `len` values (run q at x + q * len), each
// with its own pivot or mean [q] and its own 16 lanes at acc + 16 * q.
using StatsRunsFn = void (*)(const float* x, int64_t runs, int64_t len, const float* pivot, double* acc1,
                             double* acc2);
using GradRunsFn = void (*)(const float* x, const float* dy, const float* mask, int64_t runs, int64_t len,
                            const float* mean, double* acc1, double* acc2);

// ---- per-channel epilogues: sums -> coefficients and per-channel outputs ----
// Each runs over channels [c0, c1) and computes in double, one register of channels at
// a time with the same IEEE operations in the same order on every ISA (and in the
// scalar kernels), so the vector width never changes a bit.

// Per-channel sums of a reduction: partial p of channel c at [p * stride + c]. Every
// channel of partial p covers count[p] values.
struct ChannelPartials {
    const double *s1, *s2, *center;
    const double* count;
    int64_t partials, stride;
};

// Training forward: the partials' moments merged in partial order (Chan et al.), then
// the coefficients (mean_hi, a, b), the saved statistics and the running ones.
struct TrainingEpilogue {
    ChannelPartials parts;
    float epsilon, momentum;
    uint32_t flags;                                                // NK_BN_*
    const float *scale, *shift;                                    // may be null
    float *running_mean, *running_var, *save_mean, *save_invstd;   // may be null
    float *mean_hi, *a, *b;
};

// Backward: the partials' sums added in partial order (when need_sums), then the
// coefficients (mean_hi, a, k1, k2) and diff_scale / diff_shift.
struct BackwardEpilogue {
    ChannelPartials parts;
    double count;          // values per channel
    bool need_sums;
    const float *scale;    // may be null
    const float *save_mean, *save_invstd;
    float *diff_scale, *diff_shift; // may be null
    float *mean_hi, *a, *k1, *k2;
};

// Inference forward: coefficients (mean_hi, a, b) from the running statistics.
struct InferenceEpilogue {
    float epsilon;
    const float *mean, *variance;
    const float *scale, *shift; // may be null
    float *mean_hi, *a, *b;
};

struct BatchNormKernelTable {
    // acc1 += x - pivot, acc2 += (x - pivot)^2; seg: 16 lanes, rows: lane j has pivot[j].
    StatsSegFn stats_seg;
    StatsRowsFn stats_rows;
    // acc1 += dy, acc2 += dy * (x - mean).
    GradSegFn grad_seg;
    GradRowsFn grad_rows;
    // stats_seg / grad_seg of one run each, for many short runs in one call (channels-first
    // with a small S: a call per run cost as much as the run). The same sums.
    StatsRunsFn stats_runs;
    GradRunsFn grad_runs;
    // The same four with every term in double, for blocks whose float-term sums fail the
    // checks of core/moments.hpp (out of float range, or a pivot far from the mean).
    StatsSegFn stats_seg_double;
    StatsRowsFn stats_rows_double;
    GradSegFn grad_seg_double;
    GradRowsFn grad_rows_double;

    // Seg element-wise: run r uses coefficients [r * coef_step]. The fusions (each pointer
    // null when not fused, at the offsets of x / dy):
    //  - normalize: res, a residual added before the ReLU (k.relu);
    //  - diff_src / scale: mask, the forward's dst (dy zeroed where it is <= 0), and dres,
    //    diff_residual (the masked dy, written; only with a mask).
    void (*normalize_seg)(const float* x, const float* res, float* y, int64_t rows, int64_t len, int64_t stride,
                          const ElementwiseCoefs& k, int64_t coef_step);
    void (*normalize_rows)(const float* x, const float* res, float* y, int64_t rows, int64_t width,
                           int64_t stride, const ElementwiseCoefs& k);
    void (*diff_src_seg)(const float* x, const float* dy, const float* mask, float* dx, float* dres, int64_t rows,
                         int64_t len, int64_t stride, const ElementwiseCoefs& k, int64_t coef_step);
    void (*diff_src_rows)(const float* x, const float* dy, const float* mask, float* dx, float* dres, int64_t rows,
                          int64_t width, int64_t stride, const ElementwiseCoefs& k);
    void (*scale_seg)(const float* dy, const float* mask, float* dx, float* dres, int64_t rows, int64_t len,
                      int64_t stride, const ElementwiseCoefs& k, int64_t coef_step);
    void (*scale_rows)(const float* dy, const float* mask, float* dx, float* dres, int64_t rows, int64_t width,
                       int64_t stride, const ElementwiseCoefs& k);

    // Rows reductions, per lane: the pivots of a block of `rows` rows (rows q * rows / 4,
    // q < 4, averaged in double), and whether every lane's float-term sums pass the
    // checks of core/moments.hpp.
    void (*rows_pivots)(const float* x, int64_t stride, int64_t rows, int64_t lanes, float* center);
    bool (*stats_rows_trusted)(double count, const double* s1, const double* s2, int64_t lanes);
    bool (*grad_rows_trusted)(double count, const double* s1, const double* s2, int64_t lanes);

    void (*training_epilogue)(const TrainingEpilogue& e, int64_t c0, int64_t c1);
    void (*backward_epilogue)(const BackwardEpilogue& e, int64_t c0, int64_t c1);
    void (*inference_epilogue)(const InferenceEpilogue& e, int64_t c0, int64_t c1);
    // The training epilogue's fold alone: mean and M2 of channels [c0, c1) in double.
    void (*fold_moments)(const ChannelPartials& parts, int64_t c0, int64_t c1, double* mean, double* m2);
};

const BatchNormKernelTable& batch_norm_kernels_scalar();
const BatchNormKernelTable& batch_norm_kernels_sse4_2();
const BatchNormKernelTable& batch_norm_kernels_avx2();
const BatchNormKernelTable& batch_norm_kernels_avx512();

} // namespace nk
