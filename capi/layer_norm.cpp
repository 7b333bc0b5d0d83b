// Layer-norm and RMS-norm entry points: every argument is checked here, before any
// output is touched; the planner below trusts what it is given.
#include "capi/errors.hpp"
#include "capi/validate.hpp"
#include "core/context.hpp"
#include "layer_norm/layer_norm.hpp"

#include <cstring>

namespace {

// The descriptor as first published; later versions only append fields.
constexpr uint32_t kDescSizeV1 = sizeof(nk_layer_norm_desc);

class Checker : public nk::ArgCheck {
public:
    nk::LayerNormProblem problem{};
    int64_t count = 0; // rows * features

    bool desc(const nk_layer_norm_desc* d, bool rms) {
        if (!header(d, d ? d->struct_size : 0, kDescSizeV1, "nk_layer_norm_desc_init")) return false;
        if (!dtype(d->dtype)) return false;
        if (d->rows < 0 || d->features < 0)
            return fail(NK_ERROR_INVALID_SHAPE, "desc has rows=%lld features=%lld: sizes must be >= 0",
                        (long long)d->rows, (long long)d->features);
        if (!product(d->rows, d->features, 1, element_bytes(d->dtype), &count))
            return fail(NK_ERROR_INVALID_SHAPE, "desc has rows=%lld features=%lld: the tensor exceeds addressable memory",
                        (long long)d->rows, (long long)d->features);
        // Per-row and per-feature arrays hold rows / features floats even when the tensor is empty.
        if (d->rows > int64_t(PTRDIFF_MAX / sizeof(float)) || d->features > int64_t(PTRDIFF_MAX / sizeof(float)))
            return fail(NK_ERROR_INVALID_SHAPE, "desc has rows=%lld features=%lld: arrays of floats exceed addressable memory",
                        (long long)d->rows, (long long)d->features);
        if (!epsilon(d->epsilon) || !flags(d->flags, 0)) return false;
        problem = {d->rows, d->features, d->epsilon, rms, d->dtype};
        return true;
    }

    nk::Buffer tensor(const char* name, const void* p, bool output) const { return {name, p, tensor_bytes(), output}; }
    nk::Buffer per_row(const char* name, const void* p, bool output) const {
        return {name, p, size_t(problem.rows) * sizeof(float), output};
    }
    nk::Buffer per_feature(const char* name, const void* p, bool output) const {
        return {name, p, size_t(problem.features) * sizeof(float), output};
    }
    size_t tensor_bytes() const { return size_t(count) * element_bytes(problem.dtype); }
    size_t row_bytes() const { return size_t(problem.rows) * sizeof(float); }

