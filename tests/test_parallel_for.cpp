// nk_context_set_parallel_for: calls run on the host's pool, with the bits of oneTBB.
//
// The hooks here stand for hosts that run the tasks in order, in reverse, shuffled, and
// on a team of std::threads that take tasks as they come (the order then changes from
// pass to pass). Every output of every op, layout and schedule must equal, bit for bit,
// what the same call gives on oneTBB. (That no thread is created is checked in a process
// of its own: tests/host_threads/.)
#include "test_util.hpp"

#include <algorithm>
#include <atomic>
#include <functional>
#include <mutex>
#include <new>
#include <numeric>
#include <random>
#include <sstream>
#include <thread>

namespace {

enum class Order { forward, reverse, shuffled, team };

const char* order_name(Order o) {
    switch (o) {
    case Order::forward: return "in order";
    case Order::reverse: return "reverse";
    case Order::shuffled: return "shuffled";
    case Order::team: return "std::thread team";
    }
    return "?";
}

// A host pool: runs the tasks of each call in its order and records what it was asked.
struct Host {
    Order order = Order::forward;
    int team = 3; // threads of Order::team
    std::atomic<int64_t> calls{0};
    std::atomic<int64_t> task_runs{0};
    std::atomic<int64_t> max_tasks{0}, min_tasks{INT64_MAX};
    std::atomic<uint64_t> seed{1};

