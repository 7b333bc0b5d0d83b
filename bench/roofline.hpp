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

private:
    template <class Body> void split(int64_t count, const Body& body) const;

    struct Arena; // a tbb::task_arena, kept out of this header
    int threads_;
    std::unique_ptr<Arena> arena_;
};

} // namespace nkbench

#endif // NORMKIT_BENCH_ROOFLINE_HPP
