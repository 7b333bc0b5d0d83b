#include "core/parallel.hpp"

#include <algorithm>
#include <atomic>
#include <cinttypes>
#include <cstdio>
#include <exception>
#include <thread>
#include <vector>

#include <tbb/blocked_range.h>
#include <tbb/info.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

namespace nk {

class ThreadPool {
public:
    explicit ThreadPool(int32_t n) : arena(n) {}
    tbb::task_arena arena;
};

// oneTBB never runs more workers than the machine's concurrency without a
// global_control, so a larger cap is clamped rather than requested and ignored. A cap of
// 0 or 1 asks oneTBB nothing: a serial context never touches it.
Threads::Threads(int32_t cap) : cap_(cap > 1 ? std::min<int32_t>(cap, tbb::info::default_concurrency()) : cap) {
    if (cap_ > 1) pool_ = std::make_shared<ThreadPool>(cap_);
}

Threads::Threads(const HostParallelFor& host) : cap_(host.threads), host_(host) {}

int32_t Threads::concurrency() const {
    if (hosted()) return host_.threads;
    if (cap_ == 1) return 1;
    if (pool_) return pool_->arena.max_concurrency();
    return tbb::this_task_arena::max_concurrency();
}

namespace {

// Start of chunk t of n contiguous, near-equal chunks of [0, items) (t*items could overflow).
int64_t chunk_begin(int64_t t, int64_t n, int64_t items) {
    return t * (items / n) + std::min(t, items % n);
}

// One pass handed to the host: task i runs chunk i. Tasks catch what the body throws
// (nothing may unwind through the host's frames, which may be C or OpenMP); the calling
// thread rethrows it once the host's fn has returned.
struct HostLoop {
    // Tasks below this are checked one by one (a second run is refused and reported);
    // beyond it only their count is. Pools of more threads than this are rare.
    static constexpr int64_t kTracked = 1024;

    HostLoop(FunctionRef<void(int64_t, int64_t)> body_, int64_t items_, int64_t tasks_)
        : body(body_), items(items_), tasks(tasks_) {
        for (std::atomic<uint64_t>& word : seen) word.store(0, std::memory_order_relaxed);
    }

    FunctionRef<void(int64_t, int64_t)> body;
    int64_t items, tasks;
    std::atomic<int64_t> ran{0};
    std::atomic<bool> out_of_range{false}, repeated{false};
    std::atomic<int64_t> bad_index{0};
    std::atomic<uint64_t> seen[kTracked / 64];
    std::atomic<bool> failed{false};
    std::exception_ptr error; // written by the one task that set `failed`

    static void run_task(void* arg, int64_t i) noexcept {
        HostLoop& loop = *static_cast<HostLoop*>(arg);
        if (i < 0 || i >= loop.tasks) {
            loop.bad_index.store(i, std::memory_order_relaxed);
            loop.out_of_range.store(true, std::memory_order_relaxed);
            return;
        }
        if (i < kTracked) {
            const uint64_t bit = uint64_t(1) << (i % 64);
            if (loop.seen[i / 64].fetch_or(bit, std::memory_order_relaxed) & bit) {
                // Running it again could race with its first run on the same outputs.
                loop.bad_index.store(i, std::memory_order_relaxed);
                loop.repeated.store(true, std::memory_order_relaxed);
                return;
            }
        }
        loop.ran.fetch_add(1, std::memory_order_relaxed);
        if (loop.failed.load(std::memory_order_relaxed)) return; // the call fails anyway
        try {
            loop.body(chunk_begin(i, loop.tasks, loop.items), chunk_begin(i + 1, loop.tasks, loop.items));
        } catch (...) {
            if (!loop.failed.exchange(true)) loop.error = std::current_exception();
        }
    }
};

void run_hosted(const HostParallelFor& host, int64_t items, FunctionRef<void(int64_t, int64_t)> body) {
    HostLoop loop(body, items, std::min<int64_t>(items, host.threads));
    if (loop.tasks == 1) { // nothing to share: the host's pool would only add a hand-off
        body(0, items);
        return;
    }
    host.fn(host.user, loop.tasks, &HostLoop::run_task, &loop);
    if (loop.error) std::rethrow_exception(loop.error);
    char message[200];
    const int64_t bad = loop.bad_index.load(), ran = loop.ran.load();
    if (loop.out_of_range.load())
        std::snprintf(message, sizeof message,
                      "the parallel-for fn called task(arg, %" PRId64 ") with tasks = %" PRId64
                      ": i must be in [0, tasks)",
                      bad, loop.tasks);
    else if (loop.repeated.load())
        std::snprintf(message, sizeof message,
                      "the parallel-for fn called task(arg, %" PRId64 ") twice: it must call task(arg, i) "
                      "once for every i in [0, tasks)",
                      bad);
    else if (ran != loop.tasks)
        std::snprintf(message, sizeof message,
                      "the parallel-for fn returned after %" PRId64 " task calls with tasks = %" PRId64
                      ": it must call task(arg, i) once for every i in [0, tasks) before returning",
                      ran, loop.tasks);
    else
        return;
    throw HostParallelForError(message);
}

} // namespace

void Threads::parallel_for(int64_t items,
                           FunctionRef<void(int64_t, int64_t)> body) const {
    if (items <= 0) return;
    if (hosted()) {
        run_hosted(host_, items, body);
        return;
    }
    if (items == 1 || cap_ == 1) {
        body(0, items);
        return;
    }
#if defined(__SANITIZE_THREAD__)
    // ThreadSanitizer cannot see oneTBB's hand-offs (they live in the uninstrumented
    // libtbb) and reports them as races; suppressing those would also hide races in
    // our own bodies, which run under oneTBB frames. So TSan builds fork and join plain
    // std::threads over the same contiguous chunks, and every line of normkit is checked.
    const int64_t n = std::min<int64_t>(items, concurrency());
    std::vector<std::thread> workers;
    for (int64_t t = 1; t < n; ++t)
        workers.emplace_back([&, t] { body(chunk_begin(t, n, items), chunk_begin(t + 1, n, items)); });
    body(0, chunk_begin(1, n, items));
    for (std::thread& w : workers) w.join();
    return;
#endif
    auto run = [&] {
        tbb::parallel_for(tbb::blocked_range<int64_t>(0, items),
                          [&](const tbb::blocked_range<int64_t>& r) { body(r.begin(), r.end()); },
                          tbb::static_partitioner());
    };
    if (pool_)
        pool_->arena.execute(run);
    else
        run();
}

} // namespace nk
