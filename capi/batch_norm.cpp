// Batch-norm entry points: every argument is checked here, before any output is
// touched; the planner below trusts what it is given.
#include "batch_norm/batch_norm.hpp"
#include "capi/errors.hpp"
#include "capi/validate.hpp"
#include "core/context.hpp"
#include "core/whole_tensors.hpp"

#include <cmath>
#include <cstddef>
#include <cstdio>
#include <cstring>
#include <new>
#include <vector>

namespace {

constexpr uint32_t kKnownFlags =
    NK_BN_KERAS_MOMENTUM | NK_BN_BIASED_RUNNING_VAR | NK_BN_USE_GLOBAL_STATS | NK_BN_FUSE_RELU;
// The descriptor as first published; later versions only append fields.
constexpr uint32_t kDescSizeV1 = sizeof(nk_batch_norm_desc);

// The batch-norm checks over the shared ones (capi/validate.hpp).
class Checker : public nk::ArgCheck {
public:
    nk::BatchNormProblem problem{};
    int64_t count = 0; // n * c * spatial
    int32_t problem_dtype = NK_DTYPE_F32;

    // Checks the descriptor; on success fills problem and count.
    bool desc(const nk_batch_norm_desc* d) {
        if (!header(d, d ? d->struct_size : 0, kDescSizeV1, "nk_batch_norm_desc_init")) return false;
        if (d->layout != NK_LAYOUT_NCS && d->layout != NK_LAYOUT_NSC)
            return fail(NK_ERROR_INVALID_ARGUMENT,
                        "desc->layout is %d: expected NK_LAYOUT_NCS (0) or NK_LAYOUT_NSC (1)", d->layout);
        if (!dtype(d->dtype)) return false;
        if (d->reserved0 != 0 || d->reserved1 != 0)
            return fail(NK_ERROR_INVALID_ARGUMENT, "desc->reserved0/reserved1 are %d/%u: must be 0",
                        d->reserved0, d->reserved1);
        if (d->n < 0 || d->c < 0 || d->spatial < 0)
            return fail(NK_ERROR_INVALID_SHAPE, "desc has n=%lld c=%lld spatial=%lld: sizes must be >= 0",
                        (long long)d->n, (long long)d->c, (long long)d->spatial);
        if (!product(d->n, d->c, d->spatial, element_bytes(d->dtype), &count))
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
        problem_dtype = d->dtype;
        return true;
    }

    size_t tensor_bytes() const { return size_t(count) * element_bytes(problem_dtype); }
    // The call's tensors as float32 (bf16 / f16 staged whole: core/whole_tensors.hpp).
    nk::WholeTensors floats(const nk::ExecConfig& config) const { return {config, problem_dtype, count}; }
    size_t channel_bytes() const { return size_t(problem.c) * sizeof(float); }
    nk::Buffer tensor(const char* name, const void* p, bool output) const { return {name, p, tensor_bytes(), output}; }
    nk::Buffer channels(const char* name, const void* p, bool output) const { return {name, p, channel_bytes(), output}; }

