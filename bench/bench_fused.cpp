/*
 * normkit_bench_fused: batch norm with its ReLU (NK_BN_FUSE_RELU) or residual-add-ReLU
 * fused, against the same work as an unfused network does it: the batch-norm call, then a
 * separate pass (threaded as normkit is, compiled -O3 -march=native: bench/roofline.*).
 *
 *   relu      forward  nk_batch_norm_forward_*_v2 + NK_BN_FUSE_RELU
 *                      vs nk_batch_norm_forward_* then y = relu(y)
 *             backward nk_batch_norm_backward_v2 (mask from dst)
 *                      vs g = (dst <= 0 ? 0 : dy), then nk_batch_norm_backward on g
 *   add_relu  forward  the same with the residual: y = relu(bn(x) + r)
 *             backward the same, the fused call also writing diff_residual (= g, which the
 *                      unfused network gets from its ReLU pass)
 *
 * Each benchmark alternates, call after call on the same buffers, the fused call and the
 * unfused pair, and times each by itself, so both see the same machine. Counters:
 * fused_us, unfused_us (mean per call) and x_unfused = unfused / fused (the target is
 * >= 1.4). The summary after the runs gives the median of the rounds per case, the
 * geometric mean per mode and variant, and the cases below the target.
 *
 *   normkit_bench_fused [--rounds=3] [--benchmark_filter=...]
 */
#include "bench_args.hpp"
#include "bench_cases.hpp"
#include "normkit/normkit.h"
#include "roofline.hpp"

#include <benchmark/benchmark.h>

#include <algorithm>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace nkbench {
namespace {

using Clock = std::chrono::steady_clock;

enum class Variant { relu, add_relu };
const char* variant_name(Variant v) { return v == Variant::relu ? "relu" : "add_relu"; }

struct FusedCase {
    Mode mode;
    Variant variant;
    Shape shape;
    int layout, threads;
    std::string key() const {
        return std::string("fused/") + mode_name(mode) + "/" + variant_name(variant) + "/" + shape.name + "/" +
               layout_name(layout) + "/t:" + std::to_string(threads);
    }
};

void check(nk_status s, const char* call) {
    if (s != NK_OK) {
        std::fprintf(stderr, "normkit_bench_fused: %s: %s: %s\n", call, nk_status_string(s), nk_last_error_message());
        std::exit(1);
    }
}

// The x_unfused of every round of every case, for the summary.
std::map<std::string, std::vector<double>>& ratios() {
    static std::map<std::string, std::vector<double>> r;
    return r;
}

void run_case(benchmark::State& state, const FusedCase& cs) {
    nk_context* ctx = nullptr;
    check(nk_context_create(&ctx), "nk_context_create");
    check(nk_context_set_num_threads(ctx, cs.threads), "nk_context_set_num_threads");
    const Roofline passes(cs.threads);
    nk_batch_norm_desc plain;
    check(nk_batch_norm_desc_init(&plain, cs.layout, cs.shape.n, cs.shape.c, cs.shape.spatial()),
          "nk_batch_norm_desc_init");
    nk_batch_norm_desc fused = plain;
    fused.flags = NK_BN_FUSE_RELU;
    const int64_t count = cs.shape.elements();
    const size_t n = size_t(count), C = size_t(cs.shape.c);
    std::vector<float> src(n), residual(n), dy(n), dst(n), out(n), out2(n), g(n);
    std::vector<float> scale(C, 1.0f), shift(C, 0.1f), rm(C, 0.0f), rv(C, 1.0f), mean(C), invstd(C);
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(0.5f, 2.0f);
    for (size_t i = 0; i < n; ++i) src[i] = dist(rng), residual[i] = dist(rng) - 0.5f, dy[i] = dist(rng) - 0.5f;
    const float* res = cs.variant == Variant::add_relu ? residual.data() : nullptr;
    // The forward's statistics and output: backward's inputs (about half of dst is 0).
    check(nk_batch_norm_forward_training_v2(ctx, &fused, src.data(), res, dst.data(), scale.data(), shift.data(),
                                            nullptr, nullptr, mean.data(), invstd.data()),
          "forward");
    std::vector<float> running_var(C, 1.0f), dscale(C), dshift(C);

    auto fused_call = [&] {
        switch (cs.mode) {
        case Mode::train_fwd:
            check(nk_batch_norm_forward_training_v2(ctx, &fused, src.data(), res, out.data(), scale.data(),
                                                    shift.data(), rm.data(), rv.data(), mean.data(), invstd.data()),
                  "fused training");
            break;
        case Mode::infer_fwd:
            check(nk_batch_norm_forward_inference_v2(ctx, &fused, src.data(), res, out.data(), scale.data(),
                                                     shift.data(), rm.data(), running_var.data()),
                  "fused inference");
            break;
        case Mode::bwd:
            check(nk_batch_norm_backward_v2(ctx, &fused, src.data(), dy.data(), dst.data(), scale.data(), mean.data(),
                                            invstd.data(), out.data(), res ? out2.data() : nullptr, dscale.data(),
                                            dshift.data()),
                  "fused backward");
            break;
        }
    };
    auto unfused_call = [&] {
        switch (cs.mode) {
        case Mode::train_fwd:
            check(nk_batch_norm_forward_training(ctx, &plain, src.data(), out.data(), scale.data(), shift.data(),
                                                 rm.data(), rv.data(), mean.data(), invstd.data()),
                  "training");
            break;
        case Mode::infer_fwd:
            check(nk_batch_norm_forward_inference(ctx, &plain, src.data(), out.data(), scale.data(), shift.data(),
                                                  rm.data(), running_var.data()),
                  "inference");
            break;
        case Mode::bwd:
            passes.relu_grad(dy.data(), dst.data(), g.data(), count);
            check(nk_batch_norm_backward(ctx, &plain, src.data(), g.data(), scale.data(), mean.data(), invstd.data(),
                                         out.data(), dscale.data(), dshift.data()),
                  "backward");
            return;
        }
        if (res)
            passes.add_relu(res, out.data(), count);
        else
            passes.relu(out.data(), count);
    };
    fused_call(); // warm: caches, threads
    unfused_call();
    double fused_s = 0, unfused_s = 0;
    for (auto _ : state) {
        auto t0 = Clock::now();
        fused_call();
        auto t1 = Clock::now();
        unfused_call();
        auto t2 = Clock::now();
        fused_s += std::chrono::duration<double>(t1 - t0).count();
        unfused_s += std::chrono::duration<double>(t2 - t1).count();
        state.SetIterationTime(std::chrono::duration<double>(t1 - t0).count());
    }
    const double iters = double(state.iterations());
    state.counters["fused_us"] = fused_s / iters * 1e6;
    state.counters["unfused_us"] = unfused_s / iters * 1e6;
    state.counters["x_unfused"] = unfused_s / fused_s;
    ratios()[cs.key()].push_back(unfused_s / fused_s);
    nk_context_destroy(ctx);
}

const char* const kResnetShapes[] = {"resnet_c64_56", "resnet_c256_56", "resnet_c512_28", "resnet_c2048_7",
                                     "b1_c64_112"};

std::vector<FusedCase> register_benchmarks(const std::vector<int>& thread_counts, int rounds) {
    std::vector<FusedCase> cases;
    for (Mode mode : kModes)
        for (Variant v : {Variant::relu, Variant::add_relu})
            for (const Shape& shape : kShapes) {
                if (std::find_if(std::begin(kResnetShapes), std::end(kResnetShapes), [&](const char* s) {
                        return std::string(s) == shape.name;
                    }) == std::end(kResnetShapes))
                    continue;
                for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC})
                    for (int threads : thread_counts) {
                        const FusedCase cs{mode, v, shape, layout, threads};
                        cases.push_back(cs);
                        for (int round = 0; round < rounds; ++round)
                            benchmark::RegisterBenchmark(cs.key().c_str(), run_case, cs)
                                ->UseManualTime()
                                ->Unit(benchmark::kMicrosecond);
                    }
            }
    return cases;
}

