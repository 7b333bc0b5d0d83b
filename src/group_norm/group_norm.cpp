// Group-norm planner, over core's run kernels (core/run_kernel_table.hpp) and run moments.
//
// Channels-first: group (n, g) is one contiguous run of C/G * S values, reduced as a
// layer-norm row is (core/run_moments.hpp), then put through the per-channel affine pass
// while it is in cache. Channels-last: sample n is S rows of C channels; each channel's
// sums over fixed blocks of rows come from the rows reductions (float terms, checked,
// a channel's block redone in double when its check fails), and a group merges its
// channels' blocks in a fixed order (Chan). Either way a group's
// results depend on its own values only: the same bits for any n, thread count or ISA.
// bf16 / f16 tensors go through float buffers (core/half.hpp) a group (channels-first) or
// a block of rows (channels-last) at a time: converted, the float32 kernels, rounded once.
#include "group_norm/group_norm.hpp"

#include "core/half.hpp"
#include "core/moments.hpp"
#include "core/run_kernel_table.hpp"
#include "core/run_moments.hpp"
#include "core/scratch.hpp"
#include "normkit/normkit.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace nk {
namespace {

// Channels-last element-wise items: about this many values of one sample each (schedule only).
constexpr int64_t kElementwiseValues = 16384;
// Channels-last reduction blocks: about this many values of one sample each. Fixes the
// sums (each block's are checked and merged in order), so changing it changes bits.
// Blocks of 16384 values (12 rows of C = 1280) spent more on each block's fixed costs
// (lane sums loaded and stored per tile, checks, copies) than on the rows.
constexpr int64_t kBlockValues = 262144;

struct Shape {
    int64_t N, C, S, G, Cg; // Cg: channels per group
    explicit Shape(const GroupNormProblem& p) : N(p.n), C(p.c), S(p.s), G(p.groups), Cg(p.c / p.groups) {}
    int64_t group_values() const { return Cg * S; }
    // Channels-last: rows of sample n per block of the lane reductions (fixed by C).
    int64_t block_rows() const { return std::max<int64_t>(1, kBlockValues / C); }
    int64_t blocks() const { return (S + block_rows() - 1) / block_rows(); }
};

// A group's statistics from its mean and M2: NaN for both when either is not finite.
struct GroupStats {
    double mean, invstd;
    float hi; // the mean rounded to float: x - hi keeps its digits under a large offset
};
GroupStats finish_stats(double mean, double m2, double count, float epsilon) {
    double var = m2 / count;
    if (!std::isfinite(mean) || !std::isfinite(var)) mean = var = std::numeric_limits<double>::quiet_NaN();
    const double invstd = 1 / std::sqrt(var + double(epsilon));
    return {mean, invstd, float(mean)};
}

// The affine coefficients of channels [c0, c0 + n) of a group: dst = (x - hi) * a + b,
// a = scale * invstd, b = shift - (mean - hi) * a (in double, as batch norm's).
void affine_coefs(const GroupStats& st, const float* scale, const float* shift, int64_t c0, int64_t n, float* mh,
                  float* a, float* b) {
    for (int64_t j = 0; j < n; ++j) {
        const double ad = (scale ? double(scale[c0 + j]) : 1.0) * st.invstd;
        mh[j] = st.hi;
        a[j] = float(ad);
        b[j] = float((shift ? double(shift[c0 + j]) : 0.0) - (st.mean - double(st.hi)) * ad);
    }
}

// Calls body(reduction, n, p) for each (sample, block of rows) of channels-last sample
// slabs, with a task's scratch.
template <class Body>
void for_blocks(const ExecConfig& config, const Shape& sh, Body body);

// Per (n, block, channel) sums of the channels-last rows reductions, and per (n, channel)
// the value they are taken from (the pivot, or backward's saved mean; padded for the
// reductions' whole-register reads).
struct LaneSums {
    Scratch storage;
    double *s1, *s2;
    float* center;
    int64_t C, B;
    explicit LaneSums(const Shape& sh)
        : storage(size_t(sh.N * sh.C) * (2 * sh.blocks()) * sizeof(double) +
                  size_t(sh.N * sh.C + kRowsLanePadding) * sizeof(float)),
          s1(static_cast<double*>(storage.data())), s2(s1 + sh.N * sh.blocks() * sh.C),
          center(reinterpret_cast<float*>(s2 + sh.N * sh.blocks() * sh.C)), C(sh.C), B(sh.blocks()) {
        std::fill(center + sh.N * sh.C, center + sh.N * sh.C + kRowsLanePadding, 0.0f);
    }
    int64_t at(int64_t n, int64_t p) const { return (n * B + p) * C; }
};

// One block of rows of one sample through a rows reduction (`grads`: the gradient sums of
// x and dy, else the statistics of x), its C channels' sums written to s1, s2. Float terms
// first; a channel whose sums fail the checks of core/moments.hpp takes its double-term
// sums instead: a channel's sums depend on its own values alone.
struct BlockReduction {
    std::vector<double> a1, a2, d1, d2; // padded lane sums: float terms, double terms