    bool relu() const { return (problem.flags & NK_BN_FUSE_RELU) != 0; }
    // `function` has no dst to mask its gradient with: it refuses NK_BN_FUSE_RELU.
    bool no_relu(const char* function) {
        if (!relu()) return true;
        return fail(NK_ERROR_INVALID_ARGUMENT,
                    "desc->flags has NK_BN_FUSE_RELU: %s cannot mask diff_dst without the forward's dst; use "
                    "nk_batch_norm_backward_v2",
                    function);
    }
};


// ---- The bytes of a partial (normkit.h, "Synchronized batch normalization") ----

constexpr uint32_t kPartialMagic = 0x4e4b424eu;
constexpr uint16_t kPartialVersion = 1;
// Merged totals stay exact in a double.
constexpr int64_t kMaxTotalCount = int64_t(1) << 53;

struct PartialHeader {
    uint32_t magic;
    uint16_t version;
    uint16_t kind; // NK_BN_PARTIAL_*
    int32_t dtype;
    uint32_t reserved;
    int64_t channels;
    int64_t pieces;
};
static_assert(sizeof(PartialHeader) == 32, "the partial header is 32 bytes on every ABI");

// Bytes of a partial of `pieces` pieces of c channels; false when they overflow.
bool partial_bytes_for(int64_t pieces, int64_t c, int64_t* bytes) {
    int64_t per_piece = 0, all = 0;
    if (__builtin_mul_overflow(c, int64_t(2 * sizeof(double)), &per_piece) ||
        __builtin_add_overflow(per_piece, int64_t(sizeof(int64_t)), &per_piece) ||
        __builtin_mul_overflow(pieces, per_piece, &all) ||
        __builtin_add_overflow(all, int64_t(sizeof(PartialHeader)), bytes) || *bytes > PTRDIFF_MAX)
        return false;
    return true;
}

// A partial read from caller bytes (any alignment): the header, and each piece's count.
struct PartialIn {
    PartialHeader h{};
    const unsigned char* bytes = nullptr;
    int64_t total = 0; // sum of the counts
    int64_t count(int64_t q) const {
        int64_t v;
        std::memcpy(&v, bytes + sizeof(PartialHeader) + size_t(q) * sizeof v, sizeof v);
        return v;
    }
    // The doubles of array `which` (0: a, 1: b) of every piece, copied into `to`.
    void values(int which, double* to) const {
        const size_t n = size_t(h.pieces * h.channels);
        if (n == 0) return;
        const size_t at = sizeof(PartialHeader) + size_t(h.pieces) * sizeof(int64_t) + size_t(which) * n * sizeof(double);
        std::memcpy(to, bytes + at, n * sizeof(double));
    }
};

const char* kind_name(uint32_t kind) {
    return kind == NK_BN_PARTIAL_STATS ? "NK_BN_PARTIAL_STATS" : kind == NK_BN_PARTIAL_GRADS ? "NK_BN_PARTIAL_GRADS" : "unknown";
}

// Checks a partial named `name` of `bytes` bytes: header, size, kind (`kind`, or any
// known one when 0), channels and dtype of desc, counts >= 0 and their total.
bool read_partial(Checker& check, const char* name, const void* p, int64_t bytes, uint16_t kind, PartialIn* out) {
    if (p == nullptr) return check.fail(NK_ERROR_NULL_POINTER, "%s is NULL", name);
    if (bytes < int64_t(sizeof(PartialHeader)))
        return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s has %lld bytes: a partial has a %zu-byte header at least", name,
                          (long long)bytes, sizeof(PartialHeader));
    PartialIn in;
    in.bytes = static_cast<const unsigned char*>(p);
    std::memcpy(&in.h, p, sizeof in.h);
    if (in.h.magic != kPartialMagic)
        return check.fail(NK_ERROR_INVALID_ARGUMENT,
                          "%s starts with 0x%08x, not the magic 0x%08x: not a batch-norm partial (or from a machine "
                          "of another byte order)",
                          name, in.h.magic, kPartialMagic);
    if (in.h.version != kPartialVersion)
        return check.fail(NK_ERROR_UNSUPPORTED, "%s has version %u: this library reads version %u", name,
                          unsigned(in.h.version), unsigned(kPartialVersion));
    if (in.h.kind != NK_BN_PARTIAL_STATS && in.h.kind != NK_BN_PARTIAL_GRADS)
        return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s has kind %u: expected NK_BN_PARTIAL_STATS (1) or NK_BN_PARTIAL_GRADS (2)",
                          name, unsigned(in.h.kind));
    if (kind != 0 && in.h.kind != kind)
        return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s holds %s: expected %s", name, kind_name(in.h.kind), kind_name(kind));
    if (in.h.dtype != check.problem_dtype)
        return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s has dtype %d: desc->dtype is %d", name, in.h.dtype,
                          check.problem_dtype);
    if (in.h.channels != check.problem.c)
        return check.fail(NK_ERROR_INVALID_SHAPE, "%s has %lld channels: desc->c is %lld", name, (long long)in.h.channels,
                          (long long)check.problem.c);
    int64_t want = 0;
    if (in.h.reserved != 0 || in.h.pieces < 0 || !partial_bytes_for(in.h.pieces, in.h.channels, &want))
        return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s has a corrupt header (pieces %lld, reserved %u)", name,
                          (long long)in.h.pieces, in.h.reserved);
    if (bytes != want)
        return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s has %lld bytes: its header (%lld pieces of %lld channels) needs %lld",
                          name, (long long)bytes, (long long)in.h.pieces, (long long)in.h.channels, (long long)want);
    for (int64_t q = 0; q < in.h.pieces; ++q) {
        const int64_t n = in.count(q);
        if (n < 0)
            return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s piece %lld has count %lld: counts must be >= 0", name,
                              (long long)q, (long long)n);
        if (n > kMaxTotalCount - in.total)
            return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s counts more than 2^53 values per channel", name);
        in.total += n;
    }
    *out = in;
    return true;
}

