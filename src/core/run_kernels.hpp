// Kernels over contiguous runs of floats, shared by every op: register helpers, and the
// 16-lane reductions with float terms flushed into double sums ("seg" reductions: a
// channels-first batch-norm channel, a layer-norm row, a channels-first group). Templated
// on an Ops type (core/simd.hpp); each op's ISA translation units instantiate them
// through their own kernel structs, which derive from RunKernels.
//
// A lane sees its values in memory order, and lanes past the data add exactly 0, so the
// vector width only decides how many lanes move at once: every ISA produces the same
// sums.
#pragma once

#include "core/moments.hpp"
#include "core/run_kernel_table.hpp"
#include "core/simd.hpp"

#include <algorithm>
#include <cstdint>
#include <type_traits>

namespace nk {

template <class Ops>
struct RunKernels {
    using f32 = typename Ops::f32;
    using f64 = typename Ops::f64;
    static constexpr int64_t kF32 = int64_t(Ops::kF32);
    static constexpr int64_t kF64 = int64_t(Ops::kF64);
    static constexpr int64_t kLanes = 16;          // canonical seg lanes
    static constexpr int kD = int(kLanes / kF64);  // double registers per 16 lanes

    using Full = std::true_type;
    using Part = std::false_type;

    // kF32 floats at p, or the first n of them and zeros after.
    template <class IsFull>
    static f32 load(IsFull, const float* p, int64_t n) {
        if constexpr (IsFull::value)
            return Ops::load(p);
        else
            return Ops::load_n(p, n, Ops::splat(0.0f));
    }
    template <class IsFull>
    static void store(IsFull, float* p, f32 v, int64_t n) {
        if constexpr (IsFull::value)
            Ops::store(p, v);
        else
            Ops::store_n(p, v, n);
    }

    // Float register j widened into doubles v[j] (scalar) or v[2j], v[2j + 1] (lane order kept).
    static void widen_into(f32 x, f64* v, int j) {
        if constexpr (kF32 == kF64)
            v[j] = f64(x);
        else
            Ops::widen(x, v[2 * j], v[2 * j + 1]);
    }

    // `count` float registers from p as doubles: valid lanes [0, n), the others taken
    // from fill(j), the j-th register's fill values.
    template <int count, class Fill>
    static void load_widen(const float* p, int64_t n, Fill&& fill, f64* v) {
        for (int j = 0; j < count; ++j) widen_into(load_register(Part{}, p, j, n, fill(j)), v, j);
    }

    // Calls body(Full, i, kF32) for each whole register of a run of len floats and
    // body(Part, i, n) for the tail; with head > 0, body(Part, 0, head) first and the
    // registers from there (element-wise results do not depend on where registers start).
    template <class Body>
    [[gnu::always_inline]] static void for_registers(int64_t len, Body&& body, int64_t head = 0) {
        int64_t i = 0;
        if (head > 0 && head < len) {
            body(Part{}, 0, head);
            i = head;
        }
        for (; i + kF32 <= len; i += kF32) body(Full{}, i, kF32);
        if (i < len) body(Part{}, i, len - i);
    }

    // Reductions read their runs from memory at a rate the hardware prefetcher does not
    // keep up with: it restarts at every run and stays close. Each 64-byte step asks for
    // the line kPrefetchFloats on, past the run's end too (the next run usually follows).
    static constexpr int64_t kPrefetchFloats = 2048;
    static void prefetch_ahead(const float* p) { __builtin_prefetch(p + kPrefetchFloats); }

    // Rows reductions walk a strip of lanes down the rows: ask for the strip kRowsAhead rows on.
    static constexpr int64_t kRowsAhead = 12;
    static void prefetch_strip(const float* p, int64_t lanes) {
        for (int64_t b = 0; b < lanes; b += 16) __builtin_prefetch(p + b);
    }

