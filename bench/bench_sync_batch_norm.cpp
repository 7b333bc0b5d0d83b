/*
 * normkit_bench_sync: the local cost of one synchronized batch-norm training forward, and
 * the bytes a rank exchanges per training step.
 *
 * Each benchmark alternates, call after call on the same buffers, the two ways a rank can
 * run the forward of its slice:
 *   plain  nk_batch_norm_forward_training (statistics of the slice alone)
 *   sync   nk_batch_norm_stats, nk_batch_norm_merge_partials of 4 partials (a 4-rank step:
 *          the slice's own partial 4 times), nk_batch_norm_forward_from_partial
 * and times each call by itself, so both see the same machine (it is shared: expect noise).
 * The exchange itself (MPI_Allgather) is not timed: it depends on the network alone.
 * Time reported = sync; counters:
 *   plain_us, sync_us   mean time per call of each
 *   sync_x              sync / plain (the target is <= 1.1)
 *   exchanged_bytes     bytes one rank sends per training step: its statistics partial
 *                       and its gradient-sum partial (samples_per_piece as in the name)
 *   tensor_bytes        the slice's src, for comparison
 * Names: sync/<shape>/<layout>/t:<threads>/g:<samples_per_piece>, with samples_per_piece 0
 * (one piece per rank) and the smallest that gives pieces of 1024 values per channel or
 * more (ceil(1024 / spatial) samples: the R-invariant mode as the README advises it).
 *
 *   normkit_bench_sync [--benchmark_filter=...] [--benchmark_min_time=0.2]
 */
#include "bench_cases.hpp"
#include "normkit/normkit.h"

#include <benchmark/benchmark.h>

#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <random>
#include <string>
#include <thread>
#include <vector>

namespace {

using Clock = std::chrono::steady_clock;

void check(nk_status s, const char* call) {
    if (s != NK_OK) {
        std::fprintf(stderr, "%s: %s: %s\n", call, nk_status_string(s), nk_last_error_message());
        std::exit(1);
    }
}

void run_case(benchmark::State& state, nkbench::Shape shape, int layout, int threads, int64_t g) {
    nk_context* ctx = nullptr;
    check(nk_context_create(&ctx), "nk_context_create");
    check(nk_context_set_num_threads(ctx, threads), "nk_context_set_num_threads");
    nk_batch_norm_desc d;
    check(nk_batch_norm_desc_init(&d, layout, shape.n, shape.c, shape.spatial()), "nk_batch_norm_desc_init");
    const size_t count = size_t(shape.elements()), C = size_t(shape.c);
    std::vector<float> src(count), dst(count), scale(C, 1.0f), shift(C, 0.0f), rm(C, 0.0f), rv(C, 1.0f), sm(C), si(C);
    std::mt19937 rng(7);
    std::normal_distribution<float> dist(1.0f, 2.0f);
    for (float& x : src) x = dist(rng);
    int64_t bytes = 0, merged_bytes = 0;
    check(nk_batch_norm_partial_size(&d, g, &bytes), "nk_batch_norm_partial_size");
    check(nk_batch_norm_partial_size(&d, 0, &merged_bytes), "nk_batch_norm_partial_size");
    std::vector<unsigned char> partial(static_cast<size_t>(bytes)), merged(static_cast<size_t>(merged_bytes));
    const void* parts[4] = {partial.data(), partial.data(), partial.data(), partial.data()};
    const int64_t sizes[4] = {bytes, bytes, bytes, bytes};

    auto plain = [&] {
        check(nk_batch_norm_forward_training(ctx, &d, src.data(), dst.data(), scale.data(), shift.data(), rm.data(),
                                             rv.data(), sm.data(), si.data()),
              "nk_batch_norm_forward_training");
    };
    auto sync = [&] {
        check(nk_batch_norm_stats(ctx, &d, g, src.data(), partial.data(), bytes), "nk_batch_norm_stats");
        check(nk_batch_norm_merge_partials(&d, parts, sizes, 4, merged.data(), merged_bytes),
              "nk_batch_norm_merge_partials");
        check(nk_batch_norm_forward_from_partial(ctx, &d, merged.data(), merged_bytes, src.data(), dst.data(),
                                                 scale.data(), shift.data(), rm.data(), rv.data(), sm.data(),
                                                 si.data()),
              "nk_batch_norm_forward_from_partial");
    };
    plain(); // warm caches and threads
    sync();
    double plain_s = 0, sync_s = 0;
    int64_t calls = 0;
    for (auto _ : state) {
        const auto t0 = Clock::now();
        plain();
        const auto t1 = Clock::now();
        sync();
        const auto t2 = Clock::now();
        plain_s += std::chrono::duration<double>(t1 - t0).count();
        const double s = std::chrono::duration<double>(t2 - t1).count();
        sync_s += s;
        ++calls;
        state.SetIterationTime(s);
    }
    state.counters["plain_us"] = 1e6 * plain_s / double(calls);
    state.counters["sync_us"] = 1e6 * sync_s / double(calls);
    state.counters["sync_x"] = sync_s / plain_s;
    state.counters["exchanged_bytes"] = double(2 * bytes);
    state.counters["tensor_bytes"] = double(count * sizeof(float));
    nk_context_destroy(ctx);
}

} // namespace

int main(int argc, char** argv) {
    const int hw = int(std::max(1u, std::thread::hardware_concurrency()));
    for (const nkbench::Shape& shape : nkbench::kShapes)
        for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
            if (shape.nc && layout == NK_LAYOUT_NSC) continue; // N x C: one layout
            for (int threads : {1, hw}) {
                const int64_t granular = (1024 + shape.spatial() - 1) / shape.spatial();
                for (int64_t g : {int64_t(0), granular}) {
                    const std::string name = std::string("sync/") + shape.name + "/" + nkbench::layout_name(layout) +
                                             "/t:" + std::to_string(threads) + "/g:" + std::to_string(g);
                    benchmark::RegisterBenchmark(name.c_str(), run_case, shape, layout, threads, g)
                        ->UseManualTime()
                        ->Unit(benchmark::kMicrosecond);
                }
                if (threads == hw) break;
            }
        }
    benchmark::Initialize(&argc, argv);
    benchmark::RunSpecifiedBenchmarks();
    benchmark::Shutdown();
    return 0;
}
