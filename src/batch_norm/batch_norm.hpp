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

// The fusions (NK_BN_FUSE_RELU in p.flags, residual, dst, diff_residual): the forward's
// dst = relu(bn(src) + residual), the residual and the ReLU each optional; the backward
// takes that dst (null without the ReLU) to zero diff_dst where dst <= 0 before
// everything else, and writes the masked diff_dst to diff_residual when it is not null.
void batch_norm_forward_training(const ExecConfig& config, const BatchNormProblem& p,
                                 const float* src, const float* residual, float* dst, const float* scale,
                                 const float* shift, float* running_mean, float* running_var,
                                 float* save_mean, float* save_invstd);

void batch_norm_forward_inference(const ExecConfig& config, const BatchNormProblem& p,
                                  const float* src, const float* residual, float* dst, const float* scale,
                                  const float* shift, const float* mean, const float* variance);

void batch_norm_backward(const ExecConfig& config, const BatchNormProblem& p, const float* src,
                         const float* diff_dst, const float* dst, const float* scale, const float* save_mean,
                         const float* save_invstd, float* diff_src, float* diff_residual, float* diff_scale,
                         float* diff_shift);


// Synchronized batch norm (nk_batch_norm_stats and its kin): a tensor's samples in pieces.
// Piece q holds samples [q * g, min(n, (q + 1) * g)) (g = samples_per_piece, or all n
// samples in one piece when g is 0); its per-channel values are at [q * c + channel].
struct BatchNormPieces {
    int64_t pieces;
    int64_t* count; // values per channel of each piece
    double* a;      // statistics: mean;  gradient sums: sum(dy)
    double* b;      // statistics: M2;    gradient sums: sum(dy * (x - mean))
};

int64_t batch_norm_piece_count(int64_t n, int64_t samples_per_piece);

// Each piece's (mean, M2): the planner's partials of the piece alone, folded in their
// order as batch_norm_forward_training folds them (so one piece of the whole tensor
// gives its statistics bit for bit).
void batch_norm_piece_moments(const ExecConfig& config, const BatchNormProblem& p, int64_t samples_per_piece,
                              const float* src, const BatchNormPieces& out);

// Each piece's sum(dy) and sum(dy * (x - save_mean)), as batch_norm_backward adds them.
void batch_norm_piece_grad_sums(const ExecConfig& config, const BatchNormProblem& p, int64_t samples_per_piece,
                                const float* src, const float* diff_dst, const float* save_mean,
                                const BatchNormPieces& out);

// The statistics pieces of `in` folded in order (as batch_norm_forward_from_pieces folds
// them) into one: mean and M2 of each of the c channels.
void batch_norm_merge_moments(const ExecConfig& config, int64_t c, const BatchNormPieces& in, double* mean,
                              double* m2);

// batch_norm_forward_training with the statistics of `in` (pieces folded in order)
// instead of src's own (the fused ReLU included; no residual). The pieces' total count is more than 1 (validated).
void batch_norm_forward_from_pieces(const ExecConfig& config, const BatchNormProblem& p,
                                    const BatchNormPieces& in, const float* src, float* dst,
                                    const float* scale, const float* shift, float* running_mean,
                                    float* running_var, float* save_mean, float* save_invstd);

// batch_norm_backward with the gradient sums of `in` (pieces added in order) over their
// total count instead of src's own.
void batch_norm_backward_from_pieces(const ExecConfig& config, const BatchNormProblem& p,
                                     const BatchNormPieces& in, const float* src, const float* diff_dst,
                                     const float* scale, const float* save_mean, const float* save_invstd,
                                     float* diff_src, float* diff_scale, float* diff_shift);

} // namespace nk
