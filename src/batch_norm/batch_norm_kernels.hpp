// Batch-norm kernels, templated on an Ops type (src/core/simd.hpp). Each ISA
// translation unit (batch_norm_<isa>.cpp) instantiates them once with its own flags.
//
// The seg reductions (16 double lanes per run) come from core/run_kernels.hpp; the rows
// reductions here take one lane per position. A lane sees its values in memory order,
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
    static constexpr int kTileF32 = 4;             // float registers per rows-reduction tile
    static constexpr int64_t kTile = kTileF32 * kF32;
    static constexpr int kTileD = int(kTile / kF64);
    static_assert(kRowsLanePadding % kTile == 0, "lane arrays are padded to whole tiles");

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

    // mask + at, or null without a mask (no arithmetic on a null pointer).
    template <class HasMask>
    static const float* mask_at(HasMask, const float* mask, int64_t at) {
        if constexpr (HasMask::value) return mask + at;
        return nullptr;
    }
    // Register j of dy + at, zeroed where the mask is <= 0 when there is one (HasMask).
    template <class HasMask, class IsFull>
    static f32 grad_register(HasMask has_mask, IsFull full, const float* dy, const float* mask, int64_t at, int j,
                             int64_t n) {
        const f32 zero = Ops::splat(0.0f);
        const f32 g = load_register(full, dy + at, j, n, zero);
        if constexpr (HasMask::value) return Ops::relu_grad(g, load_register(full, mask_at(has_mask, mask, at), j, n, zero));
        return g;
    }

    // s[kTile lanes] += widened a.
    static void flush_tile(const f32* a, f64* s) {
        f64 w[kTileD];
        for (int j = 0; j < kTileF32; ++j) widen_into(a[j], w, j);
        for (int m = 0; m < kTileD; ++m) s[m] = s[m] + w[m];
    }

    // The rows reductions walk one tile of lanes down the rows (prefetching its strip
    // kRowsAhead rows on), the double sums in registers. Each lane sums its float terms
    // over blocks of kFlushSteps rows (rows [r0, r1) below) and adds the block partial
    // to its double sum.
    template <class IsFull>
    static void stats_rows_block(IsFull full, const float* x, int64_t r0, int64_t r1, int64_t rows,
                                 int64_t stride, int64_t n, const float* pivot, f64* s1, f64* s2) {
        f32 p[kTileF32], a1[kTileF32], a2[kTileF32];
        for (int j = 0; j < kTileF32; ++j) {
            p[j] = Ops::load(pivot + j * kF32);
            a1[j] = a2[j] = Ops::splat(0.0f);
        }
        for (int64_t r = r0; r < r1; ++r) {
            if (r + kRowsAhead < rows) prefetch_strip(x + (r + kRowsAhead) * stride, std::min(n, kTile));
            const float* xr = x + r * stride;
            for (int j = 0; j < kTileF32; ++j) {
                const f32 d = load_register(full, xr, j, n, p[j]) - p[j]; // past the data: 0
                a1[j] = a1[j] + d;
                a2[j] = a2[j] + d * d;
            }
        }
        flush_tile(a1, s1);
        flush_tile(a2, s2);
    }

    template <class HasMask, class IsFull>
    static void grad_rows_block(HasMask has_mask, IsFull full, const float* x, const float* dy, const float* mask,
                                int64_t r0, int64_t r1, int64_t rows, int64_t stride, int64_t n, const float* mean,
                                f64* s1, f64* s2) {
        f32 mu[kTileF32], a1[kTileF32], a2[kTileF32];
        for (int j = 0; j < kTileF32; ++j) {
            mu[j] = Ops::load(mean + j * kF32);
            a1[j] = a2[j] = Ops::splat(0.0f);
        }
        for (int64_t r = r0; r < r1; ++r) {
            if (r + kRowsAhead < rows) {
                prefetch_strip(x + (r + kRowsAhead) * stride, std::min(n, kTile));
                prefetch_strip(dy + (r + kRowsAhead) * stride, std::min(n, kTile));
                if constexpr (HasMask::value) prefetch_strip(mask_at(has_mask, mask, (r + kRowsAhead) * stride), std::min(n, kTile));
            }
            const float* xr = x + r * stride;
            for (int j = 0; j < kTileF32; ++j) {
                // Past the data: dy = 0 and x = mean, so the lane adds exactly 0.
                const f32 g = grad_register(has_mask, full, dy, mask, r * stride, j, n);
                a1[j] = a1[j] + g;
                a2[j] = a2[j] + g * (load_register(full, xr, j, n, mu[j]) - mu[j]);
            }
        }
        flush_tile(a1, s1);
        flush_tile(a2, s2);
    }

    // Calls block(full, j0, n, r0, r1, s1, s2) for every tile and block of rows with the
    // double sums of the tile's lanes.
    template <class Block>
    static void rows_blocks(int64_t rows, int64_t width, double* acc1, double* acc2, Block&& block) {
        for (int64_t j0 = 0; j0 < width; j0 += kTile) {
            f64 s1[kTileD], s2[kTileD];
            for (int m = 0; m < kTileD; ++m) {
                s1[m] = Ops::loadd(acc1 + j0 + m * kF64);
                s2[m] = Ops::loadd(acc2 + j0 + m * kF64);
            }
            const int64_t n = width - j0;
            for (int64_t r0 = 0; r0 < rows; r0 += kFlushSteps) {
                if (n >= kTile)
                    block(Full{}, j0, n, r0, std::min(rows, r0 + kFlushSteps), s1, s2);
                else
                    block(Part{}, j0, n, r0, std::min(rows, r0 + kFlushSteps), s1, s2);
            }
            for (int m = 0; m < kTileD; ++m) {
                Ops::stored(acc1 + j0 + m * kF64, s1[m]);
                Ops::stored(acc2 + j0 + m * kF64, s2[m]);
            }
        }
    }

    // grad_rows on rows of kWideFrom lanes or more goes row by row instead (in chunks of
    // kWideLanes lanes): a tile walking down rows a kilobyte or more apart read its two
    // tensors at two thirds of the speed of the same data in order. (Rows of 96-100 lanes
    // were 10-20% slower row by row; 160 the same.) Each register's float terms are
    // added to float partials p1, p2 in L1; every kFlushSteps rows the partials are added
    // to the double sums. A lane adds the same terms in the same order as in the tile
    // walk: the same sums. (stats_rows reads one tensor, and the partials' loads and
    // stores made it slower: it keeps the tile walk.)
    // terms(full, r, l, n, t1, t2) forms the terms of the register at lane l of row r.
    static constexpr int64_t kWideFrom = 256;
    static constexpr int64_t kWideLanes = 1024;
    template <class Terms>
    [[gnu::always_inline]] static void wide_rows_sums(int64_t rows, int64_t width, double* acc1, double* acc2,
                                                      Terms&& terms) {
        alignas(64) float p1[kWideLanes], p2[kWideLanes];
        auto add_row = [&](auto first, int64_t r, int64_t l0, int64_t w) {
            for_registers(w, [&](auto full, int64_t i, int64_t n) {
                f32 t1, t2;
                terms(full, r, l0 + i, n, t1, t2);
                // The first row of a block adds to zeros, as a register partial would.
                const f32 q1 = first ? Ops::splat(0.0f) : Ops::load(p1 + i);
                const f32 q2 = first ? Ops::splat(0.0f) : Ops::load(p2 + i);
                Ops::store(p1 + i, q1 + t1);
                Ops::store(p2 + i, q2 + t2);
            });
        };
        for (int64_t l0 = 0; l0 < width; l0 += kWideLanes) {
            const int64_t w = std::min(kWideLanes, width - l0);
            for (int64_t r0 = 0; r0 < rows; r0 += kFlushSteps) {
                const int64_t r1 = std::min(rows, r0 + kFlushSteps);
                add_row(std::true_type{}, r0, l0, w);
                for (int64_t r = r0 + 1; r < r1; ++r) add_row(std::false_type{}, r, l0, w);
                for (int64_t i = 0; i < w; i += kF32) {
                    f64 w1[2], w2[2];
                    widen_into(Ops::load(p1 + i), w1, 0);
                    widen_into(Ops::load(p2 + i), w2, 0);
                    for (int m = 0; m < int(kF32 / kF64); ++m) {
                        double* s1 = acc1 + l0 + i + m * kF64;
                        double* s2 = acc2 + l0 + i + m * kF64;
                        Ops::stored(s1, Ops::loadd(s1) + w1[m]);
                        Ops::stored(s2, Ops::loadd(s2) + w2[m]);
                    }
                }
            }
        }
    }

    // Per lane j < width: acc1[j] += x - pivot[j], acc2[j] += (x - pivot[j])^2.
    // Lane arrays are padded to whole tiles; lanes past width read their own pivot and add 0.
    static void stats_rows(const float* x, int64_t rows, int64_t width, int64_t stride,
                           const float* pivot, double* acc1, double* acc2) {
        rows_blocks(rows, width, acc1, acc2, [&](auto full, int64_t j0, int64_t n, int64_t r0, int64_t r1,
                                                     f64* s1, f64* s2) {
            stats_rows_block(full, x + j0, r0, r1, rows, stride, n, pivot + j0, s1, s2);
        });
    }

    // Per lane j < width: acc1[j] += dy, acc2[j] += dy * (x - mean[j]).
    template <class HasMask>
    static void grad_rows_impl(HasMask has_mask, const float* x, const float* dy, const float* mask, int64_t rows,
                               int64_t width, int64_t stride, const float* mean, double* acc1, double* acc2) {
        if (width >= kWideFrom)
            return wide_rows_sums(rows, width, acc1, acc2, [&](auto full, int64_t r, int64_t l, int64_t n, f32& t1, f32& t2) {
                const int64_t at = r * stride + l;
                prefetch_ahead(x + at);
                prefetch_ahead(dy + at);
                if constexpr (HasMask::value) prefetch_ahead(mask_at(has_mask, mask, at));
                const f32 mu = Ops::load(mean + l);
                t1 = grad_register(has_mask, full, dy, mask, at, 0, n); // past the data: dy = 0, x = mean
                t2 = t1 * (load_register(full, x + at, 0, n, mu) - mu);
            });
        rows_blocks(rows, width, acc1, acc2, [&](auto full, int64_t j0, int64_t n, int64_t r0, int64_t r1,
                                                     f64* s1, f64* s2) {
            grad_rows_block(has_mask, full, x + j0, dy + j0, mask_at(has_mask, mask, j0), r0, r1, rows, stride, n, mean + j0, s1, s2);
        });
    }
    static void grad_rows(const float* x, const float* dy, const float* mask, int64_t rows, int64_t width,
                          int64_t stride, const float* mean, double* acc1, double* acc2) {
        if (mask)
            grad_rows_impl(std::true_type{}, x, dy, mask, rows, width, stride, mean, acc1, acc2);
        else
            grad_rows_impl(std::false_type{}, x, dy, mask, rows, width, stride, mean, acc1, acc2);
    }

    // Rows [r0, r1) of a tile with every term in double, added straight to s.
    template <class IsFull>
    static void stats_rows_block_double(IsFull full, const float* x, int64_t r0, int64_t r1, int64_t stride,
                                        int64_t n, const float* pivot, f64* s1, f64* s2) {
        f64 p[kTileD];
        for (int j = 0; j < kTileF32; ++j) widen_into(Ops::load(pivot + j * kF32), p, j);
        for (int64_t r = r0; r < r1; ++r) {
            f64 v[kTileD];
            for (int j = 0; j < kTileF32; ++j) // past the data: the lane's pivot, adding 0
                widen_into(load_register(full, x + r * stride, j, n, Ops::load(pivot + j * kF32)), v, j);
            for (int m = 0; m < kTileD; ++m) {
                const f64 d = v[m] - p[m];
                s1[m] = s1[m] + d;
                s2[m] = s2[m] + d * d;
            }
        }
    }

    template <class IsFull>
    static void grad_rows_block_double(IsFull full, const float* x, const float* dy, const float* mask, int64_t r0,
                                       int64_t r1, int64_t stride, int64_t n, const float* mean, f64* s1, f64* s2) {
        f64 mu[kTileD];
        for (int j = 0; j < kTileF32; ++j) widen_into(Ops::load(mean + j * kF32), mu, j);
        for (int64_t r = r0; r < r1; ++r) {
            f64 v[kTileD], g[kTileD];
            for (int j = 0; j < kTileF32; ++j) { // past the data: dy = 0 and x = mean, adding 0
                widen_into(load_register(full, x + r * stride, j, n, Ops::load(mean + j * kF32)), v, j);
                const f32 gv = mask ? grad_register(std::true_type{}, full, dy, mask, r * stride, j, n)
                                    : grad_register(std::false_type{}, full, dy, mask, r * stride, j, n);
                widen_into(gv, g, j);
            }
            for (int m = 0; m < kTileD; ++m) {
                s1[m] = s1[m] + g[m];
                s2[m] = s2[m] + g[m] * (v[m] - mu[m]);
            }
        }
    }

    static void stats_rows_double(const float* x, int64_t rows, int64_t width, int64_t stride,
                                  const float* pivot, double* acc1, double* acc2) {
        rows_blocks(rows, width, acc1, acc2, [&](auto full, int64_t j0, int64_t n, int64_t r0, int64_t r1,
                                                 f64* s1, f64* s2) {
            stats_rows_block_double(full, x + j0, r0, r1, stride, n, pivot + j0, s1, s2);
        });
    }

    static void grad_rows_double(const float* x, const float* dy, const float* mask, int64_t rows, int64_t width,
                                 int64_t stride, const float* mean, double* acc1, double* acc2) {
        rows_blocks(rows, width, acc1, acc2, [&](auto full, int64_t j0, int64_t n, int64_t r0, int64_t r1,
                                                 f64* s1, f64* s2) {
            grad_rows_block_double(full, x + j0, dy + j0, mask ? mask + j0 : nullptr, r0, r1, stride, n, mean + j0,
                                   s1, s2);
        });
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
    &BatchNormChannelKernels<Ops>::rows_pivots, &BatchNormChannelKernels<Ops>::stats_rows_trusted,
    &BatchNormChannelKernels<Ops>::grad_rows_trusted, &BatchNormChannelKernels<Ops>::training_epilogue, &BatchNormChannelKernels<Ops>::backward_epilogue,
    &BatchNormChannelKernels<Ops>::inference_epilogue, &BatchNormChannelKernels<Ops>::fold_moments,
};

} // namespace nk
