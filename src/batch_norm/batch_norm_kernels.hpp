// Batch-norm kernels, templated on an Ops type (src/core/simd.hpp). Each ISA
// translation unit (batch_norm_<isa>.cpp) instantiates them once with its own flags.
//
// Reductions: 16 double lanes per seg call, `width` lanes per rows call. A lane sees
// its values in memory order; vector width only decides how many lanes move at once,
// so every ISA produces identical sums. Element-wise passes are exact IEEE float
// operations in a fixed order, also identical across ISAs.
#pragma once

#include "batch_norm/batch_norm_kernel_table.hpp"
#include "core/simd.hpp"

namespace nk {

template <class Ops>
struct BatchNormKernels {
    using f32 = typename Ops::f32;
    using f64 = typename Ops::f64;
    static constexpr std::size_t kF32 = Ops::kF32;
    static constexpr std::size_t kF64 = Ops::kF64;
    static constexpr int kLanes = 16;                  // canonical seg lanes
    static constexpr int kD = kLanes / int(kF64);      // double registers per 16 lanes

    // 16 floats at p as doubles, lane order preserved.
    static void load16(const float* p, f64* v) {
        if constexpr (kF32 == kF64) {
            for (int m = 0; m < kD; ++m) v[m] = f64(p[m]);
        } else {
            for (int j = 0; j < kLanes / int(kF32); ++j)
                Ops::widen(Ops::load(p + j * kF32), v[2 * j], v[2 * j + 1]);
        }
    }

    static void stats_seg(const float* x, int64_t len, double pivot, double* acc1, double* acc2) {
        f64 s1[kD], s2[kD];
        for (int m = 0; m < kD; ++m) {
            s1[m] = Ops::loadd(acc1 + m * kF64);
            s2[m] = Ops::loadd(acc2 + m * kF64);
        }
        const f64 p = Ops::splatd(pivot);
        int64_t i = 0;
        for (; i + kLanes <= len; i += kLanes) {
            f64 v[kD];
            load16(x + i, v);
            for (int m = 0; m < kD; ++m) {
                f64 d = v[m] - p;
                s1[m] = s1[m] + d;
                s2[m] = s2[m] + d * d;
            }
        }
        for (int m = 0; m < kD; ++m) {
            Ops::stored(acc1 + m * kF64, s1[m]);
            Ops::stored(acc2 + m * kF64, s2[m]);
        }
        for (int k = 0; i < len; ++i, ++k) {
            double d = double(x[i]) - pivot;
            acc1[k] += d;
            acc2[k] += d * d;
        }
    }

    static void stats_rows(const float* x, int64_t rows, int64_t width, int64_t stride,
                           const double* pivot, double* acc1, double* acc2) {
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * stride;
            int64_t j = 0;
            for (; j + kLanes <= width; j += kLanes) {
                f64 v[kD];
                load16(xr + j, v);
                for (int m = 0; m < kD; ++m) {
                    const int64_t o = j + m * int64_t(kF64);
                    f64 d = v[m] - Ops::loadd(pivot + o);
                    Ops::stored(acc1 + o, Ops::loadd(acc1 + o) + d);
                    Ops::stored(acc2 + o, Ops::loadd(acc2 + o) + d * d);
                }
            }
            for (; j < width; ++j) {
                double d = double(xr[j]) - pivot[j];
                acc1[j] += d;
                acc2[j] += d * d;
            }
        }
    }

    static void grad_seg(const float* x, const float* dy, int64_t len, double mean, double* acc1,
                         double* acc2) {
        f64 s1[kD], s2[kD];
        for (int m = 0; m < kD; ++m) {
            s1[m] = Ops::loadd(acc1 + m * kF64);
            s2[m] = Ops::loadd(acc2 + m * kF64);
        }
        const f64 mu = Ops::splatd(mean);
        int64_t i = 0;
        for (; i + kLanes <= len; i += kLanes) {
            f64 v[kD], g[kD];
            load16(x + i, v);
            load16(dy + i, g);
            for (int m = 0; m < kD; ++m) {
                s1[m] = s1[m] + g[m];
                s2[m] = s2[m] + g[m] * (v[m] - mu);
            }
        }
        for (int m = 0; m < kD; ++m) {
            Ops::stored(acc1 + m * kF64, s1[m]);
            Ops::stored(acc2 + m * kF64, s2[m]);
        }
        for (int k = 0; i < len; ++i, ++k) {
            double g = dy[i];
            acc1[k] += g;
            acc2[k] += g * (double(x[i]) - mean);
        }
    }

