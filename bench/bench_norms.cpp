/*
 * normkit_bench_norms: layer-norm, RMS-norm and group-norm throughput of normkit against a
 * roofline and against oneDNN 2.6, in the same process, on the same buffers (Google
 * Benchmark).
 *
 * Cases.
 *  - Layer norm ("ln") and RMS norm ("rms"), rows x features = 1x4096, 32x4096,
 *    2048x4096, 512x768, 8192x768, 128x8192, 4096x1024, 16384x64; modes
 *      infer_fwd  forward, no statistics saved               8 bytes/element (src, dst)
 *      train_fwd  forward saving the row statistics          8
 *      res_fwd    forward of src + residual, sum kept, saved 16 (src, residual, sum, dst)
 *      bwd        diff_src, diff_scale (and diff_shift)     12 (src, diff_dst, diff_src)
 *  - Group norm ("gn", statistics saved) on the SD-UNet shapes 2x320x64x64, 2x640x32x32,
 *    2x1280x16x16 in 32 groups and instance norm 1x64x256x256, channels-first ("nchw")
 *    and channels-last ("nhwc"); modes train_fwd (8 bytes/element) and bwd (12).
 * x 1 and all threads, x storage type: float32, and bf16 and f16 ("/bf16", "/f16" in the
 * case name: half the bytes per element; the roofline is the same kernel on 2-byte
 * elements, widened as bf16, no two-pass kernel, no oneDNN). Each case runs in rounds (--rounds=R, default 3): the roofline (a
 * plain streaming kernel of the same traffic: dst = a*src + b; s = x + y, d = a*s + b;
 * z = a*x + y, one contiguous chunk per thread of a oneTBB arena, -O3 -march=native),
 * for group norm the two-pass kernel of the batch-norm suite (bench/roofline.hpp: the
 * inputs read a second time after plain sums, channels-first in blocks that stay in the
 * L2), oneDNN where it has the op (layer_normalization; for channels-first group norm
 * over the (n*groups, c/groups*S) view, which is the same computation without the
 * per-channel affine; oneDNN 2.6 has no RMS mode and no group norm) and normkit, back to back.
 * Counters: GB/s of the minimum traffic; normkit's runs also "roofline" (roofline time /
 * normkit time), "two_pass" and "x_onednn" (partner time / normkit time), against the
 * runs of their round.
 *
 * Summary (printed after the runs): per case normkit's GB/s and microseconds per call
 * (median times), % of the roofline, % of the two-pass kernel and x oneDNN (medians of
 * the rounds' ratios); geometric means per op, mode and thread count; the residual
 * forward's time per byte over the plain forward's (train_fwd); and the cases that miss
 * the targets: layer and RMS norm >= 90% of the roofline as a geometric mean, >= 75% in
 * every case over 1 MB of traffic, >= 1.5x oneDNN as a geometric mean and never slower,
 * residual forward <= 1.15x the plain forward's time per byte; group norm forward >= 85%
 * and backward >= 70% of the roofline as geometric means, channels-last within 1.15x of
 * channels-first. bf16 / f16: per case the float32 case's time over this one's (the
 * speed-up of half the bytes) and both fractions of their rooflines, geometric means, and
 * a miss for a speed-up below 1.7x on a tensor whose float32 bytes exceed the L2.
 */
#include "bench_args.hpp"
#include "roofline.hpp"
#if NKBENCH_HAVE_ONEDNN
#include "onednn_layer_norm.hpp"
#endif

#include <normkit/normkit.h>

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <map>
#include <memory>
#include <string>
#include <cstring>
#include <thread>
#include <unistd.h>
#include <vector>

