// Batch-norm planner: cuts a tensor into a fixed set of work items, runs the
// per-ISA kernels over them in parallel, and merges partial results in a fixed order.
//
// Determinism: the items, the lanes inside an item and the merge order depend only
// on the shape, never on the thread count or the ISA, so every configuration
// produces the same bits.
#include "batch_norm/batch_norm.hpp"

#include "batch_norm/batch_norm_kernel_table.hpp"
#include "core/caches.hpp"
#include "core/moments.hpp"
#include "core/scratch.hpp"
#include "normkit/normkit.h"

#include <algorithm>
#include <cstdlib>
#include <cstring>
#include <numeric>
#include <vector>

namespace nk {
namespace {

// These constants fix the reduction tree: changing one changes the bits of results.
constexpr int64_t kPiece = 16384;      // channels-first: values of one channel per piece
// Rows-path blocks: 524288 lane-values rather than 131072 (fewer items' fixed costs:
// pivots, sums copied out, merges) ran rows-path training and backward 1.02-1.14x (A/B);
// rounding several blocks up to a multiple of 4 keeps 2 or 4 threads
// equally loaded (3 blocks of channels-last C = 3 ran 0.87-0.89x on 2 threads).
constexpr int64_t kBlockLanes = 524288; // rows path: lane-values per item (rows x lanes)
constexpr int64_t kBlockSplit = 4;      // rows path: several blocks come in a multiple of this
constexpr int64_t kTile = 1024;        // rows path: lanes per item
constexpr int64_t kMinLanes = 64;      // rows path: short rows are packed to >= this many lanes

const BatchNormKernelTable& kernels_for(Isa isa) {
    static const BatchNormKernelTable& (*const getters[kIsaCount])() = {
        batch_norm_kernels_scalar, batch_norm_kernels_sse4_2, batch_norm_kernels_avx2, batch_norm_kernels_avx512};
    return nk::kernels_for(isa, getters);
}

// Bytes of one channel that a core can keep in cache between the statistics pass
// and the element-wise pass (half its L2). Only the schedule depends on it, never a result.
int64_t fuse_budget_bytes() { return cache_bytes(2, int64_t(1) << 20) / 2; }

// Bytes of the channels-first groups that go through both passes together (at least one
// channel): the block that a plain two-pass loop reads once from the L3 and once more
// from the L2 ran at 96-98% of the roofline in blocks of 64-256 KB and at 89% in blocks
// of 1 MB (half this machine's L2), which was this budget before: resnet_c64_56 and
// resnet_c512_28 training 1.1x, backward 1.1-1.25x (A/B, one process).
constexpr int64_t kGroupBytes = int64_t(128) << 10;

int64_t round_up(int64_t x, int64_t m) { return (x + m - 1) / m * m; }

// Schedules only (never results): n units in parts of at most `max_part`, as many parts
// as a multiple of the threads that run them (a thread's contiguous share of the parts
// is then as large as another's). Part i is [cut(i), cut(i + 1)), cut at
// multiples of `align` (but the end), so parts differ by at most `align` units.
struct EvenParts {
    int64_t n, parts, align;
    EvenParts(int64_t n_, int64_t max_part, int64_t threads, int64_t align_ = 1)
        : n(n_), parts(round_up((n_ + max_part - 1) / max_part, std::max<int64_t>(1, threads))), align(align_) {}
    int64_t cut(int64_t i) const { return std::min(n, align * (i * ((n + align - 1) / align) / parts)); }
};

// `rows` runs of `len` floats, `stride` apart, starting at `offset`.
struct Run {
    int64_t offset, rows, len, stride;
};

// The fixed decomposition of an (N, C, S) tensor.
//
// Seg path (channels-first with S > 1): piece p of channel c is up to kPiece
// consecutive values of the channel: whole rows of S, or a chunk of one row.
//
// Rows path (channels-last, or S == 1): the tensor is M = N*S rows of C channels.
// With C < kMinLanes, `rep` consecutive rows are read as one row of width = C*rep lanes
// (lane l holds channel l % C; width a multiple of 16). Item = (block of rows, tile of lanes).
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
        if (C < kMinLanes) {
            const int64_t align = 16 / std::gcd<int64_t>(C, 16); // makes C*rep a multiple of 16
            rep = round_up((kMinLanes + C - 1) / C, align);
        }
        width = C * rep;
        tile = rep > 1 ? width : std::min(C, kTile);
        tiles = (width + tile - 1) / tile;
        // Blocks of at most kBlockLanes lane-values, all about the same size, one or a
        // multiple of kBlockSplit of them (so that 2 or 4 threads get equal shares). The
        // count k (a multiple of kBlockSplit) stays k after block_rows is rounded up to
        // `rep` while a block holds more than k - 1 units of rep rows; the smallest
        // tensors where it does not have about 2.7e8 values (1 GB; C = 1023 with 260097
        // rows: 512 blocks become 511).
        const int64_t max_rows = rep * std::max<int64_t>(1, kBlockLanes / tile);
        blocks = (M + max_rows - 1) / max_rows;
        if (blocks > 1) blocks = round_up(blocks, kBlockSplit);
        block_rows = blocks > 0 ? round_up((M + blocks - 1) / blocks, rep) : max_rows;
        blocks = (M + block_rows - 1) / block_rows;
    }

    int64_t items() const { return rows_path ? blocks * tiles : C * pieces; }
    // Values of every channel in partial p (a piece, or a rows block).
    int64_t partial_count(int64_t p) const {
        if (rows_path) return std::min(block_rows, M - p * block_rows);
        const Run r = piece(0, p);
        return r.rows * r.len;
    }
    int64_t partials_per_channel() const { return rows_path ? blocks : pieces; }
    int64_t lanes() const { return rows_path ? width : C; }

    Run piece(int64_t c, int64_t p) const {
        if (S > kPiece) {
            const int64_t n = p / chunks_per_row, k = p % chunks_per_row;
            return {(n * C + c) * S + k * kPiece, 1, std::min(kPiece, S - k * kPiece), S};
        }
        const int64_t n0 = p * rows_per_piece;
        return {(n0 * C + c) * S, std::min(rows_per_piece, N - n0), S, C * S};
    }

    // Rows path: the part of the tensor an item covers.
    struct RowsItem {
        int64_t block;    // b
        int64_t row0;     // first real row
        int64_t rows;     // real rows
        int64_t lane0;    // first lane (index into per-lane arrays)
        Run full;         // lane rows with all `full.len` lanes
        Run tail;         // one partial last lane row (rep > 1 only), tail.rows = 0 if none
    };
    RowsItem rows_item(int64_t item) const {
        const int64_t lane0 = item % tiles * tile;
        return rows_lanes(item / tiles, lane0, std::min(tile, width - lane0));
    }
    // Block b, lanes [lane0, lane0 + lanes): a lane's sums do not depend on which other
    // lanes share its call, so any lane range of a block gives the bits of its tile's item.
    RowsItem rows_lanes(int64_t b, int64_t lane0, int64_t lanes) const {
        RowsItem r;
        r.block = b;
        r.row0 = r.block * block_rows;
        r.rows = std::min(block_rows, M - r.row0);
        r.lane0 = lane0;
        const int64_t stride = rep > 1 ? width : C;
        const int64_t offset = r.row0 * C + r.lane0;
        r.full = {offset, r.rows / rep, lanes, stride};
        const int64_t tail = (r.rows % rep) * C;
        r.tail = {offset + r.full.rows * stride, tail > 0 ? 1 : 0, tail, stride};
        return r;
    }
};

