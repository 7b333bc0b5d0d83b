// Vector operations the kernels are written against. One Ops type per ISA:
// XsimdOps<Arch> wraps xsimd 8.1 batches; ScalarOps is the plain-C++ path.
//
// Only element-wise IEEE operations are used (no FMA: TUs are built with
// -ffp-contract=off), so every ISA computes the same bits for the same lanes.
// Everything here is a template or `static`: an AVX-512 copy of a helper must never
// be merged by the linker into code that runs on an older CPU.
#pragma once

#include <cmath>
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
    static f64 loadd_n(const double* p, int64_t, f64) { return *p; } // never called, as load_n
    static f32 narrow(f64 lo, f64 /*hi*/) { return f32(lo); }
    static f64 sqrtd(f64 v) { return std::sqrt(v); }
    static f64 selectd(bool c, f64 a, f64 b) { return c ? a : b; }
    static bool all(bool c) { return c; }
    // Never called: a one-lane register has no partial loads.
    static f32 load_n(const float* p, int64_t, f32) { return *p; }
    static void store_n(float* p, f32 v, int64_t) { *p = v; }
    static void stream(float* p, f32 v) { *p = v; } // no streaming store for one float
    static void stream_fence() {}
    // ReLU and its gradient mask (the batch-norm fusions): v < 0 gives +0, anything else
    // (NaN, -0 included) stays; g where dst <= 0 gives 0, anything else (NaN dst included)
    // keeps g, as torch.nn.functional.relu and its backward do.
    static f32 relu(f32 v) { return v < 0.0f ? 0.0f : v; }
    static f32 relu_grad(f32 g, f32 dst) { return dst <= 0.0f ? 0.0f : g; }
};

#if defined(NK_SIMD_XSIMD)

