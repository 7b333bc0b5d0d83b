// Batch-norm kernels, templated on an Ops type (src/core/simd.hpp). Each ISA
// translation unit (batch_norm_<isa>.cpp) instantiates them once with its own flags.
//
// The reductions come from core/run_kernels.hpp: seg (16 double lanes per run, with the
// fused ReLU's mask added here) and rows (one lane per position). A lane sees its values in memory order,
// and lanes past the data add exactly 0, so the vector width only decides how many lanes
// move at once: every ISA produces the same sums. Element-wise passes are IEEE float
// operations in a fixed order, also identical across ISAs.
#pragma once

#include "batch_norm/batch_norm_channel_kernels.hpp"
#include "batch_norm/batch_norm_kernel_table.hpp"
#include "core/run_kernels.hpp"
#include "core/simd.hpp"

#include <algorithm>
#include <type_traits>

namespace nk {

template <class Ops>
struct BatchNormKernels : RunKernels<Ops> {
    using Base = RunKernels<Ops>;
    using typename Base::f32;
    using typename Base::f64;
    using typename Base::Full;
    using typename Base::Part;
    using Base::kF32;
    using Base::kF64;
    using Base::kFlushSteps;
    using Base::load;
    using Base::store;
    using Base::widen_into;
    using Base::load_register;
    using Base::for_registers;
    using Base::prefetch_ahead;
    using Base::stats_seg;
    using Base::stats_runs;
    using Base::stats_seg_double;
    using Base::kRowsAhead;
    using Base::prefetch_strip;
    using Base::load_widen;
    using Base::kTileF32;
    using Base::kTile;
    using Base::stats_rows;
    using Base::grad_rows;
    using Base::stats_rows_double;
    using Base::grad_rows_double;
    // ---- gradient sums; `mask` (null: none) is the fused ReLU's dst: dy counts where mask > 0 ----

    // Seg: core's grad_seg_body, 16 lanes per run.
    static void grad_seg(const float* x, const float* dy, const float* mask, int64_t rows, int64_t len,
                         int64_t stride, float mean, double* acc1, double* acc2) {
        if (mask)
            Base::template grad_seg_body<std::true_type>(x, dy, nullptr, rows, len, stride, mean, acc1, acc2, false,
                                                         mask);
        else
            Base::grad_seg_body(x, dy, nullptr, rows, len, stride, mean, acc1, acc2);
    }
    static void grad_runs(const float* x, const float* dy, const float* mask, int64_t runs, int64_t len,
                          const float* mean, double* acc1, double* acc2) {
        for (int64_t q = 0; q < runs; ++q)
            grad_seg(x + q * len, dy + q * len, mask ? mask + q * len : nullptr, 1, len, len, mean[q],
                     acc1 + q * Base::kLanes, acc2 + q * Base::kLanes);
    }
    static void grad_seg_double(const float* x, const float* dy, const float* mask, int64_t rows, int64_t len,
                                int64_t stride, float mean, double* acc1, double* acc2) {
        Base::grad_seg_double_body(x, dy, nullptr, rows, len, stride, mean, acc1, acc2, mask);
    }

    // ---- element-wise passes: one formula each ----
    //
    // mh is the mean rounded to float (x - mh is exact for x near it). In training, what
    // the rounding lost is folded into b by the epilogue, in double; backward's mean is
    // save_mean, a float already.

    template <class T>
    static T normalize1(T x, T mh, T a, T b) {
        return (x - mh) * a + b;
    }
    template <class T>
    static T diff_src1(T x, T dy, T mh, T k1, T k2, T a) {
        return ((dy - k1) - (x - mh) * k2) * a;
    }