// Bytes of the `tensors` tensors of g's shape.
double tensor_bytes(const Geometry& g, int64_t tensors) {
    return double(g.N) * double(g.C) * double(g.S) * double(tensors) * sizeof(float);
}
// Bytes of one channel of each of the `tensors` tensors (channels-first).
double channel_bytes(const Geometry& g, int64_t tensors) {
    return double(g.N) * double(g.S) * double(tensors) * sizeof(float);
}
// The L3 that one call's tensors can count on: the reported size, at most kL3Cap. A
// virtual machine reports its host socket's L3, which other tenants share: on a 2-core
// slice of a 480 MiB L3 the roofline kept its L3 speed up to a 64 MiB footprint and lost
// it by 128 MiB, and streaming the output paid at 103 MB (resnet_c256_56 training,
// 1.1-1.35x) but not at 51-77 MB (resnet_c512_28: 0.94-1.06x).
// (Tuned on that machine: a machine with more L3 of its own streams earlier than it
// needs to; NK_STREAM_STORES=never overrides.)
constexpr int64_t kL3Cap = int64_t(96) << 20;
int64_t l3_bytes() { return std::min(cache_bytes(3, int64_t(32) << 20), kL3Cap); }
// How much of the L3 one thread's tensors can fill and still stay there: 7/8 of it (a
// 32 MiB footprint on one thread does not stay in a 32 MiB L3, 24.5 MiB does; see
// stream_outputs).
double l3_keep_bytes() { return 0.875 * double(l3_bytes()); }

// The schedules of training and backward (`tensors` inputs, each read twice), all of
// the same bits: only the order of the work differs.
//   fused_groups    channels-first: a task takes a group of channels through the
//                   reduction, its epilogue and the element-wise pass while the group
//                   stays in its core's cache (fused_groups below).
//   fused_lanes     channels-last and NC: the same with a group of lanes (channels) down
//                   every row (fused_lane_groups).
//   split_channels  channels-first: one channel at a time, each thread reducing and then
//                   normalizing its share of the channel from its own L2.
//   two_passes      the reduction over the whole tensor, then the element-wise pass.
enum class Plan { fused_groups, fused_lanes, split_channels, two_passes };

struct Choice {
    Plan plan;
    int64_t width = 0; // channels per group (fused_groups), lanes per group (fused_lanes)
};

// Channels-first groups: as many channels as kGroupBytes holds, at least one, and
// enough that a group's run in one batch row spans kMinRunBytes (channels of a few values
// share their lines with the next channels: a group of one would fetch each line again
// for each of them) while the group fits in half an L2; at least 8 groups when there are
// channels enough, so that every core has work.
constexpr int64_t kMinRunBytes = 256;
int64_t group_channels(const Geometry& g, int64_t tensors) {
    const int64_t bytes = std::max<int64_t>(1, int64_t(channel_bytes(g, tensors)));
    const int64_t run_bytes = g.S * int64_t(sizeof(float));
    const int64_t for_runs = std::min((kMinRunBytes + run_bytes - 1) / run_bytes, fuse_budget_bytes() / bytes);
    const int64_t width = std::max({int64_t(1), kGroupBytes / bytes, for_runs});
    return std::min(width, std::max<int64_t>(1, g.C / 8));
}

// Channels-first:
// - fused_groups when a channel fits in half an L2. (On a 32 MiB-L3 machine one thread
//   ran tensors filling a third of the L3 or more faster in two passes; on this 2 MiB-L2
//   one the fused schedule is faster at every size: resnet_c512_28 training 1.2x,
//   backward 1.25x.)
// - split_channels when each thread's share of a channel fits in its L2 and the channel's
//   runs are kMinRunBytes or longer (img_c3_224, 1.6 MB channels: training 1.1x on one
//   thread and 1.3x on two, backward 1.15x on two, A/B).
// - two_passes otherwise.
// Channels-last and NC: fused_lanes when kMinLanes lanes of every row fit in half an L2,
// rows are at most a page apart and each thread's share of the inputs fits in its L2;
// two_passes otherwise. A group walks down rows a row apart, which the L3 serves slowly:
// mlp_n4096_c1024 training (16 MB, 4 KB rows) ran 1.1-1.15x faster in two passes, where
// mlp_n256_c784 (0.8 MB) ran 1.15x faster fused on two threads. A group is one register tile
// (kMinLanes): the narrow kernels keep the tile's coefficients in registers, and many
// small tasks balance the threads (128-lane groups were 6-16% slower on mlp_n256_c784,
// 16- and 32-lane ones 0.5-0.8x on every shape where they fit). Rows more than a page
// apart put each row of a group on pages of its own, and walking the group down them
// cost more than the cache saved (resnet_c2048_7 channels-last, 8 KB rows: 0.75x).
// Packed rows (rep > 1, lanes that are not channels) always take two_passes.
Choice choose(const ExecConfig& config, const Geometry& g, int64_t tensors) {
    const bool lanes_ok = g.rows_path && g.rep == 1;
    switch (config.schedule) {
    case Schedule::fused:
        if (!g.rows_path) return {Plan::fused_groups, group_channels(g, tensors)};
        return lanes_ok ? Choice{Plan::fused_lanes, kMinLanes} : Choice{Plan::two_passes};
    case Schedule::split: return {g.rows_path ? Plan::two_passes : Plan::split_channels};
    case Schedule::two_passes: return {Plan::two_passes};
    case Schedule::automatic: break;
    }
    const double l2 = double(cache_bytes(2, int64_t(1) << 20));
    if (!g.rows_path) {
        const double bytes = channel_bytes(g, tensors);
        const int64_t threads = config.threads.concurrency();
        if (bytes <= double(fuse_budget_bytes())) return {Plan::fused_groups, group_channels(g, tensors)};
        // A channel alone is runs of S values: the split needs runs of whole lines.
        const bool long_runs = g.S * int64_t(sizeof(float)) >= kMinRunBytes;
        if (long_runs && g.pieces >= threads && bytes <= double(threads) * l2) return {Plan::split_channels};
        return {Plan::two_passes};
    }
    const double group_bytes = double(kMinLanes) * double(tensors) * double(g.M) * sizeof(float);
    const double share = tensor_bytes(g, tensors) / double(config.threads.concurrency());
    if (lanes_ok && g.C * int64_t(sizeof(float)) <= 4096 && group_bytes <= double(fuse_budget_bytes()) && share <= l2)
        return {Plan::fused_lanes, kMinLanes};
    return {Plan::two_passes};
}