    explicit BlockReduction(int64_t C)
        : a1(size_t(C + kRowsLanePadding)), a2(a1.size()), d1(a1.size()), d2(a1.size()) {}

    void run(const RunKernelTable& k, bool grads, const float* x, const float* dy, int64_t rows, int64_t C,
             const float* center, double* s1, double* s2) {
        auto reduce = [&](bool dbl, double* t1, double* t2) {
            std::fill(t1, t1 + C + kRowsLanePadding, 0.0);
            std::fill(t2, t2 + C + kRowsLanePadding, 0.0);
            if (grads)
                (dbl ? k.rows_grads_double : k.rows_grads)(x, dy, nullptr, rows, C, C, center, t1, t2);
            else
                (dbl ? k.rows_stats_double : k.rows_stats)(x, rows, C, C, center, t1, t2);
        };
        reduce(false, a1.data(), a2.data());
        const double count = double(rows);
        const bool trusted = grads ? k.rows_grads_trusted(count, a1.data(), a2.data(), C)
                                   : k.rows_stats_trusted(count, a1.data(), a2.data(), C);
        if (!trusted) reduce(true, d1.data(), d2.data());
        for (int64_t c = 0; c < C; ++c) {
            const bool ok = trusted || (grads ? grad_sums_trusted(count, a1[size_t(c)], a2[size_t(c)])
                                              : stats_sums_trusted(count, a1[size_t(c)], a2[size_t(c)]));
            s1[c] = ok ? a1[size_t(c)] : d1[size_t(c)];
            s2[c] = ok ? a2[size_t(c)] : d2[size_t(c)];
        }
    }
};

template <class Body>
void for_blocks(const ExecConfig& config, const Shape& sh, Body body) {
    config.threads.parallel_for(sh.N * sh.blocks(), [&](int64_t begin, int64_t end) {
        BlockReduction red(sh.C);
        for (int64_t item = begin; item < end; ++item) body(red, item / sh.blocks(), item % sh.blocks());
    });
}

// Rows [r0, r0 + rows) of sample n, channels-last.
int64_t rows_at(const Shape& sh, int64_t n, int64_t r0) { return (n * sh.S + r0) * sh.C; }

void forward_channels_first(const ExecConfig& config, const Shape& sh, const GroupNormProblem& p,
                            const RunKernelTable& k, const Storage& st, const void* src, void* dst, const float* scale,
                            const float* shift, float* save_mean, float* save_invstd) {
    const int64_t L = sh.group_values();
    config.threads.parallel_for(sh.N * sh.G, [&](int64_t begin, int64_t end) {
        std::vector<float> mh(size_t(sh.Cg)), a(mh.size()), b(mh.size());
        Staging staged(st, L);
        for (int64_t q = begin; q < end; ++q) {
            const int64_t c0 = q % sh.G * sh.Cg, at = q * L; // groups are consecutive runs
            const float* x = st.read(src, at, L, staged.a);
            const RunMoments m = run_moments(k, x, L, false);
            const GroupStats gs = finish_stats(m.mean, m.m2, double(L), p.epsilon);
            if (save_mean) save_mean[q] = gs.hi;
            if (save_invstd) save_invstd[q] = float(gs.invstd);
            affine_coefs(gs, scale, shift, c0, sh.Cg, mh.data(), a.data(), b.data());
            float* y = st.write_to(dst, at, staged.a); // half precision: over x's floats
            k.affine_runs(x, y, sh.Cg, sh.S, mh.data(), a.data(), b.data());
            st.written(dst, at, L, y);
        }
    });
}

void forward_channels_last(const ExecConfig& config, const Shape& sh, const GroupNormProblem& p,
                           const RunKernelTable& k, const Storage& st, const void* src, void* dst, const float* scale,
                           const float* shift, float* save_mean, float* save_invstd) {
    const int64_t C = sh.C, R = sh.block_rows();
    LaneSums sums(sh);
    // One pivot per (sample, channel) for all its blocks (4 of its values spread over the
    // sample), so that a channel's block sums simply add.
    config.threads.parallel_for(sh.N, [&](int64_t begin, int64_t end) {
        for (int64_t n = begin; n < end; ++n)
            for (int64_t c = 0; c < C; ++c) {
                double sum = 0;
                for (int64_t q = 0; q < 4; ++q) sum += st.value(src, rows_at(sh, n, q * sh.S / 4) + c);
                sums.center[n * C + c] = float(sum / 4);
            }
    });
    for_blocks(config, sh, [&](BlockReduction& red, int64_t n, int64_t blk) {
        const int64_t r0 = blk * R, rows = std::min(R, sh.S - r0), at = sums.at(n, blk);
        Staging staged(st, rows * C);
        const float* x = st.read(src, rows_at(sh, n, r0), rows * C, staged.a);
        red.run(k, false, x, nullptr, rows, C, sums.center + n * C, sums.s1 + at, sums.s2 + at);
    });
    // Per group: each channel's blocks added in order, its moments, the channels merged in
    // order (Chan); then the coefficients of every channel of every sample.
    const int64_t lanes = sh.N * C;
    Scratch coef_storage(size_t(3 * lanes) * sizeof(float));
    float* mh = static_cast<float*>(coef_storage.data());
    float *a = mh + lanes, *b = a + lanes;
    config.threads.parallel_for(sh.N * sh.G, [&](int64_t begin, int64_t end) {
        for (int64_t q = begin; q < end; ++q) {
            const int64_t n = q / sh.G, c0 = q % sh.G * sh.Cg;
            double count = 0, mean = 0, m2 = 0;
            for (int64_t c = c0; c < c0 + sh.Cg; ++c) {
                double s1 = 0, s2 = 0;
                for (int64_t blk = 0; blk < sh.blocks(); ++blk) {
                    s1 += sums.s1[sums.at(n, blk) + c];
                    s2 += sums.s2[sums.at(n, blk) + c];
                }
                double mean_c, m2_c;
                moments_from_sums(double(sh.S), s1, s2, double(sums.center[n * C + c]), mean_c, m2_c);
                chan_merge(count, mean, m2, double(sh.S), mean_c, m2_c);
            }
            const GroupStats gs = finish_stats(mean, m2, count, p.epsilon);
            if (save_mean) save_mean[q] = gs.hi;
            if (save_invstd) save_invstd[q] = float(gs.invstd);
            affine_coefs(gs, scale, shift, c0, sh.Cg, mh + n * C + c0, a + n * C + c0, b + n * C + c0);
        }
    });
    const int64_t chunk = std::max<int64_t>(1, kElementwiseValues / C), chunks = (sh.S + chunk - 1) / chunk;
    config.threads.parallel_for(sh.N * chunks, [&](int64_t begin, int64_t end) {
        Staging staged(st, chunk * C);
        for (int64_t item = begin; item < end; ++item) {
            const int64_t n = item / chunks, r0 = item % chunks * chunk, at = rows_at(sh, n, r0);
            const int64_t rows = std::min(chunk, sh.S - r0);
            const float* x = st.read(src, at, rows * C, staged.a);
            float* y = st.write_to(dst, at, staged.a);
            k.affine_lanes(x, y, rows, C, C, mh + n * C, a + n * C, b + n * C);
            st.written(dst, at, rows * C, y);
        }
    });
}

// Column sums of backward: per (n, c) sum(dy) and sum(dy * xhat), added over n in order.
void column_sums(const Shape& sh, const double* s1, const double* s2_xhat, float* diff_scale, float* diff_shift) {
    for (int64_t c = 0; c < sh.C; ++c) {
        double t1 = 0, t2 = 0;
        for (int64_t n = 0; n < sh.N; ++n) {
            t1 += s1[n * sh.C + c];
            t2 += s2_xhat[n * sh.C + c];
        }
        if (diff_shift) diff_shift[c] = float(t1);
        if (diff_scale) diff_scale[c] = float(t2);
    }
}

// Per (n, c): sum(dy) in s1 and sum(dy * xhat) in s2x (xhat = (x - mean) * invstd); per
// group the coefficients of diff_src for its channels: dx = ((dy * w - k1) - (x - mh) * k2) * r.
struct BackwardScratch {
    Scratch storage;
    double *s1, *s2x;
    float *mh, *w, *k1, *k2, *r; // per (n, c)
    explicit BackwardScratch(const Shape& sh)
        : storage(size_t(sh.N * sh.C) * (2 * sizeof(double) + 5 * sizeof(float))),
          s1(static_cast<double*>(storage.data())), s2x(s1 + sh.N * sh.C),
          mh(reinterpret_cast<float*>(s2x + sh.N * sh.C)), w(mh + sh.N * sh.C), k1(w + sh.N * sh.C),
          k2(k1 + sh.N * sh.C), r(k2 + sh.N * sh.C) {}
    RunCoefs coefs(int64_t at) const { return {mh + at, w + at, k1 + at, k2 + at, r + at}; }
};

// Group q's channels [c0, c0 + Cg) of sample n, given each channel's sum(dy) and
// sum(dy * (x - mean)) in d1, d2: the coefficients and the per-channel column terms.
void group_coefs(const Shape& sh, int64_t q, const float* scale, const float* save_mean, const float* save_invstd,
                 const double* d1, const double* d2, BackwardScratch& w) {
    const int64_t n = q / sh.G, c0 = q % sh.G * sh.Cg, at = n * sh.C + c0;
    const double invstd = save_invstd[q], count = double(sh.group_values());
    double g1 = 0, g2 = 0; // sum(g), sum(g * (x - mean)), g = dy * scale, channels in order
    for (int64_t j = 0; j < sh.Cg; ++j) {
        const double sc = scale ? double(scale[c0 + j]) : 1.0;
        g1 += sc * d1[j];
        g2 += sc * d2[j];
        w.s1[at + j] = d1[j];
        w.s2x[at + j] = d2[j] * invstd;
    }
    const float k1 = float(g1 / count), k2 = float(g2 / count * invstd * invstd);
    for (int64_t j = 0; j < sh.Cg; ++j) {
        w.mh[at + j] = save_mean[q];
        w.w[at + j] = scale ? scale[c0 + j] : 1.0f;
        w.k1[at + j] = k1;
        w.k2[at + j] = k2;
        w.r[at + j] = save_invstd[q];
    }
}

void backward_channels_first(const ExecConfig& config, const Shape& sh, const RunKernelTable& k, const Storage& st,
                             const void* src, const void* diff_dst, const float* scale, const float* save_mean,
                             const float* save_invstd, void* diff_src, BackwardScratch& w) {
    const int64_t S = sh.S, L = sh.group_values();
    config.threads.parallel_for(sh.N * sh.G, [&](int64_t begin, int64_t end) {
        std::vector<double> acc1(size_t(16 * sh.Cg)), acc2(acc1.size()), d1(size_t(sh.Cg)), d2(d1.size());
        std::vector<float> mean(size_t(sh.Cg));
        Staging staged(st, L);
        for (int64_t q = begin; q < end; ++q) {
            const int64_t at = q * L;
            const float* x = st.read(src, at, L, staged.a);
            const float* dy = st.read(diff_dst, at, L, staged.b);
            std::fill(mean.begin(), mean.end(), save_mean[q]);
            // Each channel's run of S values: together when a run is at most a piece.
            if (S <= kRunPiece) {
                k.grad_runs(x, dy, nullptr, sh.Cg, S, mean.data(), acc1.data(), acc2.data());
            }
            for (int64_t j = 0; j < sh.Cg; ++j) {
                const PieceSums s = S <= kRunPiece ? checked_grads(k, x + j * S, dy + j * S, nullptr, S, save_mean[q],
                                                                   &acc1[size_t(16 * j)], &acc2[size_t(16 * j)])
                                                   : run_grads(k, x + j * S, dy + j * S, nullptr, S, save_mean[q]);
                d1[size_t(j)] = s.s1;
                d2[size_t(j)] = s.s2;
            }
            group_coefs(sh, q, scale, save_mean, save_invstd, d1.data(), d2.data(), w);
            const int64_t c = q / sh.G * sh.C + q % sh.G * sh.Cg;
            if (!diff_src) continue;
            float* dx = st.write_to(diff_src, at, staged.b); // half precision: over dy's floats
            k.diff_runs(x, dy, dx, sh.Cg, S, w.coefs(c));
            st.written(diff_src, at, L, dx);
        }
    });
}

void backward_channels_last(const ExecConfig& config, const Shape& sh, const RunKernelTable& k, const Storage& st,
                            const void* src, const void* diff_dst, const float* scale, const float* save_mean,
                            const float* save_invstd, void* diff_src, BackwardScratch& w) {
    const int64_t C = sh.C, R = sh.block_rows();
    LaneSums sums(sh);
    for (int64_t n = 0; n < sh.N; ++n)
        for (int64_t c = 0; c < C; ++c) sums.center[n * C + c] = save_mean[n * sh.G + c / sh.Cg];
    for_blocks(config, sh, [&](BlockReduction& red, int64_t n, int64_t blk) {
        const int64_t r0 = blk * R, rows = std::min(R, sh.S - r0), at = sums.at(n, blk), x_at = rows_at(sh, n, r0);
        Staging staged(st, rows * C);
        const float* x = st.read(src, x_at, rows * C, staged.a);
        const float* dy = st.read(diff_dst, x_at, rows * C, staged.b);
        red.run(k, true, x, dy, rows, C, sums.center + n * C, sums.s1 + at, sums.s2 + at);
    });
    config.threads.parallel_for(sh.N * sh.G, [&](int64_t begin, int64_t end) {
        std::vector<double> d1(size_t(sh.Cg)), d2(d1.size());
        for (int64_t q = begin; q < end; ++q) {
            const int64_t n = q / sh.G, c0 = q % sh.G * sh.Cg;
            for (int64_t j = 0; j < sh.Cg; ++j) { // each channel's blocks in order
                double t1 = 0, t2 = 0;
                for (int64_t blk = 0; blk < sh.blocks(); ++blk) {
                    t1 += sums.s1[sums.at(n, blk) + c0 + j];
                    t2 += sums.s2[sums.at(n, blk) + c0 + j];
                }
                d1[size_t(j)] = t1;
                d2[size_t(j)] = t2;
            }
            group_coefs(sh, q, scale, save_mean, save_invstd, d1.data(), d2.data(), w);
        }
    });
    if (!diff_src) return;
    const int64_t chunk = std::max<int64_t>(1, kElementwiseValues / C), chunks = (sh.S + chunk - 1) / chunk;
    config.threads.parallel_for(sh.N * chunks, [&](int64_t begin, int64_t end) {
        Staging staged(st, chunk * C);
        for (int64_t item = begin; item < end; ++item) {
            const int64_t n = item / chunks, r0 = item % chunks * chunk, at = rows_at(sh, n, r0);
            const int64_t rows = std::min(chunk, sh.S - r0);
            const float* x = st.read(src, at, rows * C, staged.a);
            const float* dy = st.read(diff_dst, at, rows * C, staged.b);
            float* dx = st.write_to(diff_src, at, staged.b);
            k.diff_lanes(x, dy, dx, rows, C, C, w.coefs(n * C));
            st.written(diff_src, at, rows * C, dx);
        }
    });
}

// With S == 1 the two layouts are the same memory: both take the channels-first path,
// and so give the same bits.
bool channels_first(const GroupNormProblem& p) { return p.layout == NK_LAYOUT_NCS || p.s == 1; }

} // namespace