    // How an element-wise pass runs, fixed per call (with_mode calls f(Mode<...>{}) for the
    // case at hand; f only forwards to a kernel instantiated for it):
    //  - nt: non-temporal stores (ElementwiseCoefs::stream);
    //  - relu: the fused ReLU (forward: dst = relu(v); backward: dy zeroed where the
    //    forward's dst <= 0, read from `mask`);
    //  - extra: a second tensor at the same offsets (forward: a residual added before the
    //    ReLU; backward: diff_residual, the masked dy, written).
    template <bool kNt, bool kRelu = false, bool kExtra = false>
    struct Mode {
        static constexpr bool nt = kNt, relu = kRelu, extra = kExtra;
    };
    template <bool kNt, bool kRelu, class F>
    static void with_extra(bool extra, F&& f) {
        if (extra)
            f(Mode<kNt, kRelu, true>{});
        else
            f(Mode<kNt, kRelu, false>{});
    }
    template <bool kNt, class F>
    static void with_relu(bool relu, bool extra, F&& f) {
        if (relu)
            with_extra<kNt, true>(extra, f);
        else
            with_extra<kNt, false>(extra, f);
    }
    template <class F>
    static void with_mode(const ElementwiseCoefs& k, bool relu, bool extra, F&& f) {
        if (k.stream) {
            with_relu<true>(relu, extra, f);
            Ops::stream_fence(); // order the streamed writes before the caller's
        } else {
            with_relu<false>(relu, extra, f);
        }
    }

    // The forward's value v at the position of res: plus the residual, then the ReLU, as
    // the mode asks.
    template <class M, class IsFull>
    static f32 post(M, IsFull full, f32 v, const float* res, int64_t n) {
        if constexpr (M::extra) v = v + load(full, res, n);
        if constexpr (M::relu) v = Ops::relu(v);
        return v;
    }
    // The backward's dy at offset `at`: zeroed where the mask is <= 0 (relu), then stored
    // to dres (extra).
    template <class M, class IsFull>
    static f32 grad_in(M m, IsFull full, const float* dy, const float* mask, float* dres, int64_t at, int64_t n) {
        f32 g = load(full, dy + at, n);
        if constexpr (M::relu) g = Ops::relu_grad(g, load(full, mask + at, n));
        if constexpr (M::extra) put(m, full, dres + at, g, n);
        return g;
    }

    // Floats before the first register-aligned address at or after p (0 when p is not
    // even float-aligned). The channels-first element-wise passes start their registers
    // there, so that no store of a run crosses a cache line: channels-first inference
    // with runs of 49 values 1.035x, of 257 values 1.09x, backward with runs of 49
    // 1.03x (A/B; runs that start aligned are unchanged).
    static int64_t aligned_head(const float* p) {
        constexpr uintptr_t kBytes = kF32 * sizeof(float);
        const uintptr_t a = reinterpret_cast<uintptr_t>(p) % kBytes;
        return a % sizeof(float) != 0 ? 0 : int64_t((kBytes - a) % kBytes / sizeof(float));
    }
    // The same when the mode streams, 0 otherwise.
    template <class M>
    static int64_t stream_head(M, const float* p) {
        if constexpr (!M::nt) return 0;
        return aligned_head(p);
    }

    // Stores a result: streamed past the caches when the mode asks for it and the
    // register is whole and aligned, an ordinary store otherwise.
    template <class M, class IsFull>
    static void put(M, IsFull full, float* p, f32 v, int64_t n) {
        if constexpr (M::nt && IsFull::value) {
            if (reinterpret_cast<uintptr_t>(p) % (kF32 * sizeof(float)) == 0) return Ops::stream(p, v);
        }
        store(full, p, v, n);
    }

    // Wide rows, one row at a time: each register of data loads its lane's coefficients
    // (from L1). Sharing those loads between 2 or 4 rows read two or four places of
    // memory at once, and was 15-40% slower from L3 and DRAM (resnet_c256_56,
    // resnet_c512_28 and mlp_n4096_c1024 shapes).
    // body(r, i, full, n) handles the register at lane i of row r; streaming writes
    // start registers at the output's alignment (y: the first row).
    template <class M, class Body>
    [[gnu::always_inline]] static void for_wide_rows(M m, const float* y, int64_t rows, int64_t width,
                                                     int64_t stride, Body&& body) {
        for (int64_t r = 0; r < rows; ++r)
            for_registers(
                width, [&](auto full, int64_t i, int64_t n) { body(r, i, full, n); }, stream_head(m, y + r * stride));
    }

