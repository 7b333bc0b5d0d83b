// Batch-norm planner: cuts a tensor into a fixed set of work items, runs the
// per-ISA kernels over them in parallel, and merges partial results in a fixed order.
//
// Determinism: the items, the lanes inside an item and the merge order depend only
// on the shape, never on the thread count or the ISA, so every configuration
// produces the same bits.
#include "batch_norm/batch_norm.hpp"

#include "batch_norm/batch_norm_kernel_table.hpp"
#include "core/moments.hpp"
#include "normkit/normkit.h"

#include <algorithm>
#include <cmath>
#include <limits>
#include <vector>

namespace nk {
namespace {

// These constants fix the reduction tree: changing one changes the bits of results.
constexpr int64_t kPiece = 16384;      // channels-first: elements of one channel per item
constexpr int64_t kBlockLanes = 32768; // rows path: lane-values per item (rows x lanes)
constexpr int64_t kTile = 1024;        // rows path: lanes per item
constexpr int64_t kMinLanes = 64;      // rows path: short rows are packed to >= this many lanes

const BatchNormKernelTable& kernels_for(Isa isa) {
    switch (isa) {
    case Isa::avx512: return batch_norm_kernels_avx512();
    case Isa::avx2: return batch_norm_kernels_avx2();
    case Isa::sse4_2: return batch_norm_kernels_sse4_2();
    case Isa::scalar: break;
    }
    return batch_norm_kernels_scalar();
}

// The fixed decomposition of an (N, C, S) tensor.
//
// Seg path (channels-first with S > 1): item = (channel c, piece p); a piece is up to
// kPiece consecutive values of one channel: whole rows of S, or a chunk of one row.
//
// Rows path (channels-last, or S == 1): the tensor is M = N*S rows of C channels.
// With C < kMinLanes, `rep` consecutive rows are read as one row of width = C*rep
// lanes (lane l holds channel l % C). Item = (block b of rows, tile t of lanes).
struct Geometry {
    int64_t N, C, S;
    bool rows_path;
    // seg path
    int64_t chunks_per_row = 1, rows_per_piece = 1, pieces = 0;
    // rows path
    int64_t M = 0, rep = 1, width = 0, tile = 0, tiles = 1, block_rows = 0, blocks = 0;

    explicit Geometry(const BatchNormProblem& p) : N(p.n), C(p.c), S(p.s) {
        rows_path = p.layout == NK_LAYOUT_NSC || S == 1;
        if (!rows_path) {
            if (S > kPiece) {
                chunks_per_row = (S + kPiece - 1) / kPiece;
                pieces = N * chunks_per_row;
            } else {
                rows_per_piece = kPiece / S;
                pieces = (N + rows_per_piece - 1) / rows_per_piece;
            }
            return;
        }
        M = N * S;
        rep = C < kMinLanes ? (kMinLanes + C - 1) / C : 1;
        width = C * rep;
        tile = rep > 1 ? width : std::min(C, kTile);
        tiles = (width + tile - 1) / tile;
        block_rows = rep * std::max<int64_t>(1, kBlockLanes / tile);
        blocks = (M + block_rows - 1) / block_rows;
    }

    // Number of work items, and partial results per channel.
    int64_t items() const { return rows_path ? blocks * tiles : C * pieces; }
    int64_t partials_per_channel() const { return rows_path ? blocks : pieces; }

    // Seg path: calls f(offset, len) for the runs of item = c*pieces + p, in order.
    template <class F>
    void for_each_segment(int64_t item, F&& f) const {
        const int64_t c = item / pieces, p = item % pieces;
        if (S > kPiece) {
            const int64_t n = p / chunks_per_row, k = p % chunks_per_row;
            f((n * C + c) * S + k * kPiece, std::min(kPiece, S - k * kPiece));
            return;
        }
        const int64_t n_end = std::min(N, (p + 1) * rows_per_piece);
        for (int64_t n = p * rows_per_piece; n < n_end; ++n) f((n * C + c) * S, S);
    }

