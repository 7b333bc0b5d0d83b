// The roofline's inner loops. This file alone is compiled with -O3 -march=native, and it
// includes no library code beyond <cstdint>, so no inline function built for this CPU can
// leak into the other translation units.
#include "roofline_kernels.hpp"

#include <cstring>

namespace nkbench {

void roofline_axpb(const float* __restrict x, float* __restrict y, int64_t count, float a, float b) {
    for (int64_t i = 0; i < count; ++i) y[i] = a * x[i] + b;
}

void roofline_axpy(const float* __restrict x, const float* __restrict y, float* __restrict z,
                   int64_t count, float a) {
    for (int64_t i = 0; i < count; ++i) z[i] = a * x[i] + y[i];
}

void roofline_add_axpb(const float* __restrict x, const float* __restrict y, float* __restrict s,
                       float* __restrict d, int64_t count, float a, float b) {
    for (int64_t i = 0; i < count; ++i) {
        s[i] = x[i] + y[i];
        d[i] = a * s[i] + b;
    }
}

void relu_pass(float* __restrict y, int64_t count) {
    for (int64_t i = 0; i < count; ++i) y[i] = y[i] < 0.0f ? 0.0f : y[i];
}

void add_relu_pass(const float* __restrict r, float* __restrict y, int64_t count) {
    for (int64_t i = 0; i < count; ++i) {
        const float v = y[i] + r[i];
        y[i] = v < 0.0f ? 0.0f : v;
    }
}

void relu_grad_pass(const float* __restrict dy, const float* __restrict dst, float* __restrict g, int64_t count) {
    for (int64_t i = 0; i < count; ++i) g[i] = dst[i] <= 0.0f ? 0.0f : dy[i];
}

namespace {
float widen(uint16_t h) {
    const uint32_t u = uint32_t(h) << 16;
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}
uint16_t narrow(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return uint16_t(u >> 16);
}
} // namespace

void roofline_axpb(const uint16_t* __restrict x, uint16_t* __restrict y, int64_t count, float a, float b) {
    for (int64_t i = 0; i < count; ++i) y[i] = narrow(a * widen(x[i]) + b);
}

void roofline_axpy(const uint16_t* __restrict x, const uint16_t* __restrict y, uint16_t* __restrict z, int64_t count,
                   float a) {
    for (int64_t i = 0; i < count; ++i) z[i] = narrow(a * widen(x[i]) + widen(y[i]));
}

void roofline_add_axpb(const uint16_t* __restrict x, const uint16_t* __restrict y, uint16_t* __restrict s,
                       uint16_t* __restrict d, int64_t count, float a, float b) {
    for (int64_t i = 0; i < count; ++i) {
        const float v = widen(x[i]) + widen(y[i]);
        s[i] = narrow(v);
        d[i] = narrow(a * v + b);
    }
}

namespace {
// 16 floats: one AVX-512 register, or as many narrower ones as the CPU has.
typedef float V16 __attribute__((vector_size(64)));
constexpr int64_t kLanes = 16, kChains = 4;

V16 load(const float* p) {
    V16 v;
    std::memcpy(&v, p, sizeof v);
    return v;
}

// sum1 += u, sum2 += u * w over count floats: kChains independent chains of 16 lanes,
// then the lanes in order.
void sums(const float* __restrict u, const float* __restrict w, int64_t count, float* sum1, float* sum2) {
    V16 s1[kChains] = {}, s2[kChains] = {};
    int64_t i = 0;
    for (; i + kChains * kLanes <= count; i += kChains * kLanes)
        for (int k = 0; k < kChains; ++k) {
            const V16 a = load(u + i + k * kLanes);
            s1[k] += a;
            s2[k] += a * load(w + i + k * kLanes);
        }
    float t1 = 0, t2 = 0;
    for (; i < count; ++i) {
        t1 += u[i];
        t2 += u[i] * w[i];
    }
    for (int k = 0; k < kChains; ++k)
        for (int64_t l = 0; l < kLanes; ++l) {
            t1 += s1[k][l];
            t2 += s2[k][l];
        }
    *sum1 = t1;
    *sum2 = t2;
}
} // namespace

void two_pass_moments(const float* x, int64_t count, float* sum, float* sum_sq) { sums(x, x, count, sum, sum_sq); }

void two_pass_grad_sums(const float* x, const float* y, int64_t count, float* sum_y, float* sum_xy) {
    sums(y, x, count, sum_y, sum_xy);
}

} // namespace nkbench
