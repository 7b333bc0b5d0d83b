// The roofline's inner loops. This file alone is compiled with -O3 -march=native, and it
// includes no library code beyond <cstdint>, so no inline function built for this CPU can
// leak into the other translation units.
#include "roofline_kernels.hpp"

namespace nkbench {

void roofline_axpb(const float* __restrict x, float* __restrict y, int64_t count, float a, float b) {
    for (int64_t i = 0; i < count; ++i) y[i] = a * x[i] + b;
}

void roofline_axpy(const float* __restrict x, const float* __restrict y, float* __restrict z,
                   int64_t count, float a) {
    for (int64_t i = 0; i < count; ++i) z[i] = a * x[i] + y[i];
}

} // namespace nkbench
