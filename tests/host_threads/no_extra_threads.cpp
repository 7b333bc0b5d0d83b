// In a process that has not used oneTBB: calls with a serial context (n = 1) and calls
// run by a host parallel-for start no thread, counted as the entries of /proc/self/task
// before and after. A process of its own: the doctest suite uses oneTBB before any of
// this could be checked there. Prints "N passed, M failed"; exits nonzero on a failure.
#include "normkit/normkit.h"

#include <dirent.h>

#include <atomic>
#include <condition_variable>
#include <cstdio>
#include <cstring>
#include <mutex>
#include <random>
#include <set>
#include <string>
#include <thread>
#include <vector>

namespace {

int g_passed = 0, g_failed = 0;

void check(bool ok, const char* what, int line) {
    if (ok) {
        ++g_passed;
        return;
    }
    ++g_failed;
    std::printf("FAILED (line %d): %s [last message: \"%s\"]\n", line, what, nk_last_error_message());
}
#define CHECK(expr) check((expr), #expr, __LINE__)

int thread_count() {
    DIR* dir = opendir("/proc/self/task");
    if (dir == nullptr) return -1;
    int n = 0;
    while (const dirent* e = readdir(dir))
        if (e->d_name[0] != '.') ++n;
    closedir(dir);
    return n;
}

// A host's pool: `workers` threads that live as long as it does and take tasks from a
// shared counter together with the thread that called normkit.
class Pool {
public:
    explicit Pool(int workers) {
        for (int t = 0; t < workers; ++t) threads_.emplace_back([this] { serve(); });
    }
    ~Pool() {
        {
            std::lock_guard<std::mutex> lock(mutex_);
            stop_ = true;
        }
        wake_.notify_all();
        for (std::thread& t : threads_) t.join();
    }

    static void parallel_for(void* user, int64_t tasks, nk_task_fn task, void* arg) {
        static_cast<Pool*>(user)->run(tasks, task, arg);
    }

    std::set<std::thread::id> ran_on() {
        std::lock_guard<std::mutex> lock(mutex_);
        return ran_on_;
    }

private:
    struct Job {
        nk_task_fn task;
        void* arg;
        int64_t tasks;
        std::atomic<int64_t> next{0};
        int active = 0; // threads inside work(); guarded by mutex_
    };

    void run(int64_t tasks, nk_task_fn task, void* arg) {
        std::lock_guard<std::mutex> one_job(jobs_);
        Job job{task, arg, tasks};
        {
            std::lock_guard<std::mutex> lock(mutex_);
            job_ = &job;
            ++generation_;
            ++job.active;
        }
        wake_.notify_all();
        work(job);
        std::unique_lock<std::mutex> lock(mutex_);
        --job.active;
        job_ = nullptr; // no thread joins it any more
        idle_.wait(lock, [&] { return job.active == 0; });
    }

    void work(Job& job) {
        bool ran = false;
        for (int64_t i; (i = job.next.fetch_add(1)) < job.tasks;) {
            job.task(job.arg, i);
            ran = true;
        }
        if (ran) {
            std::lock_guard<std::mutex> lock(mutex_);
            ran_on_.insert(std::this_thread::get_id());
        }
    }

    void serve() {
        std::unique_lock<std::mutex> lock(mutex_);
        uint64_t seen = 0;
        for (;;) {
            wake_.wait(lock, [&] { return stop_ || (job_ != nullptr && generation_ != seen); });
            if (stop_) return;
            seen = generation_;
            Job& job = *job_;
            ++job.active;
            lock.unlock();
            work(job);
            lock.lock();
            if (--job.active == 0) idle_.notify_all();
        }
    }