    static void run(void* user, int64_t tasks, nk_task_fn task, void* arg) {
        Host& h = *static_cast<Host*>(user);
        h.calls.fetch_add(1);
        h.task_runs.fetch_add(tasks);
        int64_t seen = h.max_tasks.load();
        while (tasks > seen && !h.max_tasks.compare_exchange_weak(seen, tasks)) {}
        seen = h.min_tasks.load();
        while (tasks < seen && !h.min_tasks.compare_exchange_weak(seen, tasks)) {}
        std::vector<int64_t> ids(static_cast<size_t>(tasks));
        std::iota(ids.begin(), ids.end(), int64_t(0));
        switch (h.order) {
        case Order::forward: break;
        case Order::reverse: std::reverse(ids.begin(), ids.end()); break;
        case Order::shuffled: {
            std::mt19937_64 rng(h.seed.fetch_add(1));
            std::shuffle(ids.begin(), ids.end(), rng);
            break;
        }
        case Order::team: {
            std::atomic<int64_t> next{0};
            auto worker = [&] {
                for (int64_t i; (i = next.fetch_add(1)) < tasks;) task(arg, i);
            };
            std::vector<std::thread> threads;
            for (int t = 0; t < h.team; ++t) threads.emplace_back(worker);
            for (std::thread& t : threads) t.join();
            return;
        }
        }
        for (int64_t i : ids) task(arg, i);
    }
};

struct Data {
    ref::Shape sh;
    std::vector<float> src, dy, scale, shift, running_mean, running_var;
    std::vector<float> save_mean, save_invstd; // backward's statistics (from a training call)
};

Data make_data(const ref::Shape& sh, uint64_t seed) {
    Data d;
    d.sh = sh;
    const size_t count = size_t(sh.count()), c = size_t(sh.c);
    d.src = test::normal(count, 0.5, 2.0, seed);
    d.dy = test::normal(count, 0.0, 1.0, seed + 1);
    d.scale = test::uniform(c, 0.5, 1.5, seed + 2);
    d.shift = test::uniform(c, -1.0, 1.0, seed + 3);
    d.running_mean = test::uniform(c, -0.5, 0.5, seed + 4);
    d.running_var = test::uniform(c, 0.5, 2.0, seed + 5);
    d.save_mean = test::uniform(c, -0.5, 0.5, seed + 6);
    d.save_invstd = test::uniform(c, 0.5, 2.0, seed + 7);
    return d;
}

// The ops: training (PyTorch and Keras flags), inference, backward (full, frozen
// statistics, sums only, diff_src only).
enum Op { kTraining, kTrainingKeras, kInference, kBackward, kBackwardGlobal, kBackwardSums, kBackwardSrc, kOps };

// Every output of op on d, concatenated; status and message must be clean.
std::vector<float> run_op(nk_context* ctx, const Data& d, int op, std::string& error) {
    const size_t count = size_t(d.sh.count()), c = size_t(d.sh.c);
    nk_batch_norm_desc desc = test::make_desc(d.sh);
    std::vector<float> out;
    nk_status s = NK_OK;
    if (op == kTraining || op == kTrainingKeras) {
        if (op == kTrainingKeras) desc.flags = NK_BN_KERAS_MOMENTUM | NK_BN_BIASED_RUNNING_VAR;
        std::vector<float> dst(count, -1.0f), mean(c, -1.0f), invstd(c, -1.0f);
        std::vector<float> rm = d.running_mean, rv = d.running_var;
        s = nk_batch_norm_forward_training(ctx, &desc, d.src.data(), dst.data(), d.scale.data(), d.shift.data(),
                                           rm.data(), rv.data(), mean.data(), invstd.data());
        for (auto* v : {&dst, &mean, &invstd, &rm, &rv}) out.insert(out.end(), v->begin(), v->end());
    } else if (op == kInference) {
        std::vector<float> dst(count, -1.0f);
        s = nk_batch_norm_forward_inference(ctx, &desc, d.src.data(), dst.data(), d.scale.data(), d.shift.data(),
                                            d.running_mean.data(), d.running_var.data());
        out = dst;
    } else {
        if (op == kBackwardGlobal) desc.flags = NK_BN_USE_GLOBAL_STATS;
        std::vector<float> diff_src(count, -1.0f), diff_scale(c, -1.0f), diff_shift(c, -1.0f);
        const bool want_src = op != kBackwardSums, want_sums = op != kBackwardSrc;
        s = nk_batch_norm_backward(ctx, &desc, d.src.data(), d.dy.data(), d.scale.data(), d.save_mean.data(),
                                   d.save_invstd.data(), want_src ? diff_src.data() : nullptr,
                                   want_sums ? diff_scale.data() : nullptr, want_sums ? diff_shift.data() : nullptr);
        for (auto* v : {&diff_src, &diff_scale, &diff_shift}) out.insert(out.end(), v->begin(), v->end());
    }
    if (s != NK_OK) error = std::string(nk_status_string(s)) + ": " + nk_last_error_message();
    else if (*nk_last_error_message() != '\0') error = "message not empty after success";
    return out;
}

// Shapes that take every planner path: channels-first pieces of whole rows and of row
// chunks, channels-last row blocks and lane tiles, packed short rows, NC.
const ref::Shape kShapes[] = {
    {NK_LAYOUT_NCS, 4, 6, 33},     // channels-first, pieces of whole rows
    {NK_LAYOUT_NCS, 3, 5, 17000},  // channels-first, rows cut into pieces
    {NK_LAYOUT_NCS, 40, 24, 96},   // channels-first, many channels
    {NK_LAYOUT_NSC, 2, 1100, 3},   // channels-last, 2 lane tiles
    {NK_LAYOUT_NSC, 3, 17, 11000}, // channels-last, short rows packed, several blocks
    {NK_LAYOUT_NSC, 5, 64, 8},     // channels-last, one item
    {NK_LAYOUT_NCS, 300, 5, 1},    // NC
    {NK_LAYOUT_NCS, 64, 700, 1},   // NC, wide
};

// The hosts every comparison runs on. Under ThreadSanitizer only the ones that hand tasks
// to other threads (a team) or run them out of order, on 2 and 7 threads: the others run
// on the calling thread, where TSan has nothing to check, and the release and ASan runs
// cover them.
std::vector<Order> test_orders() {
#if defined(__SANITIZE_THREAD__)
    return {Order::shuffled, Order::team};
#else
    return {Order::forward, Order::reverse, Order::shuffled, Order::team};
#endif
}
std::vector<int32_t> test_threads(bool with_one) {
#if defined(__SANITIZE_THREAD__)
    (void)with_one;
    return {2, 7};
#else
    if (with_one) return {1, 2, 3, 7};
    return {2, 3, 7};
#endif
}

std::vector<nk::Schedule> all_schedules() {
    std::vector<nk::Schedule> v{nk::Schedule::automatic};
    for (nk::Schedule s : test::forced_schedules()) v.push_back(s);
    return v;
}

void set_host(nk_context* ctx, Host& host, int32_t threads) {
    REQUIRE(nk_context_set_parallel_for(ctx, &Host::run, &host, threads) == NK_OK);
    REQUIRE(std::string(nk_last_error_message()).empty());
}

} // namespace

