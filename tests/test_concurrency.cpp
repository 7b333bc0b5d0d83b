// Many threads calling normkit at once: every result must be bitwise equal to the
// single-threaded result computed beforehand, whatever context the call used
// (shared, private, per-call, NULL) and whatever thread/ISA caps that context had,
// even while another thread keeps changing the caps of a shared context.
//
// Shapes are small (at most ~36k floats) but each cuts into several work items, so
// the parallel paths of the planner run. Worker threads never use doctest assertions:
// they record failures, checked on the main thread after join().
#include "test_util.hpp"

#include <atomic>
#include <mutex>
#include <chrono>
#include <sstream>
#include <thread>

#include <tbb/parallel_for.h>

namespace {

constexpr int kWorkers = 16;
constexpr int kCallsPerWorker = 200;

struct Problem {
    ref::Shape sh;
    uint32_t flags;
    nk_batch_norm_desc desc;
    std::vector<float> src, dy, scale, shift, running_mean, running_var;
    // Expected results, from one thread with one context.
    std::vector<float> dst, save_mean, save_invstd, new_running_mean, new_running_var;
    std::vector<float> inference_dst;
    std::vector<float> diff_src, diff_scale, diff_shift;
};

// The shapes, with the planner path each one takes.
const struct {
    ref::Shape sh;
    uint32_t flags;
} kProblems[] = {
    {{NK_LAYOUT_NCS, 4, 6, 33}, 0},                                                // channels-first, 6 items
    {{NK_LAYOUT_NSC, 2, 1100, 3}, NK_BN_KERAS_MOMENTUM | NK_BN_BIASED_RUNNING_VAR}, // rows, 2 lane tiles
    {{NK_LAYOUT_NSC, 3, 17, 11000}, 0},                                            // rows, 4 row blocks
    {{NK_LAYOUT_NCS, 9, 5, 1}, NK_BN_USE_GLOBAL_STATS},                            // NC: rows path
    {{NK_LAYOUT_NCS, 1, 2, 17000}, 0},                                             // a row split in 2 pieces
    {{NK_LAYOUT_NSC, 5, 64, 8}, NK_BN_USE_GLOBAL_STATS | NK_BN_KERAS_MOMENTUM},     // rows, one item
};
constexpr int kProblemCount = int(sizeof kProblems / sizeof kProblems[0]);

enum Op { kTraining, kInference, kBackward, kOps };

// Runs one op of p with ctx; returns "" when every output has the expected bits.
std::string run_and_compare(nk_context* ctx, const Problem& p, int op) {
    const size_t count = size_t(p.sh.count()), c = size_t(p.sh.c);
    std::ostringstream why;
    auto compare = [&](const char* what, const std::vector<float>& got, const std::vector<float>& want) {
        if (!test::same_bits(got, want)) why << what << " differs; ";
    };
    nk_status status = NK_OK;
    if (op == kTraining) {
        std::vector<float> dst(count, -1.0f), save_mean(c, -1.0f), save_invstd(c, -1.0f);
        std::vector<float> running_mean = p.running_mean, running_var = p.running_var;
        status = nk_batch_norm_forward_training(ctx, &p.desc, p.src.data(), dst.data(), p.scale.data(),
                                                p.shift.data(), running_mean.data(), running_var.data(),
                                                save_mean.data(), save_invstd.data());
        compare("training dst", dst, p.dst);
        compare("save_mean", save_mean, p.save_mean);
        compare("save_invstd", save_invstd, p.save_invstd);
        compare("running_mean", running_mean, p.new_running_mean);
        compare("running_var", running_var, p.new_running_var);
    } else if (op == kInference) {
        std::vector<float> dst(count, -1.0f);
        status = nk_batch_norm_forward_inference(ctx, &p.desc, p.src.data(), dst.data(), p.scale.data(),
                                                 p.shift.data(), p.running_mean.data(), p.running_var.data());
        compare("inference dst", dst, p.inference_dst);
    } else {
        std::vector<float> diff_src(count, -1.0f), diff_scale(c, -1.0f), diff_shift(c, -1.0f);
        status = nk_batch_norm_backward(ctx, &p.desc, p.src.data(), p.dy.data(), p.scale.data(),
                                        p.save_mean.data(), p.save_invstd.data(), diff_src.data(),
                                        diff_scale.data(), diff_shift.data());
        compare("diff_src", diff_src, p.diff_src);
        compare("diff_scale", diff_scale, p.diff_scale);
        compare("diff_shift", diff_shift, p.diff_shift);
    }
    if (status != NK_OK) return std::string("status ") + nk_status_string(status) + ": " + nk_last_error_message();
    if (*nk_last_error_message() != '\0') why << "message not empty after success; ";
    return why.str();
}

std::vector<Problem> make_problems() {
    std::vector<Problem> problems;
    uint64_t seed = 500;
    test::Context one(nk_context_isa(nullptr), 1);
    for (const auto& k : kProblems) {
        Problem p;
        p.sh = k.sh;
        p.flags = k.flags;
        p.desc = test::make_desc(k.sh);
        p.desc.flags = k.flags;
        const size_t count = size_t(k.sh.count()), c = size_t(k.sh.c);
        p.src = test::normal(count, 0.5, 2.0, seed++);
        p.dy = test::normal(count, 0.0, 1.0, seed++);
        p.scale = test::uniform(c, 0.5, 1.5, seed++);
        p.shift = test::uniform(c, -1.0, 1.0, seed++);
        p.running_mean = test::uniform(c, -0.5, 0.5, seed++);
        p.running_var = test::uniform(c, 0.5, 2.0, seed++);

        p.dst.assign(count, 0.0f);
        p.save_mean.assign(c, 0.0f);
        p.save_invstd.assign(c, 0.0f);
        p.new_running_mean = p.running_mean;
        p.new_running_var = p.running_var;
        REQUIRE(nk_batch_norm_forward_training(one.get(), &p.desc, p.src.data(), p.dst.data(), p.scale.data(),
                                               p.shift.data(), p.new_running_mean.data(), p.new_running_var.data(),
                                               p.save_mean.data(), p.save_invstd.data()) == NK_OK);
        p.inference_dst.assign(count, 0.0f);
        REQUIRE(nk_batch_norm_forward_inference(one.get(), &p.desc, p.src.data(), p.inference_dst.data(),
                                                p.scale.data(), p.shift.data(), p.running_mean.data(),
                                                p.running_var.data()) == NK_OK);
        p.diff_src.assign(count, 0.0f);
        p.diff_scale.assign(c, 0.0f);
        p.diff_shift.assign(c, 0.0f);
        REQUIRE(nk_batch_norm_backward(one.get(), &p.desc, p.src.data(), p.dy.data(), p.scale.data(),
                                       p.save_mean.data(), p.save_invstd.data(), p.diff_src.data(),
                                       p.diff_scale.data(), p.diff_shift.data()) == NK_OK);
        problems.push_back(std::move(p));
    }
    // The expectations themselves do not depend on the configuration: check one other.
    test::Context scalar2(NK_ISA_SCALAR, 2);
    for (const Problem& p : problems)
        for (int op = 0; op < kOps; ++op) {
            CAPTURE(test::shape_name(p.sh));
            CAPTURE(op);
            CHECK(run_and_compare(scalar2.get(), p, op).empty());
        }
    return problems;
}

// An error whose message only this thread can produce: "desc->epsilon is -<tag>: ...".
std::string check_own_error(const Problem& p, int tag) {
    nk_batch_norm_desc d = p.desc;
    d.epsilon = -float(tag);
    std::vector<float> dst(size_t(p.sh.count()), -1.0f);
    const nk_status status = nk_batch_norm_forward_inference(nullptr, &d, p.src.data(), dst.data(), nullptr,
                                                             nullptr, p.running_mean.data(), p.running_var.data());
    if (status != NK_ERROR_INVALID_ARGUMENT) return "bad epsilon: status " + std::string(nk_status_string(status));
    const std::string want = "epsilon is -" + std::to_string(tag) + ":";
    // Give the other threads a chance to write their own messages in between.
    std::this_thread::yield();
    const std::string got = nk_last_error_message();
    if (got.find(want) == std::string::npos) return "message \"" + got + "\" is not this thread's (" + want + ")";
    for (float x : dst)
        if (x != -1.0f) return "dst written on error";
    return "";
}

} // namespace