    // sum holds src + residual: without a residual there is nothing to keep.
    bool sum_needs_residual(const void* residual, const void* sum) {
        if (sum == nullptr || residual != nullptr) return true;
        return fail(NK_ERROR_INVALID_ARGUMENT, "sum is given but residual is NULL: sum receives src + residual");
    }
};

// Forward of either op (rms: no shift, no save_mean).
nk_status forward(nk_context* ctx, const nk_layer_norm_desc* desc, bool rms, const void* src, const void* residual,
                  void* sum, void* dst, const float* scale, const float* shift, float* save_mean, float* save_invstd,
                  const char* save_invstd_name) {
    Checker check;
    if (!check.desc(desc, rms)) return check.status;
    if (check.count == 0) return NK_OK; // rows == 0 or features == 0: nothing to read or write
    if (!check.required("src", src, check.tensor_bytes()) || !check.required("dst", dst, check.tensor_bytes()) || !check.sum_needs_residual(residual, sum))
        return check.status;
    // In place: dst or sum may be src or residual.
    if (!check.no_overlap({check.tensor("src", src, false),
                           check.tensor("residual", residual, false),
                           check.tensor("sum", sum, true),
                           check.tensor("dst", dst, true),
                           check.per_feature("scale", scale, false),
                           check.per_feature("shift", shift, false),
                           check.per_row("save_mean", save_mean, true),
                           check.per_row(save_invstd_name, save_invstd, true)},
                          {{3, 0}, {3, 1}, {2, 0}, {2, 1}}))
        return check.status;
    return nk::guarded([&] {
        nk::layer_norm_forward(nk::exec_config(ctx), check.problem, src, residual, sum, dst, scale, shift, save_mean,
                               save_invstd);
        return NK_OK;
    });
}

nk_status backward(nk_context* ctx, const nk_layer_norm_desc* desc, bool rms, const void* src, const void* diff_dst,
                   const float* scale, const float* save_mean, const float* save_invstd, const char* save_invstd_name,
                   void* diff_src, float* diff_scale, float* diff_shift) {
    Checker check;
    if (!check.desc(desc, rms)) return check.status;
    if (check.count == 0) return NK_OK; // rows == 0 or features == 0: nothing to read or write
    if (!check.required("src", src, check.tensor_bytes()) || !check.required("diff_dst", diff_dst, check.tensor_bytes()) ||
        (!rms && !check.required("save_mean", save_mean, check.row_bytes())) ||
        !check.required(save_invstd_name, save_invstd, check.row_bytes()))
        return check.status;
    if (!check.no_overlap({check.tensor("src", src, false),
                           check.tensor("diff_dst", diff_dst, false),
                           check.per_feature("scale", scale, false),
                           check.per_row("save_mean", save_mean, false),
                           check.per_row(save_invstd_name, save_invstd, false),
                           check.tensor("diff_src", diff_src, true),
                           check.per_feature("diff_scale", diff_scale, true),
                           check.per_feature("diff_shift", diff_shift, true)},
                          {{1, 5}}))
        return check.status;
    if (!diff_src && !diff_scale && !diff_shift) return NK_OK;
    return nk::guarded([&] {
        nk::layer_norm_backward(nk::exec_config(ctx), check.problem, src, diff_dst, scale, save_mean, save_invstd,
                                diff_src, diff_scale, diff_shift);
        return NK_OK;
    });
}

} // namespace

extern "C" {

nk_status nk_layer_norm_desc_init(nk_layer_norm_desc* desc, int64_t rows, int64_t features) {
    nk::clear_error();
    if (desc == nullptr) return nk::fail(NK_ERROR_NULL_POINTER, "desc is NULL");
    nk_layer_norm_desc d;
    std::memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.dtype = NK_DTYPE_F32;
    d.rows = rows;
    d.features = features;
    d.epsilon = 1e-5f;
    Checker check;
    if (!check.desc(&d, false)) return check.status;
    *desc = d;
    return NK_OK;
}

nk_status nk_layer_norm_forward(nk_context* ctx, const nk_layer_norm_desc* desc, const void* src,
                                const void* residual, void* sum, void* dst, const float* scale, const float* shift,
                                float* save_mean, float* save_invstd) {
    nk::clear_error();
    return forward(ctx, desc, false, src, residual, sum, dst, scale, shift, save_mean, save_invstd, "save_invstd");
}

nk_status nk_layer_norm_backward(nk_context* ctx, const nk_layer_norm_desc* desc, const void* src,
                                 const void* diff_dst, const float* scale, const float* save_mean,
                                 const float* save_invstd, void* diff_src, float* diff_scale, float* diff_shift) {
    nk::clear_error();
    return backward(ctx, desc, false, src, diff_dst, scale, save_mean, save_invstd, "save_invstd", diff_src,
                    diff_scale, diff_shift);
}

nk_status nk_rms_norm_forward(nk_context* ctx, const nk_layer_norm_desc* desc, const void* src, const void* residual,
                              void* sum, void* dst, const float* scale, float* save_invrms) {
    nk::clear_error();
    return forward(ctx, desc, true, src, residual, sum, dst, scale, nullptr, nullptr, save_invrms, "save_invrms");
}

nk_status nk_rms_norm_backward(nk_context* ctx, const nk_layer_norm_desc* desc, const void* src,
                               const void* diff_dst, const float* scale, const float* save_invrms, void* diff_src,
                               float* diff_scale) {
    nk::clear_error();
    return backward(ctx, desc, true, src, diff_dst, scale, nullptr, save_invrms, "save_invrms", diff_src, diff_scale,
                    nullptr);
}

} // extern "C"
