// Group normalization (instance normalization: groups == c) behind the C ABI: arguments
// arrive validated (capi/group_norm.cpp). May throw std::bad_alloc; nothing is written to
// outputs before scratch is allocated.
#pragma once

#include "core/context.hpp"

#include <cstdint>

namespace nk {

struct GroupNormProblem {
    int32_t layout; // NK_LAYOUT_*
    int64_t n, c, s, groups;
    float epsilon;
    int32_t dtype; // NK_DTYPE_* of src, dst, diff_dst, diff_src
};

void group_norm_forward(const ExecConfig& config, const GroupNormProblem& p, const void* src, void* dst,
                        const float* scale, const float* shift, float* save_mean, float* save_invstd);

void group_norm_backward(const ExecConfig& config, const GroupNormProblem& p, const void* src,
                         const void* diff_dst, const float* scale, const float* save_mean,
                         const float* save_invstd, void* diff_src, float* diff_scale, float* diff_shift);

} // namespace nk