TEST_CASE("concurrency: 16 threads x 200 calls, every context kind, bitwise equal results") {
    const std::vector<Problem> problems = make_problems();
    const int32_t best = nk_context_isa(nullptr);

    // Shared contexts: fixed caps, and one whose caps another thread keeps changing.
    test::Context shared_1(NK_ISA_SCALAR, 1);
    test::Context shared_2(std::min<int32_t>(NK_ISA_SSE4_2, best), 2);
    test::Context shared_0(best, 0);
    test::Context shared_changing(best, 2);
    nk_context* shared[] = {shared_1.get(), shared_2.get(), shared_0.get(), shared_changing.get()};

    std::atomic<bool> done{false};
    std::atomic<int> mutations{0};
    std::string mutator_failure;
    std::thread mutator([&] {
        for (int k = 0; !done.load(std::memory_order_relaxed); ++k) {
            const int32_t threads = k % 4;   // 0, 1, 2, 3
            const int32_t isa = (k / 4) % 4; // every cap, even above this CPU
            if (nk_context_set_num_threads(shared_changing.get(), threads) != NK_OK ||
                nk_context_set_max_isa(shared_changing.get(), isa) != NK_OK) {
                mutator_failure = nk_last_error_message();
                return;
            }
            // Also read it, as callers do.
            const int32_t now = nk_context_isa(shared_changing.get());
            if (now < NK_ISA_SCALAR || now > best) {
                mutator_failure = "nk_context_isa returned " + std::to_string(now);
                return;
            }
            mutations.fetch_add(1, std::memory_order_relaxed);
            std::this_thread::sleep_for(std::chrono::microseconds(200));
        }
    });

    struct Result {
        int calls = 0, failures = 0;
        std::vector<std::string> first_failures;
    };
    std::vector<Result> results(kWorkers);
    std::atomic<int> ready{0};
    std::vector<std::thread> workers;
    for (int id = 0; id < kWorkers; ++id) {
        workers.emplace_back([&, id] {
            Result& r = results[size_t(id)];
            auto record = [&](const std::string& what) {
                ++r.failures;
                if (r.first_failures.size() < 5) r.first_failures.push_back(what);
            };
            // A private context with this thread's own caps.
            nk_context* mine = nullptr;
            if (nk_context_create(&mine) != NK_OK || nk_context_set_num_threads(mine, id % 3) != NK_OK ||
                nk_context_set_max_isa(mine, id % (best + 1)) != NK_OK) {
                record(std::string("private context: ") + nk_last_error_message());
                nk_context_destroy(mine);
                return;
            }
            // Start together, once the caps of the shared context have started changing.
            ready.fetch_add(1);
            while (ready.load() < kWorkers || mutations.load() == 0) std::this_thread::yield();

            for (int it = 0; it < kCallsPerWorker; ++it) {
                const Problem& p = problems[size_t((id * 7 + it) % kProblemCount)];
                const int op = (id + it) % kOps;
                const int kind = (it + id / 2) % 7;
                nk_context* ctx = nullptr;
                nk_context* per_call = nullptr;
                const char* kind_name = "";
                if (kind < 4) {
                    ctx = shared[kind];
                    kind_name = "shared";
                } else if (kind == 4) {
                    ctx = mine;
                    kind_name = "private";
                } else if (kind == 5) {
                    ctx = nullptr;
                    kind_name = "NULL";
                } else {
                    // A context made for this one call, with caps from the iteration.
                    if (nk_context_create(&per_call) != NK_OK ||
                        nk_context_set_num_threads(per_call, it % 3) != NK_OK ||
                        nk_context_set_max_isa(per_call, (it / 3) % 4) != NK_OK) {
                        record(std::string("per-call context: ") + nk_last_error_message());
                        nk_context_destroy(per_call);
                        continue;
                    }
                    ctx = per_call;
                    kind_name = "per-call";
                }
                const std::string why = run_and_compare(ctx, p, op);
                ++r.calls;
                if (!why.empty()) {
                    std::ostringstream where;
                    where << "thread " << id << " call " << it << " (" << test::shape_name(p.sh) << ", op " << op
                          << ", " << kind_name << " context " << kind << "): " << why;
                    record(where.str());
                }
                nk_context_destroy(per_call);
                if (it % 13 == 5) {
                    const std::string own = check_own_error(p, id + 1);
                    if (!own.empty()) record("thread " + std::to_string(id) + ": " + own);
                }
            }
            nk_context_destroy(mine);
        });
    }
    for (std::thread& t : workers) t.join();
    done = true;
    mutator.join();

    int calls = 0, failures = 0;
    for (const Result& r : results) {
        calls += r.calls;
        failures += r.failures;
        for (const std::string& f : r.first_failures) CHECK_MESSAGE(f.empty(), f);
    }
    CHECK(calls == kWorkers * kCallsPerWorker);
    CHECK(failures == 0);
    CHECK_MESSAGE(mutator_failure.empty(), mutator_failure);
    CHECK(mutations.load() > 0);
    MESSAGE(calls << " calls on " << kWorkers << " threads, " << failures << " wrong; " << mutations.load()
                  << " cap changes of the shared context meanwhile");
}