double median(std::vector<double> v) {
    std::sort(v.begin(), v.end());
    const size_t n = v.size();
    return n == 0 ? NAN : n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

// The medians, geometric means and the cases below the target. Returns the miss count.
int summarize(const std::vector<FusedCase>& cases) {
    std::printf("\nfused vs unfused (the batch-norm call, then a separate pass): median of the rounds\n");
    std::printf("%-9s %-8s %-15s %-5s %3s %10s\n", "mode", "variant", "shape", "lay", "t", "x_unfused");
    std::map<std::string, std::pair<double, int>> logs; // mode/variant/t -> (sum of logs, count)
    int misses = 0;
    for (const FusedCase& cs : cases) {
        const double r = median(ratios()[cs.key()]);
        if (std::isnan(r)) continue;
        std::printf("%-9s %-8s %-15s %-5s %3d %9.2fx%s\n", mode_name(cs.mode), variant_name(cs.variant), cs.shape.name,
                    layout_name(cs.layout), cs.threads, r, r < 1.4 ? "  MISS (target 1.4x)" : "");
        misses += r < 1.4;
        auto& l = logs[std::string(mode_name(cs.mode)) + " " + variant_name(cs.variant) + " t:" +
                       (cs.threads == 1 ? "1" : "all")];
        l.first += std::log(r);
        ++l.second;
    }
    std::printf("\ngeometric means\n");
    for (const auto& [what, l] : logs) std::printf("  %-26s %5.2fx over %d cases\n", what.c_str(), std::exp(l.first / l.second), l.second);
    std::printf("%d cases below 1.4x\n", misses);
    return misses;
}

} // namespace
} // namespace nkbench

int main(int argc, char** argv) {
    const int rounds = nkbench::init_benchmark(argc, argv, 3, "normkit_bench_fused");
    if (rounds == 0) return 1;
    const int all = std::max(1u, std::thread::hardware_concurrency());
    std::vector<int> thread_counts{1};
    if (all > 1) thread_counts.push_back(all);
    const std::vector<nkbench::FusedCase> cases = nkbench::register_benchmarks(thread_counts, rounds);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    nkbench::summarize(cases);
    return 0;
}