namespace nkbench {
namespace {

enum class Op { layer, rms, group };
enum class Mode { infer_fwd, train_fwd, res_fwd, bwd };
const char* op_name(Op op) { return op == Op::layer ? "ln" : op == Op::rms ? "rms" : "gn"; }
const char* mode_name(Mode m) {
    switch (m) {
    case Mode::infer_fwd: return "infer_fwd";
    case Mode::train_fwd: return "train_fwd";
    case Mode::res_fwd: return "res_fwd";
    case Mode::bwd: return "bwd";
    }
    return "?";
}
// float32 bytes; bf16 and f16 move half as many.
int64_t bytes_per_element(Mode m) { return m == Mode::res_fwd ? 16 : m == Mode::bwd ? 12 : 8; }
const char* dtype_name(int dtype) { return dtype == NK_DTYPE_BF16 ? "bf16" : dtype == NK_DTYPE_F16 ? "f16" : "f32"; }

// Layer and RMS norm: rows x features. Group norm: n x c x spatial in `groups` groups.
struct Shape {
    int64_t rows, features;            // layer, rms
    int64_t n, c, spatial, groups;     // group
    int layout;                        // group: NK_LAYOUT_*
};
constexpr Shape row_shape(int64_t rows, int64_t features) { return {rows, features, 0, 0, 0, 0, 0}; }
constexpr Shape group_shape(int64_t n, int64_t c, int64_t spatial, int64_t groups) {
    return {0, 0, n, c, spatial, groups, 0};
}
constexpr Shape kRowShapes[] = {row_shape(1, 4096),   row_shape(32, 4096),  row_shape(2048, 4096),
                                row_shape(512, 768),  row_shape(8192, 768), row_shape(128, 8192),
                                row_shape(4096, 1024), row_shape(16384, 64)};
constexpr Shape kGroupShapes[] = {group_shape(2, 320, 64 * 64, 32), group_shape(2, 640, 32 * 32, 32),
                                  group_shape(2, 1280, 16 * 16, 32), group_shape(1, 64, 256 * 256, 64)};

struct NormCase {
    Op op;
    Mode mode;
    Shape shape;
    int threads;
    int dtype = NK_DTYPE_F32;
    int round = 0;
    bool group() const { return op == Op::group; }
    bool half() const { return dtype != NK_DTYPE_F32; }
    int64_t elements() const {
        return group() ? shape.n * shape.c * shape.spatial : shape.rows * shape.features;
    }
    int64_t bytes() const { return elements() * bytes_per_element(mode) / (half() ? 2 : 1); }
    std::string label() const {
        const std::string type = half() ? std::string("/") + dtype_name(dtype) : "";
        if (!group()) return std::to_string(shape.rows) + "x" + std::to_string(shape.features) + type;
        return std::to_string(shape.n) + "x" + std::to_string(shape.c) + "x" + std::to_string(shape.spatial) + "g" +
               std::to_string(shape.groups) + (shape.layout == 0 ? "/nchw" : "/nhwc") + type;
    }
    std::string key() const {
        return std::string(op_name(op)) + "/" + mode_name(mode) + "/" + label() + "/t:" + std::to_string(threads);
    }
};

struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

Buffer allocate(int64_t count, uint64_t seed) {
    const size_t align = size_t(2) << 20;
    const size_t bytes = (size_t(count) * sizeof(float) + align - 1) / align * align;
    auto* p = static_cast<float*>(std::aligned_alloc(align, bytes));
    if (p == nullptr) {
        std::fprintf(stderr, "normkit_bench_layer_norm: out of memory for %zu bytes\n", bytes);
        std::exit(1);
    }
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1; // values in [-2, 2)
    for (int64_t i = 0; i < count; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        p[i] = float(x >> 40) * (4.0f / 16777216.0f) - 2.0f;
    }
    return Buffer(p);
}

// Every case's buffers, sized for the largest, written once. Inputs are never written.
struct Workspace {
    Buffer src, residual, diff_dst, sum, dst, rows_a, rows_b, rows_c, rows_d, feat_a, feat_b, feat_c, feat_d;
    Workspace() {
        int64_t elements = 0, rows = 0, features = 0;
        for (const Shape& s : kRowShapes) {
            elements = std::max(elements, s.rows * s.features);
            rows = std::max(rows, s.rows);
            features = std::max(features, s.features);
        }
        for (const Shape& s : kGroupShapes) {
            elements = std::max(elements, s.n * s.c * s.spatial);
            rows = std::max(rows, s.n * s.groups);
            features = std::max(features, s.c);
        }
        src = allocate(elements, 1);
        residual = allocate(elements, 2);
        diff_dst = allocate(elements, 3);
        sum = allocate(elements, 4);
        dst = allocate(elements, 5);
        rows_a = allocate(rows, 6); // saved mean (inputs to backward: 0)
        rows_b = allocate(rows, 7); // saved invstd / variance
        rows_c = allocate(rows, 8); // statistics written by training forward
        rows_d = allocate(rows, 9);
        feat_a = allocate(features, 10); // scale
        feat_b = allocate(features, 11); // shift
        feat_c = allocate(features, 12); // diff_scale
        feat_d = allocate(features, 13); // diff_shift
        for (int64_t r = 0; r < rows; ++r) {
            rows_a[r] = 0.0f;
            rows_b[r] = 1.0f / std::sqrt(4.0f / 3.0f + 1e-5f); // uniform [-2, 2): variance 4/3
        }
    }
};
Workspace& workspace() {
    static Workspace w; // first use: --benchmark_list_tests allocates nothing
    return w;
}

// The tensors of the float workspace in bf16 or f16 (the same values, rounded).
struct HalfTensors {
    std::vector<uint16_t> src, residual, diff_dst, sum, dst;
    explicit HalfTensors(int dtype) {
        const Workspace& w = workspace();
        int64_t elements = 0;
        for (const Shape& s : kRowShapes) elements = std::max(elements, s.rows * s.features);
        for (const Shape& s : kGroupShapes) elements = std::max(elements, s.n * s.c * s.spatial);
        auto convert = [&](const float* x, std::vector<uint16_t>& h) {
            h.resize(size_t(elements));
            for (int64_t i = 0; i < elements; ++i) h[size_t(i)] = to_half(dtype, x[i]);
        };
        convert(w.src.get(), src);
        convert(w.residual.get(), residual);
        convert(w.diff_dst.get(), diff_dst);
        convert(w.sum.get(), sum);
        convert(w.dst.get(), dst);
    }
    // Truncation: the values only have to be ordinary numbers (|x| < 2 here).
    static uint16_t to_half(int dtype, float x) {
        uint32_t u;
        std::memcpy(&u, &x, sizeof u);
        if (dtype == NK_DTYPE_BF16) return uint16_t(u >> 16);
        const uint32_t a = u & 0x7fffffffu, sign = (u >> 16) & 0x8000u;
        return uint16_t(a < 0x38800000u ? sign : sign | ((a >> 13) - (112u << 10))); // below 2^-14: zero
    }
};
HalfTensors& half_tensors(int dtype) {
    static HalfTensors bf16(NK_DTYPE_BF16), f16(NK_DTYPE_F16);
    return dtype == NK_DTYPE_BF16 ? bf16 : f16;
}

nk_context* context(int threads) {
    static std::map<int, nk_context*> cache;
    nk_context*& ctx = cache[threads];
    if (!ctx && (nk_context_create(&ctx) != NK_OK || nk_context_set_num_threads(ctx, threads) != NK_OK)) {
        std::fprintf(stderr, "normkit_bench_layer_norm: %s\n", nk_last_error_message());
        std::exit(1);
    }
    return ctx;
}

const Roofline& roofline(int threads) {
    static std::map<int, std::unique_ptr<Roofline>> cache;
    auto& r = cache[threads];
    if (!r) r = std::make_unique<Roofline>(threads);
    return *r;
}

// Seconds per call of each implementation in each (case, round).
struct Times {
    double roofline = NAN, two_pass = NAN, onednn = NAN, normkit = NAN;
};
std::map<std::string, std::map<int, Times>>& times() {
    static std::map<std::string, std::map<int, Times>> t;
    return t;
}

// Times `call` (one untimed call first: warm caches, awake threads). NaN when it fails.
template <class Call>
double measure(benchmark::State& state, const NormCase& cs, Call&& call) {
    if (!call()) {
        state.SkipWithError("call failed");
        return NAN;
    }
    const auto start = std::chrono::steady_clock::now();
    for (auto _ : state) {
        if (!call()) {
            state.SkipWithError("call failed");
            return NAN;
        }
        benchmark::ClobberMemory();
    }
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    state.counters["GB/s"] = benchmark::Counter(double(cs.bytes()) * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["round"] = cs.round;
    return state.iterations() > 0 ? elapsed.count() / double(state.iterations()) : NAN;
}

void bm_normkit(benchmark::State& state, const NormCase& cs) {
    Workspace& w = workspace();
    nk_context* ctx = context(cs.threads);
    nk_layer_norm_desc d;
    nk_layer_norm_desc_init(&d, cs.shape.rows, cs.shape.features);
    nk_group_norm_desc gd;
    nk_group_norm_desc_init(&gd, cs.shape.layout, cs.shape.n, cs.shape.c, cs.shape.spatial, cs.shape.groups);
    d.dtype = gd.dtype = cs.dtype;
    const bool layer = cs.op == Op::layer;
    // The tensors in the case's storage type.
    struct {
        void *src, *residual, *diff_dst, *sum, *dst;
    } io = {w.src.get(), w.residual.get(), w.diff_dst.get(), w.sum.get(), w.dst.get()};
    if (cs.half()) {
        HalfTensors& h = half_tensors(cs.dtype);
        io = {h.src.data(), h.residual.data(), h.diff_dst.data(), h.sum.data(), h.dst.data()};
    }
    auto call = [&] {
        nk_status s = NK_OK;
        if (cs.group())
            return (cs.mode == Mode::bwd
                        ? nk_group_norm_backward(ctx, &gd, io.src, io.diff_dst, w.feat_a.get(), w.rows_a.get(),
                                                 w.rows_b.get(), io.dst, w.feat_c.get(), w.feat_d.get())
                        : nk_group_norm_forward(ctx, &gd, io.src, io.dst, w.feat_a.get(), w.feat_b.get(),
                                                w.rows_c.get(), w.rows_d.get())) == NK_OK;
        switch (cs.mode) {
        case Mode::infer_fwd:
            s = layer ? nk_layer_norm_forward(ctx, &d, io.src, nullptr, nullptr, io.dst, w.feat_a.get(),
                                              w.feat_b.get(), nullptr, nullptr)
                      : nk_rms_norm_forward(ctx, &d, io.src, nullptr, nullptr, io.dst, w.feat_a.get(), nullptr);
            break;
        case Mode::train_fwd:
            s = layer ? nk_layer_norm_forward(ctx, &d, io.src, nullptr, nullptr, io.dst, w.feat_a.get(),
                                              w.feat_b.get(), w.rows_c.get(), w.rows_d.get())
                      : nk_rms_norm_forward(ctx, &d, io.src, nullptr, nullptr, io.dst, w.feat_a.get(),
                                            w.rows_d.get());
            break;
        case Mode::res_fwd:
            s = layer ? nk_layer_norm_forward(ctx, &d, io.src, io.residual, io.sum, io.dst,
                                              w.feat_a.get(), w.feat_b.get(), w.rows_c.get(), w.rows_d.get())
                      : nk_rms_norm_forward(ctx, &d, io.src, io.residual, io.sum, io.dst,
                                            w.feat_a.get(), w.rows_d.get());
            break;
        case Mode::bwd:
            s = layer ? nk_layer_norm_backward(ctx, &d, io.src, io.diff_dst, w.feat_a.get(), w.rows_a.get(),
                                               w.rows_b.get(), io.dst, w.feat_c.get(), w.feat_d.get())
                      : nk_rms_norm_backward(ctx, &d, io.src, io.diff_dst, w.feat_a.get(), w.rows_b.get(),
                                             io.dst, w.feat_c.get());
            break;
        }
        return s == NK_OK;
    };
    const double seconds = measure(state, cs, call);
    Times& t = times()[cs.key()][cs.round];
    t.normkit = seconds;
    if (!std::isnan(t.roofline)) state.counters["roofline"] = t.roofline / seconds;
    if (!std::isnan(t.two_pass)) state.counters["two_pass"] = t.two_pass / seconds;
    if (!std::isnan(t.onednn)) state.counters["x_onednn"] = t.onednn / seconds;
}

// The roofline (kTwoPass false) or the two-pass kernel (group norm).
template <bool kTwoPass>
void bm_reference(benchmark::State& state, const NormCase& cs) {
    Workspace& w = workspace();
    const Roofline& r = roofline(cs.threads);
    const int64_t n = cs.elements();
    const bool blocked = cs.shape.layout == 0; // channels-first groups can stay in the L2
    auto call = [&] {
        if (cs.half()) { // the streaming kernels on 2-byte elements
            HalfTensors& h = half_tensors(cs.dtype);
            if (cs.mode == Mode::bwd)
                r.backward(h.src.data(), h.diff_dst.data(), h.dst.data(), n);
            else if (cs.mode == Mode::res_fwd)
                r.residual_forward(h.src.data(), h.residual.data(), h.sum.data(), h.dst.data(), n);
            else
                r.forward(h.src.data(), h.dst.data(), n);
            return true;
        }
        if (kTwoPass && cs.mode == Mode::bwd)
            r.two_pass_backward(w.src.get(), w.diff_dst.get(), w.dst.get(), n, blocked);
        else if (kTwoPass)
            r.two_pass_forward(w.src.get(), w.dst.get(), n, blocked);
        else if (cs.mode == Mode::bwd)
            r.backward(w.src.get(), w.diff_dst.get(), w.dst.get(), n);
        else if (cs.mode == Mode::res_fwd)
            r.residual_forward(w.src.get(), w.residual.get(), w.sum.get(), w.dst.get(), n);
        else
            r.forward(w.src.get(), w.dst.get(), n);
        return true;
    };
    Times& t = times()[cs.key()][cs.round];
    (kTwoPass ? t.two_pass : t.roofline) = measure(state, cs, call);
}

#if NKBENCH_HAVE_ONEDNN
// oneDNN has no fused residual add: its res_fwd is not measured.
void bm_onednn(benchmark::State& state, const NormCase& cs) {
    static std::string built;
    static std::unique_ptr<OnednnLayerNorm> primitive;
    Workspace& w = workspace();
    std::string error;
    if (built != cs.key()) {
        primitive.reset();
        built.clear();
        const OnednnLayerNorm::Kind kind = cs.mode == Mode::bwd         ? OnednnLayerNorm::Kind::backward
                                           : cs.mode == Mode::train_fwd ? OnednnLayerNorm::Kind::training
                                                                        : OnednnLayerNorm::Kind::inference;
        // backward takes the variance: rows_b then holds 1/sqrt(4/3 + eps), a valid variance too.
        const RowBuffers b{w.src.get(),    w.diff_dst.get(), w.feat_a.get(), w.feat_b.get(),
                           w.rows_a.get(), w.rows_b.get(),   w.dst.get(),    w.rows_c.get(),
                           w.rows_d.get(), w.feat_c.get(),   w.feat_d.get()};
        // Group norm channels-first: layer norm over the (n * groups, c / groups * S) view.
        const int64_t rows = cs.group() ? cs.shape.n * cs.shape.groups : cs.shape.rows;
        const int64_t features = cs.group() ? cs.elements() / rows : cs.shape.features;
        try {
            primitive = std::make_unique<OnednnLayerNorm>(kind, rows, features, cs.threads, b);
            built = cs.key();
        } catch (const std::exception& e) {
            error = e.what();
        }
    }
    auto call = [&] {
        if (!primitive) return false;
        try {
            primitive->run();
        } catch (const std::exception& e) {
            return false;
        }
        return true;
    };
    times()[cs.key()][cs.round].onednn = measure(state, cs, call);
    if (primitive) state.SetLabel(primitive->implementation());
    if (!error.empty()) state.SkipWithError(("oneDNN: " + error).c_str());
}
#endif

std::vector<NormCase> register_benchmarks(const std::vector<int>& thread_counts, int rounds) {
    std::vector<NormCase> cases;
    auto add_case = [&](NormCase cs) {
        cases.push_back(cs);
        auto add = [&](const char* impl, void (*fn)(benchmark::State&, const NormCase&)) {
            benchmark::RegisterBenchmark((cs.key() + "/" + impl).c_str(), fn, cs)
                ->UseRealTime()
                ->Unit(benchmark::kMicrosecond);
        };
        for (int round = 0; round < rounds; ++round) {
            cs.round = round;
            add("roofline", bm_reference<false>);
            if (cs.group() && !cs.half()) add("two_pass", bm_reference<true>);
#if NKBENCH_HAVE_ONEDNN
            // oneDNN has no fused residual add, no RMS mode and no channels-last group norm.
            if (!cs.half() && ((cs.op == Op::layer && cs.mode != Mode::res_fwd) || (cs.group() && cs.shape.layout == 0)))
                add("onednn", bm_onednn);
#endif
            add("normkit", bm_normkit); // last: its ratios use the runs above
        }
    };
    const int dtypes[] = {NK_DTYPE_F32, NK_DTYPE_BF16, NK_DTYPE_F16};
    for (Op op : {Op::layer, Op::rms})
        for (Mode mode : {Mode::infer_fwd, Mode::train_fwd, Mode::res_fwd, Mode::bwd})
            for (const Shape& shape : kRowShapes)
                for (int threads : thread_counts)
                    for (int dtype : dtypes) add_case({op, mode, shape, threads, dtype});
    for (Mode mode : {Mode::train_fwd, Mode::bwd})
        for (Shape shape : kGroupShapes)
            for (int layout : {0, 1})
                for (int threads : thread_counts)
                    for (int dtype : dtypes) {
                        shape.layout = layout;
                        add_case({Op::group, mode, shape, threads, dtype});
                    }
    return cases;
}

double median(std::vector<double> v) {
    v.erase(std::remove_if(v.begin(), v.end(), [](double x) { return std::isnan(x); }), v.end());
    if (v.empty()) return NAN;
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

struct Result {
    NormCase cs;
    double seconds, roofline, two_pass, onednn; // median time; medians of the rounds' ratios
};

std::string fmt(const char* f, double v) {
    if (std::isnan(v)) return "-";
    char b[32];
    std::snprintf(b, sizeof b, f, v);
    return b;
}

// bf16 / f16 against float32: per case the float32 time over this one's (medians of
// separate runs, not paired by round), each one's fraction of its roofline, geometric
// means, and the target: >= 1.7x on tensors (in the 2-byte type) larger than the L2.
// Returns the miss count.
int summarize_half(const std::vector<Result>& results) {
    const long l2 = sysconf(_SC_LEVEL2_CACHE_SIZE);
    const int64_t l2_bytes = l2 > 0 ? int64_t(l2) : int64_t(1) << 20;
    std::printf("\nbf16 / f16: float32 time over this one's (x f32), %% roofline of each (L2 %lld KB)\n",
                (long long)(l2_bytes >> 10));
    std::printf("%-4s %-9s %-27s %3s %7s %9s %9s\n", "op", "mode", "shape", "t", "x f32", "% roof", "% roof32");
    int misses = 0;
    std::map<std::string, std::pair<double, int>> means; // op mode dtype threads: sum of logs, count
    for (const Result& r : results) {
        if (!r.cs.half()) continue;
        for (const Result& p : results) {
            if (p.cs.half() || p.cs.op != r.cs.op || p.cs.mode != r.cs.mode || p.cs.threads != r.cs.threads ||
                p.cs.elements() != r.cs.elements() || p.cs.shape.layout != r.cs.shape.layout ||
                p.cs.shape.c != r.cs.shape.c || p.cs.shape.features != r.cs.shape.features)
                continue;
            const double x = p.seconds / r.seconds;
            std::printf("%-4s %-9s %-27s %3d %6.2fx %9s %9s\n", op_name(r.cs.op), mode_name(r.cs.mode),
                        r.cs.label().c_str(), r.cs.threads, x, fmt("%.1f%%", 100 * r.roofline).c_str(),
                        fmt("%.1f%%", 100 * p.roofline).c_str());
            auto& m = means[std::string(op_name(r.cs.op)) + " " + mode_name(r.cs.mode) + " " + dtype_name(r.cs.dtype) +
                            (r.cs.threads == 1 ? " t:1" : " t:all")];
            m.first += std::log(x);
            ++m.second;
            if (r.cs.elements() * 2 > l2_bytes && x < 1.7) {
                std::printf("  MISS %s: %.2fx the float32 speed\n", r.cs.key().c_str(), x);
                ++misses;
            }
        }
    }
    std::printf("geometric means of x f32\n");
    for (const auto& [what, m] : means) std::printf("  %-28s %6.2fx (%d cases)\n", what.c_str(), std::exp(m.first / m.second), m.second);
    return misses;
}

// The table, geometric means, residual cost, layouts and missed targets. Returns the miss count.
int summarize(const std::vector<NormCase>& cases) {
    std::vector<Result> results;
    for (const NormCase& cs : cases) {
        auto it = times().find(cs.key());
        if (it == times().end()) continue;
        std::vector<double> t, roof, two, dnn;
        for (const auto& [round, x] : it->second) {
            t.push_back(x.normkit);
            roof.push_back(x.roofline / x.normkit);
            two.push_back(x.two_pass / x.normkit);
            dnn.push_back(x.onednn / x.normkit);
        }
        if (std::isnan(median(t))) continue;
        results.push_back({cs, median(t), median(roof), median(two), median(dnn)});
    }
    if (results.empty()) return 0;
    std::printf("\n%-4s %-9s %-22s %3s %9s %10s %10s %9s %9s\n", "op", "mode", "shape", "t", "GB/s", "us/call",
                "% roofline", "% 2-pass", "x oneDNN");
    for (const Result& r : results)
        std::printf("%-4s %-9s %-22s %3d %9.1f %10.2f %10s %9s %9s\n", op_name(r.cs.op), mode_name(r.cs.mode),
                    r.cs.label().c_str(), r.cs.threads, double(r.cs.bytes()) / r.seconds * 1e-9, r.seconds * 1e6,
                    fmt("%.1f%%", 100 * r.roofline).c_str(), fmt("%.1f%%", 100 * r.two_pass).c_str(),
                    fmt("%.2fx", r.onednn).c_str());
    int misses = 0;
    auto miss = [&](const std::string& what) {
        std::printf("  MISS %s\n", what.c_str());
        ++misses;
    };
    std::printf("\ngeometric means\n%-4s %-9s %3s %6s %10s %9s\n", "op", "mode", "t", "cases", "% roofline", "x oneDNN");
    for (Op op : {Op::layer, Op::rms, Op::group})
        for (Mode mode : {Mode::infer_fwd, Mode::train_fwd, Mode::res_fwd, Mode::bwd})
            for (int threads : {1, 0}) {
                double lr = 0, ld = 0;
                int n = 0, nd = 0;
                for (const Result& r : results) {
                    if (r.cs.half() || r.cs.op != op || r.cs.mode != mode || (threads == 1) != (r.cs.threads == 1))
                        continue;
                    if (!std::isnan(r.roofline)) lr += std::log(r.roofline), ++n;
                    if (!std::isnan(r.onednn)) ld += std::log(r.onednn), ++nd;
                }
                if (n == 0) continue;
                const double g = std::exp(lr / n), gd = nd ? std::exp(ld / nd) : NAN;
                std::printf("%-4s %-9s %3s %6d %10s %9s\n", op_name(op), mode_name(mode), threads == 1 ? "1" : "all", n,
                            fmt("%.1f%%", 100 * g).c_str(), fmt("%.2fx", gd).c_str());
                const std::string what = std::string(op_name(op)) + " " + mode_name(mode) + " geomean";
                const double floor = op != Op::group ? 0.90 : mode == Mode::bwd ? 0.70 : 0.85;
                if (g < floor) miss(what + " below " + fmt("%.0f%%", 100 * floor) + " of the roofline");
                if (op != Op::group && !std::isnan(gd) && gd < 1.5) miss(what + " below 1.5x oneDNN");
            }
    std::printf("\nresidual forward: time per byte over the plain forward's (train_fwd)\n");
    for (const Result& r : results) {
        if (r.cs.mode != Mode::res_fwd) continue;
        for (const Result& p : results)
            if (p.cs.mode == Mode::train_fwd && p.cs.op == r.cs.op && p.cs.threads == r.cs.threads &&
                p.cs.label() == r.cs.label()) {
                const double ratio = (r.seconds / double(r.cs.bytes())) / (p.seconds / double(p.cs.bytes()));
                std::printf("  %-4s %-11s t:%d  %.2fx\n", op_name(r.cs.op), r.cs.label().c_str(), r.cs.threads, ratio);
                if (ratio > 1.15 && r.cs.bytes() > (int64_t(1) << 20))
                    miss(r.cs.key() + ": residual forward " + fmt("%.2fx", ratio) + " the plain forward's time per byte");
            }
    }
    std::printf("\ngroup norm: channels-last time over channels-first\n");
    for (const Result& r : results) {
        if (!r.cs.group() || r.cs.shape.layout != 1) continue;
        for (const Result& p : results)
            if (p.cs.group() && p.cs.shape.layout == 0 && p.cs.mode == r.cs.mode && p.cs.threads == r.cs.threads &&
                p.cs.dtype == r.cs.dtype && p.cs.elements() == r.cs.elements() && p.cs.shape.c == r.cs.shape.c) {
                const double ratio = r.seconds / p.seconds;
                std::printf("  %-9s %-18s t:%d  %.2fx\n", mode_name(r.cs.mode), r.cs.label().c_str(), r.cs.threads, ratio);
                if (ratio > 1.15) miss(r.cs.key() + ": " + fmt("%.2fx", ratio) + " the channels-first time");
            }
    }
    misses += summarize_half(results);
    std::printf("\n");
    for (const Result& r : results) {
        if (!r.cs.group() && r.cs.bytes() > (int64_t(1) << 20) && r.roofline < 0.75)
            miss(r.cs.key() + ": " + fmt("%.1f%%", 100 * r.roofline) + " of the roofline");
        if (r.onednn < 1.0) miss(r.cs.key() + ": " + fmt("%.2fx", r.onednn) + " oneDNN");
    }
    std::printf("%d misses\n", misses);
    return misses;
}

} // namespace
} // namespace nkbench

int main(int argc, char** argv) {
    const int rounds = nkbench::init_benchmark(argc, argv, 3, "normkit_bench_norms");
    if (rounds == 0) return 1;
    const int all = std::max(1u, std::thread::hardware_concurrency());
    std::vector<int> thread_counts{1};
    if (all > 1) thread_counts.push_back(all);
    const std::vector<nkbench::NormCase> cases = nkbench::register_benchmarks(thread_counts, rounds);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    nkbench::summarize(cases);
    return 0;
}
