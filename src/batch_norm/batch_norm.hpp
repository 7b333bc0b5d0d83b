// Batch normalization behind the C ABI: arguments arrive validated (capi/).
// May throw std::bad_alloc; nothing is written to outputs before scratch is allocated.
#pragma once

#include "core/context.hpp"

#include <cstdint>

namespace nk {

struct BatchNormProblem {
    int32_t layout; // NK_LAYOUT_*
    int64_t n, c, s;
    float epsilon;
    float momentum;
    uint32_t flags; // NK_BN_*
};

void batch_norm_forward_training(const ExecConfig& config, const BatchNormProblem& p,
                                 const float* src, float* dst, const float* scale,
                                 const float* shift, float* running_mean, float* running_var,
                                 float* save_mean, float* save_invstd);

void batch_norm_forward_inference(const ExecConfig& config, const BatchNormProblem& p,
                                  const float* src, float* dst, const float* scale,
                                  const float* shift, const float* mean, const float* variance);

void batch_norm_backward(const ExecConfig& config, const BatchNormProblem& p, const float* src,
                         const float* diff_dst, const float* scale, const float* save_mean,
                         const float* save_invstd, float* diff_src, float* diff_scale,
                         float* diff_shift);

} // namespace nk