TEST_CASE("parallel for: every op, layout and schedule gives oneTBB's bits, whatever order and thread runs the tasks") {
    const int32_t isa = nk_context_isa(nullptr);
    int compared = 0;
    int64_t hook_calls = 0;
    uint64_t seed = 900;
    for (const ref::Shape& sh : kShapes) {
        const Data d = make_data(sh, seed += 10);
        for (nk::Schedule schedule : all_schedules()) {
            test::Context tbb(isa, 0, schedule);
            test::Context hooked(isa, 0, schedule);
            for (int op = 0; op < kOps; ++op) {
                std::string error;
                const std::vector<float> want = run_op(tbb.get(), d, op, error);
                REQUIRE_MESSAGE(error.empty(), error);
                for (Order order : test_orders())
                    for (int32_t threads : test_threads(true)) {
                        Host host;
                        host.order = order;
                        set_host(hooked.get(), host, threads);
                        const std::vector<float> got = run_op(hooked.get(), d, op, error);
                        INFO(test::shape_name(sh) << ", " << test::schedule_name(schedule) << ", op " << op << ", "
                                                  << order_name(order) << ", threads " << threads);
                        CHECK_MESSAGE(error.empty(), error);
                        CHECK(test::same_bits(got, want));
                        CHECK(host.max_tasks.load() <= threads);
                        if (host.calls.load() > 0) CHECK(host.min_tasks.load() >= 2);
                        if (threads == 1) CHECK(host.calls.load() == 0);
                        hook_calls += host.calls.load();
                        ++compared;
                    }
            }
        }
    }
    CHECK(hook_calls > 0);
    MESSAGE(compared << " hooked calls compared with oneTBB, " << hook_calls << " calls of the hook");
}

TEST_CASE("parallel for: every ISA path gives oneTBB's bits through a shuffling hook") {
    int64_t hook_calls = 0;
    for (int32_t isa : test::isas()) {
        test::Context tbb(isa, 2);
        test::Context hooked(isa, 0);
        Host host;
        host.order = Order::shuffled;
        set_host(hooked.get(), host, 4);
        for (const ref::Shape& sh : kShapes) {
            const Data d = make_data(sh, 77);
            for (int op = 0; op < kOps; ++op) {
                std::string error;
                const std::vector<float> want = run_op(tbb.get(), d, op, error);
                REQUIRE_MESSAGE(error.empty(), error);
                const std::vector<float> got = run_op(hooked.get(), d, op, error);
                INFO(test::isa_name(isa) << ", " << test::shape_name(sh) << ", op " << op);
                CHECK_MESSAGE(error.empty(), error);
                CHECK(test::same_bits(got, want));
            }
        }
        hook_calls += host.calls.load();
    }
    CHECK(hook_calls > 0);
}