// Header and counts of the partial of desc's slice (`pieces` pieces).
void write_header(void* to, uint16_t kind, const Checker& check, int64_t pieces) {
    PartialHeader h{kPartialMagic, kPartialVersion, kind, check.problem_dtype, 0, check.problem.c, pieces};
    std::memcpy(to, &h, sizeof h);
}

// The pieces of a partial in aligned memory (the planner's view), and their writing out.
struct PiecesBuffer {
    std::vector<int64_t> count;
    std::vector<double> a, b;
    PiecesBuffer(int64_t pieces, int64_t c) : count(size_t(pieces)), a(size_t(pieces * c)), b(size_t(pieces * c)) {}
    nk::BatchNormPieces view() { return {int64_t(count.size()), count.data(), a.data(), b.data()}; }
    void load(const PartialIn& in) {
        for (size_t q = 0; q < count.size(); ++q) count[q] = in.count(int64_t(q));
        in.values(0, a.data());
        in.values(1, b.data());
    }
    void store(void* to) const {
        if (count.empty()) return; // (memcpy from an empty vector's null data is undefined)
        unsigned char* p = static_cast<unsigned char*>(to) + sizeof(PartialHeader);
        std::memcpy(p, count.data(), count.size() * sizeof(int64_t));
        p += count.size() * sizeof(int64_t);
        if (a.empty()) return;
        std::memcpy(p, a.data(), a.size() * sizeof(double));
        std::memcpy(p + a.size() * sizeof(double), b.data(), b.size() * sizeof(double));
    }
};

bool samples_per_piece_ok(Checker& check, int64_t g) {
    if (g >= 0) return true;
    return check.fail(NK_ERROR_INVALID_ARGUMENT, "samples_per_piece is %lld: must be >= 0 (0: one piece)", (long long)g);
}

// An output partial: present, exactly the size of `pieces` pieces.
bool partial_out(Checker& check, const char* name, const void* p, int64_t bytes, int64_t pieces) {
    int64_t want = 0;
    if (!partial_bytes_for(pieces, check.problem.c, &want))
        return check.fail(NK_ERROR_INVALID_SHAPE, "desc->c is %lld: a partial of it exceeds addressable memory",
                          (long long)check.problem.c);
    if (p == nullptr) return check.fail(NK_ERROR_NULL_POINTER, "%s is NULL", name);
    if (bytes != want)
        return check.fail(NK_ERROR_INVALID_ARGUMENT, "%s_bytes is %lld: expected %lld (nk_batch_norm_partial_size)", name,
                          (long long)bytes, (long long)want);
    return true;
}

// A merged partial counts the whole batch: at least this slice's values per channel.
bool covers_slice(Checker& check, const char* name, const PartialIn& in) {
    const int64_t local = check.problem.n * check.problem.s;
    if (in.total >= local) return true;
    return check.fail(NK_ERROR_INVALID_ARGUMENT,
                      "%s counts %lld values per channel, fewer than this slice's n*spatial=%lld: not its merge", name,
                      (long long)in.total, (long long)local);
}

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
    return nk_batch_norm_forward_training_v2(ctx, desc, src, nullptr, dst, scale, shift, running_mean, running_var,
                                             save_mean, save_invstd);
}

nk_status nk_batch_norm_forward_training_v2(nk_context* ctx, const nk_batch_norm_desc* desc, const void* src,
                                            const void* residual, void* dst, const float* scale, const float* shift,
                                            float* running_mean, float* running_var, float* save_mean,
                                            float* save_invstd) {
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
                           check.channels("save_invstd", save_invstd, true),
                           check.tensor("residual", residual, false)},
                          {{0, 1}, {8, 1}}))
        return check.status;
    const nk::BatchNormProblem& p = check.problem;
    if (check.count == 0) return NK_OK;
    if (p.n * p.s == 1)
        return nk::fail(NK_ERROR_INVALID_SHAPE,
                        "Expected more than 1 value per channel when training, got n=%lld spatial=%lld",
                        (long long)p.n, (long long)p.s);
    return nk::guarded([&] {
        const nk::ExecConfig config = nk::exec_config(ctx);
        nk::WholeTensors t = check.floats(config); // inputs first, then outputs (in place)
        const float* x = t.in(src);
        const float* r = t.in(residual);
        nk::batch_norm_forward_training(config, p, x, r, t.out(dst), scale, shift, running_mean, running_var,
                                        save_mean, save_invstd);
        t.commit();
        return NK_OK;
    });
}

