// Layer normalization and RMS normalization behind the C ABI: arguments arrive validated
// (capi/layer_norm.cpp). May throw std::bad_alloc; nothing is written to outputs before
// scratch is allocated.
#pragma once

#include "core/context.hpp"

#include <cstdint>

namespace nk {

struct LayerNormProblem {
    int64_t rows, features;
    float epsilon;
    bool rms;      // RMS norm: no centering, no shift
    int32_t dtype; // NK_DTYPE_* of src, residual, sum, dst, diff_dst, diff_src
};

// x = src (+ residual, kept in sum when given); dst = normalized x. Layer norm saves
// mean and invstd, RMS norm invrms in save_invstd (save_mean and shift null).
void layer_norm_forward(const ExecConfig& config, const LayerNormProblem& p, const void* src,
                        const void* residual, void* sum, void* dst, const float* scale, const float* shift,
                        float* save_mean, float* save_invstd);

// RMS norm: save_mean and diff_shift null, save_invstd the invrms.
void layer_norm_backward(const ExecConfig& config, const LayerNormProblem& p, const void* src,
                         const void* diff_dst, const float* scale, const float* save_mean,
                         const float* save_invstd, void* diff_src, float* diff_scale, float* diff_shift);

} // namespace nk
