// Vector operations the kernels are written against. One Ops type per ISA:
// XsimdOps<Arch> wraps xsimd 8.1 batches; ScalarOps is the plain-C++ path.
//
// Only element-wise IEEE operations are used (no FMA: TUs are built with
// -ffp-contract=off), so every ISA computes the same bits for the same lanes.
// Everything here is a template or `static`: an AVX-512 copy of a helper must never
// be merged by the linker into code that runs on an older CPU.
#pragma once

#include <cstddef>
#include <cstdint>

#if defined(NK_SIMD_XSIMD)
#include <immintrin.h>
#include <xsimd/xsimd.hpp>
#endif

namespace nk {

struct ScalarOps {
    using f32 = float;
    using f64 = double;
    static constexpr std::size_t kF32 = 1;
    static constexpr std::size_t kF64 = 1;
    static f32 load(const float* p) { return *p; }
    static void store(float* p, f32 v) { *p = v; }
    static f32 splat(float v) { return v; }
    static f64 loadd(const double* p) { return *p; }
    static void stored(double* p, f64 v) { *p = v; }
    static f64 splatd(double v) { return v; }
    static void widen(f32 v, f64& lo, f64& /*hi*/) { lo = v; }
};

#if defined(NK_SIMD_XSIMD)

#if defined(__AVX512F__)
static inline void widen_f32(xsimd::avx512bw, __m512 v, __m512d& lo, __m512d& hi) {
    lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
#endif
#if defined(__AVX2__)
static inline void widen_f32(xsimd::fma3<xsimd::avx2>, __m256 v, __m256d& lo, __m256d& hi) {
    lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}
#endif
#if defined(__SSE4_2__)
static inline void widen_f32(xsimd::sse4_2, __m128 v, __m128d& lo, __m128d& hi) {
    lo = _mm_cvtps_pd(v);
    hi = _mm_cvtps_pd(_mm_movehl_ps(v, v));
}
#endif

template <class Arch>
struct XsimdOps {
    using f32 = xsimd::batch<float, Arch>;
    using f64 = xsimd::batch<double, Arch>;
    static constexpr std::size_t kF32 = f32::size;
    static constexpr std::size_t kF64 = f64::size;
    static_assert(kF32 == 2 * kF64, "a float register widens to two double registers");
    static f32 load(const float* p) { return f32::load_unaligned(p); }
    static void store(float* p, f32 v) { v.store_unaligned(p); }
    static f32 splat(float v) { return f32(v); }
    static f64 loadd(const double* p) { return f64::load_unaligned(p); }
    static void stored(double* p, f64 v) { v.store_unaligned(p); }
    static f64 splatd(double v) { return f64(v); }
    static void widen(f32 v, f64& lo, f64& hi) {
        typename f64::register_type l, h;
        widen_f32(Arch{}, v, l, h);
        lo = l;
        hi = h;
    }
};

#endif // NK_SIMD_XSIMD

} // namespace nk