// Whether an element-wise pass over `tensors` tensors of g's shape writes its output
// `dst` with non-temporal stores: when the tensors do not stay in the last-level cache,
// ordinary stores would fetch every output line first and evict input that is still to
// be read. They do not stay when they exceed the L3, or when one thread's share passes
// 7/8 of it: a 32 MiB footprint on one thread does not stay in a 32 MiB L3
// (mlp_n4096_c1024 with one thread: inference and training 1.43-1.5x streamed), 24.5 MiB
// does (resnet_c64_56: 0.90-0.96x streamed), and 32 MiB on 2 threads does (streaming it
// fell to 36% of the roofline). The rows path also needs every row of dst to start on a
// register boundary (`row_floats` apart): peeling a partial register off each row costs
// more than streaming gains. NK_STREAM_STORES=always|never overrides (always ignores the
// alignment: tests use it to run the streaming kernels on any tensor). Only the schedule
// depends on it, never a result.
bool stream_outputs(const ExecConfig& config, const Geometry& g, const float* dst, int64_t tensors) {
    enum class Policy { automatic, always, never };
    static const Policy policy = [] {
        const char* env = std::getenv("NK_STREAM_STORES");
        if (env && std::strcmp(env, "always") == 0) return Policy::always;
        if (env && std::strcmp(env, "never") == 0) return Policy::never;
        return Policy::automatic;
    }();
    if (policy != Policy::automatic) return policy == Policy::always;
    const double bytes = tensor_bytes(g, tensors), l3 = double(l3_bytes());
    if (bytes <= l3 && bytes / config.threads.concurrency() <= l3_keep_bytes()) return false;
    if (!g.rows_path) return true;
    const int64_t row_floats = g.rep > 1 ? g.width : g.C;
    return reinterpret_cast<uintptr_t>(dst) % 64 == 0 && row_floats % 16 == 0;
}

// Whether the element-wise kernels of wide rows prefetch their `inputs` tensors of g's
// shape: not when each thread's share fits in its L2, where the prefetches only cost
// (mlp_n256_c784 inference, one thread: 5-7% faster without them); they pay from the L3
// and memory (mlp_n4096_c1024 inference 16% slower without them, wide channels-last
// rows 3-9%). Only the schedule depends on it, never a result.
bool prefetch_inputs(const ExecConfig& config, const Geometry& g, int64_t inputs) {
    return tensor_bytes(g, inputs) / config.threads.concurrency() > double(cache_bytes(2, int64_t(1) << 20));
}

// Per-lane coefficients of the element-wise pass (padded for whole-register reads;
// the rows path with rep > 1 repeats the C channels rep times). Each array starts on a
// 64-byte boundary: the rows kernels load a register of each per register of data,
// and a load split across two cache lines costs as much as two.
struct CoefArrays {
    static constexpr int64_t kAlign = 64 / sizeof(float);
    Scratch storage;
    float *mean_hi, *a, *b, *k1, *k2;
    bool stream = false;  // the pass writes with non-temporal stores
    bool prefetch = true; // wide rows prefetch their inputs (prefetch_inputs)
    bool relu = false;    // the forward's fused ReLU (NK_BN_FUSE_RELU)
    explicit CoefArrays(int64_t lanes) : storage(5 * step(lanes) * sizeof(float)) {
        float* p = static_cast<float*>(storage.data()); // 64-byte aligned
        std::fill(p, p + 5 * step(lanes), 0.0f);
        for (float** v : {&mean_hi, &a, &b, &k1, &k2}) {
            *v = p;
            p += step(lanes);
        }
    }
    static int64_t step(int64_t lanes) { return round_up(lanes + kRowsLanePadding, kAlign); }
    CoefArrays(const CoefArrays&) = delete;
    CoefArrays& operator=(const CoefArrays&) = delete;
    ElementwiseCoefs at(int64_t i) const {
        return {mean_hi + i, a + i, b + i, k1 + i, k2 + i, stream, prefetch, relu};
    }
    void repeat_channels(int64_t C, int64_t lanes) {
        for (float* v : {mean_hi, a, b, k1, k2})
            for (int64_t l = C; l < lanes; ++l) v[l] = v[l % C];
    }
};

// Sums of one piece or of one channel in one rows block, and the shift they are taken from.
struct PartialSums {
    double s1 = 0, s2 = 0, center = 0;
};

// Every partial sum of every channel, laid out for the epilogue kernels
// (ChannelPartials): partial p of channel c at [p * C + c]. Each entry is written once,
// by the task that reduces it, before any epilogue reads it.
class Partials {
public:
    // No storage when not `needed` (backward with nothing to reduce).
    Partials(const Geometry& g, bool needed = true)
        : C_(g.C), P_(needed ? g.partials_per_channel() : 0), storage_(size_t(P_ * C_) * 3 * sizeof(double)),
          s1_(static_cast<double*>(storage_.data())), s2_(s1_ + P_ * C_), center_(s2_ + P_ * C_),
          count_(size_t(P_)) {
        for (int64_t p = 0; p < P_; ++p) count_[size_t(p)] = double(g.partial_count(p));
    }
    void set(int64_t p, int64_t c, const PartialSums& s) {
        const size_t i = size_t(p * C_ + c);
        s1_[i] = s.s1;
        s2_[i] = s.s2;
        center_[i] = s.center;
    }
    // Channels [c0, c0 + n) of partial p from per-lane sums, as set() of sums formed
    // from 0 would store them (0.0 + x: a -0.0 sum becomes +0.0).
    void set_lanes(int64_t p, int64_t c0, int64_t n, const double* s1, const double* s2, const float* center) {
        const size_t i = size_t(p * C_ + c0);
        for (size_t j = 0; j < size_t(n); ++j) {
            s1_[i + j] = 0.0 + s1[j];
            s2_[i + j] = 0.0 + s2[j];
            center_[i + j] = center[j];
        }
    }
    PartialSums get(int64_t p, int64_t c) const {
        const size_t i = size_t(p * C_ + c);
        return {s1_[i], s2_[i], center_[i]};
    }
    ChannelPartials view() const { return {s1_, s2_, center_, count_.data(), P_, C_}; }

private:
    int64_t C_, P_;
    Scratch storage_;
    double *s1_, *s2_, *center_; // not zero-filled: every entry is written
    std::vector<double> count_;
};

// Where the statistics' pivot of a block of runs is read: 4 values spread over it, from
// its start.
struct PivotSpots {
    int64_t at[4];
    explicit PivotSpots(const Run& r) {
        const int64_t count = r.rows * r.len;
        for (int64_t q = 0; q < 4; ++q) {
            const int64_t i = q * count / 4;
            at[q] = i / r.len * r.stride + i % r.len;
        }
    }
};

