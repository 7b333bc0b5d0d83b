// AVX-512 conversions, included by half_avx512.cpp and half_avx512_bf16.cpp (each compiled
// with its own flags; everything here is static, so no copy is shared between them).
// f16: vcvtps2ph (round to nearest even) and vcvtph2ps, which give the scalar bits.
// bf16: integer emulation, 16 lanes at a time.
#pragma once

#include "core/half.hpp"

#include <immintrin.h>

namespace nk {
namespace avx512_half {

static inline void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16) {
        const __m512i h = _mm512_cvtepu16_epi32(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i)));
        _mm512_storeu_ps(dst + i, _mm512_castsi512_ps(_mm512_slli_epi32(h, 16)));
    }
    for (; i < n; ++i) dst[i] = float_from_bf16(src[i]);
}

// 16 floats to bf16 by integer emulation.
static inline __m256i bf16_emulated(__m512 x) {
    const __m512i u = _mm512_castps_si512(x), top = _mm512_srli_epi32(u, 16);
    const __m512i r = _mm512_srli_epi32(
        _mm512_add_epi32(u, _mm512_add_epi32(_mm512_set1_epi32(0x7fff), _mm512_and_si512(top, _mm512_set1_epi32(1)))),
        16);
    const __mmask16 nan =
        _mm512_cmpgt_epi32_mask(_mm512_and_si512(u, _mm512_set1_epi32(0x7fffffff)), _mm512_set1_epi32(0x7f800000));
    return _mm512_cvtepi32_epi16(_mm512_mask_mov_epi32(r, nan, _mm512_or_si512(top, _mm512_set1_epi32(0x40))));
}

// f32 -> bf16 with `convert16` for each 16 floats.
template <class Convert16>
static inline void f32_to_bf16_with(const float* src, uint16_t* dst, int64_t n, Convert16 convert16) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i), convert16(_mm512_loadu_ps(src + i)));
    for (; i < n; ++i) dst[i] = bf16_from_float(src[i]);
}

static inline void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    f32_to_bf16_with(src, dst, n, bf16_emulated);
}

static inline void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm512_storeu_ps(dst + i, _mm512_cvtph_ps(_mm256_loadu_si256(reinterpret_cast<const __m256i*>(src + i))));
    for (; i < n; ++i) dst[i] = float_from_f16(src[i]);
}

static inline void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 16 <= n; i += 16)
        _mm256_storeu_si256(reinterpret_cast<__m256i*>(dst + i),
                            _mm512_cvtps_ph(_mm512_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; ++i) dst[i] = f16_from_float(src[i]);
}

} // namespace avx512_half
} // namespace nk