TEST_CASE("parallel for: the hook is called with 2..threads tasks, each run once, on the calling thread") {
    struct Record {
        std::thread::id caller;
        bool on_caller = true;
        int64_t calls = 0, bad = 0;
        int32_t threads = 0;
    } rec;
    rec.caller = std::this_thread::get_id();
    auto fn = [](void* user, int64_t tasks, nk_task_fn task, void* arg) {
        Record& r = *static_cast<Record*>(user);
        ++r.calls;
        if (std::this_thread::get_id() != r.caller) r.on_caller = false;
        if (tasks < 2 || tasks > r.threads) ++r.bad;
        for (int64_t i = 0; i < tasks; ++i) task(arg, i);
    };
    test::Context ctx(nk_context_isa(nullptr), 0);
    const Data d = make_data({NK_LAYOUT_NSC, 3, 17, 11000}, 5);
    for (int32_t threads : {2, 4, 64}) {
        rec.threads = threads;
        REQUIRE(nk_context_set_parallel_for(ctx.get(), fn, &rec, threads) == NK_OK);
        const int64_t before = rec.calls;
        for (int op = 0; op < kOps; ++op) {
            std::string error;
            run_op(ctx.get(), d, op, error);
            CHECK_MESSAGE(error.empty(), error);
        }
        CAPTURE(threads);
        CHECK(rec.calls > before + kOps); // every op has at least one pass of several tasks here
    }
    CHECK(rec.bad == 0);
    CHECK(rec.on_caller);
}

TEST_CASE("parallel for: fn NULL restores oneTBB, and nk_context_set_num_threads replaces the hook") {
    Host host;
    test::Context ctx(nk_context_isa(nullptr), 0);
    const Data d = make_data({NK_LAYOUT_NCS, 3, 5, 17000}, 6);
    std::string error;
    set_host(ctx.get(), host, 2);
    const std::vector<float> hooked = run_op(ctx.get(), d, kTraining, error);
    REQUIRE(error.empty());
    const int64_t calls = host.calls.load();
    CHECK(calls > 0);

    // NULL fn: user and threads are ignored.
    CHECK(nk_context_set_parallel_for(ctx.get(), nullptr, &host, -5) == NK_OK);
    CHECK(std::string(nk_last_error_message()).empty());
    CHECK(test::same_bits(run_op(ctx.get(), d, kTraining, error), hooked));
    CHECK(host.calls.load() == calls);

    set_host(ctx.get(), host, 2);
    run_op(ctx.get(), d, kTraining, error);
    const int64_t calls2 = host.calls.load();
    CHECK(calls2 > calls);
    for (int32_t n : {0, 1, 2}) {
        REQUIRE(nk_context_set_num_threads(ctx.get(), n) == NK_OK);
        CHECK(test::same_bits(run_op(ctx.get(), d, kTraining, error), hooked));
        CHECK(error.empty());
        CHECK(host.calls.load() == calls2);
    }
}

TEST_CASE("parallel for: a hook that breaks its contract fails the call with a message") {
    test::Context ctx(nk_context_isa(nullptr), 0);
    const Data d = make_data({NK_LAYOUT_NSC, 3, 17, 11000}, 7);
    struct Case {
        const char* what;
        nk_parallel_for_fn fn;
        const char* says;
    } cases[] = {
        {"skips the last task",
         [](void*, int64_t tasks, nk_task_fn task, void* arg) {
             for (int64_t i = 0; i + 1 < tasks; ++i) task(arg, i);
         },
         "returned after"},
        {"runs task 0 twice",
         [](void*, int64_t tasks, nk_task_fn task, void* arg) {
             task(arg, 0);
             for (int64_t i = 0; i < tasks; ++i) task(arg, i);
         },
         "task(arg, 0) twice"},
        {"runs the last task twice instead of the first",
         [](void*, int64_t tasks, nk_task_fn task, void* arg) {
             for (int64_t i = 1; i < tasks; ++i) task(arg, i);
             task(arg, tasks - 1);
         },
         "twice"},
        {"runs none",
         [](void*, int64_t, nk_task_fn, void*) {},
         "returned after"},
        {"counts from 1",
         [](void*, int64_t tasks, nk_task_fn task, void* arg) {
             for (int64_t i = 1; i <= tasks; ++i) task(arg, i);
         },
         "must be in [0, tasks)"},
        {"passes -1",
         [](void*, int64_t tasks, nk_task_fn task, void* arg) {
             task(arg, -1);
             for (int64_t i = 0; i < tasks; ++i) task(arg, i);
         },
         "task(arg, -1)"},
    };
    for (const Case& c : cases) {
        CAPTURE(c.what);
        REQUIRE(nk_context_set_parallel_for(ctx.get(), c.fn, nullptr, 2) == NK_OK);
        for (int op : {kTraining, kInference, kBackward}) {
            std::string error;
            run_op(ctx.get(), d, op, error);
            CAPTURE(op);
            CHECK(error.find("NK_ERROR_INVALID_ARGUMENT") == 0);
            CHECK(error.find("fn") != std::string::npos);
            CHECK(error.find(c.says) != std::string::npos);
        }
    }
    // The context still works once the hook is fixed.
    Host host;
    set_host(ctx.get(), host, 2);
    std::string error;
    run_op(ctx.get(), d, kTraining, error);
    CHECK(error.empty());
}