// The two kinds of per-item reduction, each with its seg and rows kernels in both
// precisions, the pivot they take and the check of their float-term sums (moments.hpp).
struct StatsReduction {
    const BatchNormKernelTable& k;
    const float* src;
    // The pivot: the mean of 4 values spread over the block, at `spots` from its start
    // (near the mean, so that the float terms cancel little), rounded to float.
    float seg_center(const Run& r, const PivotSpots& spots, int64_t) const {
        double sum = 0;
        for (int64_t at : spots.at) sum += src[r.offset + at];
        return float(sum / 4);
    }
    // Rows: the same pivot of each of `lanes` channels from lane0 on, 4 rows of the block.
    void rows_centers(int64_t row0, int64_t rows, int64_t C, int64_t lane0, int64_t lanes, float* center) const {
        k.rows_pivots(src + row0 * C + lane0, C, rows, lanes, center);
    }
    void seg(const Run& r, float center, double* a1, double* a2, bool dbl) const {
        (dbl ? k.stats_seg_double : k.stats_seg)(src + r.offset, r.rows, r.len, r.stride, center, a1, a2);
    }
    void rows(const Run& r, const float* center, double* a1, double* a2, bool dbl) const {
        (dbl ? k.stats_rows_double : k.stats_rows)(src + r.offset, r.rows, r.len, r.stride, center, a1, a2);
    }
    void runs(int64_t offset, int64_t runs, int64_t len, const float* center, double* a1, double* a2) const {
        k.stats_runs(src + offset, runs, len, center, a1, a2);
    }
    static bool trusted(double count, double s1, double s2) { return stats_sums_trusted(count, s1, s2); }
    bool all_trusted(double count, const double* s1, const double* s2, int64_t lanes) const {
        return k.stats_rows_trusted(count, s1, s2, lanes);
    }
};

// p + offset, or null for an absent tensor.
const float* at(const float* p, int64_t offset) { return p ? p + offset : nullptr; }
float* at(float* p, int64_t offset) { return p ? p + offset : nullptr; }

struct GradReduction {
    const BatchNormKernelTable& k;
    const float* src;
    const float* diff_dst;
    const float* mask; // the fused ReLU's dst, or null
    const float* mean;
    float seg_center(const Run&, const PivotSpots&, int64_t c) const { return mean[c]; }
    void rows_centers(int64_t, int64_t, int64_t, int64_t lane0, int64_t lanes, float* center) const {
        std::copy(mean + lane0, mean + lane0 + lanes, center);
    }
    void seg(const Run& r, float center, double* a1, double* a2, bool dbl) const {
        (dbl ? k.grad_seg_double : k.grad_seg)(src + r.offset, diff_dst + r.offset, at(mask, r.offset), r.rows,
                                               r.len, r.stride, center, a1, a2);
    }
    void rows(const Run& r, const float* center, double* a1, double* a2, bool dbl) const {
        (dbl ? k.grad_rows_double : k.grad_rows)(src + r.offset, diff_dst + r.offset, at(mask, r.offset), r.rows,
                                                 r.len, r.stride, center, a1, a2);
    }
    void runs(int64_t offset, int64_t runs, int64_t len, const float* center, double* a1, double* a2) const {
        k.grad_runs(src + offset, diff_dst + offset, at(mask, offset), runs, len, center, a1, a2);
    }
    static bool trusted(double count, double s1, double s2) { return grad_sums_trusted(count, s1, s2); }
    bool all_trusted(double count, const double* s1, const double* s2, int64_t lanes) const {
        return k.grad_rows_trusted(count, s1, s2, lanes);
    }
};

// One piece's sums: float terms, or double terms when those are not trusted.
template <class Reduction>
PartialSums reduce_piece(const Geometry& g, const Reduction& red, int64_t c, int64_t p) {
    const Run r = g.piece(c, p);
    const double count = double(r.rows * r.len);
    PartialSums s;
    s.center = red.seg_center(r, PivotSpots(r), c);
    for (bool dbl : {false, true}) {
        double acc1[16] = {}, acc2[16] = {};
        red.seg(r, float(s.center), acc1, acc2, dbl);
        s.s1 = fold16(acc1);
        s.s2 = fold16(acc2);
        if (red.trusted(count, s.s1, s.s2)) break;
    }
    return s;
}

// Channels-first with S <= kPiece: pieces (c, p) of channels [c0, c1), visited row by
// row in memory order (for n: one stats_runs / grad_runs call over the group's runs of
// row n), each with its own 16 lanes. A lane still sees its values in row order, so the
// sums equal reduce_piece's, bit for bit.
struct GroupScratch {
    std::vector<double> acc1, acc2;
    std::vector<float> center;
    explicit GroupScratch(int64_t channels)
        : acc1(size_t(16 * channels)), acc2(size_t(16 * channels)), center(size_t(channels)) {}
};

template <class Reduction>
void reduce_piece_group(const Geometry& g, const Reduction& red, int64_t p, int64_t c0, int64_t c1,
                        GroupScratch& w, Partials& out) {
    const int64_t n0 = p * g.rows_per_piece, n1 = std::min(g.N, n0 + g.rows_per_piece);
    std::fill(w.acc1.begin(), w.acc1.end(), 0.0);
    std::fill(w.acc2.begin(), w.acc2.end(), 0.0);
    const PivotSpots spots(g.piece(c0, p)); // every channel's piece has the same runs
    for (int64_t c = c0; c < c1; ++c) w.center[size_t(c - c0)] = red.seg_center(g.piece(c, p), spots, c);
    for (int64_t n = n0; n < n1; ++n)
        red.runs((n * g.C + c0) * g.S, c1 - c0, g.S, w.center.data(), w.acc1.data(), w.acc2.data());
    const double count = double((n1 - n0) * g.S);
    for (int64_t c = c0; c < c1; ++c) {
        const size_t j = size_t(c - c0);
        PartialSums s{fold16(&w.acc1[16 * j]), fold16(&w.acc2[16 * j]), w.center[j]};
        if (!red.trusted(count, s.s1, s.s2)) {
            double acc1[16] = {}, acc2[16] = {};
            red.seg(g.piece(c, p), w.center[j], acc1, acc2, true);
            s.s1 = fold16(acc1);
            s.s2 = fold16(acc2);
        }
        out.set(p, c, s);
    }
}

// The pieces of channels [c0, c1), with reduce_all's sums.
template <class Reduction>
void reduce_channels(const Geometry& g, const Reduction& red, int64_t c0, int64_t c1, GroupScratch& w,
                     Partials& out) {
    if (g.S > kPiece) {
        for (int64_t c = c0; c < c1; ++c)
            for (int64_t p = 0; p < g.pieces; ++p) out.set(p, c, reduce_piece(g, red, c, p));
        return;
    }
    for (int64_t p = 0; p < g.pieces; ++p) reduce_piece_group(g, red, p, c0, c1, w, out);
}

// Per-range scratch of the rows reductions.
struct RowsScratch {
    std::vector<float> center;
    std::vector<double> acc1, acc2;
    explicit RowsScratch(int64_t tile)
        : center(size_t(tile + kRowsLanePadding)), acc1(center.size()), acc2(center.size()) {}
};

