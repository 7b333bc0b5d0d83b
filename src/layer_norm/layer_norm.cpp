// Layer-norm and RMS-norm planner.
//
// Batch invariance: a row's statistics come from the pieces of that row alone (fixed by
// `features`), so every per-row result has the same bits whatever the other rows, the
// row count, the threads or the ISA. Blocks of rows only decide which thread runs a row
// and how much of the tensor goes through both passes while it is in cache.
// Column sums (diff_scale, diff_shift) add fixed items of rows (fixed by the shape), each
// in double, in item order: the same bits for any thread count.
// bf16 / f16 tensors go through float buffers a block at a time (core/half.hpp): the
// block's inputs converted, the float32 kernels run on them, its outputs rounded once.
#include "layer_norm/layer_norm.hpp"

#include "core/half.hpp"
#include "core/moments.hpp"
#include "core/run_kernel_table.hpp"
#include "core/run_moments.hpp"
#include "core/scratch.hpp"
#include "layer_norm/layer_norm_kernel_table.hpp"

#include <algorithm>
#include <cmath>
#include <limits>

namespace nk {
namespace {

// Values of the rows a task takes through reduction and element-wise pass together, so
// that the second read comes from L1/L2 (schedule only, never a result).
constexpr int64_t kBlockValues = 8192;
// Backward column sums: at most this many items of rows (fixed by the shape), each a
// multiple of kColumnRows rows.
constexpr int64_t kColumnItems = 16;

const LayerNormKernelTable& kernels(Isa isa) {
    static const LayerNormKernelTable& (*const getters[kIsaCount])() = {
        layer_norm_kernels_scalar, layer_norm_kernels_sse4_2, layer_norm_kernels_avx2, layer_norm_kernels_avx512};
    return kernels_for(isa, getters);
}

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Per-thread scratch of a block of rows.
struct BlockScratch {
    Scratch storage;
    double *acc1, *acc2;
    float *center, *mean_hi, *r, *c, *k1, *k2;
    explicit BlockScratch(int64_t rows)
        : storage(size_t(rows) * (32 * sizeof(double) + 6 * sizeof(float))),
          acc1(static_cast<double*>(storage.data())), acc2(acc1 + 16 * rows),
          center(reinterpret_cast<float*>(acc2 + 16 * rows)), mean_hi(center + rows), r(mean_hi + rows),
          c(r + rows), k1(c + rows), k2(k1 + rows) {}
    RowCoefs coefs() const { return {mean_hi, r, c, k1, k2}; }
};

// What every block of a call shares.
struct Rows {
    const LayerNormProblem& p;
    const RunKernelTable& run; // the reductions
    const LayerNormKernelTable& k;
    int64_t K;
    // Rows per block: whole rows up to kBlockValues, one row past a piece.
    int64_t block_rows() const { return K > kRunPiece ? 1 : std::max<int64_t>(1, kBlockValues / K); }
};

// Statistics of rows [0, rows) of x (row stride K) into the block's coefficients (and
// the saved statistics at save_mean / save_invstd, when given). Rows of up to a piece go
// through the float-term reduction together (one call), longer ones piece by piece
// (core/run_moments.hpp): the same sums either way.
void row_statistics(const Rows& g, const float* x, int64_t rows, BlockScratch& w, float* save_mean,
                    float* save_invstd) {
    const int64_t K = g.K;
    const bool rms = g.p.rms;
    if (K <= kRunPiece) {
        for (int64_t j = 0; j < rows; ++j) w.center[j] = rms ? 0.0f : run_pivot(x + j * K, K);
        g.run.stats_runs(x, rows, K, w.center, w.acc1, w.acc2);
    }
    for (int64_t j = 0; j < rows; ++j) {
        RunMoments m;
        if (K <= kRunPiece) {
            const PieceSums s = checked_stats(g.run, x + j * K, K, w.center[j], rms, w.acc1 + 16 * j, w.acc2 + 16 * j);
            if (rms)
                m = {0.0, s.s2};
            else
                moments_from_sums(double(K), s.s1, s.s2, double(w.center[j]), m.mean, m.m2);
        } else {
            m = run_moments(g.run, x + j * K, K, rms);
        }
        const double var = m.m2 / double(K); // RMS norm: the mean square
        if (rms) {
            const double invrms = 1 / std::sqrt(var + double(g.p.epsilon));
            w.mean_hi[j] = w.c[j] = 0.0f;
            w.r[j] = float(invrms);
            if (save_invstd) save_invstd[j] = float(invrms);
            continue;
        }
        double mean = m.mean, v = var;
        if (!std::isfinite(mean) || !std::isfinite(v)) // a NaN or infinity in the row: all NaN
            mean = v = std::numeric_limits<double>::quiet_NaN();
        const double invstd = 1 / std::sqrt(v + double(g.p.epsilon));
        const float hi = float(mean);
        w.mean_hi[j] = hi;
        w.r[j] = float(invstd);
        w.c[j] = float(-(mean - double(hi)) * invstd);
        if (save_mean) save_mean[j] = hi;
        if (save_invstd) save_invstd[j] = float(invstd);
    }
}

// Backward's per-row sums sum(g) and sum(g * (x - mean)), g = dy * w, into k1, k2 (and
// mean_hi, r from the saved statistics).
void row_gradients(const Rows& g, const float* x, const float* dy, const float* wt, int64_t rows,
                   const float* save_mean, const float* save_invstd, BlockScratch& w) {
    const int64_t K = g.K;
    for (int64_t j = 0; j < rows; ++j) {
        w.mean_hi[j] = g.p.rms ? 0.0f : save_mean[j];
        w.r[j] = save_invstd[j];
    }
    if (K <= kRunPiece) {
        g.run.grad_runs(x, dy, wt, rows, K, w.mean_hi, w.acc1, w.acc2);
    }
    for (int64_t j = 0; j < rows; ++j) {
        const float* xr = x + j * K;
        const float* gr = dy + j * K;
        const PieceSums s = K <= kRunPiece
                                ? checked_grads(g.run, xr, gr, wt, K, w.mean_hi[j], w.acc1 + 16 * j, w.acc2 + 16 * j)
                                : run_grads(g.run, xr, gr, wt, K, w.mean_hi[j]);
        const double invstd = double(w.r[j]), count = double(K);
        w.k1[j] = g.p.rms ? 0.0f : float(s.s1 / count);
        w.k2[j] = float(s.s2 / count * invstd * invstd);
    }
}

// `count` floats of `value`, for a NULL scale or shift (the kernels take arrays).
struct Filled {
    Scratch storage;
    float* data;
    Filled(int64_t count, float value) : storage(size_t(count) * sizeof(float)), data(static_cast<float*>(storage.data())) {
        std::fill(data, data + count, value);
    }
};

// The next block's inputs (from element `at`), for the element-wise passes to prefetch.
NextBlock next_block(const Storage& st, bool last, const void* a, const void* b, int64_t at) {
    const int64_t eb = int64_t(st.element_bytes());
    if (last) return {nullptr, nullptr, eb};
    return {static_cast<const char*>(a) + at * eb, b ? static_cast<const char*>(b) + at * eb : nullptr, eb};
}

} // namespace

void layer_norm_forward(const ExecConfig& config, const LayerNormProblem& p, const void* src,
                        const void* residual, void* sum, void* dst, const float* scale, const float* shift,
                        float* save_mean, float* save_invstd) {
    const Rows g{p, run_kernels(config.isa), kernels(config.isa), p.features};
    const Storage st(p.dtype, config.isa);
    const int64_t K = p.features, B = g.block_rows();
    Filled ones(scale ? 0 : K, 1.0f), zeros(shift || p.rms ? 0 : K, 0.0f);
    const float* w = scale ? scale : ones.data;
    const float* b = p.rms ? nullptr : shift ? shift : zeros.data;
    const int64_t blocks = (p.rows + B - 1) / B;
    config.threads.parallel_for(blocks, [&](int64_t begin, int64_t end) {
        BlockScratch scratch(B);
        Staging staged(st, B * K);
        for (int64_t blk = begin; blk < end; ++blk) {
            const int64_t r0 = blk * B, rows = std::min(B, p.rows - r0), at = r0 * K, n = rows * K;
            // A half-precision block is read whole before anything of it is written: in
            // place (dst or sum over src or residual) holds as it does for float32.
            const float* x = st.read(src, at, n, staged.a);
            if (residual) {
                // x is kept where it will be read again: in sum, or in dst, which the
                // normalization then overwrites (half precision: in the block's floats,
                // normalized from float32, sum rounded once).
                float* kept = st.write_to(sum ? sum : dst, at, staged.a);
                g.k.add(x, st.read(residual, at, n, staged.b), kept, n);
                if (sum) st.written(sum, at, n, kept);
                x = kept;
            }
            row_statistics(g, x, rows, scratch, save_mean ? save_mean + r0 : nullptr,
                           save_invstd ? save_invstd + r0 : nullptr);
            float* y = st.write_to(dst, at, staged.a);
            g.k.normalize(x, y, rows, K, scratch.coefs(), w, b, next_block(st, blk + 1 == blocks, src, residual, at + n));
            st.written(dst, at, n, y);
        }
    });
}

void layer_norm_backward(const ExecConfig& config, const LayerNormProblem& p, const void* src,
                         const void* diff_dst, const float* scale, const float* save_mean,
                         const float* save_invstd, void* diff_src, float* diff_scale, float* diff_shift) {
    const Rows g{p, run_kernels(config.isa), kernels(config.isa), p.features};
    const Storage st(p.dtype, config.isa);
    const int64_t K = p.features, M = p.rows;
    Filled ones(scale ? 0 : K, 1.0f);
    const float* w = scale ? scale : ones.data;
    const bool columns = diff_scale || diff_shift;
    // Items of whole kColumnRows blocks; a task goes through an item in blocks of rows.
    const int64_t item_rows = std::max(kColumnRows, round_up((M + kColumnItems - 1) / kColumnItems, kColumnRows));
    const int64_t items = (M + item_rows - 1) / item_rows;
    const int64_t sub_rows = g.block_rows();
    // Each item's double column sums (diff_scale, then diff_shift), zeroed.
    Scratch sums_storage(columns ? size_t(items * 2 * K) * sizeof(double) : 1);
    double* sums = static_cast<double*>(sums_storage.data());
    if (columns) std::fill(sums, sums + items * 2 * K, 0.0);

    config.threads.parallel_for(items, [&](int64_t begin, int64_t end) {
        BlockScratch scratch(sub_rows);
        Staging staged(st, sub_rows * K);
        Scratch parts_storage(columns ? size_t(2 * K) * sizeof(float) : 1);
        float* parts = static_cast<float*>(parts_storage.data());
        if (columns) std::fill(parts, parts + 2 * K, 0.0f);
        for (int64_t item = begin; item < end; ++item) {
            const int64_t r_begin = item * item_rows, r_end = std::min(M, r_begin + item_rows);
            for (int64_t r0 = r_begin; r0 < r_end; r0 += sub_rows) {
                const int64_t rows = std::min(sub_rows, r_end - r0), at = r0 * K, n = rows * K;
                const float* x = st.read(src, at, n, staged.a);
                const float* dy = st.read(diff_dst, at, n, staged.b);
                float* dx = diff_src ? st.write_to(diff_src, at, staged.b) : nullptr; // half: over dy's floats
                const ColumnSums cols{parts, parts + K, sums + item * 2 * K,
                                      diff_shift ? sums + item * 2 * K + K : nullptr, r0 - r_begin, r0 + rows == r_end};
                if (diff_src) {
                    row_gradients(g, x, dy, w, rows, p.rms ? nullptr : save_mean + r0, save_invstd + r0, scratch);
                } else {
                    for (int64_t j = 0; j < rows; ++j) {
                        scratch.mean_hi[j] = p.rms ? 0.0f : save_mean[r0 + j];
                        scratch.r[j] = save_invstd[r0 + j];
                    }
                }
                g.k.backward(x, dy, dx, rows, K, scratch.coefs(), w, columns ? &cols : nullptr,
                             next_block(st, r0 + rows == M, src, diff_dst, at + n));
                if (dx) st.written(diff_src, at, n, dx);
            }
        }
    });
    if (!columns) return;
    // Items in order, each feature's sums in double.
    for (int64_t i = 0; i < K; ++i) {
        double s = 0, t = 0;
        for (int64_t item = 0; item < items; ++item) {
            s += sums[item * 2 * K + i];
            t += sums[item * 2 * K + K + i];
        }
        if (diff_scale) diff_scale[i] = float(s);
        if (diff_shift) diff_shift[i] = float(t);
    }
}

} // namespace nk
