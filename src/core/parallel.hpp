// The only interface to the threading runtime. Work is cut into a fixed number of
// items by the caller; which thread runs which item never changes a result.
#pragma once

#include <cstdint>
#include <memory>
#include <stdexcept>
#include <type_traits>
#include <utility>

namespace nk {

// A non-owning reference to a callable: unlike std::function it never allocates,
// so a parallel pass cannot fail half-way with bad_alloc.
template <class Signature>
class FunctionRef;

template <class R, class... Args>
class FunctionRef<R(Args...)> {
public:
    template <class F, class = std::enable_if_t<!std::is_same<std::decay_t<F>, FunctionRef>::value>>
    FunctionRef(F&& f) // NOLINT: implicit by design
        : object_(const_cast<void*>(static_cast<const void*>(&f))),
          call_([](void* o, Args... args) -> R {
              return (*static_cast<std::remove_reference_t<F>*>(o))(std::forward<Args>(args)...);
          }) {}
    R operator()(Args... args) const { return call_(object_, std::forward<Args>(args)...); }

private:
    void* object_;
    R (*call_)(void*, Args...);
};

class ThreadPool; // wraps a oneTBB task_arena; defined in parallel.cpp

// The host's parallel-for (nk_context_set_parallel_for): fn must call task(arg, i) once
// for every i in [0, tasks) and return when all have returned.
struct HostParallelFor {
    void (*fn)(void* user, int64_t tasks, void (*task)(void* arg, int64_t i), void* arg) = nullptr;
    void* user = nullptr;
    int32_t threads = 0; // the host pool's threads, >= 1
};

// The host's fn broke its contract (returned before running every task once).
class HostParallelForError : public std::runtime_error {
public:
    using std::runtime_error::runtime_error;
};

// Who runs a call's work: oneTBB with a thread cap (0 = all of the caller's arena; 1 =
// the calling thread alone, without touching oneTBB), or the host's parallel-for.
class Threads {
public:
    Threads() = default;
    explicit Threads(int32_t cap);
    explicit Threads(const HostParallelFor& host);
    int32_t cap() const { return cap_; }
    bool hosted() const { return host_.fn != nullptr; }
    // Threads that will actually run (>= 1).
    int32_t concurrency() const;
    // Calls body(begin, end) over [0, items) in contiguous chunks, possibly in parallel.
    // Which chunk runs where, and in which order, never changes a result.
    void parallel_for(int64_t items, FunctionRef<void(int64_t, int64_t)> body) const;

private:
    int32_t cap_ = 0;
    std::shared_ptr<ThreadPool> pool_; // set when cap_ > 1 and no host parallel-for
    HostParallelFor host_;
};

} // namespace nk
