/*
 * normkit: SIMD CPU normalization kernels behind a stable C ABI.
 *
 * C99, fixed-width types only. Rules that never change:
 *   - status numbers are pinned; new ones are only ever appended;
 *   - option structs start with `struct_size` and only ever grow at the end;
 *   - every function is thread-safe and re-entrant; a context may be shared;
 *   - on any error no output buffer is written, and nk_last_error_message()
 *     names the argument at fault.
 */
#ifndef NORMKIT_NORMKIT_H
#define NORMKIT_NORMKIT_H

#include <stdint.h>

#if defined(_WIN32)
#  if defined(NK_BUILDING_LIBRARY)
#    define NK_API __declspec(dllexport)
#  else
#    define NK_API
#  endif
#elif defined(__GNUC__)
#  define NK_API __attribute__((visibility("default")))
#else
#  define NK_API
#endif

#ifdef __cplusplus
extern "C" {
#endif

/* ---- Version ------------------------------------------------------------- */

#define NK_VERSION_MAJOR 0
#define NK_VERSION_MINOR 1
#define NK_VERSION_PATCH 0
#define NK_VERSION_NUMBER (NK_VERSION_MAJOR * 10000 + NK_VERSION_MINOR * 100 + NK_VERSION_PATCH)

/* The version of the library actually loaded: major*10000 + minor*100 + patch. */
NK_API uint32_t nk_version(void);

/* ---- Status -------------------------------------------------------------- */

typedef int32_t nk_status;
#define NK_OK                     0
#define NK_ERROR_NULL_POINTER     1 /* a required pointer is NULL */
#define NK_ERROR_INVALID_SHAPE    2 /* negative/overflowing sizes, one value per channel in training */
#define NK_ERROR_INVALID_ARGUMENT 3 /* bad enum/flag/struct_size/epsilon/momentum, overlapping buffers */
#define NK_ERROR_UNSUPPORTED      4 /* valid request this build cannot serve (dtype, ISA not on this CPU) */
#define NK_ERROR_OUT_OF_MEMORY    5 /* scratch allocation failed; nothing was written */
#define NK_ERROR_INTERNAL         6 /* a bug in normkit: please report it */

/* A static, human-readable name for a status ("NK_ERROR_INVALID_SHAPE"). Never NULL. */
NK_API const char* nk_status_string(nk_status status);

/* The message of the last normkit call made on the calling thread: empty ("") when
 * that call succeeded, otherwise it names the argument and value at fault.
 * The pointer stays valid until the next normkit call on this thread. Never NULL. */
NK_API const char* nk_last_error_message(void);

/* ---- Context ------------------------------------------------------------- */

/* Instruction-set paths, best last. nk_context_set_max_isa caps the dispatch. */
#define NK_ISA_SCALAR  0
#define NK_ISA_SSE4_2  1
#define NK_ISA_AVX2    2 /* AVX2 + FMA */
#define NK_ISA_AVX512  3 /* AVX-512 F/DQ/BW/VL */

/* A context holds a thread cap and an ISA cap. NULL everywhere means the process
 * default: all threads of the caller's oneTBB arena, best ISA of this CPU (capped by
 * the environment variable NK_MAX_ISA=scalar|sse4.2|avx2|avx512 if set at first use). */
typedef struct nk_context nk_context;

NK_API nk_status nk_context_create(nk_context** ctx);
NK_API void      nk_context_destroy(nk_context* ctx); /* NULL is a no-op */
/* n = 0: all threads of the caller's arena; n >= 1: at most n threads (n = 1: the calling
 * thread alone, without touching oneTBB). */
NK_API nk_status nk_context_set_num_threads(nk_context* ctx, int32_t n);
/* isa: one of NK_ISA_*. A cap above what the CPU has is allowed: the best available is used. */
NK_API nk_status nk_context_set_max_isa(nk_context* ctx, int32_t isa);
/* The NK_ISA_* path calls made with ctx take (ctx may be NULL: the process default). */
NK_API int32_t   nk_context_isa(const nk_context* ctx);

/* Runs the calls made with ctx on the host's thread pool (as XNNPACK takes a pthreadpool):
 * normkit then starts no thread and never enters oneTBB. A pass of a call is cut into
 * `tasks` contiguous chunks (2 <= tasks <= threads; a pass of one chunk runs on the
 * calling thread without fn), and fn(user, tasks, task, arg) must call task(arg, i) exactly
 * once for every i in [0, tasks), on any threads, in any order, and return only when every
 * call has returned. Results are bitwise those of oneTBB and of one thread. fn is called on
 * the thread that called normkit, possibly from several threads at once when ctx is
 * shared. Giving task i to the same thread in every pass (a static schedule) keeps data in
 * that core's cache between passes. A fn detected breaking its contract makes the call
 * fail with NK_ERROR_INVALID_ARGUMENT (outputs then undefined).
 * threads (>= 1): how many threads fn runs tasks on; it sets the number of chunks.
 * fn NULL: back to oneTBB with all threads of the caller's arena (user and threads ignored).
 * This and nk_context_set_num_threads replace each other's setting. */
typedef void (*nk_task_fn)(void* arg, int64_t i);
typedef void (*nk_parallel_for_fn)(void* user, int64_t tasks, nk_task_fn task, void* arg);
NK_API nk_status nk_context_set_parallel_for(nk_context* ctx, nk_parallel_for_fn fn, void* user,
                                             int32_t threads);

/* ---- Batch normalization ------------------------------------------------- */

#define NK_LAYOUT_NCS 0 /* channels-first: NC, NCL, NCHW, NCDHW: (n*C + c)*S + s */
#define NK_LAYOUT_NSC 1 /* channels-last: NLC, NHWC, NDHWC:     (n*S + s)*C + c */

/* Storage types of tensors (src, dst, residual, sum, diff_dst, diff_src). Scale, shift and
 * every statistic stay float32. Computation is float32 whatever the storage: a bf16 or
 * f16 value is converted exactly when read, a result rounded once (to nearest, ties to
 * even; overflow to infinity; NaN stays a quiet NaN) when written. */
#define NK_DTYPE_F32  0
#define NK_DTYPE_BF16 1 /* bfloat16: 1 sign, 8 exponent, 7 fraction bits */
#define NK_DTYPE_F16  2 /* IEEE binary16: 1 sign, 5 exponent, 10 fraction bits */

/* running = m*running + (1-m)*batch (Keras, ONNX). Default: (1-m)*running + m*batch (PyTorch). */
#define NK_BN_KERAS_MOMENTUM     0x1u
/* The running variance takes the population (biased) batch variance. Default: unbiased,
 * times count/(count-1), as PyTorch does. */
#define NK_BN_BIASED_RUNNING_VAR 0x2u
/* Backward treats save_mean/save_invstd as constants (frozen statistics):
 * diff_src = diff_dst * scale * invstd. */
#define NK_BN_USE_GLOBAL_STATS   0x4u
/* A ReLU fused after the normalization (after the residual add of the _v2 forwards):
 *   dst = relu(bn(src) [+ residual]),  relu(v) = v < 0 ? +0 : v (NaN stays NaN).
 * Every forward honours it (training, inference, nk_batch_norm_forward_from_partial).
 * Backward through it needs the forward's dst: nk_batch_norm_backward_v2 (the v1 backward
 * and the synchronized backward refuse the flag). */
#define NK_BN_FUSE_RELU          0x8u

typedef struct nk_batch_norm_desc {
    uint32_t struct_size; /* sizeof(nk_batch_norm_desc); fields are only ever appended */
    int32_t  layout;      /* NK_LAYOUT_* */
    int32_t  dtype;       /* NK_DTYPE_F32, NK_DTYPE_BF16 or NK_DTYPE_F16: src, residual, dst,
                             diff_dst, diff_src, diff_residual (per-channel arrays: float32) */
    int32_t  reserved0;   /* must be 0 (keeps the int64 fields 8-byte aligned everywhere) */
    int64_t  n;           /* batch */
    int64_t  c;           /* channels */
    int64_t  spatial;     /* product of the spatial dims; 1 for NC */
    float    epsilon;     /* > 0 and finite; default 1e-5 */
    float    momentum;    /* in [0, 1]; default 0.1. momentum = 1/k at step k gives the
                             cumulative average (PyTorch's momentum=None) */
    uint32_t flags;       /* NK_BN_* bits */
    uint32_t reserved1;   /* must be 0 */
} nk_batch_norm_desc;

/* Fills every field with its default for a float32 tensor of the given shape. */
NK_API nk_status nk_batch_norm_desc_init(nk_batch_norm_desc* desc, int32_t layout,
                                         int64_t n, int64_t c, int64_t spatial);

/* Training forward: batch statistics (biased variance), then
 *   dst = (src - mean) * invstd * scale + shift,   invstd = 1 / sqrt(var + epsilon).
 * scale / shift may be NULL (1 / 0). running_mean / running_var may be NULL (then not
 * updated; they go together or not at all). save_mean / save_invstd may be NULL.
 * dst may equal src (in place); any other overlap is an error. */
NK_API nk_status nk_batch_norm_forward_training(
    nk_context* ctx, const nk_batch_norm_desc* desc,
    const void* src, void* dst, const float* scale, const float* shift,
    float* running_mean, float* running_var,
    float* save_mean, float* save_invstd);

/* Inference forward with given statistics: dst = (src - mean) / sqrt(variance + eps) * scale + shift.
 * scale / shift may be NULL; mean and variance are required. dst may equal src. */
NK_API nk_status nk_batch_norm_forward_inference(
    nk_context* ctx, const nk_batch_norm_desc* desc,
    const void* src, void* dst, const float* scale, const float* shift,
    const float* mean, const float* variance);

/* Backward, with xhat = (src - save_mean) * save_invstd:
 *   diff_src   = scale * invstd * (diff_dst - mean(diff_dst) - xhat * mean(diff_dst * xhat))
 *   diff_scale = sum(diff_dst * xhat),  diff_shift = sum(diff_dst)       (per channel)
 * With NK_BN_USE_GLOBAL_STATS: diff_src = diff_dst * scale * invstd.
 * scale may be NULL (1). Each of diff_src, diff_scale, diff_shift may be NULL (not computed).
 * diff_src may equal diff_dst (in place); any other overlap is an error. */
NK_API nk_status nk_batch_norm_backward(
    nk_context* ctx, const nk_batch_norm_desc* desc,
    const void* src, const void* diff_dst, const float* scale,
    const float* save_mean, const float* save_invstd,
    void* diff_src, float* diff_scale, float* diff_shift);

/* The forwards with a residual, ResNet's relu(bn(conv(x)) + shortcut) in one pass:
 *   dst = bn(src) + residual, then the ReLU with NK_BN_FUSE_RELU.
 * residual: a tensor of src's shape and layout, or NULL (then these are the v1 functions).
 * In place: dst may equal src or residual; any other overlap is an error. */
NK_API nk_status nk_batch_norm_forward_training_v2(
    nk_context* ctx, const nk_batch_norm_desc* desc,
    const void* src, const void* residual, void* dst, const float* scale, const float* shift,
    float* running_mean, float* running_var,
    float* save_mean, float* save_invstd);
NK_API nk_status nk_batch_norm_forward_inference_v2(
    nk_context* ctx, const nk_batch_norm_desc* desc,
    const void* src, const void* residual, void* dst, const float* scale, const float* shift,
    const float* mean, const float* variance);

/* Backward through a fused forward. With NK_BN_FUSE_RELU, dst is the forward's output
 * (required) and masks diff_dst: g = dst <= 0 ? 0 : diff_dst (as torch's ReLU backward);
 * diff_src, diff_scale and diff_shift are nk_batch_norm_backward's with g for diff_dst,
 * and diff_residual, when not NULL, receives g (the residual's gradient). Without the
 * flag, dst and diff_residual must be NULL: this is nk_batch_norm_backward.
 * In place: diff_src or diff_residual (one of them) may equal diff_dst; any other overlap
 * is an error. */
NK_API nk_status nk_batch_norm_backward_v2(
    nk_context* ctx, const nk_batch_norm_desc* desc,
    const void* src, const void* diff_dst, const void* dst, const float* scale,
    const float* save_mean, const float* save_invstd,
    void* diff_src, void* diff_residual, float* diff_scale, float* diff_shift);

/* Folds inference batch norm into the linear or convolution layer before it, whose
 * weights are output-channel-major (channel c's weights_per_channel values at
 * c * weights_per_channel: Linear (C, in), Conv (C, in / groups, kh, kw)):
 *   s[c]                = scale[c] / sqrt(variance[c] + epsilon)
 *   folded_weight[c, i] = weight[c, i] * s[c]
 *   folded_bias[c]      = (bias[c] - mean[c]) * s[c] + shift[c]
 * so that the folded layer computes bn(layer(x)). desc gives C (desc->c) and epsilon; its
 * layout, n and spatial are not used. bias, scale and shift may be NULL (0, 1, 0). Each
 * value is computed in double and rounded once. In place: folded_weight may equal weight,
 * folded_bias may equal bias. */
NK_API nk_status nk_batch_norm_fold(
    const nk_batch_norm_desc* desc, const float* mean, const float* variance,
    const float* scale, const float* shift, int64_t weights_per_channel,
    const float* weight, const float* bias, float* folded_weight, float* folded_bias);

/* ---- Layer normalization and RMS normalization --------------------------- */

/* A tensor of `rows` rows of `features` contiguous values (row r at r * features): the
 * normalized dims flattened into features, the leading dims into rows. Every result of
 * a row (dst, sum, saved statistics, diff_src) depends on that row and the parameters
 * only: never on the other rows, on `rows`, the thread count or the ISA path. */
typedef struct nk_layer_norm_desc {
    uint32_t struct_size; /* sizeof(nk_layer_norm_desc); fields are only ever appended */
    int32_t  dtype;       /* NK_DTYPE_F32, NK_DTYPE_BF16 or NK_DTYPE_F16: src, residual, sum, dst,
                             diff_dst, diff_src (scale, shift, statistics: float32) */
    int64_t  rows;        /* M: product of the leading dims (tokens, batch x sequence) */
    int64_t  features;    /* K: product of the normalized dims */
    float    epsilon;     /* > 0 and finite; default 1e-5 */
    uint32_t flags;       /* none defined yet: must be 0 */
} nk_layer_norm_desc;

/* Fills every field with its default for a float32 tensor of the given shape. */
NK_API nk_status nk_layer_norm_desc_init(nk_layer_norm_desc* desc, int64_t rows, int64_t features);

/* x = src, or src + residual when residual is not NULL (then written to sum, if not NULL);
 *   dst = (x - mean) * invstd * scale + shift,  per row: mean and biased variance of x,
 *   invstd = 1 / sqrt(var + epsilon).
 * scale / shift: `features` values each, NULL for 1 / 0. save_mean / save_invstd: `rows`
 * values each, NULL when not wanted. With features == 1 every dst is shift.
 * In place: dst may equal src or residual, sum may equal src or residual; any other
 * overlap is an error. Backward after a residual forward takes `sum` as its src. */
NK_API nk_status nk_layer_norm_forward(
    nk_context* ctx, const nk_layer_norm_desc* desc,
    const void* src, const void* residual, void* sum, void* dst,
    const float* scale, const float* shift,
    float* save_mean, float* save_invstd);

/* With xhat = (src - save_mean) * save_invstd, g = diff_dst * scale, per row:
 *   diff_src   = save_invstd * (g - mean(g) - xhat * mean(g * xhat))
 *   diff_scale = sum over rows of diff_dst * xhat,  diff_shift = sum over rows of diff_dst.
 * scale may be NULL (1). Each of diff_src, diff_scale, diff_shift may be NULL (not
 * computed). diff_src may equal diff_dst; any other overlap is an error. */
NK_API nk_status nk_layer_norm_backward(
    nk_context* ctx, const nk_layer_norm_desc* desc,
    const void* src, const void* diff_dst, const float* scale,
    const float* save_mean, const float* save_invstd,
    void* diff_src, float* diff_scale, float* diff_shift);

/* RMS norm: dst = x * invrms * scale, invrms = 1 / sqrt(mean(x^2) + epsilon), per row,
 * with x, residual and sum as in nk_layer_norm_forward. save_invrms: `rows` values or NULL. */
NK_API nk_status nk_rms_norm_forward(
    nk_context* ctx, const nk_layer_norm_desc* desc,
    const void* src, const void* residual, void* sum, void* dst,
    const float* scale, float* save_invrms);

/* With g = diff_dst * scale, per row:
 *   diff_src   = invrms * (g - x * invrms^2 * mean(g * x)),
 *   diff_scale = sum over rows of diff_dst * x * invrms.
 * diff_src and diff_scale may be NULL; diff_src may equal diff_dst. */
NK_API nk_status nk_rms_norm_backward(
    nk_context* ctx, const nk_layer_norm_desc* desc,
    const void* src, const void* diff_dst, const float* scale, const float* save_invrms,
    void* diff_src, float* diff_scale);

/* ---- Group normalization and instance normalization ---------------------- */

/* An (N, C, S) tensor in NK_LAYOUT_NCS or NK_LAYOUT_NSC, its C channels in `groups`
 * groups of C / groups consecutive channels. Statistics per (sample n, group g) over
 * its C / groups channels x S values (biased variance), as torch.nn.functional.group_norm:
 *   dst = (src - mean) * invstd * scale[c] + shift[c],  invstd = 1 / sqrt(var + epsilon).
 * groups == C is instance norm; groups == 1 normalizes each sample over (C, S). A group
 * of one value (C / groups * S == 1) gives dst = shift. A group's results depend on its
 * own values and the parameters only: never on the other samples, the thread count or
 * the ISA path. */
typedef struct nk_group_norm_desc {
    uint32_t struct_size; /* sizeof(nk_group_norm_desc); fields are only ever appended */
    int32_t  layout;      /* NK_LAYOUT_NCS or NK_LAYOUT_NSC */
    int32_t  dtype;       /* NK_DTYPE_F32, NK_DTYPE_BF16 or NK_DTYPE_F16: src, dst, diff_dst,
                             diff_src (scale, shift, statistics: float32) */
    int32_t  reserved0;   /* must be 0 */
    int64_t  n, c, spatial;
    int64_t  groups;      /* >= 1 and divides c */
    float    epsilon;     /* > 0 and finite; default 1e-5 */
    uint32_t flags;       /* none defined yet: must be 0 */
} nk_group_norm_desc;

NK_API nk_status nk_group_norm_desc_init(nk_group_norm_desc* desc, int32_t layout, int64_t n, int64_t c,
                                         int64_t spatial, int64_t groups);

/* scale / shift: c values each, NULL for 1 / 0. save_mean / save_invstd: n * groups
 * values (index n * groups + g) each, NULL when not wanted. dst may equal src. */
NK_API nk_status nk_group_norm_forward(
    nk_context* ctx, const nk_group_norm_desc* desc,
    const void* src, void* dst, const float* scale, const float* shift,
    float* save_mean, float* save_invstd);

/* With xhat = (src - save_mean) * save_invstd and g = diff_dst * scale[c], per group:
 *   diff_src   = save_invstd * (g - mean(g) - xhat * mean(g * xhat))
 *   diff_scale = sum over n and s of diff_dst * xhat,  diff_shift = sum of diff_dst (per channel).
 * scale may be NULL (1). Each of diff_src, diff_scale, diff_shift may be NULL.
 * diff_src may equal diff_dst; any other overlap is an error. */
NK_API nk_status nk_group_norm_backward(
    nk_context* ctx, const nk_group_norm_desc* desc,
    const void* src, const void* diff_dst, const float* scale,
    const float* save_mean, const float* save_invstd,
    void* diff_src, float* diff_scale, float* diff_shift);

/* ---- Synchronized batch normalization (data-parallel, any transport) ----- *
 *
 * R processes each hold a slice of the global batch along n (any sizes, 0 included) and
 * want the statistics of the whole batch. Each one:
 *   1. nk_batch_norm_stats: its slice's statistics into `partial` (plain bytes);
 *   2. exchanges the partials (MPI_Allgather(v), sockets, files: normkit does no I/O);
 *   3. nk_batch_norm_merge_partials: every rank merges the same partials in the same order
 *      (rank order = the global batch order) into the same `merged` bytes;
 *   4. nk_batch_norm_forward_from_partial: normalizes its slice with the merged statistics.
 * Backward: nk_batch_norm_backward_reduce (the slice's sum(dy), sum(dy * (x - mean)) as
 * bytes), the same exchange and merge, then nk_batch_norm_backward_from_reduced.
 * Every rank's desc has the same layout, c, spatial, epsilon, momentum and flags; desc->n
 * is the rank's own batch.
 *
 * A partial is a 32-byte header (uint32 magic 0x4E4B424E, uint16 version 1, uint16 kind,
 * int32 dtype, uint32 0, int64 channels, int64 pieces), then each piece's count of values
 * per channel (int64[pieces]), then two arrays of double[pieces][channels]: mean and
 * M2 (sum of squared deviations) for statistics, sum(dy) and sum(dy * (x - mean))
 * for gradient sums. Native byte order: every rank runs on the same architecture (a
 * byte-swapped peer fails the magic check). Merging folds the pieces in the order given,
 * Chan et al.'s update for statistics, addition for sums: a fixed order, never an MPI
 * reduction operator (MPI may regroup the operands, and neither fold is associative in
 * floating point).
 *
 * samples_per_piece fixes the decomposition:
 *   0   one piece per slice: partials of 32 + 8 + 16 * c bytes. The result matches one
 *       nk_batch_norm_forward_training / nk_batch_norm_backward over the whole batch to
 *       about 1e-16 relative in the statistics (bitwise with one rank), but its bits
 *       depend on where the slices are cut.
 *   g   pieces of g consecutive samples of the slice (the last may be shorter):
 *       ceil(n / g) pieces, 32 + ceil(n / g) * (8 + 16 * c) bytes. A piece's statistics
 *       depend on its samples only, and the merge folds pieces in global order: the
 *       results are bitwise identical for every split of the batch whose slices start at
 *       multiples of g (every split with g = 1), any thread count and any ISA path.
 */

/* The kinds of partial (header field `kind`). */
#define NK_BN_PARTIAL_STATS 1 /* per channel: mean, M2 */
#define NK_BN_PARTIAL_GRADS 2 /* per channel: sum(dy), sum(dy * (x - save_mean)) */

/* *bytes = the size of the partial nk_batch_norm_stats / nk_batch_norm_backward_reduce
 * write for desc's slice (desc->n samples); samples_per_piece >= 0 (see above).
 * A merged partial holds one piece: nk_batch_norm_partial_size(desc, 0, &bytes). */
NK_API nk_status nk_batch_norm_partial_size(const nk_batch_norm_desc* desc, int64_t samples_per_piece,
                                            int64_t* bytes);

/* The slice's per-channel statistics (count, mean, M2), as nk_batch_norm_forward_training
 * computes them, into `partial` of exactly partial_size(desc, samples_per_piece) bytes. */
NK_API nk_status nk_batch_norm_stats(
    nk_context* ctx, const nk_batch_norm_desc* desc, int64_t samples_per_piece,
    const void* src, void* partial, int64_t partial_bytes);

/* Folds the pieces of partials[0], ..., partials[count - 1] (partial_bytes[i] bytes each,
 * all of one kind, desc->c channels and desc->dtype) in that order into `merged`, one
 * piece of merged_bytes = partial_size(desc, 0) bytes. Refused (nothing written): a size
 * that does not match its header, a bad magic or version, a kind, channel count or dtype
 * that differs, a negative count, a merged total above 2^53. `merged` may not overlap a
 * partial. */
NK_API nk_status nk_batch_norm_merge_partials(
    const nk_batch_norm_desc* desc, const void* const* partials, const int64_t* partial_bytes,
    int32_t count, void* merged, int64_t merged_bytes);

/* nk_batch_norm_forward_training of desc's slice with the statistics of `partial`
 * (NK_BN_PARTIAL_STATS, usually merged; several pieces are folded in order first):
 * dst, save_mean / save_invstd and the running statistics (the unbiased variance uses the
 * partial's total count) are those of a training forward over the whole batch. The
 * partial's total must be at least the slice's n * spatial and more than 1. */
NK_API nk_status nk_batch_norm_forward_from_partial(
    nk_context* ctx, const nk_batch_norm_desc* desc, const void* partial, int64_t partial_bytes,
    const void* src, void* dst, const float* scale, const float* shift,
    float* running_mean, float* running_var, float* save_mean, float* save_invstd);

/* The slice's per-channel sum(diff_dst) and sum(diff_dst * (src - save_mean)) into
 * `reduced` (NK_BN_PARTIAL_GRADS, partial_size(desc, samples_per_piece) bytes), save_mean
 * being the merged forward's. Merge the ranks' with nk_batch_norm_merge_partials. */
NK_API nk_status nk_batch_norm_backward_reduce(
    nk_context* ctx, const nk_batch_norm_desc* desc, int64_t samples_per_piece,
    const void* src, const void* diff_dst, const float* save_mean, void* reduced,
    int64_t reduced_bytes);

/* nk_batch_norm_backward of desc's slice with the gradient sums of `reduced` (usually
 * merged; several pieces are added in order): diff_src uses the global count (the
 * partial's total); diff_scale and diff_shift are the whole batch's (identical on every
 * rank: do not sum them across ranks again). Arguments otherwise as nk_batch_norm_backward. */
NK_API nk_status nk_batch_norm_backward_from_reduced(
    nk_context* ctx, const nk_batch_norm_desc* desc, const void* reduced, int64_t reduced_bytes,
    const void* src, const void* diff_dst, const float* scale,
    const float* save_mean, const float* save_invstd,
    void* diff_src, float* diff_scale, float* diff_shift);

#ifdef __cplusplus
} /* extern "C" */
#endif

#endif /* NORMKIT_NORMKIT_H */