// Reduces one rows item into partial r.block of its channels.
template <class Reduction>
void reduce_rows_item(const Geometry& g, const Reduction& red, const Geometry::RowsItem& r, RowsScratch& w,
                      Partials& out) {
    // Lane j holds channel (lane0 + j) % C: lane0 is 0 when rep > 1, and lanes < C otherwise.
    const int64_t channels = g.rep > 1 ? g.C : r.full.len;
    const double count = double(r.rows);
    red.rows_centers(r.row0, r.rows, g.C, r.lane0, channels, w.center.data());
    for (int64_t j = channels; j < r.full.len; ++j) w.center[size_t(j)] = w.center[size_t(j - channels)];
    std::fill(w.center.begin() + r.full.len, w.center.end(), 0.0f); // padding lanes
    // Float terms for every lane; double terms again for the whole item when a channel's
    // sums are not trusted, but kept only for such channels (a channel's sums depend on
    // its own data alone).
    bool redo = false;
    for (bool dbl : {false, true}) {
        std::fill(w.acc1.begin(), w.acc1.end(), 0.0);
        std::fill(w.acc2.begin(), w.acc2.end(), 0.0);
        red.rows(r.full, w.center.data(), w.acc1.data(), w.acc2.data(), dbl);
        if (r.tail.rows > 0) red.rows(r.tail, w.center.data(), w.acc1.data(), w.acc2.data(), dbl);
        // One lane per channel, all trusted (the usual case): the lanes are the sums.
        if (!dbl && g.rep == 1 && red.all_trusted(count, w.acc1.data(), w.acc2.data(), channels)) {
            out.set_lanes(r.block, r.lane0, channels, w.acc1.data(), w.acc2.data(), w.center.data());
            return;
        }
        for (int64_t j = 0; j < channels; ++j) {
            const int64_t c = r.lane0 + j;
            if (dbl) {
                const PartialSums f = out.get(r.block, c);
                if (red.trusted(count, f.s1, f.s2)) continue;
            }
            PartialSums s;
            for (int64_t l = j; l < r.full.len; l += g.C) { // lanes of one channel, in lane order
                s.s1 += w.acc1[l];
                s.s2 += w.acc2[l];
            }
            s.center = w.center[j];
            out.set(r.block, c, s);
            redo = redo || !red.trusted(count, s.s1, s.s2);
        }
        if (!redo) break;
    }
}

// Every partial of every channel, into parts.
template <class Reduction>
void reduce_all(const ExecConfig& config, const Geometry& g, const Reduction& red, Partials& parts) {
    if (!g.rows_path && g.S <= kPiece) {
        // Items: (piece p, group of channels), groups wide enough to stream.
        const int64_t group = std::min(g.C, std::max<int64_t>(1, 4096 / g.S));
        const int64_t groups = (g.C + group - 1) / group;
        config.threads.parallel_for(g.pieces * groups, [&](int64_t begin, int64_t end) {
            GroupScratch w(group);
            for (int64_t item = begin; item < end; ++item) {
                const int64_t p = item / groups, c0 = (item % groups) * group;
                reduce_piece_group(g, red, p, c0, std::min(g.C, c0 + group), w, parts);
            }
        });
        return;
    }
    config.threads.parallel_for(g.items(), [&](int64_t begin, int64_t end) {
        if (!g.rows_path) {
            for (int64_t item = begin; item < end; ++item) {
                const int64_t c = item / g.pieces, p = item % g.pieces;
                parts.set(p, c, reduce_piece(g, red, c, p));
            }
            return;
        }
        RowsScratch w(g.tile);
        for (int64_t item = begin; item < end; ++item) reduce_rows_item(g, red, g.rows_item(item), w, parts);
    });
}

// Runs an element-wise kernel over channels [c0, c1) (seg path), in memory order.
template <class SegFn>
void elementwise_channels(const Geometry& g, const CoefArrays& coefs, int64_t c0, int64_t c1, SegFn seg) {
    for (int64_t n = 0; n < g.N; ++n) seg(Run{(n * g.C + c0) * g.S, c1 - c0, g.S, g.S}, coefs.at(c0), 1);
}

// Runs an element-wise kernel over the whole tensor.
template <class SegFn, class RowsFn>
void elementwise_all(const ExecConfig& config, const Geometry& g, const CoefArrays& coefs, SegFn seg,
                     RowsFn rows) {
    if (!g.rows_path) {
        // Runs of S in memory order; items of about kPiece values.
        const int64_t chunks = (g.S + kPiece - 1) / kPiece, runs_per_item = std::max<int64_t>(1, kPiece / g.S);
        const int64_t runs = g.N * g.C, items = chunks > 1 ? runs * chunks : (runs + runs_per_item - 1) / runs_per_item;
        config.threads.parallel_for(items, [&](int64_t begin, int64_t end) {
            for (int64_t item = begin; item < end; ++item) {
                if (chunks > 1) {
                    const int64_t q = item / chunks, k = item % chunks;
                    seg(Run{q * g.S + k * kPiece, 1, std::min(kPiece, g.S - k * kPiece), g.S}, coefs.at(q % g.C), 0);
                    continue;
                }
                // Consecutive runs are consecutive channels, up to the end of a batch row.
                const int64_t q1 = std::min(runs, (item + 1) * runs_per_item);
                for (int64_t q = item * runs_per_item; q < q1;) {
                    const int64_t c = q % g.C, count = std::min(q1 - q, g.C - c);
                    seg(Run{q * g.S, count, g.S, g.S}, coefs.at(c), 1);
                    q += count;
                }
            }
        });
        return;
    }
    // Rows: items of about kPiece values (whole lane rows, one tile), finer than the
    // reduction blocks so that every thread gets an even share; element-wise results do
    // not depend on the items.
    const int64_t stride = g.rep > 1 ? g.width : g.C;
    const int64_t lane_rows = g.M * g.C / stride;
    const int64_t tail = g.M * g.C - lane_rows * stride; // a last, partial lane row (rep > 1)
    const EvenParts chunks(std::max<int64_t>(1, lane_rows), std::max<int64_t>(1, kPiece / g.tile),
                           config.threads.concurrency() / std::min<int64_t>(g.tiles, config.threads.concurrency()));
    config.threads.parallel_for(chunks.parts * g.tiles, [&](int64_t begin, int64_t end) {
        for (int64_t item = begin; item < end; ++item) {
            const int64_t q = item / g.tiles, lane0 = (item % g.tiles) * g.tile;
            const int64_t r0 = std::min(lane_rows, chunks.cut(q)), r1 = std::min(lane_rows, chunks.cut(q + 1));
            const ElementwiseCoefs k = coefs.at(lane0);
            if (r1 > r0) rows(Run{r0 * stride + lane0, r1 - r0, std::min(g.tile, g.width - lane0), stride}, k);
            if (q == chunks.parts - 1 && tail > 0) rows(Run{lane_rows * stride, 1, tail, stride}, k);
        }
    });
}

