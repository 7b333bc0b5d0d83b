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
    // Residual-add forward traffic (16 bytes/element): s = x + y, d = a*s + b.
    void residual_forward(const float* x, const float* y, float* s, float* d, int64_t count) const;
    // The same traffic in 2-byte elements (bf16 / f16 cases: half the bytes).
    void forward(const uint16_t* src, uint16_t* dst, int64_t count) const;
    void backward(const uint16_t* x, const uint16_t* y, uint16_t* z, int64_t count) const;
    void residual_forward(const uint16_t* x, const uint16_t* y, uint16_t* s, uint16_t* d, int64_t count) const;

    // The separate ReLU passes of an unfused network (roofline_kernels.hpp), threaded as above.
    void relu(float* y, int64_t count) const;
    void add_relu(const float* r, float* y, int64_t count) const;
    void relu_grad(const float* dy, const float* dst, float* g, int64_t count) const;

    // The reads and writes of a two-pass batch norm in their plainest form: each thread's
    // chunk summed (forward: x and x*x; backward: y and x*y, plain float sums), then put
    // through the same element-wise pass as forward() / backward() with a coefficient from
    // its sums. `blocked`: in blocks of 128 KB of inputs, so that the second read comes from
    // the L2, as a channels-first batch norm can take groups of channels (normkit's fused
    // groups hold 128 KB); otherwise the whole chunk at once, as a channels-last or NC one
    // must, whose every channel spans all rows: its second read comes from the L2 only when
    // the thread's share fits there. The blocks cross channel boundaries: for channels of
    // more than 128 KB (img_c3_224) this is more than a batch norm can do.
    void two_pass_forward(const float* src, float* dst, int64_t count, bool blocked) const;
    void two_pass_backward(const float* x, const float* y, float* z, int64_t count, bool blocked) const;

private:
    template <class Body> void split(int64_t count, const Body& body) const;
    template <class T> void forward_of(const T* src, T* dst, int64_t count) const;
    template <class T> void backward_of(const T* x, const T* y, T* z, int64_t count) const;
    template <class T> void residual_forward_of(const T* x, const T* y, T* s, T* d, int64_t count) const;
    // Calls body(begin, end) over each thread's chunk, in blocks of 128 KB of `inputs`
    // tensors when `blocked`, else at once.
    template <class Body> void blocks(int64_t count, int inputs, bool blocked, const Body& body) const;

    struct Arena; // a tbb::task_arena, kept out of this header
    int threads_;
    std::unique_ptr<Arena> arena_;
};

} // namespace nkbench

#endif // NORMKIT_BENCH_ROOFLINE_HPP