    // Short runs far apart (channels-first, small S) defeat the hardware prefetcher:
    // the reductions ask for the run kAhead rows on. Long runs stream well on their own.
    // (The element-wise passes over short runs are faster without it: resnet_c2048_7
    // channels-first inference 1.09-1.16x, training and backward 1.02-1.03x, A/B.)
    static constexpr int64_t kAhead = 4;
    static void prefetch_run(const float* p, int64_t r, int64_t rows, int64_t len, int64_t stride) {
        if (len > 1024 || r + kAhead >= rows) return;
        const char* q = reinterpret_cast<const char*>(p + (r + kAhead) * stride);
        for (int64_t b = 0; b < len * int64_t(sizeof(float)); b += 64) __builtin_prefetch(q + b);
    }

    // ---- reductions ----
    //
    // Each reduction comes in two precisions:
    //  - float terms (stats_seg, grad_seg, stats_rows, grad_rows): the terms (x - pivot and
    //    its square; dy and dy * (x - mean)) are formed and added in float for at most
    //    kFlushSteps steps, then the float partial is widened and added to the lane's double
    //    sum. Half the arithmetic of double terms. Accurate while the terms stay in float's
    //    normal range and the pivot is near the mean; the planner checks both on the result
    //    (moments.hpp) and otherwise redoes the block with
    //  - double terms (*_double): x and dy widened first, every term in double.
    // A step is 16 values of a run (seg) or one row (rows), flushes come every kFlushSteps
    // steps and at the end of every run and call: like the lanes, they do not depend on the
    // vector width.
    static constexpr int64_t kFlushSteps = 8;
    static constexpr int kR = int(kLanes / kF32); // float registers per 16 lanes

    // Register j of the lanes at p: lanes [j kF32, (j + 1) kF32); a partial step or tile
    // has valid lanes [0, n) and `fill` in the others.
    template <class IsFull>
    static f32 load_register(IsFull, const float* p, int j, int64_t n, f32 fill) {
        if constexpr (IsFull::value) return Ops::load(p + j * kF32);
        const int64_t valid = n - j * kF32;
        return valid >= kF32 ? Ops::load(p + j * kF32) : valid > 0 ? Ops::load_n(p + j * kF32, valid, fill) : fill;
    }
    // The kR registers of 16 lanes.
    template <class IsFull>
    static void load16(IsFull full, const float* p, int64_t n, f32 fill, f32* v) {
        for (int j = 0; j < kR; ++j) v[j] = load_register(full, p, j, n, fill);
    }

    // s[16 lanes] += widened (even + odd).
    static void flush16(const f32* even, const f32* odd, f64* s) {
        f64 w[kD];
        for (int j = 0; j < kR; ++j) widen_into(even[j] + odd[j], w, j);
        for (int m = 0; m < kD; ++m) s[m] = s[m] + w[m];
    }

    // 16-lane float-term sums over `rows` runs of `len` values. begin_run(r) is called
    // before run r; terms(full, i, t1, t2) forms the two terms of the 16 values at position
    // i of the run (0 past its end). Even and odd steps add into separate float partials
    // (two dependency chains). Inlined: the terms must not go through memory.
    // With `fresh` the sums start from 0 instead of acc's values (the bits of sums added
    // to zeroed lanes, without zeroing them first).
    template <class BeginRun, class Terms>
    [[gnu::always_inline]] static void seg_sums(int64_t rows, int64_t len, double* acc1, double* acc2, bool fresh,
                                                BeginRun&& begin_run, Terms&& terms) {
        f64 s1[kD], s2[kD];
        for (int m = 0; m < kD; ++m) {
            s1[m] = fresh ? Ops::splatd(0.0) : Ops::loadd(acc1 + m * kF64);
            s2[m] = fresh ? Ops::splatd(0.0) : Ops::loadd(acc2 + m * kF64);
        }
        auto add = [&](auto full, int64_t i, f32* a1, f32* a2) {
            f32 t1[kR], t2[kR];
            terms(full, i, t1, t2);
            for (int j = 0; j < kR; ++j) {
                a1[j] = a1[j] + t1[j];
                a2[j] = a2[j] + t2[j];
            }
        };
        auto add_tail = [&](int64_t i, f32* a1, f32* a2) {
            if (i + kLanes <= len)
                add(Full{}, i, a1, a2);
            else
                add(Part{}, i, a1, a2);
        };
        constexpr int64_t kBlock = kFlushSteps * kLanes;
        for (int64_t r = 0; r < rows; ++r) {
            begin_run(r);
            for (int64_t i0 = 0; i0 < len; i0 += kBlock) {
                f32 e1[kR], e2[kR], o1[kR], o2[kR];
                for (int j = 0; j < kR; ++j) e1[j] = e2[j] = o1[j] = o2[j] = Ops::splat(0.0f);
                const int64_t end = std::min(len, i0 + kBlock);
                int64_t i = i0;
                for (; i + 2 * kLanes <= end; i += 2 * kLanes) {
                    add(Full{}, i, e1, e2);
                    add(Full{}, i + kLanes, o1, o2);
                }
                if (i < end) add_tail(i, e1, e2);
                if (i + kLanes < end) add_tail(i + kLanes, o1, o2);
                flush16(e1, o1, s1);
                flush16(e2, o2, s2);
            }
        }
        for (int m = 0; m < kD; ++m) {
            Ops::stored(acc1 + m * kF64, s1[m]);
            Ops::stored(acc2 + m * kF64, s2[m]);
        }
    }