// Channels-first schedule that keeps data in cache: each task takes a group of channels
// through the reduction of all its pieces into `parts` (when `red` is given),
// finish(c0, c1) for the group, then the element-wise pass (when `seg` is given). Pieces
// and their merge order are those of reduce_all: only the schedule differs.
template <class Reduction, class Finish, class SegFn>
void fused_groups(const ExecConfig& config, const Geometry& g, int64_t group, const Reduction* red,
                  Partials& parts, Finish finish, const CoefArrays& coefs, const SegFn* seg) {
    const EvenParts groups(g.C, group, config.threads.concurrency());
    config.threads.parallel_for(groups.parts, [&](int64_t begin, int64_t end) {
        GroupScratch w(group);
        for (int64_t i = begin; i < end; ++i) {
            const int64_t c0 = groups.cut(i), c1 = groups.cut(i + 1);
            if (c0 == c1) continue;
            if (red) reduce_channels(g, *red, c0, c1, w, parts);
            finish(c0, c1);
            if (seg) elementwise_channels(g, coefs, c0, c1, *seg);
        }
    });
}

// Channels-first channels larger than half an L2 (see choose): one channel at a
// time, its pieces cut into a contiguous share per thread. Each thread reduces its
// share; after the channel's finish(c, c + 1) it puts the same share through the
// element-wise pass, which reads it from that core's L2 (the static partitioner hands
// item t to the same arena slot in both loops). Pieces and merge order are reduce_all's.
template <class Reduction, class Finish, class SegFn>
void split_channels(const ExecConfig& config, const Geometry& g, const Reduction* red, Partials& parts,
                    Finish finish, const CoefArrays& coefs, const SegFn* seg) {
    const int64_t threads = config.threads.concurrency();
    const EvenParts shares(g.pieces, (g.pieces + threads - 1) / threads, threads);
    for (int64_t c = 0; c < g.C; ++c) {
        if (red)
            config.threads.parallel_for(shares.parts, [&](int64_t begin, int64_t end) {
                for (int64_t p = shares.cut(begin); p < shares.cut(end); ++p) parts.set(p, c, reduce_piece(g, *red, c, p));
            });
        finish(c, c + 1);
        if (seg)
            config.threads.parallel_for(shares.parts, [&](int64_t begin, int64_t end) {
                for (int64_t p = shares.cut(begin); p < shares.cut(end); ++p) (*seg)(g.piece(c, p), coefs.at(c), 0);
            });
    }
}

// The rows-path counterpart of fused_groups: each task takes `lanes` channels through
// the reduction of every row block (when `red` is given), finish(c0, c1) for them, then
// the element-wise pass over all rows (when `rows` is given). The sums are those of
// reduce_all's items (Geometry::rows_lanes), merged in the same order.
template <class Reduction, class Finish, class RowsFn>
void fused_lane_groups(const ExecConfig& config, const Geometry& g, int64_t lanes, const Reduction* red,
                       Partials& parts, Finish finish, const CoefArrays& coefs, const RowsFn* rows) {
    // Groups of whole registers (16 lanes), at most `lanes` wide.
    const EvenParts groups(g.C, lanes, config.threads.concurrency(), 16);
    config.threads.parallel_for(groups.parts, [&](int64_t begin, int64_t end) {
        RowsScratch w(lanes);
        for (int64_t i = begin; i < end; ++i) {
            const int64_t l0 = groups.cut(i), n = groups.cut(i + 1) - l0;
            if (n == 0) continue;
            if (red)
                for (int64_t b = 0; b < g.blocks; ++b) reduce_rows_item(g, *red, g.rows_lanes(b, l0, n), w, parts);
            finish(l0, l0 + n);
            if (!rows) continue;
            // Ordinary stores: streaming would start registers at the output's alignment,
            // and the last register of a row would then read coefficients of the next
            // group, which another task may be writing (groups are whole registers, and
            // the kernels read no register past the row's lanes). (The automatic schedule
            // takes this one for tensors far smaller than the L3.)
            ElementwiseCoefs e = coefs.at(l0);
            e.stream = false;
            (*rows)(Run{l0, g.M, n, g.C}, e);
        }
    });
}

// The forward's element-wise pass over a run: dst = normalized src, plus the residual
// and through the ReLU when fused.
struct NormalizePass {
    const BatchNormKernelTable& k;
    const float* src;
    const float* residual; // or null
    float* dst;
    void operator()(const Run& r, const ElementwiseCoefs& e, int64_t coef_step) const {
        k.normalize_seg(src + r.offset, at(residual, r.offset), dst + r.offset, r.rows, r.len, r.stride, e, coef_step);
    }
    void operator()(const Run& r, const ElementwiseCoefs& e) const {
        k.normalize_rows(src + r.offset, at(residual, r.offset), dst + r.offset, r.rows, r.len, r.stride, e);
    }
};

// The backward's element-wise pass over a run: diff_src (diff_dst scaled when the
// statistics are frozen), the ReLU's mask applied and diff_residual written when fused.
struct DiffSrcPass {
    const BatchNormKernelTable& k;
    bool global; // NK_BN_USE_GLOBAL_STATS
    const float* src;
    const float* diff_dst;
    const float* mask; // or null
    float* diff_src;
    float* diff_residual; // or null
    void operator()(const Run& r, const ElementwiseCoefs& e, int64_t coef_step) const {
        const int64_t o = r.offset;
        if (global)
            k.scale_seg(diff_dst + o, at(mask, o), diff_src + o, at(diff_residual, o), r.rows, r.len, r.stride, e,
                        coef_step);
        else
            k.diff_src_seg(src + o, diff_dst + o, at(mask, o), diff_src + o, at(diff_residual, o), r.rows, r.len,
                           r.stride, e, coef_step);
    }
    void operator()(const Run& r, const ElementwiseCoefs& e) const {
        const int64_t o = r.offset;
        if (global)
            k.scale_rows(diff_dst + o, at(mask, o), diff_src + o, at(diff_residual, o), r.rows, r.len, r.stride, e);
        else
            k.diff_src_rows(src + o, diff_dst + o, at(mask, o), diff_src + o, at(diff_residual, o), r.rows, r.len,
                            r.stride, e);
    }
};

// Calls f(c0, c1) over all channels in chunks, in parallel when there are many: each
// channel's epilogue is independent of the others.
template <class F>
void for_channels(const ExecConfig& config, int64_t C, F f) {
    constexpr int64_t kChunk = 512;
    config.threads.parallel_for((C + kChunk - 1) / kChunk, [&](int64_t begin, int64_t end) {
        f(begin * kChunk, std::min(C, end * kChunk));
    });
}

} // namespace

