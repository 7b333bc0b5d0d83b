// Per-channel work outside the streaming loops (batch_norm_kernel_table.hpp): the rows
// reductions' pivots, and the epilogues. Templated on an Ops type like the
// kernels. A register of kF32 channels is handled as kH double registers; only IEEE
// operations in a fixed order, so every ISA produces the bits of the scalar path.
#pragma once

#include "batch_norm/batch_norm_kernel_table.hpp"
#include "core/moments.hpp"
#include "core/simd.hpp"
#include "normkit/normkit.h"

#include <algorithm>
#include <limits>

namespace nk {

template <class Ops>
struct BatchNormChannelKernels {
    using f32 = typename Ops::f32;
    using f64 = typename Ops::f64;
    static constexpr int64_t kF32 = int64_t(Ops::kF32);
    static constexpr int64_t kF64 = int64_t(Ops::kF64);
    static constexpr int kH = int(kF32 / kF64); // double registers per float register

    // kF32 channels as doubles.
    struct Wide {
        f64 h[kH];
    };

    // The n <= kF32 channels at p + c (lanes past n: `fill`), or `fill` everywhere for a null p.
    static f32 loadf(const float* p, int64_t c, int64_t n, float fill) {
        if (!p) return Ops::splat(fill);
        return n == kF32 ? Ops::load(p + c) : Ops::load_n(p + c, n, Ops::splat(fill));
    }
    static Wide widen(f32 v) {
        Wide w;
        if constexpr (kH == 1)
            w.h[0] = f64(v);
        else
            Ops::widen(v, w.h[0], w.h[1]);
        return w;
    }
    static Wide load(const float* p, int64_t c, int64_t n, float fill) { return widen(loadf(p, c, n, fill)); }
    static f32 narrow(const Wide& w) { return Ops::narrow(w.h[0], w.h[kH - 1]); }
    // Stores the first n channels at p + c; nothing for a null p.
    static void store(float* p, int64_t c, f32 v, int64_t n) {
        if (!p) return;
        if (n == kF32)
            Ops::store(p + c, v);
        else
            Ops::store_n(p + c, v, n);
    }
    static void store(float* p, int64_t c, const Wide& w, int64_t n) { store(p, c, narrow(w), n); }

    // Double register j of the channels at p + c (n of them valid): `fill` past n, which
    // it never reads (other tasks may be writing there).
    static f64 loadd(const double* p, int64_t c, int j, int64_t n, double fill = 0.0) {
        const int64_t valid = n - j * kF64;
        if (valid >= kF64) return Ops::loadd(p + c + j * kF64);
        return valid > 0 ? Ops::loadd_n(p + c + j * kF64, valid, Ops::splatd(fill)) : Ops::splatd(fill);
    }

    // r.h[j] = f(j) for each double register j.
    template <class F>
    static Wide each(F&& f) {
        Wide r;
        for (int j = 0; j < kH; ++j) r.h[j] = f(j);
        return r;
    }

    // center[j] = float((x[j] + x[r1 j] + x[r2 j] + x[r3 j]) / 4), rq = q * rows / 4 rows on:
    // the mean of 4 values spread over the block, summed in double from 0 in that order.
    static void rows_pivots(const float* x, int64_t stride, int64_t rows, int64_t lanes, float* center) {
        for (int64_t j = 0; j < lanes; j += kF32) {
            const int64_t n = std::min(kF32, lanes - j);
            Wide sum = widen(Ops::splat(0.0f));
            for (int64_t q = 0; q < 4; ++q) {
                const Wide v = load(x + q * rows / 4 * stride, j, n, 0.0f);
                for (int h = 0; h < kH; ++h) sum.h[h] = sum.h[h] + v.h[h];
            }
            store(center, j, each([&](int h) { return sum.h[h] / Ops::splatd(4.0); }), n);
        }
    }