TEST_CASE("parallel for: threads sharing one hooked context, with a pool hook, while the hook is switched") {
    const int32_t isa = nk_context_isa(nullptr);
    std::vector<Data> data;
    std::vector<std::vector<std::vector<float>>> want;
    test::Context serial(isa, 1);
    uint64_t seed = 40;
    for (const ref::Shape& sh : kShapes) {
        data.push_back(make_data(sh, seed += 10));
        want.emplace_back();
        for (int op = 0; op < kOps; ++op) {
            std::string error;
            want.back().push_back(run_op(serial.get(), data.back(), op, error));
            REQUIRE(error.empty());
        }
    }
    Host team, reverse;
    team.order = Order::team;
    team.team = 2;
    reverse.order = Order::reverse;
    test::Context ctx(isa, 0);
    set_host(ctx.get(), team, 2);
    std::atomic<bool> done{false};
    std::thread switcher([&] {
        for (int k = 0; !done.load(); ++k) {
            if (k % 3 == 0) nk_context_set_parallel_for(ctx.get(), &Host::run, &team, 2);
            if (k % 3 == 1) nk_context_set_parallel_for(ctx.get(), &Host::run, &reverse, 3);
            if (k % 3 == 2) nk_context_set_num_threads(ctx.get(), k % 2);
            std::this_thread::yield();
        }
    });
    std::vector<std::string> failures(4);
    std::vector<std::thread> users;
    for (int id = 0; id < 4; ++id)
        users.emplace_back([&, id] {
            for (int it = 0; it < 60; ++it) {
                const size_t p = size_t(id + it) % data.size();
                const int op = (id * 3 + it) % kOps;
                std::string error;
                const std::vector<float> got = run_op(ctx.get(), data[p], op, error);
                if (failures[size_t(id)].empty() && (!error.empty() || !test::same_bits(got, want[p][size_t(op)])))
                    failures[size_t(id)] = test::shape_name(data[p].sh) + " op " + std::to_string(op) + ": " +
                                           (error.empty() ? "bits differ" : error);
            }
        });
    for (std::thread& t : users) t.join();
    done = true;
    switcher.join();
    for (const std::string& f : failures) CHECK_MESSAGE(f.empty(), f);
    CHECK(team.calls.load() + reverse.calls.load() > 0);
}

