// Compiled with the AVX-512 flags only (cmake/NormkitIsa.cmake).
#include "core/half_avx512.hpp"

namespace nk {

const HalfKernelTable& half_kernels_avx512() {
    static const HalfKernelTable table = {&avx512_half::bf16_to_f32, &avx512_half::f32_to_bf16,
                                          &avx512_half::f16_to_f32, &avx512_half::f32_to_f16};
    return table;
}

} // namespace nk