    static void grad_rows(const float* x, const float* dy, int64_t rows, int64_t width,
                          int64_t stride, const double* mean, double* acc1, double* acc2) {
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * stride;
            const float* gr = dy + r * stride;
            int64_t j = 0;
            for (; j + kLanes <= width; j += kLanes) {
                f64 v[kD], g[kD];
                load16(xr + j, v);
                load16(gr + j, g);
                for (int m = 0; m < kD; ++m) {
                    const int64_t o = j + m * int64_t(kF64);
                    Ops::stored(acc1 + o, Ops::loadd(acc1 + o) + g[m]);
                    Ops::stored(acc2 + o, Ops::loadd(acc2 + o) + g[m] * (v[m] - Ops::loadd(mean + o)));
                }
            }
            for (; j < width; ++j) {
                double g = gr[j];
                acc1[j] += g;
                acc2[j] += g * (double(xr[j]) - mean[j]);
            }
        }
    }

    // ---- element-wise passes: one formula each, shared by vector body and tail ----

    template <class T>
    static T normalize1(T x, T mh, T ml, T a, T b) {
        return ((x - mh) - ml) * a + b;
    }
    template <class T>
    static T diff_src1(T x, T dy, T mh, T ml, T k1, T k2, T a) {
        return ((dy - k1) - ((x - mh) - ml) * k2) * a;
    }

    static void normalize_seg(const float* x, float* y, int64_t len, const ElementwiseCoefs& k) {
        const float mh = *k.mean_hi, ml = *k.mean_lo, a = *k.a, b = *k.b;
        const f32 vmh = Ops::splat(mh), vml = Ops::splat(ml), va = Ops::splat(a), vb = Ops::splat(b);
        int64_t i = 0;
        for (; i + int64_t(kF32) <= len; i += kF32)
            Ops::store(y + i, normalize1(Ops::load(x + i), vmh, vml, va, vb));
        for (; i < len; ++i) y[i] = normalize1(x[i], mh, ml, a, b);
    }

    static void normalize_rows(const float* x, float* y, int64_t rows, int64_t width,
                               int64_t stride, const ElementwiseCoefs& k) {
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * stride;
            float* yr = y + r * stride;
            int64_t j = 0;
            for (; j + int64_t(kF32) <= width; j += kF32)
                Ops::store(yr + j, normalize1(Ops::load(xr + j), Ops::load(k.mean_hi + j),
                                              Ops::load(k.mean_lo + j), Ops::load(k.a + j),
                                              Ops::load(k.b + j)));
            for (; j < width; ++j)
                yr[j] = normalize1(xr[j], k.mean_hi[j], k.mean_lo[j], k.a[j], k.b[j]);
        }
    }

    static void diff_src_seg(const float* x, const float* dy, float* dx, int64_t len,
                             const ElementwiseCoefs& k) {
        const float mh = *k.mean_hi, ml = *k.mean_lo, k1 = *k.k1, k2 = *k.k2, a = *k.a;
        const f32 vmh = Ops::splat(mh), vml = Ops::splat(ml), vk1 = Ops::splat(k1),
                  vk2 = Ops::splat(k2), va = Ops::splat(a);
        int64_t i = 0;
        for (; i + int64_t(kF32) <= len; i += kF32)
            Ops::store(dx + i, diff_src1(Ops::load(x + i), Ops::load(dy + i), vmh, vml, vk1, vk2, va));
        for (; i < len; ++i) dx[i] = diff_src1(x[i], dy[i], mh, ml, k1, k2, a);
    }

    static void diff_src_rows(const float* x, const float* dy, float* dx, int64_t rows,
                              int64_t width, int64_t stride, const ElementwiseCoefs& k) {
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * stride;
            const float* gr = dy + r * stride;
            float* dr = dx + r * stride;
            int64_t j = 0;
            for (; j + int64_t(kF32) <= width; j += kF32)
                Ops::store(dr + j, diff_src1(Ops::load(xr + j), Ops::load(gr + j),
                                             Ops::load(k.mean_hi + j), Ops::load(k.mean_lo + j),
                                             Ops::load(k.k1 + j), Ops::load(k.k2 + j),
                                             Ops::load(k.a + j)));
            for (; j < width; ++j)
                dr[j] = diff_src1(xr[j], gr[j], k.mean_hi[j], k.mean_lo[j], k.k1[j], k.k2[j], k.a[j]);
        }
    }

    static void scale_seg(const float* dy, float* dx, int64_t len, const ElementwiseCoefs& k) {
        const float a = *k.a;
        const f32 va = Ops::splat(a);
        int64_t i = 0;
        for (; i + int64_t(kF32) <= len; i += kF32) Ops::store(dx + i, Ops::load(dy + i) * va);
        for (; i < len; ++i) dx[i] = dy[i] * a;
    }

    static void scale_rows(const float* dy, float* dx, int64_t rows, int64_t width,
                           int64_t stride, const ElementwiseCoefs& k) {
        for (int64_t r = 0; r < rows; ++r) {
            const float* gr = dy + r * stride;
            float* dr = dx + r * stride;
            int64_t j = 0;
            for (; j + int64_t(kF32) <= width; j += kF32)
                Ops::store(dr + j, Ops::load(gr + j) * Ops::load(k.a + j));
            for (; j < width; ++j) dr[j] = gr[j] * k.a[j];
        }
    }

    static const BatchNormKernelTable table;
};

template <class Ops>
const BatchNormKernelTable BatchNormKernels<Ops>::table = {
    &stats_seg,     &stats_rows,     &grad_seg,      &grad_rows, &normalize_seg,
    &normalize_rows, &diff_src_seg, &diff_src_rows, &scale_seg, &scale_rows,
};


} // namespace nk