    // Per run r: 16 lanes, lane = position mod 16. acc1 += x - pivot, acc2 += (x - pivot)^2.
    [[gnu::always_inline]] static void stats_seg_body(const float* x, int64_t rows, int64_t len, int64_t stride,
                                                      float pivot, double* acc1, double* acc2, bool fresh = false) {
        const f32 p = Ops::splat(pivot); // lanes past the data: x - pivot = 0
        const float* xr = x;
        seg_sums(
            rows, len, acc1, acc2, fresh,
            [&](int64_t r) {
                xr = x + r * stride;
                prefetch_run(x, r, rows, len, stride);
            },
            [&](auto full, int64_t i, f32* t1, f32* t2) {
                prefetch_ahead(xr + i);
                f32 v[kR];
                load16(full, xr + i, len - i, p, v);
                for (int j = 0; j < kR; ++j) {
                    t1[j] = v[j] - p;
                    t2[j] = t1[j] * t1[j];
                }
            });
    }
    static void stats_seg(const float* x, int64_t rows, int64_t len, int64_t stride, float pivot,
                          double* acc1, double* acc2) {
        stats_seg_body(x, rows, len, stride, pivot, acc1, acc2);
    }
    static void stats_runs(const float* x, int64_t runs, int64_t len, const float* pivot, double* acc1,
                           double* acc2) {
        for (int64_t q = 0; q < runs; ++q)
            stats_seg_body(x + q * len, 1, len, len, pivot[q], acc1 + q * kLanes, acc2 + q * kLanes);
    }