nk_status nk_batch_norm_forward_inference(nk_context* ctx, const nk_batch_norm_desc* desc,
                                          const void* src, void* dst, const float* scale,
                                          const float* shift, const float* mean,
                                          const float* variance) {
    return nk_batch_norm_forward_inference_v2(ctx, desc, src, nullptr, dst, scale, shift, mean, variance);
}

nk_status nk_batch_norm_forward_inference_v2(nk_context* ctx, const nk_batch_norm_desc* desc, const void* src,
                                             const void* residual, void* dst, const float* scale, const float* shift,
                                             const float* mean, const float* variance) {
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
                           check.channels("variance", variance, false),
                           check.tensor("residual", residual, false)},
                          {{0, 1}, {6, 1}}))
        return check.status;
    if (check.count == 0) return NK_OK;
    return nk::guarded([&] {
        const nk::ExecConfig config = nk::exec_config(ctx);
        nk::WholeTensors t = check.floats(config);
        const float* x = t.in(src);
        const float* r = t.in(residual);
        nk::batch_norm_forward_inference(config, check.problem, x, r, t.out(dst), scale, shift, mean, variance);
        t.commit();
        return NK_OK;
    });
}

nk_status nk_batch_norm_backward(nk_context* ctx, const nk_batch_norm_desc* desc, const void* src,
                                 const void* diff_dst, const float* scale, const float* save_mean,
                                 const float* save_invstd, void* diff_src, float* diff_scale,
                                 float* diff_shift) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !check.no_relu("nk_batch_norm_backward")) return check.status;
    return nk_batch_norm_backward_v2(ctx, desc, src, diff_dst, nullptr, scale, save_mean, save_invstd, diff_src,
                                     nullptr, diff_scale, diff_shift);
}

nk_status nk_batch_norm_backward_v2(nk_context* ctx, const nk_batch_norm_desc* desc, const void* src,
                                    const void* diff_dst, const void* dst, const float* scale, const float* save_mean,
                                    const float* save_invstd, void* diff_src, void* diff_residual, float* diff_scale,
                                    float* diff_shift) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !check.required("src", src, check.tensor_bytes()) ||
        !check.required("diff_dst", diff_dst, check.tensor_bytes()) || !check.required("save_mean", save_mean, check.channel_bytes()) ||
        !check.required("save_invstd", save_invstd, check.channel_bytes()))
        return check.status;
    if (check.relu()) {
        if (!check.required("dst", dst, check.tensor_bytes())) return check.status;
    } else if (dst != nullptr || diff_residual != nullptr) {
        return nk::fail(NK_ERROR_INVALID_ARGUMENT,
                        "%s is given but desc->flags lacks NK_BN_FUSE_RELU: without the ReLU there is no mask, and "
                        "the residual's gradient is diff_dst itself",
                        dst != nullptr ? "dst" : "diff_residual");
    }
    if (!check.no_overlap({check.tensor("src", src, false),
                           check.tensor("diff_dst", diff_dst, false),
                           check.channels("scale", scale, false),
                           check.channels("save_mean", save_mean, false),
                           check.channels("save_invstd", save_invstd, false),
                           check.tensor("diff_src", diff_src, true),
                           check.channels("diff_scale", diff_scale, true),
                           check.channels("diff_shift", diff_shift, true),
                           check.tensor("dst", dst, false),
                           check.tensor("diff_residual", diff_residual, true)},
                          {{1, 5}, {1, 9}}))
        return check.status;
    if (check.count == 0) return NK_OK;
    return nk::guarded([&] {
        const nk::ExecConfig config = nk::exec_config(ctx);
        nk::WholeTensors t = check.floats(config);
        const float* x = t.in(src);
        const float* dy = t.in(diff_dst);
        const float* y = t.in(dst);
        float* dx = t.out(diff_src);
        nk::batch_norm_backward(config, check.problem, x, dy, y, scale, save_mean, save_invstd, dx, t.out(diff_residual),
                                diff_scale, diff_shift);
        t.commit();
        return NK_OK;
    });
}