void group_norm_forward(const ExecConfig& config, const GroupNormProblem& p, const void* src, void* dst,
                        const float* scale, const float* shift, float* save_mean, float* save_invstd) {
    const Shape sh(p);
    const RunKernelTable& k = run_kernels(config.isa);
    const Storage st(p.dtype, config.isa);
    if (channels_first(p))
        forward_channels_first(config, sh, p, k, st, src, dst, scale, shift, save_mean, save_invstd);
    else
        forward_channels_last(config, sh, p, k, st, src, dst, scale, shift, save_mean, save_invstd);
}

void group_norm_backward(const ExecConfig& config, const GroupNormProblem& p, const void* src,
                         const void* diff_dst, const float* scale, const float* save_mean,
                         const float* save_invstd, void* diff_src, float* diff_scale, float* diff_shift) {
    const Shape sh(p);
    const RunKernelTable& k = run_kernels(config.isa);
    const Storage st(p.dtype, config.isa);
    BackwardScratch w(sh);
    if (channels_first(p))
        backward_channels_first(config, sh, k, st, src, diff_dst, scale, save_mean, save_invstd, diff_src, w);
    else
        backward_channels_last(config, sh, k, st, src, diff_dst, scale, save_mean, save_invstd, diff_src, w);
    if (diff_scale || diff_shift) column_sums(sh, w.s1, w.s2x, diff_scale, diff_shift);
}

} // namespace nk