    // acc1 += g, acc2 += g * (x - mean) with g = dy (w null) or dy * w[i] (w: one weight per
    // position i of a run, the same for every run), 16 lanes per run as in stats_seg. With
    // HasMask, dy is first zeroed where mask <= 0 (Ops::relu_grad: batch norm's fused ReLU,
    // mask = its dst, at the same offsets as dy).
    template <class HasMask = std::false_type>
    [[gnu::always_inline]] static void grad_seg_body(const float* x, const float* dy, const float* w, int64_t rows,
                                                     int64_t len, int64_t stride, float mean, double* acc1,
                                                     double* acc2, bool fresh = false, const float* mask = nullptr) {
        const f32 mu = Ops::splat(mean), zero = Ops::splat(0.0f); // past the data: dy = 0, x - mean = 0
        const float *xr = x, *gr = dy, *mr = mask;
        seg_sums(
            rows, len, acc1, acc2, fresh,
            [&](int64_t r) {
                xr = x + r * stride;
                gr = dy + r * stride;
                prefetch_run(x, r, rows, len, stride);
                prefetch_run(dy, r, rows, len, stride);
                if constexpr (HasMask::value) {
                    mr = mask + r * stride;
                    prefetch_run(mask, r, rows, len, stride);
                }
            },
            [&](auto full, int64_t i, f32* t1, f32* t2) {
                prefetch_ahead(xr + i);
                prefetch_ahead(gr + i);
                f32 v[kR];
                load16(full, xr + i, len - i, mu, v);
                load16(full, gr + i, len - i, zero, t1);
                if constexpr (HasMask::value) {
                    prefetch_ahead(mr + i);
                    f32 m[kR];
                    load16(full, mr + i, len - i, zero, m);
                    for (int j = 0; j < kR; ++j) t1[j] = Ops::relu_grad(t1[j], m[j]);
                }
                if (w) {
                    f32 wv[kR];
                    load16(full, w + i, len - i, zero, wv);
                    for (int j = 0; j < kR; ++j) t1[j] = t1[j] * wv[j];
                }
                for (int j = 0; j < kR; ++j) t2[j] = t1[j] * (v[j] - mu);
            });
    }
    // grad_seg of one run with weights, and of `runs` consecutive runs of `len` values each
    // with its own mean[q] and 16 lanes: the row reductions of layer and RMS norm backward.
    static void wgrad_seg(const float* x, const float* dy, const float* w, int64_t len, float mean, double* acc1,
                          double* acc2) {
        grad_seg_body(x, dy, w, 1, len, len, mean, acc1, acc2);
    }
    // The row ops' runs: sums written, not added (no zeroing of the lanes first).
    static void wgrad_runs_fresh(const float* x, const float* dy, const float* w, int64_t runs, int64_t len,
                                 const float* mean, double* acc1, double* acc2) {
        for (int64_t q = 0; q < runs; ++q)
            grad_seg_body(x + q * len, dy + q * len, w, 1, len, len, mean[q], acc1 + q * kLanes, acc2 + q * kLanes,
                          true);
    }
    static void stats_runs_fresh(const float* x, int64_t runs, int64_t len, const float* pivot, double* acc1,
                                 double* acc2) {
        for (int64_t q = 0; q < runs; ++q)
            stats_seg_body(x + q * len, 1, len, len, pivot[q], acc1 + q * kLanes, acc2 + q * kLanes, true);
    }
    // ---- the same reductions with double terms ----

    // Per run r: 16 lanes, lane = position mod 16. acc1 += x - pivot, acc2 += (x - pivot)^2.
    static void stats_seg_double(const float* x, int64_t rows, int64_t len, int64_t stride, float pivot,
                                 double* acc1, double* acc2) {
        f64 s1[kD], s2[kD];
        for (int m = 0; m < kD; ++m) {
            s1[m] = Ops::loadd(acc1 + m * kF64);
            s2[m] = Ops::loadd(acc2 + m * kF64);
        }
        const f64 p = Ops::splatd(pivot);
        const f32 fill = Ops::splat(pivot); // lanes past the data: x - pivot = 0
        auto fill_of = [&](int) { return fill; };
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * stride;
            for (int64_t i = 0; i < len; i += kLanes) {
                f64 v[kD];
                load_widen<int(kLanes / kF32)>(xr + i, len - i, fill_of, v);
                for (int m = 0; m < kD; ++m) {
                    const f64 d = v[m] - p;
                    s1[m] = s1[m] + d;
                    s2[m] = s2[m] + d * d;
                }
            }
        }
        for (int m = 0; m < kD; ++m) {
            Ops::stored(acc1 + m * kF64, s1[m]);
            Ops::stored(acc2 + m * kF64, s2[m]);
        }
    }

