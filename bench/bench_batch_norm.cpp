/*
 * normkit_bench: batch-normalization throughput of normkit, measured against a roofline
 * and against oneDNN in the same process, on the same buffers.
 *
 * Cases. The 8 shapes of design/ANCHORS.md x 2 layouts (NK_LAYOUT_NCS "nchw",
 * NK_LAYOUT_NSC "nhwc") x 3 modes (training forward, inference forward, backward)
 * x 2 thread counts (1 and std::thread::hardware_concurrency()): 96 cases, fp32.
 *
 * Implementations. Every case is measured with three or four, back to back, so that they
 * share whatever the machine does at that moment; in rounds (--rounds=R, default 5: all
 * of them, then all again, R times), each its own benchmark of one run, so a change of the
 * machine's speed during a case falls between two rounds rather than between two
 * implementations (the shared machine's roofline can move 1.7x from one minute to the
 * next). In a round the roofline runs first, then the two-pass kernel, oneDNN, normkit:
 *   bn/<mode>/<shape>/<layout>/t:<threads>/roofline  the speed no batch norm can beat: a plain streaming kernel with the
 *       minimum traffic of the mode (forward dst = a*src + b, backward z = a*x + y) on the
 *       same buffers, one contiguous chunk per thread in a oneTBB arena of <threads>
 *       threads, loops compiled -O3 -march=native.
 *   .../two_pass  training forward and backward only: what the roofline's threads and
 *       loops reach when they also read the inputs a second time, as a batch norm that
 *       computes its statistics first must: each thread's chunk summed (x and x*x;
 *       diff_dst and src*diff_dst: plain float sums, no accuracy care) and then put
 *       through the roofline's loop with a coefficient from its sums; channels-first in
 *       blocks of 128 KB of inputs (as normkit's fused groups: the second read from the
 *       L2), channels-last and NC the whole chunk at once (every channel spans all rows,
 *       so the second read comes from the L2 only where a thread's share fits there). Not
 *       a target: it tells how much of the gap to the roofline the second read itself
 *       costs on this machine, in the case's layout.
 *   .../onednn    oneDNN's batch_normalization primitive (use_scale | use_shift;
 *       inference adds use_global_stats; backward is prop_kind::backward), plain
 *       nchw / nhwc memory (nc for N x C shapes), OpenMP capped at <threads> threads.
 *       Only when oneDNN was found at configure time (NKBENCH_HAVE_ONEDNN).
 *   .../normkit   normkit's C API; an nk_context capped at <threads> threads. Training
 *       forward updates running statistics and saves mean/invstd; backward computes
 *       diff_src, diff_scale and diff_shift.
 * The buffers are allocated and filled once for the largest case, so no implementation
 * pays for page faults the others do not; inputs are never written. They are reused call
 * after call, so a case whose tensors fit in the last-level cache runs from that cache for
 * every implementation, and its roofline is the cache's bandwidth, not DRAM's.
 *
 * Measure. Wall-clock time (UseRealTime: the work runs on pool threads), one untimed call
 * before each benchmark (warm caches, awake threads), min time 0.05 s per run unless
 * --benchmark_min_time says otherwise.
 * Counters: "GB/s" = minimum traffic (forward 8 bytes/element, backward 12) per second;
 * "bytes" = that traffic per call; "round" = the run's round (the summary pairs the
 * implementations' runs by it, so --benchmark_enable_random_interleaving, which shuffles
 * the runs, still compares runs of one round); "others_cpu" = the share of the CPUs other processes
 * took during the timed loop (the machine is shared, and a 2-thread OpenMP run whose
 * partner thread is descheduled slows down tenfold). normkit's runs also carry the ratios
 * to the runs of their round that came before them:
 *   roofline  = roofline time / normkit time   (the fraction of the roofline's speed)
 *   two_pass  = two-pass time / normkit time   (training forward and backward)
 *   x_onednn  = oneDNN time / normkit time     (> 1: normkit is faster)
 * (each run's time per call as measured around its timed loop; a ratio is left out when
 * its partner did not run before normkit in that round, as with
 * --benchmark_enable_random_interleaving, or failed; with --benchmark_repetitions every
 * repetition of normkit compares with the partner's last repetition before it, where
 * the summary pairs repetition with repetition).
 *
 * Summary. normkit_bench_summary reads the JSON and prints the same ratios from the
 * reported times, as the median over the rounds of each round's ratio (pairing the runs
 * by their "round" counter, whatever their order), per case, their geometric means per
 * mode, and the cases that miss the targets. The rounds of a benchmark share its name, so
 * compare.py sees them as repetitions. run_report.sh runs both.
 */
