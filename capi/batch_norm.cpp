// Batch-norm entry points: every argument is checked here, before any output is
// touched; the planner below trusts what it is given.
#include "batch_norm/batch_norm.hpp"
#include "capi/errors.hpp"
#include "core/context.hpp"

#include <cmath>
#include <cstddef>
#include <cstring>
#include <initializer_list>

namespace {

constexpr uint32_t kKnownFlags = NK_BN_KERAS_MOMENTUM | NK_BN_BIASED_RUNNING_VAR | NK_BN_USE_GLOBAL_STATS;
// The descriptor as first published; later versions only append fields.
constexpr uint32_t kDescSizeV1 = sizeof(nk_batch_norm_desc);

struct Buffer {
    const char* name;
    const void* data;
    bool output;
    bool tensor; // tensor-sized (else channel-sized)
};

class Checker {
public:
    nk_status status = NK_OK;
    nk::BatchNormProblem problem{};
    int64_t count = 0; // n * c * spatial

    // Checks the descriptor; on success fills problem and count.
    bool desc(const nk_batch_norm_desc* d) {
        if (d == nullptr) return fail(NK_ERROR_NULL_POINTER, "desc is NULL");
        if (d->struct_size < kDescSizeV1)
            return fail(NK_ERROR_INVALID_ARGUMENT,
                        "desc->struct_size is %u, expected at least %u: call nk_batch_norm_desc_init()",
                        d->struct_size, kDescSizeV1);
        const unsigned char* bytes = reinterpret_cast<const unsigned char*>(d);
        for (uint32_t i = kDescSizeV1; i < d->struct_size; ++i)
            if (bytes[i] != 0)
                return fail(NK_ERROR_UNSUPPORTED,
                            "desc->struct_size is %u and byte %u is set: fields newer than this "
                            "library (%u bytes) are not supported",
                            d->struct_size, i, kDescSizeV1);
        if (d->layout != NK_LAYOUT_NCS && d->layout != NK_LAYOUT_NSC)
            return fail(NK_ERROR_INVALID_ARGUMENT,
                        "desc->layout is %d: expected NK_LAYOUT_NCS (0) or NK_LAYOUT_NSC (1)", d->layout);
        if (d->dtype != NK_DTYPE_F32)
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->dtype is %d: expected NK_DTYPE_F32 (0)", d->dtype);
        if (d->reserved0 != 0 || d->reserved1 != 0)
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->reserved0/reserved1 are %d/%u: must be 0",
                        d->reserved0, d->reserved1);
        if (d->n < 0 || d->c < 0 || d->spatial < 0)
            return fail(NK_ERROR_INVALID_SHAPE, "desc has n=%lld c=%lld spatial=%lld: sizes must be >= 0",
                        (long long)d->n, (long long)d->c, (long long)d->spatial);
        int64_t nc = 0;
        if (__builtin_mul_overflow(d->n, d->c, &nc) || __builtin_mul_overflow(nc, d->spatial, &count) ||
            count > int64_t(PTRDIFF_MAX / sizeof(float)))
            return fail(NK_ERROR_INVALID_SHAPE,
                        "desc has n=%lld c=%lld spatial=%lld: the tensor exceeds addressable memory",
                        (long long)d->n, (long long)d->c, (long long)d->spatial);
        // Per-channel arrays hold c floats even when the tensor is empty.
        if (d->c > int64_t(PTRDIFF_MAX / sizeof(float)))
            return fail(NK_ERROR_INVALID_SHAPE,
                        "desc->c is %lld: per-channel arrays of c floats exceed addressable memory",
                        (long long)d->c);
        if (!(d->epsilon > 0.0f) || !std::isfinite(d->epsilon))
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->epsilon is %g: must be > 0 and finite",
                        double(d->epsilon));
        if (!(d->momentum >= 0.0f && d->momentum <= 1.0f))
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->momentum is %g: must be in [0, 1]",
                        double(d->momentum));
        if (d->flags & ~kKnownFlags)
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->flags is 0x%x: unknown bits 0x%x", d->flags,
                        d->flags & ~kKnownFlags);
        problem = {d->layout, d->n, d->c, d->spatial, d->epsilon, d->momentum, d->flags};
        return true;
    }

    // A required pointer: NULL is an error unless the buffer it names is empty.
    bool required(const char* name, const void* p, bool tensor) {
        if (p == nullptr && bytes(tensor) > 0)
            return fail(NK_ERROR_NULL_POINTER, "%s is NULL", name);
        return true;
    }

    // No output may overlap another buffer, except the in-place pair, buffers number
    // in_place_a and in_place_b of the list, when they are identical. Buffers must not
    // wrap the address space.
    bool no_overlap(std::initializer_list<Buffer> buffers, size_t in_place_a, size_t in_place_b) {
        for (const Buffer& x : buffers) {
            if (x.data == nullptr) continue;
            uintptr_t end;
            if (__builtin_add_overflow(uintptr_t(x.data), bytes(x.tensor), &end))
                return fail(NK_ERROR_INVALID_SHAPE, "%s holds %zu bytes and wraps the address space",
                            x.name, bytes(x.tensor));
        }
        for (const Buffer* x = buffers.begin(); x != buffers.end(); ++x) {
            for (const Buffer* y = x + 1; y != buffers.end(); ++y) {
                if (!x->output && !y->output) continue;
                if (!overlap(*x, *y)) continue;
                const size_t ix = size_t(x - buffers.begin()), iy = size_t(y - buffers.begin());
                const bool pair = (ix == in_place_a && iy == in_place_b) || (ix == in_place_b && iy == in_place_a);
                if (pair && x->data == y->data) continue;
                return fail(NK_ERROR_INVALID_ARGUMENT,
                            "%s and %s overlap: buffers must be disjoint%s", x->name, y->name,
                            pair ? " (in place needs the identical pointer)" : "");
            }
        }
        return true;
    }

    size_t bytes(bool tensor) const {
        return size_t(tensor ? count : problem.c) * sizeof(float);
    }

    bool fail(nk_status s, const char* format, ...) __attribute__((format(printf, 3, 4)));