    // grad_seg_body with double terms: g = dy * w[i] when w is given (each factor widened,
    // the product in double), dy zeroed where mask <= 0 when mask is given.
    static void wgrad_seg_double(const float* x, const float* dy, const float* w, int64_t rows, int64_t len,
                                 int64_t stride, float mean, double* acc1, double* acc2) {
        grad_seg_double_body(x, dy, w, rows, len, stride, mean, acc1, acc2, nullptr);
    }
    static void grad_seg_double_body(const float* x, const float* dy, const float* w, int64_t rows, int64_t len,
                                     int64_t stride, float mean, double* acc1, double* acc2, const float* mask) {
        f64 s1[kD], s2[kD];
        for (int m = 0; m < kD; ++m) {
            s1[m] = Ops::loadd(acc1 + m * kF64);
            s2[m] = Ops::loadd(acc2 + m * kF64);
        }
        const f64 mu = Ops::splatd(mean);
        const f32 fill = Ops::splat(mean), zero = Ops::splat(0.0f); // past the data: dy = 0, x - mean = 0
        auto fill_x = [&](int) { return fill; };
        auto fill_dy = [&](int) { return zero; };
        for (int64_t r = 0; r < rows; ++r) {
            const float* xr = x + r * stride;
            const float* gr = dy + r * stride;
            for (int64_t i = 0; i < len; i += kLanes) {
                f64 v[kD], g[kD];
                load_widen<int(kLanes / kF32)>(xr + i, len - i, fill_x, v);
                if (mask) {
                    // Masked in float, then widened: the terms of the float-term kernel.
                    f32 gv[kR], mv[kR];
                    load16(Part{}, gr + i, len - i, zero, gv);
                    load16(Part{}, mask + r * stride + i, len - i, zero, mv);
                    for (int j = 0; j < kR; ++j) widen_into(Ops::relu_grad(gv[j], mv[j]), g, j);
                } else {
                    load_widen<int(kLanes / kF32)>(gr + i, len - i, fill_dy, g);
                }
                if (w) {
                    f64 wv[kD];
                    load_widen<int(kLanes / kF32)>(w + i, len - i, fill_dy, wv);
                    for (int m = 0; m < kD; ++m) g[m] = g[m] * wv[m];
                }
                for (int m = 0; m < kD; ++m) {
                    s1[m] = s1[m] + g[m];
                    s2[m] = s2[m] + g[m] * (v[m] - mu);
                }
            }
        }
        for (int m = 0; m < kD; ++m) {
            Ops::stored(acc1 + m * kF64, s1[m]);
            Ops::stored(acc2 + m * kF64, s2[m]);
        }
    }

    // ---- rows reductions: one lane per position of a row ----
    //
    // `rows` rows of `width` lanes, `stride` apart: lane j sums the values at position j of
    // every row, in row order, float terms flushed into its double sums every kFlushSteps
    // rows (or every term in double: *_double). A lane's sums depend on its own values
    // alone. Lane arrays (pivot, mean, acc) hold kRowsLanePadding entries past width.
    static constexpr int kTileF32 = 4;               // float registers per rows-reduction tile
    static constexpr int64_t kTile = kTileF32 * kF32;
    static constexpr int kTileD = int(kTile / kF64);
    static_assert(kRowsLanePadding % kTile == 0, "lane arrays are padded to whole tiles");

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

    // Double register j of the lanes at p + c (n of them valid): `fill` past n, which it
    // never reads.
    static f64 lane_loadd(const double* p, int64_t c, int j, int64_t n, double fill) {
        const int64_t valid = n - j * kF64;
        if (valid >= kF64) return Ops::loadd(p + c + j * kF64);
        return valid > 0 ? Ops::loadd_n(p + c + j * kF64, valid, Ops::splatd(fill)) : Ops::splatd(fill);
    }

    // Whether the float-term sums of every one of `lanes` lanes pass check(count, s1, s2).
    template <class Check>
    static bool all_trusted(double count, const double* s1, const double* s2, int64_t lanes, Check check) {
        for (int64_t j = 0; j < lanes; j += kF32)
            for (int h = 0; h < int(kF32 / kF64); ++h) {
                const int64_t n = std::min(kF32, lanes - j);
                if (h * kF64 >= n) break;
                // Past n: sums that pass either check (s1 = 0, s2 = 1, count 1).
                const f64 a = lane_loadd(s1, j, h, n, 0.0), b = lane_loadd(s2, j, h, n, 1.0);
                if (!Ops::all(check(Ops::splatd(count), a, b))) return false;
            }
        return true;
    }
    static bool stats_rows_trusted(double count, const double* s1, const double* s2, int64_t lanes) {
        return all_trusted(count, s1, s2, lanes, [](f64 c, f64 a, f64 b) { return stats_sums_trusted_mask(c, a, b); });
    }
    static bool grad_rows_trusted(double count, const double* s1, const double* s2, int64_t lanes) {
        return all_trusted(count, s1, s2, lanes, [](f64 c, f64 a, f64 b) { return grad_sums_trusted_mask(c, a, b); });
    }

