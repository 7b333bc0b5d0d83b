// Batch-norm entry points: every argument is checked here, before any output is
// touched; the planner below trusts what it is given.
#include "batch_norm/batch_norm.hpp"
#include "capi/errors.hpp"
#include "capi/validate.hpp"
#include "core/context.hpp"

#include <cmath>
#include <cstddef>
#include <cstring>

namespace {

constexpr uint32_t kKnownFlags = NK_BN_KERAS_MOMENTUM | NK_BN_BIASED_RUNNING_VAR | NK_BN_USE_GLOBAL_STATS;
// The descriptor as first published; later versions only append fields.
constexpr uint32_t kDescSizeV1 = sizeof(nk_batch_norm_desc);

// The batch-norm checks over the shared ones (capi/validate.hpp).
class Checker : public nk::ArgCheck {
public:
    nk::BatchNormProblem problem{};
    int64_t count = 0; // n * c * spatial

    // Checks the descriptor; on success fills problem and count.
    bool desc(const nk_batch_norm_desc* d) {
        if (!header(d, d ? d->struct_size : 0, kDescSizeV1, "nk_batch_norm_desc_init")) return false;
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
        if (!product(d->n, d->c, d->spatial, sizeof(float), &count))
            return fail(NK_ERROR_INVALID_SHAPE,
                        "desc has n=%lld c=%lld spatial=%lld: the tensor exceeds addressable memory",
                        (long long)d->n, (long long)d->c, (long long)d->spatial);
        // Per-channel arrays hold c floats even when the tensor is empty.
        if (d->c > int64_t(PTRDIFF_MAX / sizeof(float)))
            return fail(NK_ERROR_INVALID_SHAPE,
                        "desc->c is %lld: per-channel arrays of c floats exceed addressable memory",
                        (long long)d->c);
        if (!epsilon(d->epsilon)) return false;
        if (!(d->momentum >= 0.0f && d->momentum <= 1.0f))
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->momentum is %g: must be in [0, 1]",
                        double(d->momentum));
        if (!flags(d->flags, kKnownFlags)) return false;
        problem = {d->layout, d->n, d->c, d->spatial, d->epsilon, d->momentum, d->flags};
        return true;
    }

    size_t tensor_bytes() const { return size_t(count) * sizeof(float); }
    size_t channel_bytes() const { return size_t(problem.c) * sizeof(float); }
    nk::Buffer tensor(const char* name, const void* p, bool output) const { return {name, p, tensor_bytes(), output}; }
    nk::Buffer channels(const char* name, const void* p, bool output) const { return {name, p, channel_bytes(), output}; }
};

} // namespace

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
    if (!check.desc(desc) || !check.required("src", src, check.tensor_bytes()) || !check.required("dst", dst, check.tensor_bytes()))
        return check.status;
    if ((running_mean == nullptr) != (running_var == nullptr))
        return nk::fail(NK_ERROR_NULL_POINTER, "%s is NULL but %s is not: pass both running statistics or neither",
                        running_mean ? "running_var" : "running_mean", running_mean ? "running_mean" : "running_var");
    if (!check.no_overlap({check.tensor("src", src, false),
                           check.tensor("dst", dst, true),
                           check.channels("scale", scale, false),
                           check.channels("shift", shift, false),
                           check.channels("running_mean", running_mean, true),
                           check.channels("running_var", running_var, true),
                           check.channels("save_mean", save_mean, true),
                           check.channels("save_invstd", save_invstd, true)},
                          {{0, 1}}))
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
    if (!check.desc(desc) || !check.required("src", src, check.tensor_bytes()) || !check.required("dst", dst, check.tensor_bytes()) ||
        !check.required("mean", mean, check.channel_bytes()) || !check.required("variance", variance, check.channel_bytes()))
        return check.status;
    if (!check.no_overlap({check.tensor("src", src, false),
                           check.tensor("dst", dst, true),
                           check.channels("scale", scale, false),
                           check.channels("shift", shift, false),
                           check.channels("mean", mean, false),
                           check.channels("variance", variance, false)},
                          {{0, 1}}))
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
    if (!check.desc(desc) || !check.required("src", src, check.tensor_bytes()) ||
        !check.required("diff_dst", diff_dst, check.tensor_bytes()) || !check.required("save_mean", save_mean, check.channel_bytes()) ||
        !check.required("save_invstd", save_invstd, check.channel_bytes()))
        return check.status;
    if (!check.no_overlap({check.tensor("src", src, false),
                           check.tensor("diff_dst", diff_dst, false),
                           check.channels("scale", scale, false),
                           check.channels("save_mean", save_mean, false),
                           check.channels("save_invstd", save_invstd, false),
                           check.tensor("diff_src", diff_src, true),
                           check.channels("diff_scale", diff_scale, true),
                           check.channels("diff_shift", diff_shift, true)},
                          {{1, 5}}))
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