private:
    bool overlap(const Buffer& x, const Buffer& y) const {
        const size_t bx = bytes(x.tensor), by = bytes(y.tensor);
        if (x.data == nullptr || y.data == nullptr || bx == 0 || by == 0) return false;
        const uintptr_t ax = uintptr_t(x.data), ay = uintptr_t(y.data);
        return ax < ay + by && ay < ax + bx;
    }
};

} // namespace

#include <cstdarg>
#include <cstdio>

bool Checker::fail(nk_status s, const char* format, ...) {
    char message[400];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof message, format, args);
    va_end(args);
    status = nk::fail(s, "%s", message);
    return false;
}

extern "C" {

nk_status nk_batch_norm_desc_init(nk_batch_norm_desc* desc, int32_t layout, int64_t n, int64_t c,
                                  int64_t spatial) {
    nk::clear_error();
    if (desc == nullptr) return nk::fail(NK_ERROR_NULL_POINTER, "desc is NULL");
    nk_batch_norm_desc d;
    std::memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.layout = layout;
    d.dtype = NK_DTYPE_F32;
    d.n = n;
    d.c = c;
    d.spatial = spatial;
    d.epsilon = 1e-5f;
    d.momentum = 0.1f;
    Checker check;
    if (!check.desc(&d)) return check.status;
    *desc = d;
    return NK_OK;
}

nk_status nk_batch_norm_forward_training(nk_context* ctx, const nk_batch_norm_desc* desc,
                                         const void* src, void* dst, const float* scale,
                                         const float* shift, float* running_mean,
                                         float* running_var, float* save_mean, float* save_invstd) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !check.required("src", src, true) || !check.required("dst", dst, true))
        return check.status;
    if ((running_mean == nullptr) != (running_var == nullptr))
        return nk::fail(NK_ERROR_NULL_POINTER, "%s is NULL but %s is not: pass both running statistics or neither",
                        running_mean ? "running_var" : "running_mean", running_mean ? "running_mean" : "running_var");
    if (!check.no_overlap({{"src", src, false, true},
                           {"dst", dst, true, true},
                           {"scale", scale, false, false},
                           {"shift", shift, false, false},
                           {"running_mean", running_mean, true, false},
                           {"running_var", running_var, true, false},
                           {"save_mean", save_mean, true, false},
                           {"save_invstd", save_invstd, true, false}},
                          0, 1))
        return check.status;
    const nk::BatchNormProblem& p = check.problem;
    if (check.count == 0) return NK_OK;
    if (p.n * p.s == 1)
        return nk::fail(NK_ERROR_INVALID_SHAPE,
                        "Expected more than 1 value per channel when training, got n=%lld spatial=%lld",
                        (long long)p.n, (long long)p.s);
    return nk::guarded([&] {
        nk::batch_norm_forward_training(nk::exec_config(ctx), p, static_cast<const float*>(src),
                                        static_cast<float*>(dst), scale, shift, running_mean,
                                        running_var, save_mean, save_invstd);
        return NK_OK;
    });
}

nk_status nk_batch_norm_forward_inference(nk_context* ctx, const nk_batch_norm_desc* desc,
                                          const void* src, void* dst, const float* scale,
                                          const float* shift, const float* mean,
                                          const float* variance) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !check.required("src", src, true) || !check.required("dst", dst, true) ||
        !check.required("mean", mean, false) || !check.required("variance", variance, false))
        return check.status;
    if (!check.no_overlap({{"src", src, false, true},
                           {"dst", dst, true, true},
                           {"scale", scale, false, false},
                           {"shift", shift, false, false},
                           {"mean", mean, false, false},
                           {"variance", variance, false, false}},
                          0, 1))
        return check.status;
    if (check.count == 0) return NK_OK;
    return nk::guarded([&] {
        nk::batch_norm_forward_inference(nk::exec_config(ctx), check.problem,
                                         static_cast<const float*>(src), static_cast<float*>(dst),
                                         scale, shift, mean, variance);
        return NK_OK;
    });
}

nk_status nk_batch_norm_backward(nk_context* ctx, const nk_batch_norm_desc* desc, const void* src,
                                 const void* diff_dst, const float* scale, const float* save_mean,
                                 const float* save_invstd, void* diff_src, float* diff_scale,
                                 float* diff_shift) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !check.required("src", src, true) ||
        !check.required("diff_dst", diff_dst, true) || !check.required("save_mean", save_mean, false) ||
        !check.required("save_invstd", save_invstd, false))
        return check.status;
    if (!check.no_overlap({{"src", src, false, true},
                           {"diff_dst", diff_dst, false, true},
                           {"scale", scale, false, false},
                           {"save_mean", save_mean, false, false},
                           {"save_invstd", save_invstd, false, false},
                           {"diff_src", diff_src, true, true},
                           {"diff_scale", diff_scale, true, false},
                           {"diff_shift", diff_shift, true, false}},
                          1, 5))
        return check.status;
    if (check.count == 0) return NK_OK;
    return nk::guarded([&] {
        nk::batch_norm_backward(nk::exec_config(ctx), check.problem, static_cast<const float*>(src),
                                static_cast<const float*>(diff_dst), scale, save_mean, save_invstd,
                                static_cast<float*>(diff_src), diff_scale, diff_shift);
        return NK_OK;
    });
}

} // extern "C"