TEST_CASE("parallel for: a call with bad arguments never calls the hook and writes nothing") {
    test::Context ctx(nk_context_isa(nullptr), 0);
    Host host;
    set_host(ctx.get(), host, 2);
    const ref::Shape sh{NK_LAYOUT_NSC, 3, 17, 11000};
    const Data d = make_data(sh, 8);
    const size_t count = size_t(sh.count()), c = size_t(sh.c);
    const nk_batch_norm_desc good = test::make_desc(sh);
    std::vector<float> dst(count, -7.0f), mean(c, -7.0f), invstd(c, -7.0f), rm(c, -7.0f), rv(c, -7.0f);
    std::vector<float> diff_scale(c, -7.0f), diff_shift(c, -7.0f);
    auto untouched = [](const std::vector<float>& v) {
        return std::all_of(v.begin(), v.end(), [](float x) { return x == -7.0f; });
    };

    struct Bad {
        const char* what;
        int op; // kTraining, kInference, kBackward
        nk_status status;
        void (*change)(nk_batch_norm_desc&, const float*&, float*&, const float*&, float*&);
    } const bads[] = {
        {"epsilon 0", kTraining, NK_ERROR_INVALID_ARGUMENT,
         [](nk_batch_norm_desc& x, const float*&, float*&, const float*&, float*&) { x.epsilon = 0.0f; }},
        {"layout 5", kInference, NK_ERROR_INVALID_ARGUMENT,
         [](nk_batch_norm_desc& x, const float*&, float*&, const float*&, float*&) { x.layout = 5; }},
        {"n negative", kBackward, NK_ERROR_INVALID_SHAPE,
         [](nk_batch_norm_desc& x, const float*&, float*&, const float*&, float*&) { x.n = -3; }},
        {"src NULL", kTraining, NK_ERROR_NULL_POINTER,
         [](nk_batch_norm_desc&, const float*& src, float*&, const float*&, float*&) { src = nullptr; }},
        {"dst overlapping src", kInference, NK_ERROR_INVALID_ARGUMENT,
         [](nk_batch_norm_desc&, const float*& src, float*& dst, const float*&, float*&) { src = dst + 1; }},
        {"running_var without running_mean", kTraining, NK_ERROR_NULL_POINTER,
         [](nk_batch_norm_desc&, const float*&, float*&, const float*&, float*& rm) { rm = nullptr; }},
        {"mean NULL", kInference, NK_ERROR_NULL_POINTER,
         [](nk_batch_norm_desc&, const float*&, float*&, const float*& mean, float*&) { mean = nullptr; }},
        {"save_mean NULL", kBackward, NK_ERROR_NULL_POINTER,
         [](nk_batch_norm_desc&, const float*&, float*&, const float*& mean, float*&) { mean = nullptr; }},
    };
    for (const Bad& bad : bads) {
        CAPTURE(bad.what);
        nk_batch_norm_desc desc = good;
        const float* src = d.src.data();
        float* out = dst.data();
        const float* stats = bad.op == kBackward ? d.save_mean.data() : d.running_mean.data();
        float* running_mean = rm.data();
        bad.change(desc, src, out, stats, running_mean);
        nk_status s = NK_OK;
        if (bad.op == kTraining)
            s = nk_batch_norm_forward_training(ctx.get(), &desc, src, out, d.scale.data(), d.shift.data(),
                                               running_mean, rv.data(), mean.data(), invstd.data());
        else if (bad.op == kInference)
            s = nk_batch_norm_forward_inference(ctx.get(), &desc, src, out, d.scale.data(), d.shift.data(), stats,
                                                d.running_var.data());
        else
            s = nk_batch_norm_backward(ctx.get(), &desc, src, d.dy.data(), d.scale.data(), stats,
                                       d.save_invstd.data(), out, diff_scale.data(), diff_shift.data());
        CHECK(s == bad.status);
        CHECK(host.calls.load() == 0);
        for (const auto* v : {&dst, &mean, &invstd, &rm, &rv, &diff_scale, &diff_shift}) CHECK(untouched(*v));
    }
    // The control: the same call with good arguments does call the hook.
    std::string error;
    run_op(ctx.get(), d, kInference, error);
    CHECK(error.empty());
    CHECK(host.calls.load() > 0);
}