    // Seg: run r takes the coefficients at index r * coef_step (0: one channel; 1:
    // consecutive runs of consecutive channels). Rows: per-lane coefficient arrays
    // (padded, so whole registers may be read).
    // Forward: res is the residual (read with extra) or x; backward: mask is the forward's
    // dst (read with relu) or dy, dres is diff_residual (written with extra) or dx. The
    // stand-ins are never touched: they only keep the offsets off null pointers.
    template <class M>
    static void normalize_seg_impl(M m, const float* x, const float* res, float* y, int64_t rows, int64_t len,
                                   int64_t stride, const ElementwiseCoefs& k, int64_t coef_step) {
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t c = r * coef_step;
            const f32 mh = Ops::splat(k.mean_hi[c]), a = Ops::splat(k.a[c]), b = Ops::splat(k.b[c]);
            const float* xr = x + r * stride;
            const float* rr = res + r * stride;
            float* yr = y + r * stride;
            for_registers(len, [&](auto full, int64_t i, int64_t n) {
                put(m, full, yr + i, post(m, full, normalize1(load(full, xr + i, n), mh, a, b), rr + i, n), n);
            }, aligned_head(yr));
        }
    }
    static void normalize_seg(const float* x, const float* res, float* y, int64_t rows, int64_t len, int64_t stride,
                              const ElementwiseCoefs& k, int64_t coef_step) {
        with_mode(k, k.relu, res != nullptr, [&](auto m) {
            normalize_seg_impl(m, x, res ? res : x, y, rows, len, stride, k, coef_step);
        });
    }

    // Narrow rows (shorter than a tile): the coefficients stay in registers while the rows
    // stream by. body(full, j, n) handles register j of a row.
    template <class Body>
    [[gnu::always_inline]] static void for_tile_registers(int64_t width, Body&& body) {
        for (int j = 0; j < kTileF32; ++j) {
            const int64_t valid = width - j * kF32;
            if (valid >= kF32)
                body(Full{}, j, kF32);
            else if (valid > 0)
                body(Part{}, j, valid);
        }
    }
    // Rows of R whole registers, from one tile up to kHeldCoefRegs / coefs registers, keep
    // their `coefs` coefficient arrays in registers too, with no lane tests (which would
    // push the coefficients out to the stack). Past a tile this is AVX-512 only, which has
    // 32 registers: 80 to 128 lanes when normalizing, as channels-last C = 3 packed into
    // rows of 96; 80 to 96 for diff_src. Wide rows load them from L1 for every register of
    // data, which was 7-20% slower in inference and 6-22% in backward on channels-last
    // C = 3, 5, 7 with one thread (A/B; with 2 threads C = 3 inference measured 0.91-1.0x,
    // training and backward 1.0-1.06x); diff_src on 7 registers (28 of coefficients) was
    // slower held. held(std::integral_constant<int, R>) handles rows of R registers.
    static constexpr int kHeldCoefRegs = kF32 == 16 ? 24 : 0;
    template <int coefs, int R = kTileF32, class Held>
    [[gnu::always_inline]] static bool held_registers(int64_t width, Held&& held) {
        if constexpr (R > kTileF32 && R * coefs > kHeldCoefRegs) {
            return false;
        } else {
            if (width == R * kF32) {
                held(std::integral_constant<int, R>{});
                return true;
            }
            return held_registers<coefs, R + 1>(width, held);
        }
    }

    // Calls narrow() for rows shorter than a tile, held(R) for rows of R whole registers as
    // above, wide() for the others.
    template <int coefs, class Narrow, class Held, class Wide>
    [[gnu::always_inline]] static void by_width(int64_t width, Narrow&& narrow, Held&& held, Wide&& wide) {
        if (width < kTile)
            narrow();
        else if (!held_registers<coefs>(width, held))
            wide();
    }