void batch_norm_forward_training(const ExecConfig& config, const BatchNormProblem& p,
                                 const float* src, const float* residual, float* dst, const float* scale,
                                 const float* shift, float* running_mean, float* running_var,
                                 float* save_mean, float* save_invstd) {
    const Geometry g(p);
    const BatchNormKernelTable& k = kernels_for(config.isa);
    const StatsReduction red{k, src};
    Partials parts(g);
    CoefArrays coefs(g.lanes());
    const int64_t inputs = residual ? 2 : 1;
    coefs.stream = stream_outputs(config, g, dst, inputs + 1);
    coefs.prefetch = prefetch_inputs(config, g, inputs);
    coefs.relu = (p.flags & NK_BN_FUSE_RELU) != 0;
    const TrainingEpilogue epilogue{parts.view(), p.epsilon,    p.momentum,  p.flags,      scale,
                                    shift,        running_mean, running_var, save_mean,    save_invstd,
                                    coefs.mean_hi, coefs.a,   coefs.b};
    auto finish = [&](int64_t c0, int64_t c1) { k.training_epilogue(epilogue, c0, c1); };
    const NormalizePass normalize_run{k, src, residual, dst};
    const NormalizePass& normalize_rows = normalize_run;

    const Choice choice = choose(config, g, 1);
    switch (choice.plan) {
    case Plan::fused_groups:
        fused_groups(config, g, choice.width, &red, parts, finish, coefs, &normalize_run);
        return;
    case Plan::fused_lanes:
        fused_lane_groups(config, g, choice.width, &red, parts, finish, coefs, &normalize_rows);
        return;
    case Plan::split_channels: split_channels(config, g, &red, parts, finish, coefs, &normalize_run); return;
    case Plan::two_passes: break;
    }
    reduce_all(config, g, red, parts);
    for_channels(config, p.c, finish);
    coefs.repeat_channels(p.c, g.lanes());
    elementwise_all(config, g, coefs, normalize_run, normalize_rows);
}

void batch_norm_forward_inference(const ExecConfig& config, const BatchNormProblem& p,
                                  const float* src, const float* residual, float* dst, const float* scale,
                                  const float* shift, const float* mean, const float* variance) {
    const Geometry g(p);
    const BatchNormKernelTable& k = kernels_for(config.isa);
    CoefArrays coefs(g.lanes());
    const int64_t inputs = residual ? 2 : 1;
    coefs.stream = stream_outputs(config, g, dst, inputs + 1);
    coefs.prefetch = prefetch_inputs(config, g, inputs);
    coefs.relu = (p.flags & NK_BN_FUSE_RELU) != 0;
    k.inference_epilogue({p.epsilon, mean, variance, scale, shift, coefs.mean_hi, coefs.a, coefs.b}, 0, p.c);
    coefs.repeat_channels(p.c, g.lanes());
    const NormalizePass pass{k, src, residual, dst};
    elementwise_all(config, g, coefs, pass, pass);
}

void batch_norm_backward(const ExecConfig& config, const BatchNormProblem& p, const float* src,
                         const float* diff_dst, const float* dst, const float* scale, const float* save_mean,
                         const float* save_invstd, float* diff_src, float* diff_residual, float* diff_scale,
                         float* diff_shift) {
    const Geometry g(p);
    const BatchNormKernelTable& k = kernels_for(config.isa);
    if (diff_residual && !diff_src) {
        // diff_residual without diff_src: the sums (if wanted), then the masked diff_dst
        // alone, as the frozen-statistics pass with coefficients 1 (g * 1 is g, bit for bit).
        batch_norm_backward(config, p, src, diff_dst, dst, scale, save_mean, save_invstd, nullptr, nullptr, diff_scale,
                            diff_shift);
        CoefArrays ones(g.lanes());
        std::fill(ones.a, ones.a + CoefArrays::step(g.lanes()), 1.0f);
        ones.stream = stream_outputs(config, g, diff_residual, 3);
        ones.prefetch = prefetch_inputs(config, g, 2);
        const DiffSrcPass pass{k, true, src, diff_dst, dst, diff_residual, nullptr};
        elementwise_all(config, g, ones, pass, pass);
        return;
    }
    const bool global = (p.flags & NK_BN_USE_GLOBAL_STATS) != 0;
    // Sums are needed for diff_scale / diff_shift, and for diff_src unless the statistics are frozen.
    const bool need_sums = diff_scale || diff_shift || (diff_src && !global);
    const GradReduction red{k, src, diff_dst, dst, save_mean};
    Partials parts(g, need_sums);
    CoefArrays coefs(g.lanes());
    const int64_t inputs = (global ? 1 : 2) + (dst ? 1 : 0), outputs = diff_residual ? 2 : 1;
    coefs.stream = stream_outputs(config, g, diff_src, inputs + outputs);
    coefs.prefetch = prefetch_inputs(config, g, inputs);
    const BackwardEpilogue epilogue{parts.view(), double(p.n) * double(p.s), need_sums, scale, save_mean,
                                    save_invstd,  diff_scale, diff_shift, coefs.mean_hi, coefs.a,  coefs.k1,
                                    coefs.k2};
    auto finish = [&](int64_t c0, int64_t c1) { k.backward_epilogue(epilogue, c0, c1); };
    const DiffSrcPass seg_run{k, global, src, diff_dst, dst, diff_src, diff_residual};
    const DiffSrcPass& rows_run = seg_run;

    const GradReduction* reduce = need_sums ? &red : nullptr;
    const Choice choice = choose(config, g, 2);
    switch (choice.plan) {
    case Plan::fused_groups:
        fused_groups(config, g, choice.width, reduce, parts, finish, coefs, diff_src ? &seg_run : nullptr);
        return;
    case Plan::fused_lanes:
        fused_lane_groups(config, g, choice.width, reduce, parts, finish, coefs, diff_src ? &rows_run : nullptr);
        return;
    case Plan::split_channels:
        split_channels(config, g, reduce, parts, finish, coefs, diff_src ? &seg_run : nullptr);
        return;
    case Plan::two_passes: break;
    }
    if (need_sums) reduce_all(config, g, red, parts);
    for_channels(config, p.c, finish);
    if (!diff_src) return;
    coefs.repeat_channels(p.c, g.lanes());
    elementwise_all(config, g, coefs, seg_run, rows_run);
}

// ---- Synchronized batch norm: pieces of samples ----

int64_t batch_norm_piece_count(int64_t n, int64_t samples_per_piece) {
    if (samples_per_piece == 0) return 1;
    return (n + samples_per_piece - 1) / samples_per_piece;
}

