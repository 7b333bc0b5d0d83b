// Compiled with -mavx2 -mf16c: bf16 by integer emulation, 8 lanes at a time; f16 with
// F16C (vcvtps2ph with round-to-nearest-even, vcvtph2ps: the scalar bits) when the CPU
// has it (every AVX2 CPU we know of does; the dispatch does not require it), else the
// scalar emulation.
#include "core/half.hpp"

#include <immintrin.h>

namespace nk {
namespace {

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i h = _mm256_cvtepu16_epi32(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i)));
        _mm256_storeu_ps(dst + i, _mm256_castsi256_ps(_mm256_slli_epi32(h, 16)));
    }
    for (; i < n; ++i) dst[i] = float_from_bf16(src[i]);
}

void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    const __m256i one = _mm256_set1_epi32(1), bias = _mm256_set1_epi32(0x7fff),
                  abs = _mm256_set1_epi32(0x7fffffff), inf = _mm256_set1_epi32(0x7f800000),
                  quiet = _mm256_set1_epi32(0x40);
    int64_t i = 0;
    for (; i + 8 <= n; i += 8) {
        const __m256i u = _mm256_castps_si256(_mm256_loadu_ps(src + i)), top = _mm256_srli_epi32(u, 16);
        const __m256i r =
            _mm256_srli_epi32(_mm256_add_epi32(u, _mm256_add_epi32(bias, _mm256_and_si256(top, one))), 16);
        const __m256i nan = _mm256_cmpgt_epi32(_mm256_and_si256(u, abs), inf);
        const __m256i v = _mm256_blendv_epi8(r, _mm256_or_si256(top, quiet), nan);
        // packus works within 128-bit halves: lanes 0-3 land in quad 0, lanes 4-7 in quad 2.
        const __m256i p = _mm256_permute4x64_epi64(_mm256_packus_epi32(v, v), 0x08);
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i), _mm256_castsi256_si128(p));
    }
    for (; i < n; ++i) dst[i] = bf16_from_float(src[i]);
}

void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128(reinterpret_cast<const __m128i*>(src + i))));
    for (; i < n; ++i) dst[i] = float_from_f16(src[i]);
}
void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
    int64_t i = 0;
    for (; i + 8 <= n; i += 8)
        _mm_storeu_si128(reinterpret_cast<__m128i*>(dst + i),
                         _mm256_cvtps_ph(_mm256_loadu_ps(src + i), _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC));
    for (; i < n; ++i) dst[i] = f16_from_float(src[i]);
}

const HalfKernelTable kF16c = {&bf16_to_f32, &f32_to_bf16, &f16_to_f32, &f32_to_f16};

bool has_f16c() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("f16c");
}

} // namespace

const HalfKernelTable& half_kernels_avx2() {
    static const HalfKernelTable table =
        has_f16c() ? kF16c : HalfKernelTable{&bf16_to_f32, &f32_to_bf16, half_kernels_scalar().f16_to_f32,
                                             half_kernels_scalar().f32_to_f16};
    return table;
}

} // namespace nk