    // A narrow row's coefficients at p: the registers holding lanes of the row. The others
    // are never used, and not read: in a fused lane group they hold the next group's
    // coefficients, which another task may be writing.
    static void load_coef_tile(const float* p, int64_t width, f32* v) {
        for (int j = 0; j < kTileF32; ++j) v[j] = j * kF32 < width ? Ops::load(p + j * kF32) : Ops::splat(0.0f);
    }

    template <class M>
    static void normalize_narrow_rows(M m, const float* x, const float* res, float* y, int64_t rows, int64_t width,
                                      int64_t stride, const ElementwiseCoefs& k) {
        f32 mh[kTileF32], a[kTileF32], b[kTileF32];
        load_coef_tile(k.mean_hi, width, mh);
        load_coef_tile(k.a, width, a);
        load_coef_tile(k.b, width, b);
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t at = r * stride;
            for_tile_registers(width, [&](auto full, int j, int64_t n) {
                const int64_t i = at + j * kF32;
                put(m, full, y + i, post(m, full, normalize1(load(full, x + i, n), mh[j], a[j], b[j]), res + i, n), n);
            });
        }
    }
    template <class M, int R>
    static void normalize_held_rows(M m, std::integral_constant<int, R>, const float* x, const float* res, float* y,
                                    int64_t rows, int64_t stride, const ElementwiseCoefs& k) {
        f32 mh[R], a[R], b[R];
        for (int j = 0; j < R; ++j) {
            mh[j] = Ops::load(k.mean_hi + j * kF32);
            a[j] = Ops::load(k.a + j * kF32);
            b[j] = Ops::load(k.b + j * kF32);
        }
        for (int64_t r = 0; r < rows; ++r)
            for (int j = 0; j < R; ++j) {
                const int64_t i = r * stride + j * kF32;
                put(m, Full{}, y + i, post(m, Full{}, normalize1(Ops::load(x + i), mh[j], a[j], b[j]), res + i, kF32),
                    kF32);
            }
    }
    template <class M>
    static void normalize_wide_rows(M m, const float* x, const float* res, float* y, int64_t rows, int64_t width,
                                    int64_t stride, const ElementwiseCoefs& coefs) {
        const ElementwiseCoefs k = coefs; // a local copy: the stores cannot change it
        for_wide_rows(m, y, rows, width, stride, [&](int64_t r, int64_t i, auto full, int64_t n) {
            const int64_t at = r * stride + i;
            if (k.prefetch) {
                prefetch_ahead(x + at);
                if constexpr (M::extra) prefetch_ahead(res + at);
            }
            const f32 v =
                normalize1(load(full, x + at, n), Ops::load(k.mean_hi + i), Ops::load(k.a + i), Ops::load(k.b + i));
            put(m, full, y + at, post(m, full, v, res + at, n), n);
        });
    }
    static void normalize_rows(const float* x, const float* res, float* y, int64_t rows, int64_t width,
                               int64_t stride, const ElementwiseCoefs& k) {
        const float* r = res ? res : x;
        with_mode(k, k.relu, res != nullptr, [&](auto m) {
            by_width<3>(
                width, [&] { normalize_narrow_rows(m, x, r, y, rows, width, stride, k); },
                [&](auto regs) { normalize_held_rows(m, regs, x, r, y, rows, stride, k); },
                [&] { normalize_wide_rows(m, x, r, y, rows, width, stride, k); });
        });
    }

    template <class M>
    static void diff_src_seg_impl(M m, const float* x, const float* dy, const float* mask, float* dx, float* dres,
                                  int64_t rows, int64_t len, int64_t stride, const ElementwiseCoefs& k,
                                  int64_t coef_step) {
        for (int64_t r = 0; r < rows; ++r) {
            const int64_t c = r * coef_step;
            const f32 mh = Ops::splat(k.mean_hi[c]), k1 = Ops::splat(k.k1[c]), k2 = Ops::splat(k.k2[c]),
                      a = Ops::splat(k.a[c]);
            const int64_t at = r * stride;
            for_registers(len, [&](auto full, int64_t i, int64_t n) {
                const f32 g = grad_in(m, full, dy, mask, dres, at + i, n);
                put(m, full, dx + at + i, diff_src1(load(full, x + at + i, n), g, mh, k1, k2, a), n);
            }, aligned_head(dx + at));
        }
    }
    static void diff_src_seg(const float* x, const float* dy, const float* mask, float* dx, float* dres,
                             int64_t rows, int64_t len, int64_t stride, const ElementwiseCoefs& k,
                             int64_t coef_step) {
        with_mode(k, mask != nullptr, dres != nullptr, [&](auto m) {
            diff_src_seg_impl(m, x, dy, mask ? mask : dy, dx, dres ? dres : dx, rows, len, stride, k, coef_step);
        });
    }

    template <class M>
    static void diff_src_wide_rows(M m, const float* x, const float* dy, const float* mask, float* dx, float* dres,
                                   int64_t rows, int64_t width, int64_t stride, const ElementwiseCoefs& coefs) {
        const ElementwiseCoefs k = coefs; // a local copy: the stores cannot change it
        for_wide_rows(m, dx, rows, width, stride, [&](int64_t r, int64_t i, auto full, int64_t n) {
            const int64_t at = r * stride + i;
            if (k.prefetch) {
                prefetch_ahead(x + at);
                prefetch_ahead(dy + at);
                if constexpr (M::relu) prefetch_ahead(mask + at);
            }
            const f32 g = grad_in(m, full, dy, mask, dres, at, n);
            const f32 v = diff_src1(load(full, x + at, n), g, Ops::load(k.mean_hi + i), Ops::load(k.k1 + i),
                                    Ops::load(k.k2 + i), Ops::load(k.a + i));
            put(m, full, dx + at, v, n);
        });
    }
    template <class M, int R>
    static void diff_src_held_rows(M m, std::integral_constant<int, R>, const float* x, const float* dy,
                                   const float* mask, float* dx, float* dres, int64_t rows, int64_t stride,
                                   const ElementwiseCoefs& k) {
        f32 mh[R], k1[R], k2[R], a[R];
        for (int j = 0; j < R; ++j) {
            mh[j] = Ops::load(k.mean_hi + j * kF32);
            k1[j] = Ops::load(k.k1 + j * kF32);
            k2[j] = Ops::load(k.k2 + j * kF32);
            a[j] = Ops::load(k.a + j * kF32);
        }
        for (int64_t r = 0; r < rows; ++r)
            for (int j = 0; j < R; ++j) {
                const int64_t at = r * stride + j * kF32;
                const f32 g = grad_in(m, Full{}, dy, mask, dres, at, kF32);
                put(m, Full{}, dx + at, diff_src1(Ops::load(x + at), g, mh[j], k1[j], k2[j], a[j]), kF32);
            }
    }
    // Narrow rows, as in normalize_narrow_rows.
    template <class M>
    static void diff_src_narrow_rows(M m, const float* x, const float* dy, const float* mask, float* dx, float* dres,
                                     int64_t rows, int64_t width, int64_t stride, const ElementwiseCoefs& k) {
        f32 mh[kTileF32], k1[kTileF32], k2[kTileF32], a[kTileF32];
        load_coef_tile(k.mean_hi, width, mh);
        load_coef_tile(k.k1, width, k1);
        load_coef_tile(k.k2, width, k2);
        load_coef_tile(k.a, width, a);
        for (int64_t r = 0; r < rows; ++r)
            for_tile_registers(width, [&](auto full, int j, int64_t n) {
                const int64_t at = r * stride + j * kF32;
                const f32 g = grad_in(m, full, dy, mask, dres, at, n);
                put(m, full, dx + at, diff_src1(load(full, x + at, n), g, mh[j], k1[j], k2[j], a[j]), n);
            });
    }
    static void diff_src_rows(const float* x, const float* dy, const float* mask, float* dx, float* dres,
                              int64_t rows, int64_t width, int64_t stride, const ElementwiseCoefs& k) {
        const float* mk = mask ? mask : dy;
        float* dr = dres ? dres : dx;
        with_mode(k, mask != nullptr, dres != nullptr, [&](auto m) {
            by_width<4>(
                width, [&] { diff_src_narrow_rows(m, x, dy, mk, dx, dr, rows, width, stride, k); },
                [&](auto regs) { diff_src_held_rows(m, regs, x, dy, mk, dx, dr, rows, stride, k); },
                [&] { diff_src_wide_rows(m, x, dy, mk, dx, dr, rows, width, stride, k); });
        });
    }

    template <class M>
    static void scale_seg_impl(M m, const float* dy, const float* mask, float* dx, float* dres, int64_t rows,
                               int64_t len, int64_t stride, const ElementwiseCoefs& k, int64_t coef_step) {
        for (int64_t r = 0; r < rows; ++r) {
            const f32 a = Ops::splat(k.a[r * coef_step]);
            const int64_t at = r * stride;
            for_registers(len, [&](auto full, int64_t i, int64_t n) {
                put(m, full, dx + at + i, grad_in(m, full, dy, mask, dres, at + i, n) * a, n);
            }, aligned_head(dx + at));
        }
    }
    static void scale_seg(const float* dy, const float* mask, float* dx, float* dres, int64_t rows, int64_t len,
                          int64_t stride, const ElementwiseCoefs& k, int64_t coef_step) {
        with_mode(k, mask != nullptr, dres != nullptr, [&](auto m) {
            scale_seg_impl(m, dy, mask ? mask : dy, dx, dres ? dres : dx, rows, len, stride, k, coef_step);
        });
    }

    template <class M>
    static void scale_rows_impl(M m, const float* dy, const float* mask, float* dx, float* dres, int64_t rows,
                                int64_t width, int64_t stride, const ElementwiseCoefs& coefs) {
        const ElementwiseCoefs k = coefs; // a local copy: the stores cannot change it
        for_wide_rows(m, dx, rows, width, stride, [&](int64_t r, int64_t i, auto full, int64_t n) {
            const int64_t at = r * stride + i;
            if (k.prefetch) {
                prefetch_ahead(dy + at);
                if constexpr (M::relu) prefetch_ahead(mask + at);
            }
            put(m, full, dx + at, grad_in(m, full, dy, mask, dres, at, n) * Ops::load(k.a + i), n);
        });
    }
    static void scale_rows(const float* dy, const float* mask, float* dx, float* dres, int64_t rows, int64_t width,
                           int64_t stride, const ElementwiseCoefs& k) {
        with_mode(k, mask != nullptr, dres != nullptr, [&](auto m) {
            scale_rows_impl(m, dy, mask ? mask : dy, dx, dres ? dres : dx, rows, width, stride, k);
        });
    }
    static const BatchNormKernelTable table;
};

template <class Ops>
const BatchNormKernelTable BatchNormKernels<Ops>::table = {
    &stats_seg,        &stats_rows,        &grad_seg,      &grad_rows,     &stats_runs,
    &grad_runs,        &stats_seg_double,
    &stats_rows_double, &grad_seg_double,  &grad_rows_double, &normalize_seg, &normalize_rows,
    &diff_src_seg,     &diff_src_rows,     &scale_seg,     &scale_rows,
    &BatchNormChannelKernels<Ops>::rows_pivots, &Base::stats_rows_trusted,
    &Base::grad_rows_trusted, &BatchNormChannelKernels<Ops>::training_epilogue, &BatchNormChannelKernels<Ops>::backward_epilogue,
    &BatchNormChannelKernels<Ops>::inference_epilogue, &BatchNormChannelKernels<Ops>::fold_moments,
};

} // namespace nk