#include "bench_args.hpp"
#include "bench_cases.hpp"
#include "machine_load.hpp"
#include "roofline.hpp"
#if NKBENCH_HAVE_ONEDNN
#include "onednn_batch_norm.hpp"
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
#include <thread>
#include <utility>
#include <vector>

namespace nkbench {
namespace {

struct FreeDeleter {
    void operator()(float* p) const { std::free(p); }
};
using Buffer = std::unique_ptr<float[], FreeDeleter>;

// 2 MiB-aligned, so that where transparent huge pages back every allocation ("always" in
// /sys/kernel/mm/transparent_hugepage/enabled) they can back the big tensors. No
// madvise: under "madvise" (this machine) the tensors get 4 KB pages, as a framework's
// allocations that do not ask for huge pages do.
Buffer allocate(int64_t count) {
    const size_t align = size_t(2) << 20;
    const size_t bytes = (size_t(count) * sizeof(float) + align - 1) / align * align;
    auto* p = static_cast<float*>(std::aligned_alloc(align, bytes));
    if (p == nullptr) {
        std::fprintf(stderr, "normkit_bench: out of memory for %zu bytes\n", bytes);
        std::exit(1);
    }
    return Buffer(p);
}

// Deterministic values in [-2, 2): the kernels' speed does not depend on them.
void fill(float* dst, int64_t count, uint64_t seed) {
    uint64_t x = seed * 0x9E3779B97F4A7C15ull + 1;
    for (int64_t i = 0; i < count; ++i) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        dst[i] = float(x >> 40) * (4.0f / 16777216.0f) - 2.0f;
    }
}

// The buffers of every case, sized for the largest one, written (so faulted in) once.
class Workspace {
public:
    Workspace() {
        int64_t elements = 0, channels = 0;
        for (const Shape& s : kShapes) {
            elements = std::max(elements, s.elements());
            channels = std::max(channels, s.c);
        }
        src_ = allocate(elements);
        diff_dst_ = allocate(elements);
        dst_ = allocate(elements);
        fill(src_.get(), elements, 1);
        fill(diff_dst_.get(), elements, 2);
        fill(dst_.get(), elements, 3);
        channel_.assign(size_t(kChannelArrays) * size_t(channels), 0.0f);
        float* a = channel_.data();
        auto next = [&] {
            float* p = a;
            a += channels;
            return p;
        };
        float *scale = next(), *shift = next(), *mean = next(), *variance = next(), *invstd = next();
        for (int64_t c = 0; c < channels; ++c) {
            scale[c] = 1.0f + 0.01f * float(c % 7);
            shift[c] = 0.01f * float(c % 5);
            mean[c] = 0.0f; // the inputs are uniform in [-2, 2): mean 0, variance 4/3
            variance[c] = 4.0f / 3.0f;
            invstd[c] = 1.0f / std::sqrt(variance[c] + kEpsilon);
        }
        tensors_ = Tensors{src_.get(), diff_dst_.get(), dst_.get(), scale, shift, mean, variance, invstd,
                           next(), next(), next(), next(), next(), next()};
        for (int64_t c = 0; c < channels; ++c) tensors_.running_var[c] = 1.0f;
    }
    const Tensors& tensors() const { return tensors_; }

private:
    static constexpr int kChannelArrays = 11;
    Buffer src_, diff_dst_, dst_;
    std::vector<float> channel_;
    Tensors tensors_{};
};

Workspace& workspace() {
    static Workspace w; // first use, so --benchmark_list_tests allocates nothing
    return w;
}

template <class T> T& per_thread_count(std::map<int, std::unique_ptr<T>>& cache, int threads) {
    auto& slot = cache[threads];
    if (!slot) slot = std::make_unique<T>(threads);
    return *slot;
}

struct Context {
    explicit Context(int threads) {
        if (nk_context_create(&ctx) != NK_OK || nk_context_set_num_threads(ctx, threads) != NK_OK) {
            std::fprintf(stderr, "normkit_bench: nk_context: %s\n", nk_last_error_message());
            std::exit(1);
        }
    }
    ~Context() { nk_context_destroy(ctx); }
    nk_context* ctx = nullptr;
};

nk_context* context(int threads) {
    static std::map<int, std::unique_ptr<Context>> cache;
    return per_thread_count(cache, threads).ctx;
}

const Roofline& roofline(int threads) {
    static std::map<int, std::unique_ptr<Roofline>> cache;
    return per_thread_count(cache, threads);
}

// Seconds per call of the reference and oneDNN runs of each (case, round), for the ratio
// counters of the normkit run of that round.
struct PartnerTimes {
    double roofline = NAN, two_pass = NAN, onednn = NAN;
};
PartnerTimes& partner_times(const Case& cs) {
    static std::map<std::pair<std::string, int>, PartnerTimes> times;
    return times[{cs.name(), cs.round}];
}

void set_counters(benchmark::State& state, const Case& cs) {
    const double bytes = double(cs.bytes());
    state.counters["GB/s"] = benchmark::Counter(bytes * 1e-9, benchmark::Counter::kIsIterationInvariantRate);
    state.counters["bytes"] = bytes;
    state.counters["round"] = cs.round; // normkit_bench_summary pairs the runs of a round by it
}

// Times `call`; a failure skips the benchmark with `error()`. `cs` is the benchmark's own
// copy of its case, so its address tells the benchmarks apart (rounds included): the first
// run of each makes one untimed call first (warm caches, awake threads, errors caught);
// repetitions (--benchmark_repetitions) follow it back to back and need none.
// Returns the seconds per call of the timed loop, NaN when a call failed.
template <class Call, class Error>
double measure(benchmark::State& state, const Case& cs, Call&& call, Error&& error) {
    static const Case* warm = nullptr;
    if (warm != &cs) {
        if (!call()) {
            state.SkipWithError(error().c_str());
            return NAN;
        }
        warm = &cs;
    }
    const ForeignLoad load;
    bool failed = false;
    const auto start = std::chrono::steady_clock::now();
    for (auto _ : state) {
        if (!call()) {
            state.SkipWithError(error().c_str());
            failed = true;
            break;
        }
        benchmark::ClobberMemory();
    }
    const std::chrono::duration<double> elapsed = std::chrono::steady_clock::now() - start;
    set_counters(state, cs);
    const double others = load.fraction();
    if (!std::isnan(others)) state.counters["others_cpu"] = others;
    if (failed || state.iterations() == 0) return NAN;
    return elapsed.count() / double(state.iterations());
}

void bm_normkit(benchmark::State& state, const Case& cs) {
    const Tensors& t = workspace().tensors();
    nk_context* ctx = context(cs.threads);
    nk_batch_norm_desc desc;
    nk_batch_norm_desc_init(&desc, cs.layout, cs.shape.n, cs.shape.c, cs.shape.spatial());
    desc.epsilon = kEpsilon;
    auto call = [&] {
        nk_status status = NK_OK;
        switch (cs.mode) {
        case Mode::train_fwd:
            status = nk_batch_norm_forward_training(ctx, &desc, t.src, t.dst, t.scale, t.shift, t.running_mean,
                                                    t.running_var, t.mean_out, t.variance_out);
            break;
        case Mode::infer_fwd:
            status = nk_batch_norm_forward_inference(ctx, &desc, t.src, t.dst, t.scale, t.shift, t.mean, t.variance);
            break;
        case Mode::bwd:
            status = nk_batch_norm_backward(ctx, &desc, t.src, t.diff_dst, t.scale, t.mean, t.invstd, t.dst,
                                            t.diff_scale, t.diff_shift);
            break;
        }
        return status == NK_OK;
    };
    const double seconds =
        measure(state, cs, call, [] { return std::string("normkit: ") + nk_last_error_message(); });
    const PartnerTimes& partners = partner_times(cs);
    if (!std::isnan(seconds) && !std::isnan(partners.roofline))
        state.counters["roofline"] = partners.roofline / seconds;
    if (!std::isnan(seconds) && !std::isnan(partners.two_pass))
        state.counters["two_pass"] = partners.two_pass / seconds;
    if (!std::isnan(seconds) && !std::isnan(partners.onednn))
        state.counters["x_onednn"] = partners.onednn / seconds;
}

// The roofline (kTwoPass false) or the two-pass kernel (true).
template <bool kTwoPass> void bm_reference(benchmark::State& state, const Case& cs) {
    const Tensors& t = workspace().tensors();
    const Roofline& r = roofline(cs.threads);
    const int64_t count = cs.shape.elements();
    // Channels-first with spatial > 1 keeps each channel in runs, which a batch norm can
    // take in cache-sized groups; channels-last and NC spread every channel over all rows.
    const bool blocked = cs.layout == NK_LAYOUT_NCS && !cs.shape.nc;
    auto call = [&] {
        if (cs.mode == Mode::bwd && kTwoPass)
            r.two_pass_backward(t.src, t.diff_dst, t.dst, count, blocked);
        else if (cs.mode == Mode::bwd)
            r.backward(t.src, t.diff_dst, t.dst, count);
        else if (kTwoPass)
            r.two_pass_forward(t.src, t.dst, count, blocked);
        else
            r.forward(t.src, t.dst, count);
        return true;
    };
    PartnerTimes& times = partner_times(cs);
    (kTwoPass ? times.two_pass : times.roofline) = measure(state, cs, call, [] { return std::string(); });
}

#if NKBENCH_HAVE_ONEDNN
// The primitive of the case being measured: kept across the rounds of a case (they run
// one after the other), rebuilt when the case changes.
OnednnBatchNorm& onednn_primitive(const Case& cs, const Tensors& t) {
    static std::string name;
    static std::unique_ptr<OnednnBatchNorm> primitive;
    if (!primitive || name != cs.name()) {
        primitive.reset(); // free the previous case's scratchpad first
        primitive = std::make_unique<OnednnBatchNorm>(cs, t);
        name = cs.name();
    }
    return *primitive;
}

void bm_onednn(benchmark::State& state, const Case& cs) {
    const Tensors& t = workspace().tensors();
    OnednnBatchNorm* primitive = nullptr;
    std::string error;
    try {
        primitive = &onednn_primitive(cs, t);
    } catch (const std::exception& e) {
        error = std::string("oneDNN: ") + e.what();
    }
    auto call = [&] {
        if (primitive == nullptr) return false;
        try {
            primitive->run();
        } catch (const std::exception& e) {
            error = std::string("oneDNN: ") + e.what();
            return false;
        }
        return true;
    };
    partner_times(cs).onednn = measure(state, cs, call, [&] { return error; });
    if (primitive != nullptr) state.SetLabel(primitive->implementation());
}
#endif

const char* isa_name(int32_t isa) {
    switch (isa) {
    case NK_ISA_SCALAR: return "scalar";
    case NK_ISA_SSE4_2: return "sse4.2";
    case NK_ISA_AVX2: return "avx2";
    case NK_ISA_AVX512: return "avx512";
    }
    return "?";
}

void register_benchmarks(const std::vector<int>& thread_counts, int rounds) {
    for (Mode mode : kModes)
        for (const Shape& shape : kShapes)
            for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC})
                for (int threads : thread_counts) {
                    Case cs{mode, shape, layout, threads};
                    // Each registration keeps its own copy of cs (measure() tells them apart by it).
                    auto add = [&](const char* impl, void (*fn)(benchmark::State&, const Case&)) {
                        benchmark::RegisterBenchmark((cs.name() + "/" + impl).c_str(), fn, cs)
                            ->UseRealTime()
                            ->Unit(benchmark::kMicrosecond);
                    };
                    for (int round = 0; round < rounds; ++round) {
                        cs.round = round;
                        add("roofline", bm_reference<false>);
                        if (mode != Mode::infer_fwd) add("two_pass", bm_reference<true>);
#if NKBENCH_HAVE_ONEDNN
                        add("onednn", bm_onednn);
#endif
                        add("normkit", bm_normkit); // last: its ratio counters use the runs above
                    }
                }
}

} // namespace
} // namespace nkbench

int main(int argc, char** argv) {
    const int rounds = nkbench::init_benchmark(argc, argv, 5, "normkit_bench");
    if (rounds == 0) return 1;

    const int all = std::max(1u, std::thread::hardware_concurrency());
    std::vector<int> thread_counts{1};
    if (all > 1) thread_counts.push_back(all);
    nkbench::register_benchmarks(thread_counts, rounds);

    const uint32_t v = nk_version();
    benchmark::AddCustomContext("normkit_version", std::to_string(v / 10000) + "." + std::to_string(v / 100 % 100) +
                                                       "." + std::to_string(v % 100));
    benchmark::AddCustomContext("normkit_isa", nkbench::isa_name(nk_context_isa(nullptr)));
    benchmark::AddCustomContext("threads_all", std::to_string(all));
#if NKBENCH_HAVE_ONEDNN
    benchmark::AddCustomContext("onednn_version", nkbench::OnednnBatchNorm::version());
#else
    benchmark::AddCustomContext("onednn_version", "not built (oneDNN not found at configure time)");
#endif

    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