    static void training_epilogue(const TrainingEpilogue& e, int64_t c0, int64_t c1) {
        const ChannelPartials& P = e.parts;
        const bool keras = (e.flags & NK_BN_KERAS_MOMENTUM) != 0;
        const double m = e.momentum;
        const double w_running = keras ? m : 1 - m, w_batch = keras ? 1 - m : m;
        const f64 zero = Ops::splatd(0.0), one = Ops::splatd(1.0);
        const f64 nan = Ops::splatd(std::numeric_limits<double>::quiet_NaN());
        for (int64_t c = c0; c < c1; c += kF32) {
            const int64_t n = std::min(kF32, c1 - c);
            Wide mean, var;
            double count = 0;
            for (int j = 0; j < kH; ++j) {
                // Each partial's moments, merged in partial order (core/moments.hpp).
                f64 mean_a = zero, m2_a = zero;
                double count_a = 0;
                for (int64_t p = 0; p < P.partials; ++p) {
                    const int64_t row = p * P.stride;
                    f64 mean_b, m2_b;
                    moments_from_sums(P.count[p], loadd(P.s1 + row, c, j, n), loadd(P.s2 + row, c, j, n),
                                      loadd(P.center + row, c, j, n), mean_b, m2_b);
                    chan_merge(count_a, mean_a, m2_a, P.count[p], mean_b, m2_b);
                }
                const f64 v = m2_a / Ops::splatd(count_a);
                // A non-finite mean or variance makes both NaN.
                const auto finite = (mean_a - mean_a == zero) & (v - v == zero);
                mean.h[j] = Ops::selectd(finite, mean_a, nan);
                var.h[j] = Ops::selectd(finite, v, nan);
                count = count_a;
            }
            const Wide invstd =
                each([&](int j) { return one / Ops::sqrtd(var.h[j] + Ops::splatd(double(e.epsilon))); });
            // The mean rounded to float (hi); what it lost goes into b: y = (x - hi) * a + b.
            const f32 hi = narrow(mean);
            const Wide hi_wide = widen(hi), scale = load(e.scale, c, n, 1.0f), shift = load(e.shift, c, n, 0.0f);
            const Wide a = each([&](int j) { return scale.h[j] * invstd.h[j]; });
            store(e.mean_hi, c, hi, n);
            store(e.a, c, a, n);
            store(e.b, c, each([&](int j) { return shift.h[j] - (mean.h[j] - hi_wide.h[j]) * a.h[j]; }), n);
            store(e.save_mean, c, hi, n);
            store(e.save_invstd, c, invstd, n);
            if (!e.running_mean) continue;
            const double unbias = count / (count - 1);
            const bool biased = (e.flags & NK_BN_BIASED_RUNNING_VAR) != 0;
            const Wide rm = load(e.running_mean, c, n, 0.0f), rv = load(e.running_var, c, n, 0.0f);
            store(e.running_mean, c, each([&](int j) {
                      return Ops::splatd(w_running) * rm.h[j] + Ops::splatd(w_batch) * mean.h[j];
                  }), n);
            store(e.running_var, c, each([&](int j) {
                      const f64 v = biased ? var.h[j] : var.h[j] * Ops::splatd(unbias);
                      return Ops::splatd(w_running) * rv.h[j] + Ops::splatd(w_batch) * v;
                  }), n);
        }
    }

    // training_epilogue's fold of the partials alone, its bits, into mean and M2 (double)
    // per channel: the pieces of synchronized batch norm.
    static void fold_moments(const ChannelPartials& P, int64_t c0, int64_t c1, double* mean, double* m2) {
        const f64 zero = Ops::splatd(0.0);
        for (int64_t c = c0; c < c1; c += kF64) {
            const int64_t n = std::min(kF64, c1 - c);
            f64 mean_a = zero, m2_a = zero;
            double count_a = 0;
            for (int64_t p = 0; p < P.partials; ++p) {
                const int64_t row = p * P.stride;
                f64 mean_b, m2_b;
                moments_from_sums(P.count[p], loadd(P.s1 + row, c, 0, n), loadd(P.s2 + row, c, 0, n),
                                  loadd(P.center + row, c, 0, n), mean_b, m2_b);
                chan_merge(count_a, mean_a, m2_a, P.count[p], mean_b, m2_b);
            }
            if (n == kF64) {
                Ops::stored(mean + c, mean_a);
                Ops::stored(m2 + c, m2_a);
                continue;
            }
            double a[kF64], b[kF64];
            Ops::stored(a, mean_a);
            Ops::stored(b, m2_a);
            std::copy(a, a + n, mean + c);
            std::copy(b, b + n, m2 + c);
        }
    }

    static void backward_epilogue(const BackwardEpilogue& e, int64_t c0, int64_t c1) {
        const ChannelPartials& P = e.parts;
        for (int64_t c = c0; c < c1; c += kF32) {
            const int64_t n = std::min(kF32, c1 - c);
            const Wide invstd = load(e.save_invstd, c, n, 1.0f), scale = load(e.scale, c, n, 1.0f);
            store(e.mean_hi, c, loadf(e.save_mean, c, n, 0.0f), n);
            store(e.a, c, each([&](int j) { return scale.h[j] * invstd.h[j]; }), n);
            if (!e.need_sums) continue;
            Wide s1, s2;
            for (int j = 0; j < kH; ++j) {
                s1.h[j] = s2.h[j] = Ops::splatd(0.0);
                for (int64_t p = 0; p < P.partials; ++p) {
                    const int64_t row = p * P.stride;
                    s1.h[j] = s1.h[j] + loadd(P.s1 + row, c, j, n);
                    s2.h[j] = s2.h[j] + loadd(P.s2 + row, c, j, n);
                }
            }
            const f64 count = Ops::splatd(e.count);
            store(e.diff_shift, c, s1, n);
            store(e.diff_scale, c, each([&](int j) { return s2.h[j] * invstd.h[j]; }), n);
            store(e.k1, c, each([&](int j) { return s1.h[j] / count; }), n);
            store(e.k2, c, each([&](int j) { return s2.h[j] / count * invstd.h[j] * invstd.h[j]; }), n);
        }
    }

    static void inference_epilogue(const InferenceEpilogue& e, int64_t c0, int64_t c1) {
        const f64 one = Ops::splatd(1.0), eps = Ops::splatd(double(e.epsilon));
        for (int64_t c = c0; c < c1; c += kF32) {
            const int64_t n = std::min(kF32, c1 - c);
            const Wide var = load(e.variance, c, n, 1.0f), scale = load(e.scale, c, n, 1.0f);
            store(e.mean_hi, c, loadf(e.mean, c, n, 0.0f), n);
            store(e.a, c, each([&](int j) { return scale.h[j] * (one / Ops::sqrtd(var.h[j] + eps)); }), n);
            store(e.b, c, loadf(e.shift, c, n, 0.0f), n);
        }
    }
};

} // namespace nk
