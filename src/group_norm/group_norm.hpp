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
};

void group_norm_forward(const ExecConfig& config, const GroupNormProblem& p, const float* src, float* dst,
                        const float* scale, const float* shift, float* save_mean, float* save_invstd);

void group_norm_backward(const ExecConfig& config, const GroupNormProblem& p, const float* src,
                         const float* diff_dst, const float* scale, const float* save_mean,
                         const float* save_invstd, float* diff_src, float* diff_scale, float* diff_shift);

} // namespace nk
