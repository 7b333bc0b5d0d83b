// The only interface to the threading runtime. Work is cut into a fixed number of
// items by the caller; which thread runs which item never changes a result.
#pragma once

#include <cstdint>
#include <memory>
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

// How many threads a call may use: 0 = all of the caller's arena.
class Threads {
public:
    Threads() = default;
    explicit Threads(int32_t cap);
    int32_t cap() const { return cap_; }
    // Threads that will actually run (>= 1).
    int32_t concurrency() const;
    // Calls body(begin, end) over [0, items) in contiguous chunks, possibly in parallel.
    void parallel_for(int64_t items, FunctionRef<void(int64_t, int64_t)> body) const;

private:
    int32_t cap_ = 0;
    std::shared_ptr<ThreadPool> pool_; // set when cap_ > 1
};

} // namespace nk
