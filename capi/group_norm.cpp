// Group-norm entry points: every argument is checked here, before any output is touched;
// the planner below trusts what it is given.
#include "capi/errors.hpp"
#include "capi/validate.hpp"
#include "core/context.hpp"
#include "group_norm/group_norm.hpp"

#include <cstring>

namespace {

// The descriptor as first published; later versions only append fields.
constexpr uint32_t kDescSizeV1 = sizeof(nk_group_norm_desc);

class Checker : public nk::ArgCheck {
public:
    nk::GroupNormProblem problem{};
    int64_t count = 0, stats = 0; // n * c * spatial, n * groups

    bool desc(const nk_group_norm_desc* d) {
        if (!header(d, d ? d->struct_size : 0, kDescSizeV1, "nk_group_norm_desc_init")) return false;
        if (d->layout != NK_LAYOUT_NCS && d->layout != NK_LAYOUT_NSC)
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->layout is %d: expected NK_LAYOUT_NCS (0) or NK_LAYOUT_NSC (1)",
                        d->layout);
        if (!dtype(d->dtype)) return false;
        if (d->reserved0 != 0) return fail(NK_ERROR_INVALID_ARGUMENT, "desc->reserved0 is %d: must be 0", d->reserved0);
        if (d->n < 0 || d->c < 0 || d->spatial < 0)
            return fail(NK_ERROR_INVALID_SHAPE, "desc has n=%lld c=%lld spatial=%lld: sizes must be >= 0",
                        (long long)d->n, (long long)d->c, (long long)d->spatial);
        if (d->groups <= 0 || d->c % d->groups != 0)
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->groups is %lld and c is %lld: groups must be >= 1 and divide c",
                        (long long)d->groups, (long long)d->c);
        if (!product(d->n, d->c, d->spatial, element_bytes(d->dtype), &count) ||
            !product(d->n, d->groups, 1, sizeof(float), &stats) || d->c > int64_t(PTRDIFF_MAX / sizeof(float)))
            return fail(NK_ERROR_INVALID_SHAPE,
                        "desc has n=%lld c=%lld spatial=%lld: the tensor exceeds addressable memory", (long long)d->n,
                        (long long)d->c, (long long)d->spatial);
        if (!epsilon(d->epsilon) || !flags(d->flags, 0)) return false;
        problem = {d->layout, d->n, d->c, d->spatial, d->groups, d->epsilon, d->dtype};
        return true;
    }
    size_t tensor_bytes() const { return size_t(count) * element_bytes(problem.dtype); }
    size_t stats_bytes() const { return size_t(stats) * sizeof(float); }
    nk::Buffer tensor(const char* name, const void* p, bool output) const { return {name, p, tensor_bytes(), output}; }
    nk::Buffer channels(const char* name, const void* p, bool output) const {
        return {name, p, size_t(problem.c) * sizeof(float), output};
    }
    nk::Buffer per_group(const char* name, const void* p, bool output) const { return {name, p, stats_bytes(), output}; }
};

} // namespace

extern "C" {

nk_status nk_group_norm_desc_init(nk_group_norm_desc* desc, int32_t layout, int64_t n, int64_t c, int64_t spatial,
                                  int64_t groups) {
    nk::clear_error();
    if (desc == nullptr) return nk::fail(NK_ERROR_NULL_POINTER, "desc is NULL");
    nk_group_norm_desc d;
    std::memset(&d, 0, sizeof d);
    d.struct_size = sizeof d;
    d.layout = layout;
    d.dtype = NK_DTYPE_F32;
    d.n = n;
    d.c = c;
    d.spatial = spatial;
    d.groups = groups;
    d.epsilon = 1e-5f;
    Checker check;
    if (!check.desc(&d)) return check.status;
    *desc = d;
    return NK_OK;
}

nk_status nk_group_norm_forward(nk_context* ctx, const nk_group_norm_desc* desc, const void* src, void* dst,
                                const float* scale, const float* shift, float* save_mean, float* save_invstd) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc)) return check.status;
    if (check.count == 0) return NK_OK; // an empty tensor: nothing to read or write
    if (!check.required("src", src, check.tensor_bytes()) || !check.required("dst", dst, check.tensor_bytes()))
        return check.status;
    if (!check.no_overlap({check.tensor("src", src, false), check.tensor("dst", dst, true),
                           check.channels("scale", scale, false), check.channels("shift", shift, false),
                           check.per_group("save_mean", save_mean, true),
                           check.per_group("save_invstd", save_invstd, true)},
                          {{0, 1}}))
        return check.status;
    return nk::guarded([&] {
        nk::group_norm_forward(nk::exec_config(ctx), check.problem, src, dst, scale, shift, save_mean, save_invstd);
        return NK_OK;
    });
}

nk_status nk_group_norm_backward(nk_context* ctx, const nk_group_norm_desc* desc, const void* src,
                                 const void* diff_dst, const float* scale, const float* save_mean,
                                 const float* save_invstd, void* diff_src, float* diff_scale, float* diff_shift) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc)) return check.status;
    if (check.count == 0) return NK_OK;
    if (!check.required("src", src, check.tensor_bytes()) || !check.required("diff_dst", diff_dst, check.tensor_bytes()) ||
        !check.required("save_mean", save_mean, check.stats_bytes()) ||
        !check.required("save_invstd", save_invstd, check.stats_bytes()))
        return check.status;
    if (!check.no_overlap({check.tensor("src", src, false), check.tensor("diff_dst", diff_dst, false),
                           check.channels("scale", scale, false), check.per_group("save_mean", save_mean, false),
                           check.per_group("save_invstd", save_invstd, false), check.tensor("diff_src", diff_src, true),
                           check.channels("diff_scale", diff_scale, true),
                           check.channels("diff_shift", diff_shift, true)},
                          {{1, 5}}))
        return check.status;
    if (!diff_src && !diff_scale && !diff_shift) return NK_OK;
    return nk::guarded([&] {
        nk::group_norm_backward(nk::exec_config(ctx), check.problem, src, diff_dst, scale, save_mean, save_invstd,
                                diff_src, diff_scale, diff_shift);
        return NK_OK;
    });
}

} // extern "C"