TEST_CASE("concurrency: many threads sharing one context while its caps change, every call checked") {
    const std::vector<Problem> problems = make_problems();
    const int32_t best = nk_context_isa(nullptr);
    test::Context ctx(best, 0);
    std::atomic<bool> done{false};
    std::atomic<int> changes{0};
    std::thread changer([&] {
        for (int k = 0; !done.load(std::memory_order_relaxed); ++k) {
            nk_context_set_max_isa(ctx.get(), k % 4);
            nk_context_set_num_threads(ctx.get(), (k / 4) % 3);
            changes.fetch_add(1, std::memory_order_relaxed);
            std::this_thread::yield();
        }
    });
    std::vector<std::string> failures(4);
    std::vector<std::thread> users;
    for (int id = 0; id < 4; ++id) {
        users.emplace_back([&, id] {
            while (changes.load() == 0) std::this_thread::yield();
            for (int it = 0; it < 100; ++it) {
                const Problem& p = problems[size_t((id + it) % kProblemCount)];
                const std::string why = run_and_compare(ctx.get(), p, (id * 3 + it) % kOps);
                if (!why.empty() && failures[size_t(id)].empty())
                    failures[size_t(id)] = test::shape_name(p.sh) + ": " + why;
            }
        });
    }
    for (std::thread& t : users) t.join();
    done = true;
    changer.join();
    for (const std::string& f : failures) CHECK_MESSAGE(f.empty(), f);
    CHECK(changes.load() > 0);
}

