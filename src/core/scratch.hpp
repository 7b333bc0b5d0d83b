// Scratch memory of one call (partial sums, per-lane coefficients), reused from call
// to call on the calling thread.
//
// A call's partial sums reach hundreds of KB on large shapes (16 x 2048 x 7x7
// channels-last: 340 KB). glibc serves blocks that large with a fresh mmap, and every
// call then paid a page fault per 4 KB written (5-10% of the time of the whole call).
#pragma once

#include <cstddef>

namespace nk {

class Scratch {
public:
    // At least `bytes` bytes, 64-byte aligned, contents undefined. Throws std::bad_alloc.
    explicit Scratch(size_t bytes);
    ~Scratch();
    Scratch(const Scratch&) = delete;
    Scratch& operator=(const Scratch&) = delete;
    void* data() const { return data_; }

private:
    void* data_;
    int slot_; // the thread's cache slot held, or -1 for memory of its own
};

} // namespace nk