nk_status nk_batch_norm_fold(const nk_batch_norm_desc* desc, const float* mean, const float* variance,
                             const float* scale, const float* shift, int64_t weights_per_channel,
                             const float* weight, const float* bias, float* folded_weight, float* folded_bias) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc)) return check.status;
    const int64_t C = check.problem.c;
    int64_t weights = 0;
    if (weights_per_channel < 0 || !check.product(C, weights_per_channel, 1, sizeof(float), &weights))
        return nk::fail(NK_ERROR_INVALID_SHAPE,
                        "weights_per_channel is %lld with desc->c=%lld: must be >= 0, the weights addressable",
                        (long long)weights_per_channel, (long long)C);
    const size_t wbytes = size_t(weights) * sizeof(float);
    if (!check.required("mean", mean, check.channel_bytes()) ||
        !check.required("variance", variance, check.channel_bytes()) || !check.required("weight", weight, wbytes) ||
        !check.required("folded_weight", folded_weight, wbytes) ||
        !check.required("folded_bias", folded_bias, check.channel_bytes()))
        return check.status;
    if (!check.no_overlap({check.channels("mean", mean, false),
                           check.channels("variance", variance, false),
                           check.channels("scale", scale, false),
                           check.channels("shift", shift, false),
                           {"weight", weight, wbytes, false},
                           check.channels("bias", bias, false),
                           {"folded_weight", folded_weight, wbytes, true},
                           check.channels("folded_bias", folded_bias, true)},
                          {{4, 6}, {5, 7}}))
        return check.status;
    const double eps = double(check.problem.epsilon);
    for (int64_t c = 0; c < C; ++c) {
        const double s = (scale ? double(scale[c]) : 1.0) / std::sqrt(double(variance[c]) + eps);
        const double b = bias ? double(bias[c]) : 0.0;
        folded_bias[c] = float((b - double(mean[c])) * s + (shift ? double(shift[c]) : 0.0));
        const float* w = weight + c * weights_per_channel;
        float* fw = folded_weight + c * weights_per_channel;
        for (int64_t i = 0; i < weights_per_channel; ++i) fw[i] = float(double(w[i]) * s);
    }
    return NK_OK;
}


nk_status nk_batch_norm_partial_size(const nk_batch_norm_desc* desc, int64_t samples_per_piece, int64_t* bytes) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !samples_per_piece_ok(check, samples_per_piece)) return check.status;
    if (bytes == nullptr) return nk::fail(NK_ERROR_NULL_POINTER, "bytes is NULL");
    int64_t b = 0;
    if (!partial_bytes_for(nk::batch_norm_piece_count(desc->n, samples_per_piece), desc->c, &b))
        return nk::fail(NK_ERROR_INVALID_SHAPE, "desc has n=%lld c=%lld: the partial exceeds addressable memory",
                        (long long)desc->n, (long long)desc->c);
    *bytes = b;
    return NK_OK;
}

nk_status nk_batch_norm_stats(nk_context* ctx, const nk_batch_norm_desc* desc, int64_t samples_per_piece,
                              const void* src, void* partial, int64_t partial_bytes) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !samples_per_piece_ok(check, samples_per_piece) ||
        !check.required("src", src, check.tensor_bytes()))
        return check.status;
    const int64_t pieces = nk::batch_norm_piece_count(desc->n, samples_per_piece);
    if (!partial_out(check, "partial", partial, partial_bytes, pieces) ||
        !check.no_overlap({check.tensor("src", src, false), {"partial", partial, size_t(partial_bytes), true}}, {}))
        return check.status;
    return nk::guarded([&] {
        PiecesBuffer out(pieces, check.problem.c);
        const nk::ExecConfig config = nk::exec_config(ctx);
        nk::WholeTensors t = check.floats(config);
        nk::batch_norm_piece_moments(config, check.problem, samples_per_piece, t.in(src), out.view());
        write_header(partial, NK_BN_PARTIAL_STATS, check, pieces);
        out.store(partial);
        return NK_OK;
    });
}