TEST_CASE("parallel for: a rejected nk_context_set_parallel_for leaves the context as it was") {
    test::Context ctx(nk_context_isa(nullptr), 0);
    Host kept, rejected;
    set_host(ctx.get(), kept, 2);
    CHECK(nk_context_set_parallel_for(ctx.get(), &Host::run, &rejected, 0) == NK_ERROR_INVALID_ARGUMENT);
    CHECK(std::string(nk_last_error_message()).find("threads is 0") != std::string::npos);
    CHECK(nk_context_set_parallel_for(nullptr, &Host::run, &rejected, 2) == NK_ERROR_NULL_POINTER);
    CHECK(std::string(nk_last_error_message()).find("ctx is NULL") != std::string::npos);
    std::string error;
    run_op(ctx.get(), make_data({NK_LAYOUT_NCS, 3, 5, 17000}, 9), kTraining, error);
    CHECK(error.empty());
    CHECK(kept.calls.load() > 0);
    CHECK(rejected.calls.load() == 0);
}

TEST_CASE("parallel for: the host gets min(items, threads) contiguous chunks, covering every item once") {
    struct Chunk {
        int64_t begin, end;
    };
    for (int32_t threads : {2, 3, 8, 1000}) {
        Host host;
        host.order = Order::shuffled;
        const nk::Threads runner(nk::HostParallelFor{&Host::run, &host, threads});
        CHECK(runner.concurrency() == threads);
        for (int64_t items : {int64_t(1), int64_t(2), int64_t(7), int64_t(1001), int64_t(1) << 62}) {
            CAPTURE(threads);
            CAPTURE(items);
            std::mutex mutex;
            std::vector<Chunk> chunks;
            runner.parallel_for(items, [&](int64_t begin, int64_t end) {
                std::lock_guard<std::mutex> lock(mutex);
                chunks.push_back({begin, end});
            });
            std::sort(chunks.begin(), chunks.end(), [](const Chunk& a, const Chunk& b) { return a.begin < b.begin; });
            REQUIRE(chunks.size() == size_t(std::min<int64_t>(items, threads)));
            int64_t next = 0, smallest = INT64_MAX, largest = 0;
            for (const Chunk& c : chunks) {
                CHECK(c.begin == next);
                CHECK(c.end > c.begin);
                smallest = std::min(smallest, c.end - c.begin);
                largest = std::max(largest, c.end - c.begin);
                next = c.end;
            }
            CHECK(next == items);
            CHECK(largest - smallest <= 1);
        }
    }
}

TEST_CASE("parallel for: an exception of a task reaches the caller once the host's fn has returned") {
    Host host;
    host.order = Order::team;
    const nk::Threads runner(nk::HostParallelFor{&Host::run, &host, 4});
    std::atomic<int> ran{0};
    CHECK_THROWS_AS(runner.parallel_for(8,
                                        [&](int64_t begin, int64_t end) {
                                            ran.fetch_add(1);
                                            if (begin <= 5 && 5 < end) throw std::bad_alloc();
                                        }),
                    std::bad_alloc);
    CHECK(host.calls.load() == 1);
    CHECK(ran.load() >= 1);
    CHECK(ran.load() <= 4);
}