    // Rows path: the part of the tensor item covers.
    struct RowsItem {
        int64_t block;     // b
        int64_t row0;      // first real row
        int64_t rows;      // real rows
        int64_t lane0;     // first lane (index into per-lane coefficient arrays)
        int64_t lanes;     // lanes per full row
        int64_t offset;    // float offset of (row0, lane0)
        int64_t stride;    // floats between lane rows
        int64_t full_rows; // lane rows with all lanes
        int64_t tail;      // lanes of one partial last lane row (rep > 1 only)
    };
    RowsItem rows_item(int64_t item) const {
        RowsItem r;
        r.block = item / tiles;
        const int64_t t = item % tiles;
        r.row0 = r.block * block_rows;
        r.rows = std::min(block_rows, M - r.row0);
        r.lane0 = t * tile;
        r.lanes = std::min(tile, width - r.lane0);
        r.offset = r.row0 * C + r.lane0;
        r.stride = rep > 1 ? width : C;
        r.full_rows = r.rows / rep;
        r.tail = (r.rows % rep) * C;
        return r;
    }
};

// Per-channel coefficients of the element-wise pass; `lanes` entries per array (the
// rows path with rep > 1 repeats the C channels rep times).
struct CoefArrays {
    std::vector<float> mean_hi, mean_lo, a, b, k1, k2;
    explicit CoefArrays(int64_t lanes)
        : mean_hi(lanes), mean_lo(lanes), a(lanes), b(lanes), k1(lanes), k2(lanes) {}
    ElementwiseCoefs at(int64_t i) const {
        return {mean_hi.data() + i, mean_lo.data() + i, a.data() + i,
                b.data() + i,       k1.data() + i,      k2.data() + i};
    }
    void repeat_channels(int64_t C, int64_t lanes) {
        for (std::vector<float>* v : {&mean_hi, &mean_lo, &a, &b, &k1, &k2})
            for (int64_t l = C; l < lanes; ++l) (*v)[l] = (*v)[l % C];
    }
};

int64_t coef_lanes(const Geometry& g) { return g.rows_path ? g.width : g.C; }

// Runs one element-wise kernel over every item. seg(k, off, len, coefs) and
// rows(k, off, rows, lanes, stride, coefs) call the matching kernel.
template <class SegFn, class RowsFn>
void elementwise_pass(const ExecConfig& config, const Geometry& g, const CoefArrays& coefs,
                      SegFn seg, RowsFn rows) {
    config.threads.parallel_for(g.items(), [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
            if (!g.rows_path) {
                const ElementwiseCoefs k = coefs.at(item / g.pieces);
                g.for_each_segment(item, [&](int64_t off, int64_t len) { seg(off, len, k); });
                continue;
            }
            const Geometry::RowsItem r = g.rows_item(item);
            const ElementwiseCoefs k = coefs.at(r.lane0);
            rows(r.offset, r.full_rows, r.lanes, r.stride, k);
            if (r.tail > 0) rows(r.offset + r.full_rows * r.stride, 1, r.tail, r.stride, k);
        }
    });
}

// Partial reductions of every item, one pair of sums per (partial, channel), then
// reduced per channel in partial order. Reduce(item, lanes-or-16 accumulators) fills
// acc1/acc2; the caller turns the folded sums into per-channel results.
//
// kind = statistics: sums of (x - pivot), (x - pivot)^2 -> Moments
// kind = gradient:   sums of dy, dy * (x - mean)
struct ChannelSums {
    double s1 = 0, s2 = 0;
};

// Reduces each item to per-channel sums. For the seg path `center(item)` gives the
// shift (pivot or mean) and seg_kernel accumulates 16 lanes; for the rows path
// `lane_center` fills per-lane shifts. out[partial * C + c] receives the channel's sums
// and the shift used.
struct ItemSums {
    ChannelSums sums;
    double center = 0;
    double count = 0;
};

template <class SegCenter, class SegKernel, class RowsCenter, class RowsKernel>
std::vector<ItemSums> reduce_items(const ExecConfig& config, const Geometry& g,
                                   SegCenter seg_center, SegKernel seg_kernel,
                                   RowsCenter rows_center, RowsKernel rows_kernel) {
    std::vector<ItemSums> out(size_t(g.partials_per_channel() * g.C));
    config.threads.parallel_for(g.items(), [&](int64_t begin, int64_t end) {
        if (!g.rows_path) {
            for (int64_t item = begin; item < end; ++item) {
                double acc1[16] = {}, acc2[16] = {};
                const double center = seg_center(item);
                double count = 0;
                g.for_each_segment(item, [&](int64_t off, int64_t len) {
                    seg_kernel(off, len, center, acc1, acc2);
                    count += double(len);
                });
                ItemSums& o = out[size_t((item % g.pieces) * g.C + item / g.pieces)];
                o.sums = {fold16(acc1), fold16(acc2)};
                o.center = center;
                o.count = count;
            }
            return;
        }
        std::vector<double> center(size_t(g.tile)), acc1(size_t(g.tile)), acc2(size_t(g.tile));
        for (int64_t item = begin; item < end; ++item) {
            const Geometry::RowsItem r = g.rows_item(item);
            std::fill(acc1.begin(), acc1.end(), 0.0);
            std::fill(acc2.begin(), acc2.end(), 0.0);
            for (int64_t j = 0; j < r.lanes; ++j) center[j] = rows_center(r, (r.lane0 + j) % g.C);
            rows_kernel(r.offset, r.full_rows, r.lanes, r.stride, center.data(), acc1.data(),
                        acc2.data());
            if (r.tail > 0)
                rows_kernel(r.offset + r.full_rows * r.stride, 1, r.tail, r.stride,
                            center.data(), acc1.data(), acc2.data());
            // Lanes holding the same channel are added in lane order.
            const int64_t channels = g.rep > 1 ? g.C : r.lanes;
            for (int64_t j = 0; j < channels; ++j) {
                ChannelSums s;
                for (int64_t l = j; l < r.lanes; l += g.C) {
                    s.s1 += acc1[l];
                    s.s2 += acc2[l];
                }
                ItemSums& o = out[size_t(r.block * g.C + r.lane0 + j)];
                o.sums = s;
                o.center = center[j];
                o.count = double(r.rows);
            }
        }
    });
    return out;
}

// Batch statistics of every channel: moments[c].
std::vector<Moments> channel_moments(const ExecConfig& config, const Geometry& g,
                                     const BatchNormKernelTable& k, const float* src) {
    std::vector<ItemSums> parts = reduce_items(
        config, g,
        [&](int64_t item) {
            double pivot = 0;
            bool first = true;
            g.for_each_segment(item, [&](int64_t off, int64_t) {
                if (first) pivot = src[off];
                first = false;
            });
            return pivot;
        },
        [&](int64_t off, int64_t len, double pivot, double* a1, double* a2) {
            k.stats_seg(src + off, len, pivot, a1, a2);
        },
        [&](const Geometry::RowsItem& r, int64_t c) { return double(src[r.row0 * g.C + c]); },
        [&](int64_t off, int64_t rows, int64_t lanes, int64_t stride, const double* pivot,
            double* a1, double* a2) { k.stats_rows(src + off, rows, lanes, stride, pivot, a1, a2); });

    std::vector<Moments> moments(size_t(g.C));
    const int64_t parts_per_channel = g.partials_per_channel();
    config.threads.parallel_for(g.C, [&](int64_t begin, int64_t end) {
        for (int64_t c = begin; c < end; ++c) {
            Moments m;
            for (int64_t p = 0; p < parts_per_channel; ++p) {
                const ItemSums& s = parts[size_t(p * g.C + c)];
                m = merge(m, moments_from_shifted_sums(s.count, s.center, s.sums.s1, s.sums.s2));
            }
            moments[size_t(c)] = m;
        }
    });
    return moments;
}

// Per-channel sums of dy and dy * (x - mean) for the backward pass.
std::vector<ChannelSums> channel_gradient_sums(const ExecConfig& config, const Geometry& g,
                                               const BatchNormKernelTable& k, const float* src,
                                               const float* diff_dst, const float* mean) {
    std::vector<ItemSums> parts = reduce_items(
        config, g, [&](int64_t item) { return double(mean[item / g.pieces]); },
        [&](int64_t off, int64_t len, double mu, double* a1, double* a2) {
            k.grad_seg(src + off, diff_dst + off, len, mu, a1, a2);
        },
        [&](const Geometry::RowsItem&, int64_t c) { return double(mean[c]); },
        [&](int64_t off, int64_t rows, int64_t lanes, int64_t stride, const double* mu, double* a1,
            double* a2) {
            k.grad_rows(src + off, diff_dst + off, rows, lanes, stride, mu, a1, a2);
        });
    std::vector<ChannelSums> sums(size_t(g.C));
    const int64_t parts_per_channel = g.partials_per_channel();
    for (int64_t c = 0; c < g.C; ++c) {
        ChannelSums s;
        for (int64_t p = 0; p < parts_per_channel; ++p) {
            s.s1 += parts[size_t(p * g.C + c)].sums.s1;
            s.s2 += parts[size_t(p * g.C + c)].sums.s2;
        }
        sums[size_t(c)] = s;
    }
    return sums;
}

void normalize(const ExecConfig& config, const Geometry& g, const BatchNormKernelTable& k,
               const CoefArrays& coefs, const float* src, float* dst) {
    elementwise_pass(
        config, g, coefs,
        [&](int64_t off, int64_t len, const ElementwiseCoefs& e) {
            k.normalize_seg(src + off, dst + off, len, e);
        },
        [&](int64_t off, int64_t rows, int64_t lanes, int64_t stride, const ElementwiseCoefs& e) {
            k.normalize_rows(src + off, dst + off, rows, lanes, stride, e);
        });
}

// A mean held as two floats so that (x - hi) - lo keeps the digits a single float
// mean would lose on data with a large common offset.
void split_mean(double mean, float* hi, float* lo) {
    *hi = float(mean);
    *lo = float(mean - double(*hi));
}

double blend(double running, double batch, float momentum, uint32_t flags) {
    const double m = momentum;
    return (flags & NK_BN_KERAS_MOMENTUM) ? m * running + (1 - m) * batch
                                          : (1 - m) * running + m * batch;
}

} // namespace

