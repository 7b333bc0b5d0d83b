// Layer-norm and RMS-norm kernels, templated on an Ops type (core/simd.hpp). Each ISA
// translation unit (layer_norm_<isa>.cpp) instantiates them once with its own flags.
// The reductions are core's seg reductions; the element-wise passes are written here, one
// formula each, IEEE float operations in a fixed order (the same bits on every ISA).
#pragma once

#include "core/run_kernels.hpp"
#include "layer_norm/layer_norm_kernel_table.hpp"

#include <type_traits>

namespace nk {

template <class Ops>
struct LayerNormKernels : RunKernels<Ops> {
    using Base = RunKernels<Ops>;
    using typename Base::f32;
    using typename Base::f64;
    using Base::for_registers;
    using Base::kF32;
    using Base::kF64;
    using Base::load;
    using Base::store;
    using Base::widen_into;

    static void add(const float* a, const float* b, float* y, int64_t n) {
        for_registers(n, [&](auto full, int64_t i, int64_t m) {
            store(full, y + i, load(full, a + i, m) + load(full, b + i, m), m);
        });
    }

    // The next block's row at offset `at`: one prefetch per 64 bytes, before the row's pass.
    static void prefetch_next(const NextBlock& next, int64_t at, int64_t len) {
        const int64_t eb = next.element_bytes;
        for (const char* p : {next.a, next.b})
            if (p)
                for (int64_t i = at * eb; i < (at + len) * eb; i += 64) __builtin_prefetch(p + i);
    }

    template <class HasShift>
    static void normalize_impl(HasShift, const float* x, float* y, int64_t rows, int64_t len, const RowCoefs& k,
                               const float* w, const float* b, const NextBlock& next) {
        for (int64_t r = 0; r < rows; ++r) {
            const f32 mh = Ops::splat(k.mean_hi[r]), rs = Ops::splat(k.r[r]), c = Ops::splat(k.c[r]);
            const float* xr = x + r * len;
            float* yr = y + r * len;
            prefetch_next(next, r * len, len);
            for_registers(len, [&](auto full, int64_t i, int64_t n) {
                f32 v = ((load(full, xr + i, n) - mh) * rs + c) * load(full, w + i, n);
                if constexpr (HasShift::value) v = v + load(full, b + i, n);
                store(full, yr + i, v, n);
            });
        }
    }
    // RMS norm has no shift: adding zeros would only cost (and turn -0 into +0).
    static void normalize(const float* x, float* y, int64_t rows, int64_t len, const RowCoefs& k, const float* w,
                          const float* b, const NextBlock& next) {
        if (b)
            normalize_impl(std::true_type{}, x, y, rows, len, k, w, b, next);
        else
            normalize_impl(std::false_type{}, x, y, rows, len, k, w, b, next);
    }

    // sum[i] += double(part[i]), part[i] = 0, for i < len.
    static void flush_columns(float* part, double* sum, int64_t len) {
        int64_t i = 0;
        for (; i + kF32 <= len; i += kF32) {
            f64 v[2];
            widen_into(Ops::load(part + i), v, 0);
            for (int m = 0; m < int(kF32 / kF64); ++m)
                Ops::stored(sum + i + m * kF64, Ops::loadd(sum + i + m * kF64) + v[m]);
            Ops::store(part + i, Ops::splat(0.0f));
        }
        for (; i < len; ++i) {
            sum[i] += double(part[i]);
            part[i] = 0.0f;
        }
    }

    template <class HasDx, class HasCols, class HasShift>
    static void backward_impl(HasDx, HasCols, HasShift, const float* x, const float* dy, float* dx, int64_t rows,
                              int64_t len, const RowCoefs& k, const float* w, const ColumnSums* cols,
                              const NextBlock& next) {
        for (int64_t r = 0; r < rows; ++r) {
            const f32 mh = Ops::splat(k.mean_hi[r]), rs = Ops::splat(k.r[r]);
            const f32 k1 = Ops::splat(HasDx::value ? k.k1[r] : 0.0f), k2 = Ops::splat(HasDx::value ? k.k2[r] : 0.0f);
            const float* xr = x + r * len;
            const float* gr = dy + r * len;
            prefetch_next(next, r * len, len);
            for_registers(len, [&](auto full, int64_t i, int64_t n) {
                const f32 xv = load(full, xr + i, n), g = load(full, gr + i, n), d = xv - mh;
                if constexpr (HasDx::value)
                    store(full, dx + r * len + i, ((g * load(full, w + i, n) - k1) - d * k2) * rs, n);
                if constexpr (HasCols::value) {
                    store(full, cols->part_s + i, load(full, cols->part_s + i, n) + g * (d * rs), n);
                    if constexpr (HasShift::value) store(full, cols->part_b + i, load(full, cols->part_b + i, n) + g, n);
                }
            });
            if constexpr (HasCols::value) {
                if ((cols->row + r + 1) % kColumnRows == 0 || (r + 1 == rows && cols->ends_item)) {
                    flush_columns(cols->part_s, cols->sum_s, len);
                    if constexpr (HasShift::value) flush_columns(cols->part_b, cols->sum_b, len);
                }
            }
        }
    }
    static void backward(const float* x, const float* dy, float* dx, int64_t rows, int64_t len, const RowCoefs& k,
                         const float* w, const ColumnSums* cols, const NextBlock& next) {
        using T = std::true_type;
        using F = std::false_type;
        auto run = [&](auto has_dx, auto has_cols, auto has_shift) {
            backward_impl(has_dx, has_cols, has_shift, x, dy, dx, rows, len, k, w, cols, next);
        };
        if (!cols) return run(T{}, F{}, F{});
        const bool shift = cols->sum_b != nullptr;
        if (dx && shift) return run(T{}, T{}, T{});
        if (dx) return run(T{}, T{}, F{});
        if (shift) return run(F{}, T{}, T{});
        run(F{}, T{}, F{});
    }

    static const LayerNormKernelTable table;
};

template <class Ops>
const LayerNormKernelTable LayerNormKernels<Ops>::table = {
    &add,
    &normalize,
    &backward,
};

} // namespace nk
