// Compiled with the AVX-512 flags and -mavx512bf16; used only when the CPU has AVX-512
// BF16 (core/half_scalar.cpp checks).
//
// vcvtneps2bf16 rounds to nearest even and quiets NaNs as the scalar definition does,
// but treats float subnormal inputs as zero (checked on AMD Zen 5: 0x007fffff gives
// 0x0000, the scalar 0x0080; Intel documents the same): a register holding a subnormal
// goes through the integer emulation instead.
#include "core/half_avx512.hpp"

namespace nk {
namespace {

__m256i bf16_native(__m512 x) {
    const __m512i u = _mm512_castps_si512(x);
    const __mmask16 subnormal = _mm512_testn_epi32_mask(u, _mm512_set1_epi32(0x7f800000)) &
                                _mm512_test_epi32_mask(u, _mm512_set1_epi32(0x007fffff));
    if (subnormal) return avx512_half::bf16_emulated(x);
    return reinterpret_cast<__m256i>(_mm512_cvtneps_pbh(x));
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) { avx512_half::f32_to_bf16_with(src, dst, n, bf16_native); }

} // namespace

const HalfKernelTable& half_kernels_avx512_bf16_table() {
    static const HalfKernelTable table = {&avx512_half::bf16_to_f32, &f32_to_bf16, &avx512_half::f16_to_f32,
                                          &avx512_half::f32_to_f16};
    return table;
}

} // namespace nk