void batch_norm_forward_training(const ExecConfig& config, const BatchNormProblem& p,
                                 const float* src, float* dst, const float* scale,
                                 const float* shift, float* running_mean, float* running_var,
                                 float* save_mean, float* save_invstd) {
    const Geometry g(p);
    const BatchNormKernelTable& k = kernels_for(config.isa);
    CoefArrays coefs(coef_lanes(g));
    const std::vector<Moments> moments = channel_moments(config, g, k, src);

    const double nan = std::numeric_limits<double>::quiet_NaN();
    for (int64_t c = 0; c < p.c; ++c) {
        const Moments& m = moments[size_t(c)];
        double mean = m.mean, var = m.m2 / m.count;
        if (!std::isfinite(mean) || !std::isfinite(var)) mean = var = nan;
        const double invstd = 1.0 / std::sqrt(var + double(p.epsilon));
        split_mean(mean, &coefs.mean_hi[c], &coefs.mean_lo[c]);
        coefs.a[c] = float((scale ? double(scale[c]) : 1.0) * invstd);
        coefs.b[c] = shift ? shift[c] : 0.0f;
        if (save_mean) save_mean[c] = float(mean);
        if (save_invstd) save_invstd[c] = float(invstd);
        if (running_mean) {
            const double unbiased =
                (p.flags & NK_BN_BIASED_RUNNING_VAR) ? var : var * (m.count / (m.count - 1));
            running_mean[c] = float(blend(running_mean[c], mean, p.momentum, p.flags));
            running_var[c] = float(blend(running_var[c], unbiased, p.momentum, p.flags));
        }
    }
    coefs.repeat_channels(p.c, coef_lanes(g));
    normalize(config, g, k, coefs, src, dst);
}