nk_status nk_batch_norm_merge_partials(const nk_batch_norm_desc* desc, const void* const* partials,
                                       const int64_t* partial_bytes, int32_t count, void* merged,
                                       int64_t merged_bytes) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc)) return check.status;
    if (partials == nullptr) return nk::fail(NK_ERROR_NULL_POINTER, "partials is NULL");
    if (partial_bytes == nullptr) return nk::fail(NK_ERROR_NULL_POINTER, "partial_bytes is NULL");
    if (count < 1) return nk::fail(NK_ERROR_INVALID_ARGUMENT, "count is %d: merge at least one partial", count);
    if (!partial_out(check, "merged", merged, merged_bytes, 1)) return check.status;
    std::vector<PartialIn> in;
    int64_t total = 0;
    uint16_t kind = 0;
    char name[48];
    try {
        in.resize(size_t(count));
    } catch (const std::bad_alloc&) {
        return nk::fail(NK_ERROR_OUT_OF_MEMORY, "out of memory for scratch buffers");
    }
    for (int32_t i = 0; i < count; ++i) {
        std::snprintf(name, sizeof name, "partials[%d]", i);
        if (!read_partial(check, name, partials[i], partial_bytes[i], kind, &in[size_t(i)])) return check.status;
        kind = in[size_t(i)].h.kind; // the first one's kind is every one's
        if (in[size_t(i)].total > kMaxTotalCount - total)
            return nk::fail(NK_ERROR_INVALID_ARGUMENT, "partials count more than 2^53 values per channel in all");
        total += in[size_t(i)].total;
        const uintptr_t a = uintptr_t(partials[i]), b = uintptr_t(merged);
        if (a < b + uintptr_t(merged_bytes) && b < a + uintptr_t(partial_bytes[i]))
            return nk::fail(NK_ERROR_INVALID_ARGUMENT, "merged and %s overlap: buffers must be disjoint", name);
    }
    return nk::guarded([&] {
        const int64_t C = check.problem.c;
        int64_t pieces = 0;
        for (const PartialIn& p : in) pieces += p.h.pieces;
        // Every piece of every partial, in order, as one partial.
        PiecesBuffer all(pieces, C);
        int64_t q = 0;
        for (const PartialIn& p : in) {
            for (int64_t i = 0; i < p.h.pieces; ++i) all.count[size_t(q + i)] = p.count(i);
            p.values(0, all.a.data() + q * C);
            p.values(1, all.b.data() + q * C);
            q += p.h.pieces;
        }
        PiecesBuffer out(1, C);
        if (kind == NK_BN_PARTIAL_STATS) {
            nk::batch_norm_merge_moments(nk::exec_config(nullptr), C, all.view(), out.a.data(), out.b.data());
        } else {
            // The addition order of BackwardEpilogue.
            for (int64_t k = 0; k < pieces; ++k)
                for (int64_t c = 0; c < C; ++c) {
                    out.a[size_t(c)] = out.a[size_t(c)] + all.a[size_t(k * C + c)];
                    out.b[size_t(c)] = out.b[size_t(c)] + all.b[size_t(k * C + c)];
                }
        }
        out.count[0] = total;
        write_header(merged, kind, check, 1);
        out.store(merged);
        return NK_OK;
    });
}

nk_status nk_batch_norm_forward_from_partial(nk_context* ctx, const nk_batch_norm_desc* desc, const void* partial,
                                             int64_t partial_bytes, const void* src, void* dst,
                                             const float* scale, const float* shift, float* running_mean,
                                             float* running_var, float* save_mean, float* save_invstd) {
    nk::clear_error();
    Checker check;
    PartialIn in;
    if (!check.desc(desc) || !read_partial(check, "partial", partial, partial_bytes, NK_BN_PARTIAL_STATS, &in) ||
        !check.required("src", src, check.tensor_bytes()) || !check.required("dst", dst, check.tensor_bytes()))
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
                           check.channels("save_invstd", save_invstd, true),
                           {"partial", partial, size_t(partial_bytes), false}},
                          {{0, 1}}))
        return check.status;
    const nk::BatchNormProblem& p = check.problem;
    if (!covers_slice(check, "partial", in)) return check.status;
    if (p.c == 0 || in.total == 0) return NK_OK;
    if (in.total == 1)
        return nk::fail(NK_ERROR_INVALID_SHAPE,
                        "Expected more than 1 value per channel when training, partial counts 1 in the whole batch");
    return nk::guarded([&] {
        PiecesBuffer pieces(in.h.pieces, p.c);
        pieces.load(in);
        const nk::ExecConfig config = nk::exec_config(ctx);
        nk::WholeTensors t = check.floats(config);
        const float* x = t.in(src);
        nk::batch_norm_forward_from_pieces(config, p, pieces.view(), x, t.out(dst), scale, shift, running_mean,
                                           running_var, save_mean, save_invstd);
        t.commit();
        return NK_OK;
    });
}