    // ---- element-wise passes over runs (one coefficient each) and lanes (per-lane arrays) ----

    // Run q of `runs` runs of len values (x + q * len): y = (x - mh[q]) * a[q] + b[q].
    static void affine_runs(const float* x, float* y, int64_t runs, int64_t len, const float* mh, const float* a,
                            const float* b) {
        for (int64_t q = 0; q < runs; ++q) {
            const f32 m = Ops::splat(mh[q]), av = Ops::splat(a[q]), bv = Ops::splat(b[q]);
            const float* xr = x + q * len;
            float* yr = y + q * len;
            for_registers(len, [&](auto full, int64_t i, int64_t n) {
                store(full, yr + i, (load(full, xr + i, n) - m) * av + bv, n);
            });
        }
    }

    // Run q: dx = ((dy * w[q] - k1[q]) - (x - mh[q]) * k2[q]) * r[q].
    static void diff_runs(const float* x, const float* dy, float* dx, int64_t runs, int64_t len, const RunCoefs& k) {
        for (int64_t q = 0; q < runs; ++q) {
            const f32 m = Ops::splat(k.mh[q]), w = Ops::splat(k.w[q]), k1 = Ops::splat(k.k1[q]),
                      k2 = Ops::splat(k.k2[q]), r = Ops::splat(k.r[q]);
            const int64_t at = q * len;
            for_registers(len, [&](auto full, int64_t i, int64_t n) {
                const f32 v = ((load(full, dy + at + i, n) * w - k1) - (load(full, x + at + i, n) - m) * k2) * r;
                store(full, dx + at + i, v, n);
            });
        }
    }

    // The lane passes walk a register of lanes down kLaneRows rows at a time, its
    // coefficients or sums held in registers: per lane the same operations in the same row
    // order as a row-by-row walk. body(full, l, n, r0, r1) handles lanes [l, l + n) of rows
    // [r0, r1).
    static constexpr int64_t kLaneRows = 8;
    template <class Body>
    [[gnu::always_inline]] static void for_lane_blocks(int64_t rows, int64_t width, Body&& body) {
        for (int64_t r0 = 0; r0 < rows; r0 += kLaneRows) {
            const int64_t r1 = std::min(rows, r0 + kLaneRows);
            for_registers(width, [&](auto full, int64_t l, int64_t n) { body(full, l, n, r0, r1); });
        }
    }

    // `rows` rows of `width` lanes, `stride` apart: y = (x - mh[l]) * a[l] + b[l].
    static void affine_lanes(const float* x, float* y, int64_t rows, int64_t width, int64_t stride, const float* mh,
                             const float* a, const float* b) {
        for_lane_blocks(rows, width, [&](auto full, int64_t l, int64_t n, int64_t r0, int64_t r1) {
            const f32 m = load(full, mh + l, n), av = load(full, a + l, n), bv = load(full, b + l, n);
            for (int64_t r = r0; r < r1; ++r)
                store(full, y + r * stride + l, (load(full, x + r * stride + l, n) - m) * av + bv, n);
        });
    }

    // Lane l: dx = ((dy * w[l] - k1[l]) - (x - mh[l]) * k2[l]) * r[l].
    static void diff_lanes(const float* x, const float* dy, float* dx, int64_t rows, int64_t width, int64_t stride,
                           const RunCoefs& k) {
        for_lane_blocks(rows, width, [&](auto full, int64_t l, int64_t n, int64_t r0, int64_t r1) {
            const f32 m = load(full, k.mh + l, n), w = load(full, k.w + l, n), k1 = load(full, k.k1 + l, n),
                      k2 = load(full, k.k2 + l, n), rs = load(full, k.r + l, n);
            for (int64_t r = r0; r < r1; ++r) {
                const int64_t at = r * stride + l;
                store(full, dx + at, ((load(full, dy + at, n) * w - k1) - (load(full, x + at, n) - m) * k2) * rs, n);
            }
        });
    }