void batch_norm_forward_inference(const ExecConfig& config, const BatchNormProblem& p,
                                  const float* src, float* dst, const float* scale,
                                  const float* shift, const float* mean, const float* variance) {
    const Geometry g(p);
    CoefArrays coefs(coef_lanes(g));
    for (int64_t c = 0; c < p.c; ++c) {
        const double invstd = 1.0 / std::sqrt(double(variance[c]) + double(p.epsilon));
        coefs.mean_hi[c] = mean[c];
        coefs.mean_lo[c] = 0.0f;
        coefs.a[c] = float((scale ? double(scale[c]) : 1.0) * invstd);
        coefs.b[c] = shift ? shift[c] : 0.0f;
    }
    coefs.repeat_channels(p.c, coef_lanes(g));
    normalize(config, g, kernels_for(config.isa), coefs, src, dst);
}

void batch_norm_backward(const ExecConfig& config, const BatchNormProblem& p, const float* src,
                         const float* diff_dst, const float* scale, const float* save_mean,
                         const float* save_invstd, float* diff_src, float* diff_scale,
                         float* diff_shift) {
    const Geometry g(p);
    const BatchNormKernelTable& k = kernels_for(config.isa);
    const bool global = (p.flags & NK_BN_USE_GLOBAL_STATS) != 0;
    const bool need_sums = diff_scale || diff_shift || (diff_src && !global);
    CoefArrays coefs(coef_lanes(g));
    std::vector<ChannelSums> sums;
    if (need_sums) sums = channel_gradient_sums(config, g, k, src, diff_dst, save_mean);

    const double count = double(p.n) * double(p.s);
    for (int64_t c = 0; c < p.c; ++c) {
        const double invstd = save_invstd[c];
        const double gamma = scale ? double(scale[c]) : 1.0;
        coefs.mean_hi[c] = save_mean[c];
        coefs.mean_lo[c] = 0.0f;
        coefs.a[c] = float(gamma * invstd);
        if (need_sums) {
            const ChannelSums& s = sums[size_t(c)];
            if (diff_shift) diff_shift[c] = float(s.s1);
            if (diff_scale) diff_scale[c] = float(s.s2 * invstd);
            coefs.k1[c] = float(s.s1 / count);
            coefs.k2[c] = float(s.s2 / count * invstd * invstd);
        }
    }
    if (!diff_src) return;
    coefs.repeat_channels(p.c, coef_lanes(g));
    if (global) {
        elementwise_pass(
            config, g, coefs,
            [&](int64_t off, int64_t len, const ElementwiseCoefs& e) {
                k.scale_seg(diff_dst + off, diff_src + off, len, e);
            },
            [&](int64_t off, int64_t rows, int64_t lanes, int64_t stride, const ElementwiseCoefs& e) {
                k.scale_rows(diff_dst + off, diff_src + off, rows, lanes, stride, e);
            });
        return;
    }
    elementwise_pass(
        config, g, coefs,
        [&](int64_t off, int64_t len, const ElementwiseCoefs& e) {
            k.diff_src_seg(src + off, diff_dst + off, diff_src + off, len, e);
        },
        [&](int64_t off, int64_t rows, int64_t lanes, int64_t stride, const ElementwiseCoefs& e) {
            k.diff_src_rows(src + off, diff_dst + off, diff_src + off, rows, lanes, stride, e);
        });
}

} // namespace nk