nk_status nk_batch_norm_backward_reduce(nk_context* ctx, const nk_batch_norm_desc* desc, int64_t samples_per_piece,
                                        const void* src, const void* diff_dst, const float* save_mean,
                                        void* reduced, int64_t reduced_bytes) {
    nk::clear_error();
    Checker check;
    if (!check.desc(desc) || !check.no_relu("nk_batch_norm_backward_reduce") ||
        !samples_per_piece_ok(check, samples_per_piece) || !check.required("src", src, check.tensor_bytes()) ||
        !check.required("diff_dst", diff_dst, check.tensor_bytes()) ||
        !check.required("save_mean", save_mean, check.channel_bytes()))
        return check.status;
    const int64_t pieces = nk::batch_norm_piece_count(desc->n, samples_per_piece);
    if (!partial_out(check, "reduced", reduced, reduced_bytes, pieces) ||
        !check.no_overlap({check.tensor("src", src, false), check.tensor("diff_dst", diff_dst, false),
                           check.channels("save_mean", save_mean, false),
                           {"reduced", reduced, size_t(reduced_bytes), true}},
                          {}))
        return check.status;
    return nk::guarded([&] {
        PiecesBuffer out(pieces, check.problem.c);
        const nk::ExecConfig config = nk::exec_config(ctx);
        nk::WholeTensors t = check.floats(config);
        const float* x = t.in(src);
        nk::batch_norm_piece_grad_sums(config, check.problem, samples_per_piece, x, t.in(diff_dst), save_mean,
                                       out.view());
        write_header(reduced, NK_BN_PARTIAL_GRADS, check, pieces);
        out.store(reduced);
        return NK_OK;
    });
}

nk_status nk_batch_norm_backward_from_reduced(nk_context* ctx, const nk_batch_norm_desc* desc, const void* reduced,
                                              int64_t reduced_bytes, const void* src, const void* diff_dst,
                                              const float* scale, const float* save_mean, const float* save_invstd,
                                              void* diff_src, float* diff_scale, float* diff_shift) {
    nk::clear_error();
    Checker check;
    PartialIn in;
    if (!check.desc(desc) || !check.no_relu("nk_batch_norm_backward_from_reduced") ||
        !read_partial(check, "reduced", reduced, reduced_bytes, NK_BN_PARTIAL_GRADS, &in) ||
        !check.required("src", src, check.tensor_bytes()) || !check.required("diff_dst", diff_dst, check.tensor_bytes()) ||
        !check.required("save_mean", save_mean, check.channel_bytes()) ||
        !check.required("save_invstd", save_invstd, check.channel_bytes()))
        return check.status;
    if (!check.no_overlap({check.tensor("src", src, false),
                           check.tensor("diff_dst", diff_dst, false),
                           check.channels("scale", scale, false),
                           check.channels("save_mean", save_mean, false),
                           check.channels("save_invstd", save_invstd, false),
                           check.tensor("diff_src", diff_src, true),
                           check.channels("diff_scale", diff_scale, true),
                           check.channels("diff_shift", diff_shift, true),
                           {"reduced", reduced, size_t(reduced_bytes), false}},
                          {{1, 5}}))
        return check.status;
    const nk::BatchNormProblem& p = check.problem;
    if (!covers_slice(check, "reduced", in)) return check.status;
    if (p.c == 0 || in.total == 0) return NK_OK;
    return nk::guarded([&] {
        PiecesBuffer pieces(in.h.pieces, p.c);
        pieces.load(in);
        const nk::ExecConfig config = nk::exec_config(ctx);
        nk::WholeTensors t = check.floats(config);
        const float* x = t.in(src);
        const float* dy = t.in(diff_dst);
        nk::batch_norm_backward_from_pieces(config, p, pieces.view(), x, dy, scale, save_mean, save_invstd,
                                            t.out(diff_src), diff_scale, diff_shift);
        t.commit();
        return NK_OK;
    });
}

} // extern "C"