    std::mutex jobs_; // one job at a time
    std::mutex mutex_;
    std::condition_variable wake_, idle_;
    Job* job_ = nullptr;
    uint64_t generation_ = 0;
    bool stop_ = false;
    std::set<std::thread::id> ran_on_;
    std::vector<std::thread> threads_;
};

int g_inline_calls = 0;
void inline_parallel_for(void*, int64_t tasks, nk_task_fn task, void* arg) {
    ++g_inline_calls;
    for (int64_t i = tasks - 1; i >= 0; --i) task(arg, i);
}

std::vector<float> values(size_t count, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<float> dist(0.5f, 2.0f);
    std::vector<float> v(count);
    for (float& x : v) x = dist(rng);
    return v;
}

// Every op on a shape of several work items in each layout; all outputs, concatenated.
std::vector<float> run_all(nk_context* ctx) {
    std::vector<float> out;
    for (int32_t layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
        const int64_t n = 3, c = 24, s = 9000;
        const size_t count = size_t(n * c * s);
        const std::vector<float> src = values(count, 1), dy = values(count, 2);
        const size_t channels = size_t(c);
        std::vector<float> scale(channels, 1.25f), shift(channels, -0.5f), rm(channels, 0.0f), rv(channels, 1.0f),
            mean(channels), invstd(channels), dst(count), diff_src(count), diff_scale(channels),
            diff_shift(channels), inference(count);
        nk_batch_norm_desc d;
        bool ok = nk_batch_norm_desc_init(&d, layout, n, c, s) == NK_OK;
        ok = ok && nk_batch_norm_forward_training(ctx, &d, src.data(), dst.data(), scale.data(), shift.data(),
                                                  rm.data(), rv.data(), mean.data(), invstd.data()) == NK_OK;
        ok = ok && nk_batch_norm_forward_inference(ctx, &d, src.data(), inference.data(), scale.data(),
                                                   shift.data(), rm.data(), rv.data()) == NK_OK;
        ok = ok && nk_batch_norm_backward(ctx, &d, src.data(), dy.data(), scale.data(), mean.data(), invstd.data(),
                                          diff_src.data(), diff_scale.data(), diff_shift.data()) == NK_OK;
        CHECK(ok);
        for (const std::vector<float>* v : {&dst, &mean, &invstd, &rm, &rv, &inference, &diff_src, &diff_scale,
                                            &diff_shift})
            out.insert(out.end(), v->begin(), v->end());
    }
    return out;
}

bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0;
}

} // namespace

int main() {
    // ThreadSanitizer starts a thread of its own at the first thread creation: have it
    // started before counting.
    std::thread([] {}).join();
    const int start = thread_count();
    CHECK(start >= 1);

    // Serial: n = 1.
    nk_context* serial = nullptr;
    CHECK(nk_context_create(&serial) == NK_OK);
    CHECK(nk_context_set_num_threads(serial, 1) == NK_OK);
    const std::vector<float> want = run_all(serial);
    CHECK(thread_count() == start);

    // A host parallel-for that runs the tasks on the calling thread, last first.
    nk_context* hooked = nullptr;
    CHECK(nk_context_create(&hooked) == NK_OK);
    CHECK(nk_context_set_parallel_for(hooked, inline_parallel_for, nullptr, 4) == NK_OK);
    CHECK(same_bits(run_all(hooked), want));
    CHECK(g_inline_calls > 0);
    CHECK(thread_count() == start);

    // The host's own pool of 2 workers: its threads, and not one more.
    {
        Pool pool(2);
        const int with_pool = thread_count();
        CHECK(with_pool == start + 2);
        CHECK(nk_context_set_parallel_for(hooked, Pool::parallel_for, &pool, 3) == NK_OK);
        for (int repeat = 0; repeat < 3; ++repeat) CHECK(same_bits(run_all(hooked), want));
        CHECK(thread_count() == with_pool);
        const std::set<std::thread::id> ran_on = pool.ran_on();
        CHECK(!ran_on.empty());
        std::printf("pool: tasks ran on %zu of its 3 threads (the caller's included)\n", ran_on.size());
    }
    CHECK(thread_count() == start);
    // Switching back and forth creates nothing either.
    CHECK(nk_context_set_parallel_for(hooked, nullptr, nullptr, 0) == NK_OK);
    CHECK(nk_context_set_num_threads(hooked, 1) == NK_OK);
    CHECK(same_bits(run_all(hooked), want));
    CHECK(thread_count() == start);

#if !defined(__SANITIZE_THREAD__)
    // The control: oneTBB on 2 threads does start a worker, so the count above would
    // have seen one. (TSan builds join plain std::threads instead: nothing stays.)
    if (std::thread::hardware_concurrency() > 1) {
        nk_context* tbb = nullptr;
        CHECK(nk_context_create(&tbb) == NK_OK);
        CHECK(nk_context_set_num_threads(tbb, 2) == NK_OK);
        CHECK(same_bits(run_all(tbb), want));
        CHECK(thread_count() > start);
        nk_context_destroy(tbb);
    }
#endif
    nk_context_destroy(hooked);
    nk_context_destroy(serial);
    std::printf("no extra threads: %d passed, %d failed\n", g_passed, g_failed);
    return g_failed != 0;
}
