// The roofline: a plain streaming kernel with the traffic of batch normalization and
// nothing else, threaded the way normkit threads (a oneTBB arena of the same size).
#ifndef NORMKIT_BENCH_ROOFLINE_HPP
#define NORMKIT_BENCH_ROOFLINE_HPP

#include <cstdint>
#include <memory>

namespace nkbench {

class Roofline {
public:
    explicit Roofline(int threads);
    ~Roofline();
    Roofline(const Roofline&) = delete;
    Roofline& operator=(const Roofline&) = delete;

    // Forward traffic (8 bytes/element): dst = a*src + b.
    void forward(const float* src, float* dst, int64_t count) const;
    // Backward traffic (12 bytes/element): z = a*x + y.
    void backward(const float* x, const float* y, float* z, int64_t count) const;

    // The reads and writes of a two-pass batch norm in their plainest form: each thread's
    // chunk in blocks that fit in half its L2 (as normkit's fused schedules), each block
    // summed (forward: x and x*x; backward: y and x*y, plain float sums), then the same
    // element-wise pass as forward() / backward() over it with a coefficient from its sums.
    void two_pass_forward(const float* src, float* dst, int64_t count) const;
    void two_pass_backward(const float* x, const float* y, float* z, int64_t count) const;

private:
    template <class Body> void split(int64_t count, const Body& body) const;
    // Calls body(begin, end) over each thread's chunk in blocks of as many elements as
    // `inputs` tensors can hold in half an L2.
    template <class Body> void blocks(int64_t count, int inputs, const Body& body) const;

    struct Arena; // a tbb::task_arena, kept out of this header
    int threads_;
    int64_t half_l2_floats_;
    std::unique_ptr<Arena> arena_;
};

} // namespace nkbench

#endif // NORMKIT_BENCH_ROOFLINE_HPP