    // Lane sums with every term in double, rows in order: acc1[l] += x - p[l],
    // acc2[l] += (x - p[l])^2 (stats), or acc1[l] += dy, acc2[l] += dy * (x - p[l]) (grads,
    // dy given). Each lane's sums depend on its own values alone, added in row order.
    template <class HasDy>
    static void lane_sums_impl(HasDy, const float* x, const float* dy, int64_t rows, int64_t width, int64_t stride,
                               const float* p, double* acc1, double* acc2) {
        constexpr int kH = int(kF32 / kF64);
        for_lane_blocks(rows, width, [&](auto full, int64_t l, int64_t n, int64_t r0, int64_t r1) {
            // A partial register goes through a copy: the lanes past n start from 0 and are
            // never stored.
            constexpr bool kFull = decltype(full)::value;
            alignas(64) double a1[kF32] = {}, a2[kF32] = {};
            if constexpr (!kFull)
                for (int64_t j = 0; j < n; ++j) {
                    a1[j] = acc1[l + j];
                    a2[j] = acc2[l + j];
                }
            double* d1 = kFull ? acc1 + l : a1;
            double* d2 = kFull ? acc2 + l : a2;
            f64 s1[kH], s2[kH], pv[kH];
            for (int h = 0; h < kH; ++h) {
                s1[h] = Ops::loadd(d1 + h * kF64);
                s2[h] = Ops::loadd(d2 + h * kF64);
            }
            widen_into(load(full, p + l, n), pv, 0);
            for (int64_t r = r0; r < r1; ++r) {
                f64 xv[kH], g[kH];
                widen_into(load(full, x + r * stride + l, n), xv, 0);
                if constexpr (HasDy::value) widen_into(load(full, dy + r * stride + l, n), g, 0);
                for (int h = 0; h < kH; ++h) {
                    const f64 d = xv[h] - pv[h];
                    if constexpr (HasDy::value) {
                        s1[h] = s1[h] + g[h];
                        s2[h] = s2[h] + g[h] * d;
                    } else {
                        s1[h] = s1[h] + d;
                        s2[h] = s2[h] + d * d;
                    }
                }
            }
            for (int h = 0; h < kH; ++h) {
                Ops::stored(d1 + h * kF64, s1[h]);
                Ops::stored(d2 + h * kF64, s2[h]);
            }
            if constexpr (!kFull)
                for (int64_t j = 0; j < n; ++j) {
                    acc1[l + j] = a1[j];
                    acc2[l + j] = a2[j];
                }
        });
    }
    static void lane_stats(const float* x, int64_t rows, int64_t width, int64_t stride, const float* pivot,
                           double* acc1, double* acc2) {
        lane_sums_impl(std::false_type{}, x, nullptr, rows, width, stride, pivot, acc1, acc2);
    }
    static void lane_grads(const float* x, const float* dy, int64_t rows, int64_t width, int64_t stride,
                           const float* mean, double* acc1, double* acc2) {
        lane_sums_impl(std::true_type{}, x, dy, rows, width, stride, mean, acc1, acc2);
    }

    static const RunKernelTable table;
};

template <class Ops>
const RunKernelTable RunKernels<Ops>::table = {
    &stats_seg,   &stats_seg_double, &stats_runs_fresh, &wgrad_seg,  &wgrad_seg_double, &wgrad_runs_fresh,
    &affine_runs, &diff_runs,        &affine_lanes, &diff_lanes, &lane_stats,       &lane_grads,
    &stats_rows,  &stats_rows_double, &grad_rows,   &grad_rows_double, &stats_rows_trusted, &grad_rows_trusted,
};

} // namespace nk