#if !defined(__SANITIZE_THREAD__)
// A call whose threads wait inside oneTBB may run any task of the caller's arena
// meanwhile, another normkit call included: calls then nest on one thread, and each
// must keep its own scratch (core/scratch: a thread's cached blocks are lent to one
// call at a time). (TSan builds leave this out: they cannot see oneTBB's hand-offs,
// see src/core/parallel.cpp, and normkit's own parallel_for does not use oneTBB there.)
TEST_CASE("concurrency: calls made from inside oneTBB tasks of the caller's arena (nested on a thread)") {
    const std::vector<Problem> problems = make_problems();
    constexpr int kCalls = 600;
    std::atomic<int> calls{0}, failures{0};
    std::mutex first_mutex;
    std::string first;
    tbb::parallel_for(0, kCalls, [&](int it) {
        const Problem& p = problems[size_t(it % kProblemCount)];
        const std::string why = run_and_compare(nullptr, p, (it / kProblemCount) % kOps);
        calls.fetch_add(1);
        if (why.empty()) return;
        failures.fetch_add(1);
        std::lock_guard<std::mutex> lock(first_mutex);
        if (first.empty()) first = "call " + std::to_string(it) + " (" + test::shape_name(p.sh) + "): " + why;
    });
    CHECK(calls.load() == kCalls);
    CHECK_MESSAGE(failures.load() == 0, first);
}
#endif