TEST_CASE("parallel for: layer, RMS and group norm give oneTBB's bits, whatever order and thread runs the tasks") {
    const int32_t isa = nk_context_isa(nullptr);
    // Every output of the row ops and of group norm on one shape, concatenated.
    struct Rows {
        int64_t m, k;
    };
    struct Groups {
        int32_t layout;
        int64_t n, c, s, g;
    };
    auto run_rows = [](nk_context* ctx, const Rows& sh, bool rms) {
        const size_t count = size_t(sh.m * sh.k);
        const std::vector<float> x = test::normal(count, 1.0, 2.0, 71), r = test::normal(count, 0.0, 1.0, 72),
                                 dy = test::normal(count, 0.0, 1.0, 73), w = test::uniform(size_t(sh.k), 0.5, 1.5, 74),
                                 b = test::uniform(size_t(sh.k), -1.0, 1.0, 75);
        std::vector<float> sum(count), dst(count), mean(size_t(sh.m)), inv(size_t(sh.m)), dx(count), ds(size_t(sh.k)),
            db(size_t(sh.k));
        nk_layer_norm_desc d;
        REQUIRE(nk_layer_norm_desc_init(&d, sh.m, sh.k) == NK_OK);
        if (rms) {
            REQUIRE(nk_rms_norm_forward(ctx, &d, x.data(), r.data(), sum.data(), dst.data(), w.data(), inv.data()) == NK_OK);
            REQUIRE(nk_rms_norm_backward(ctx, &d, sum.data(), dy.data(), w.data(), inv.data(), dx.data(), ds.data()) == NK_OK);
        } else {
            REQUIRE(nk_layer_norm_forward(ctx, &d, x.data(), r.data(), sum.data(), dst.data(), w.data(), b.data(),
                                          mean.data(), inv.data()) == NK_OK);
            REQUIRE(nk_layer_norm_backward(ctx, &d, sum.data(), dy.data(), w.data(), mean.data(), inv.data(), dx.data(),
                                           ds.data(), db.data()) == NK_OK);
        }
        std::vector<float> out;
        for (auto* v : {&sum, &dst, &mean, &inv, &dx, &ds, &db}) out.insert(out.end(), v->begin(), v->end());
        return out;
    };
    auto run_groups = [](nk_context* ctx, const Groups& sh) {
        const size_t count = size_t(sh.n * sh.c * sh.s), stats = size_t(sh.n * sh.g);
        const std::vector<float> x = test::normal(count, 1.0, 2.0, 81), dy = test::normal(count, 0.0, 1.0, 82),
                                 w = test::uniform(size_t(sh.c), 0.5, 1.5, 83), b = test::uniform(size_t(sh.c), -1.0, 1.0, 84);
        std::vector<float> dst(count), mean(stats), inv(stats), dx(count), ds(size_t(sh.c)), db(size_t(sh.c));
        nk_group_norm_desc d;
        REQUIRE(nk_group_norm_desc_init(&d, sh.layout, sh.n, sh.c, sh.s, sh.g) == NK_OK);
        REQUIRE(nk_group_norm_forward(ctx, &d, x.data(), dst.data(), w.data(), b.data(), mean.data(), inv.data()) == NK_OK);
        REQUIRE(nk_group_norm_backward(ctx, &d, x.data(), dy.data(), w.data(), mean.data(), inv.data(), dx.data(),
                                       ds.data(), db.data()) == NK_OK);
        std::vector<float> out;
        for (auto* v : {&dst, &mean, &inv, &dx, &ds, &db}) out.insert(out.end(), v->begin(), v->end());
        return out;
    };
    test::Context tbb(isa, 0);
    test::Context hooked(isa, 0);
    int64_t hook_calls = 0;
    for (Order order : test_orders())
        for (int32_t threads : test_threads(false)) {
            Host host;
            host.order = order;
            set_host(hooked.get(), host, threads);
            INFO(order_name(order) << ", threads " << threads);
            for (Rows sh : {Rows{300, 96}, Rows{5, 20000}})
                for (bool rms : {false, true}) {
                    INFO((rms ? "rms " : "layer ") << sh.m << "x" << sh.k);
                    CHECK(test::same_bits(run_rows(hooked.get(), sh, rms), run_rows(tbb.get(), sh, rms)));
                }
            for (Groups sh : {Groups{NK_LAYOUT_NCS, 3, 32, 300, 8}, Groups{NK_LAYOUT_NSC, 3, 32, 3000, 8}}) {
                INFO("group norm, layout " << sh.layout);
                CHECK(test::same_bits(run_groups(hooked.get(), sh), run_groups(tbb.get(), sh)));
            }
            hook_calls += host.calls.load();
        }
    CHECK(hook_calls > 0);
}