namespace {

// Calls f(q, sub, offset) for each piece q: `sub` is the problem of its samples alone,
// starting `offset` floats into the tensor (sample-major in both layouts).
template <class F>
void for_pieces(const BatchNormProblem& p, int64_t samples_per_piece, F f) {
    const int64_t pieces = batch_norm_piece_count(p.n, samples_per_piece);
    const int64_t step = samples_per_piece == 0 ? p.n : samples_per_piece;
    for (int64_t q = 0; q < pieces; ++q) {
        BatchNormProblem sub = p;
        sub.n = std::min(step, p.n - q * step);
        f(q, sub, q * step * p.c * p.s);
    }
}

// One piece's total per channel from the planner's partials of it, in partial order: the
// sums as BackwardEpilogue adds them (the moments' fold is the fold_moments kernel).
void fold_sums(const Geometry& g, const Partials& parts, int64_t q, const BatchNormPieces& out) {
    const ChannelPartials P = parts.view();
    for (int64_t c = 0; c < g.C; ++c) {
        double s1 = 0, s2 = 0;
        for (int64_t k = 0; k < P.partials; ++k) {
            s1 = s1 + P.s1[k * P.stride + c];
            s2 = s2 + P.s2[k * P.stride + c];
        }
        out.a[q * g.C + c] = s1;
        out.b[q * g.C + c] = s2;
    }
}

// The pieces as the epilogues' partials: statistics as sums around their own mean
// (s1 = 0, s2 = M2, center = mean), which moments_from_sums turns back into (mean, M2).
struct PiecePartials {
    std::vector<double> zeros, count;
    ChannelPartials view;
    PiecePartials(const BatchNormPieces& in, int64_t C, bool stats)
        : zeros(stats ? size_t(in.pieces * C) : 0), count(in.count, in.count + in.pieces) {
        if (stats)
            view = {zeros.data(), in.b, in.a, count.data(), in.pieces, C};
        else
            view = {in.a, in.b, nullptr, count.data(), in.pieces, C};
    }
};

// reduce_all's partials, and its bits. Rows of one block and one tile are a single
// item there, which one thread reduces (mlp_n256_c784: 1.27x the time of a training
// forward on two threads); groups of lanes down the block, as fused_lane_groups takes
// them, give every thread a share.
template <class Reduction>
void reduce_pieces(const ExecConfig& config, const Geometry& g, const Reduction& red, Partials& parts) {
    if (g.rows_path && g.rep == 1 && g.items() < config.threads.concurrency()) {
        CoefArrays unused(0);
        auto no_rows = [](const Run&, const ElementwiseCoefs&) {};
        fused_lane_groups(config, g, kMinLanes, &red, parts, [](int64_t, int64_t) {}, unused,
                          static_cast<const decltype(no_rows)*>(nullptr));
        return;
    }
    reduce_all(config, g, red, parts);
}

} // namespace

void batch_norm_piece_moments(const ExecConfig& config, const BatchNormProblem& p, int64_t samples_per_piece,
                              const float* src, const BatchNormPieces& out) {
    const BatchNormKernelTable& k = kernels_for(config.isa);
    for_pieces(p, samples_per_piece, [&](int64_t q, const BatchNormProblem& sub, int64_t offset) {
        out.count[q] = sub.n * sub.s;
        if (sub.n * sub.c * sub.s == 0) {
            std::fill(out.a + q * p.c, out.a + (q + 1) * p.c, 0.0);
            std::fill(out.b + q * p.c, out.b + (q + 1) * p.c, 0.0);
            return;
        }
        const Geometry g(sub);
        Partials parts(g);
        reduce_pieces(config, g, StatsReduction{k, src + offset}, parts);
        k.fold_moments(parts.view(), 0, g.C, out.a + q * g.C, out.b + q * g.C);
    });
}

void batch_norm_piece_grad_sums(const ExecConfig& config, const BatchNormProblem& p, int64_t samples_per_piece,
                                const float* src, const float* diff_dst, const float* save_mean,
                                const BatchNormPieces& out) {
    const BatchNormKernelTable& k = kernels_for(config.isa);
    for_pieces(p, samples_per_piece, [&](int64_t q, const BatchNormProblem& sub, int64_t offset) {
        out.count[q] = sub.n * sub.s;
        if (sub.n * sub.c * sub.s == 0) {
            std::fill(out.a + q * p.c, out.a + (q + 1) * p.c, 0.0);
            std::fill(out.b + q * p.c, out.b + (q + 1) * p.c, 0.0);
            return;
        }
        const Geometry g(sub);
        Partials parts(g);
        reduce_pieces(config, g, GradReduction{k, src + offset, diff_dst + offset, nullptr, save_mean}, parts);
        fold_sums(g, parts, q, out);
    });
}

void batch_norm_merge_moments(const ExecConfig& config, int64_t c, const BatchNormPieces& in, double* mean,
                              double* m2) {
    const BatchNormKernelTable& k = kernels_for(config.isa);
    const PiecePartials pieces(in, c, true);
    // A few doubles per channel and rank: forking threads would cost more than the fold.
    k.fold_moments(pieces.view, 0, c, mean, m2);
}

void batch_norm_forward_from_pieces(const ExecConfig& config, const BatchNormProblem& p,
                                    const BatchNormPieces& in, const float* src, float* dst,
                                    const float* scale, const float* shift, float* running_mean,
                                    float* running_var, float* save_mean, float* save_invstd) {
    const BatchNormKernelTable& k = kernels_for(config.isa);
    const PiecePartials pieces(in, p.c, true);
    const bool empty = p.n * p.s == 0; // a rank without samples still updates its statistics
    const int64_t lanes = empty ? p.c : Geometry(p).lanes();
    CoefArrays coefs(lanes);
    const TrainingEpilogue epilogue{pieces.view,  p.epsilon,    p.momentum,  p.flags,     scale,
                                    shift,        running_mean, running_var, save_mean,   save_invstd,
                                    coefs.mean_hi, coefs.a,     coefs.b};
    for_channels(config, p.c, [&](int64_t c0, int64_t c1) { k.training_epilogue(epilogue, c0, c1); });
    if (empty) return;
    const Geometry g(p);
    coefs.stream = stream_outputs(config, g, dst, 2);
    coefs.prefetch = prefetch_inputs(config, g, 1);
    coefs.relu = (p.flags & NK_BN_FUSE_RELU) != 0;
    coefs.repeat_channels(p.c, g.lanes());
    const NormalizePass pass{k, src, nullptr, dst};
    elementwise_all(config, g, coefs, pass, pass);
}

void batch_norm_backward_from_pieces(const ExecConfig& config, const BatchNormProblem& p,
                                     const BatchNormPieces& in, const float* src, const float* diff_dst,
                                     const float* scale, const float* save_mean, const float* save_invstd,
                                     float* diff_src, float* diff_scale, float* diff_shift) {
    const BatchNormKernelTable& k = kernels_for(config.isa);
    const PiecePartials pieces(in, p.c, false);
    int64_t total = 0;
    for (int64_t q = 0; q < in.pieces; ++q) total += in.count[q];
    const bool global = (p.flags & NK_BN_USE_GLOBAL_STATS) != 0;
    const bool empty = p.n * p.s == 0;
    const int64_t lanes = empty ? p.c : Geometry(p).lanes();
    CoefArrays coefs(lanes);
    const BackwardEpilogue epilogue{pieces.view, double(total), true,          scale,   save_mean,
                                    save_invstd, diff_scale,    diff_shift,    coefs.mean_hi, coefs.a,
                                    coefs.k1,    coefs.k2};
    for_channels(config, p.c, [&](int64_t c0, int64_t c1) { k.backward_epilogue(epilogue, c0, c1); });
    if (empty || !diff_src) return;
    const Geometry g(p);
    coefs.stream = stream_outputs(config, g, diff_src, global ? 2 : 3);
    coefs.prefetch = prefetch_inputs(config, g, global ? 1 : 2);
    coefs.repeat_channels(p.c, g.lanes());
    const DiffSrcPass pass{k, global, src, diff_dst, nullptr, diff_src, nullptr};
    elementwise_all(config, g, coefs, pass, pass);
}

} // namespace nk
