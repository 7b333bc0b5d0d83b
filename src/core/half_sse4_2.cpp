// Compiled with -msse4.2: bf16 by integer emulation, 4 lanes at a time; f16 (no native
// conversion before F16C) by the scalar emulation.
#include "core/half.hpp"

#include <immintrin.h>

namespace nk {
namespace {

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m128i h = _mm_cvtepu16_epi32(_mm_loadl_epi64(reinterpret_cast<const __m128i*>(src + i)));
        _mm_storeu_ps(dst + i, _mm_castsi128_ps(_mm_slli_epi32(h, 16)));
    }
    for (; i < n; ++i) dst[i] = float_from_bf16(src[i]);
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    const __m128i one = _mm_set1_epi32(1), bias = _mm_set1_epi32(0x7fff), abs = _mm_set1_epi32(0x7fffffff),
                  inf = _mm_set1_epi32(0x7f800000), quiet = _mm_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 4 <= n; i += 4) {
        const __m128i u = _mm_castps_si128(_mm_loadu_ps(src + i)), top = _mm_srli_epi32(u, 16);
        const __m128i r = _mm_srli_epi32(_mm_add_epi32(u, _mm_add_epi32(bias, _mm_and_si128(top, one))), 16);
        const __m128i nan = _mm_cmpgt_epi32(_mm_and_si128(u, abs), inf);
        const __m128i v = _mm_blendv_epi8(r, _mm_or_si128(top, quiet), nan);
        _mm_storel_epi64(reinterpret_cast<__m128i*>(dst + i), _mm_packus_epi32(v, v));
    }
    for (; i < n; ++i) dst[i] = bf16_from_float(src[i]);
}

void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_from_f16(src[i]);
}
void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_from_float(src[i]);
}

const HalfKernelTable kTable = {&bf16_to_f32, &f32_to_bf16, &f16_to_f32, &f32_to_f16};

} // namespace

const HalfKernelTable& half_kernels_sse4_2() { return kTable; }

} // namespace nk