#if defined(__AVX512F__)
static inline void widen_f32(xsimd::avx512bw, __m512 v, __m512d& lo, __m512d& hi) {
    lo = _mm512_cvtps_pd(_mm512_castps512_ps256(v));
    hi = _mm512_cvtps_pd(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(v), 1)));
}
static inline __m512 narrow_f64(xsimd::avx512bw, __m512d lo, __m512d hi) {
    const __m256d l = _mm256_castps_pd(_mm512_cvtpd_ps(lo)), h = _mm256_castps_pd(_mm512_cvtpd_ps(hi));
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castpd256_pd512(l), h, 1));
}
#endif
#if defined(__AVX2__)
static inline void widen_f32(xsimd::fma3<xsimd::avx2>, __m256 v, __m256d& lo, __m256d& hi) {
    lo = _mm256_cvtps_pd(_mm256_castps256_ps128(v));
    hi = _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1));
}
static inline __m256 narrow_f64(xsimd::fma3<xsimd::avx2>, __m256d lo, __m256d hi) {
    return _mm256_set_m128(_mm256_cvtpd_ps(hi), _mm256_cvtpd_ps(lo));
}
#endif
#if defined(__AVX512F__)
// Lanes [0, n) from p, the others from `fill`; n < 16. Reads and writes only lanes < n.
static inline __m512 load_n_f32(xsimd::avx512bw, const float* p, int64_t n, __m512 fill) {
    return _mm512_mask_loadu_ps(fill, __mmask16((1u << n) - 1), p);
}
static inline void store_n_f32(xsimd::avx512bw, float* p, __m512 v, int64_t n) {
    _mm512_mask_storeu_ps(p, __mmask16((1u << n) - 1), v);
}
static inline __m512d load_n_f64(xsimd::avx512bw, const double* p, int64_t n, __m512d fill) {
    return _mm512_mask_loadu_pd(fill, __mmask8((1u << n) - 1), p);
}
#endif
#if defined(__AVX2__)
static inline __m256i lane_mask_avx2(int64_t n) {
    return _mm256_cmpgt_epi32(_mm256_set1_epi32(int(n)), _mm256_setr_epi32(0, 1, 2, 3, 4, 5, 6, 7));
}
static inline __m256 load_n_f32(xsimd::fma3<xsimd::avx2>, const float* p, int64_t n, __m256 fill) {
    const __m256i m = lane_mask_avx2(n);
    return _mm256_blendv_ps(fill, _mm256_maskload_ps(p, m), _mm256_castsi256_ps(m));
}
static inline void store_n_f32(xsimd::fma3<xsimd::avx2>, float* p, __m256 v, int64_t n) {
    _mm256_maskstore_ps(p, lane_mask_avx2(n), v);
}
static inline __m256d load_n_f64(xsimd::fma3<xsimd::avx2>, const double* p, int64_t n, __m256d fill) {
    const __m256i m = _mm256_cmpgt_epi64(_mm256_set1_epi64x(n), _mm256_setr_epi64x(0, 1, 2, 3));
    return _mm256_blendv_pd(fill, _mm256_maskload_pd(p, m), _mm256_castsi256_pd(m));
}
static inline void stream_f32(xsimd::fma3<xsimd::avx2>, float* p, __m256 v) { _mm256_stream_ps(p, v); }
#endif
#if defined(__AVX512F__)
static inline void stream_f32(xsimd::avx512bw, float* p, __m512 v) { _mm512_stream_ps(p, v); }
#endif
#if defined(__SSE4_2__)
static inline void stream_f32(xsimd::sse4_2, float* p, __m128 v) { _mm_stream_ps(p, v); }
// SSE has no masked moves that are fast; go through a small buffer.
static inline __m128 load_n_f32(xsimd::sse4_2, const float* p, int64_t n, __m128 fill) {
    alignas(16) float t[4];
    _mm_store_ps(t, fill);
    for (int64_t i = 0; i < n; ++i) t[i] = p[i];
    return _mm_load_ps(t);
}
static inline void store_n_f32(xsimd::sse4_2, float* p, __m128 v, int64_t n) {
    alignas(16) float t[4];
    _mm_store_ps(t, v);
    for (int64_t i = 0; i < n; ++i) p[i] = t[i];
}
static inline __m128d load_n_f64(xsimd::sse4_2, const double* p, int64_t, __m128d fill) {
    return _mm_loadl_pd(fill, p); // n == 1
}
static inline void widen_f32(xsimd::sse4_2, __m128 v, __m128d& lo, __m128d& hi) {
    lo = _mm_cvtps_pd(v);
    hi = _mm_cvtps_pd(_mm_movehl_ps(v, v));
}
static inline __m128 narrow_f64(xsimd::sse4_2, __m128d lo, __m128d hi) {
    return _mm_movelh_ps(_mm_cvtpd_ps(lo), _mm_cvtpd_ps(hi));
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
    // Two double registers rounded to floats, in lane order (the inverse of widen).
    static f32 narrow(f64 lo, f64 hi) { return narrow_f64(Arch{}, lo, hi); }
    static f64 sqrtd(f64 v) { return xsimd::sqrt(v); }
    static f64 selectd(typename f64::batch_bool_type c, f64 a, f64 b) { return xsimd::select(c, a, b); }
    static bool all(typename f64::batch_bool_type c) { return xsimd::all(c); }
    static f32 load_n(const float* p, int64_t n, f32 fill) { return load_n_f32(Arch{}, p, n, fill); }
    static f64 loadd_n(const double* p, int64_t n, f64 fill) { return load_n_f64(Arch{}, p, n, fill); }
    static void store_n(float* p, f32 v, int64_t n) { store_n_f32(Arch{}, p, v, n); }
    // Non-temporal store of a whole register to an address aligned to its size.
    static void stream(float* p, f32 v) { stream_f32(Arch{}, p, v); }
    static void stream_fence() { _mm_sfence(); }
    // As ScalarOps::relu and relu_grad, lane by lane.
    static f32 relu(f32 v) { return xsimd::select(v < f32(0.0f), f32(0.0f), v); }
    static f32 relu_grad(f32 g, f32 dst) { return xsimd::select(dst <= f32(0.0f), f32(0.0f), g); }
};

#endif // NK_SIMD_XSIMD

} // namespace nk
