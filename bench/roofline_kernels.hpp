// The reference kernels' single-threaded loops (roofline_kernels.cpp, built with -O3
// -march=native).
#ifndef NORMKIT_BENCH_ROOFLINE_KERNELS_HPP
#define NORMKIT_BENCH_ROOFLINE_KERNELS_HPP

#include <cstdint>

namespace nkbench {

void roofline_axpb(const float* x, float* y, int64_t count, float a, float b);        // y = a*x + b
void roofline_axpy(const float* x, const float* y, float* z, int64_t count, float a); // z = a*x + y
// s = x + y, d = a*s + b: the traffic of a normalization after a residual add (16 bytes/element).
void roofline_add_axpb(const float* x, const float* y, float* s, float* d, int64_t count, float a, float b);

// The same traffic in 2-byte elements (bf16 and f16 cases): each value widened as bf16
// (shifted up 16 bits), the float arithmetic above, the result truncated back to 16 bits.
void roofline_axpb(const uint16_t* x, uint16_t* y, int64_t count, float a, float b);
void roofline_axpy(const uint16_t* x, const uint16_t* y, uint16_t* z, int64_t count, float a);
void roofline_add_axpb(const uint16_t* x, const uint16_t* y, uint16_t* s, uint16_t* d, int64_t count, float a, float b);
// The separate passes the batch-norm fusions replace: y = relu(y); y = relu(y + r);
// g = dst <= 0 ? 0 : dy (ReLU backward).
void relu_pass(float* y, int64_t count);
void add_relu_pass(const float* r, float* y, int64_t count);
void relu_grad_pass(const float* dy, const float* dst, float* g, int64_t count);

// Plain float sums for the two-pass kernels: sum x and x*x; sum y and x*y.
void two_pass_moments(const float* x, int64_t count, float* sum, float* sum_sq);
void two_pass_grad_sums(const float* x, const float* y, int64_t count, float* sum_y, float* sum_xy);

} // namespace nkbench

#endif // NORMKIT_BENCH_ROOFLINE_KERNELS_HPP
