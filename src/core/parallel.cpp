#include "core/parallel.hpp"

#include <algorithm>
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
// global_control, so a larger cap is clamped rather than requested and ignored.
Threads::Threads(int32_t cap) : cap_(std::min<int32_t>(cap, tbb::info::default_concurrency())) {
    if (cap_ > 1) pool_ = std::make_shared<ThreadPool>(cap_);
}

int32_t Threads::concurrency() const {
    if (cap_ == 1) return 1;
    if (pool_) return pool_->arena.max_concurrency();
    return tbb::this_task_arena::max_concurrency();
}

void Threads::parallel_for(int64_t items,
                           FunctionRef<void(int64_t, int64_t)> body) const {
    if (items <= 0) return;
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
    for (int64_t t = 1; t < n; ++t) workers.emplace_back([&, t] { body(t * items / n, (t + 1) * items / n); });
    body(0, items / n);
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
