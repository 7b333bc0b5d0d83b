// Every documented way to call the C ABI wrongly, and the edge cases that must work.
//
// The error table: each row starts from a valid call (2x3x4 tensor, every buffer in
// its own slot of one arena), changes one thing, and expects
//   - the status the validation in capi/ documents,
//   - nk_last_error_message() naming the argument at fault (as a whole word),
//   - not one byte of the arena written (inputs, outputs and the slack between
//     them start as a canary pattern or known data and are compared bytewise),
//   - desc_init's target and the context's ISA cap unchanged.
// Fake pointers near the top of the address space check that a buffer that wraps is
// rejected before anything is read: reading one would crash the test.
#include "test_util.hpp"

#include <cctype>
#include <cfloat>
#include <cstddef>
#include <cstdint>
#include <limits>
#include <string>
#include <thread>

#include <sys/mman.h>
#include <unistd.h>

namespace {

constexpr uint32_t kCanaryBits = 0x7fc0deadu; // a quiet NaN no kernel produces
constexpr unsigned char kDescCanary = 0xa5;

float canary() {
    float f;
    std::memcpy(&f, &kCanaryBits, sizeof f);
    return f;
}

bool all_canary(const float* p, size_t count) {
    for (size_t i = 0; i < count; ++i)
        if (std::memcmp(p + i, &kCanaryBits, sizeof(float)) != 0) return false;
    return true;
}

// True when `name` occurs in `message` as a whole identifier ("src" is not found in
// "diff_src", "n" is found in "n=-1").
bool names(const std::string& message, const std::string& name) {
    auto ident = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; };
    for (size_t at = message.find(name); at != std::string::npos; at = message.find(name, at + 1)) {
        const bool left = at == 0 || !ident(message[at - 1]);
        const size_t end = at + name.size();
        const bool right = end == message.size() || !ident(message[end]);
        if (left && right) return true;
    }
    return false;
}

// A pointer whose buffer would run past the top of the address space: never dereferenceable.
template <class T>
T* top_of_memory(uintptr_t below_top) {
    return reinterpret_cast<T*>(std::numeric_limits<uintptr_t>::max() - below_top + 1);
}
// 96 bytes (a 2x3x4 tensor) from here wrap; 64-byte aligned.
void* wrapping_tensor() { return top_of_memory<void>(64); }
// 12 bytes (3 channels) from here wrap; 8-byte aligned.
float* wrapping_channels() { return top_of_memory<float>(8); }

enum class Api {
    training, inference, backward, desc_init, context_create, set_num_threads, set_max_isa, set_parallel_for,
    training_v2, inference_v2, backward_v2, fold
};

const char* api_name(Api api) {
    switch (api) {
    case Api::training: return "nk_batch_norm_forward_training";
    case Api::inference: return "nk_batch_norm_forward_inference";
    case Api::backward: return "nk_batch_norm_backward";
    case Api::desc_init: return "nk_batch_norm_desc_init";
    case Api::context_create: return "nk_context_create";
    case Api::set_num_threads: return "nk_context_set_num_threads";
    case Api::set_max_isa: return "nk_context_set_max_isa";
    case Api::set_parallel_for: return "nk_context_set_parallel_for";
    case Api::training_v2: return "nk_batch_norm_forward_training_v2";
    case Api::inference_v2: return "nk_batch_norm_forward_inference_v2";
    case Api::backward_v2: return "nk_batch_norm_backward_v2";
    case Api::fold: return "nk_batch_norm_fold";
    }
    return "?";
}

// A host parallel-for that runs the tasks in order and counts its calls (user: an int).
void counting_parallel_for(void* user, int64_t tasks, nk_task_fn task, void* arg) {
    ++*static_cast<int*>(user);
    for (int64_t i = 0; i < tasks; ++i) task(arg, i);
}

// Every buffer a call can name has a slot in the arena.
enum Slot {
    kSrc, kDst, kScale, kShift, kRunningMean, kRunningVar, kSaveMean, kSaveInvstd,
    kDiffDst, kDiffSrc, kDiffScale, kDiffShift, kMean, kVariance,
    kResidual, kFwdDst, kDiffResidual, kWeight, kBias, kFoldedWeight, kFoldedBias, kSlots
};
constexpr int64_t kWeightsPerChannel = 5; // fold: 15 weights
constexpr size_t kSlotFloats = 64; // > the 24-float tensor: slack between slots is checked too
constexpr int64_t kN = 2, kC = 3, kS = 4;
constexpr size_t kCount = size_t(kN * kC * kS);

// One call with all of its arguments; starts valid. Not copyable: it points into itself.
struct Call {
    Api api;
    std::vector<float> arena;
    alignas(8) unsigned char desc_bytes[256] = {}; // room for a "newer, larger" descriptor
    alignas(8) unsigned char init_bytes[sizeof(nk_batch_norm_desc)];
    nk_context* owned = nullptr; // the context the context API rows act on

    // batch-norm arguments
    nk_context* ctx = nullptr;
    const nk_batch_norm_desc* desc;
    const void* src;
    void* dst;
    const float* scale;
    const float* shift;
    float* running_mean;
    float* running_var;
    float* save_mean;
    float* save_invstd;
    const float* mean;
    const float* variance;
    const void* diff_dst;
    void* diff_src;
    float* diff_scale;
    float* diff_shift;
    const float* saved_mean;   // backward's save_mean input
    const float* saved_invstd; // backward's save_invstd input
    // the fusions (the _v2 calls start with NK_BN_FUSE_RELU) and nk_batch_norm_fold
    const void* residual;
    const void* fwd_dst; // backward_v2's dst: the forward's output
    void* diff_residual;
    int64_t weights_per_channel = kWeightsPerChannel;
    const float* weight;
    const float* bias;
    float* folded_weight;
    float* folded_bias;
    // nk_batch_norm_desc_init arguments
    nk_batch_norm_desc* init_target;
    int32_t layout = NK_LAYOUT_NCS;
    int64_t n = kN, c = kC, s = kS;
    // context API arguments
    nk_context** create_target;
    nk_context* created = nullptr;
    nk_context* target;
    int32_t value = 1;
    nk_parallel_for_fn parallel_for = counting_parallel_for;
    int parallel_for_calls = 0;

    explicit Call(Api a) : api(a), arena(kSlots * kSlotFloats, canary()) {
        nk_batch_norm_desc& dd = d();
        REQUIRE(nk_batch_norm_desc_init(&dd, NK_LAYOUT_NCS, kN, kC, kS) == NK_OK);
        desc = &dd;
        auto fill = [&](Slot slot, const std::vector<float>& v) { std::copy(v.begin(), v.end(), at(slot)); };
        fill(kSrc, test::normal(kCount, 0.5, 2.0, 11));
        fill(kDiffDst, test::normal(kCount, 0.0, 1.0, 12));
        fill(kScale, test::uniform(kC, 0.5, 1.5, 13));
        fill(kShift, test::uniform(kC, -1.0, 1.0, 14));
        fill(kRunningMean, test::uniform(kC, -0.5, 0.5, 15));
        fill(kRunningVar, test::uniform(kC, 0.5, 2.0, 16));
        fill(kMean, test::uniform(kC, -0.5, 0.5, 17));
        fill(kVariance, test::uniform(kC, 0.5, 2.0, 18));
        // Backward reads save_mean/save_invstd: give its inputs values, in their own slots.
        fill(kSaveMean, test::uniform(kC, -0.5, 0.5, 19));
        fill(kSaveInvstd, test::uniform(kC, 0.5, 2.0, 20));
        fill(kResidual, test::normal(kCount, 0.0, 1.0, 21));
        std::vector<float> fwd = test::normal(kCount, 0.0, 1.0, 22);
        for (float& v : fwd) v = std::max(v, 0.0f);
        fill(kFwdDst, fwd);
        fill(kWeight, test::normal(size_t(kC * kWeightsPerChannel), 0.0, 1.0, 23));
        fill(kBias, test::normal(size_t(kC), 0.0, 1.0, 24));
        if (api == Api::training_v2 || api == Api::inference_v2 || api == Api::backward_v2) dd.flags = NK_BN_FUSE_RELU;
        residual = at(kResidual);
        fwd_dst = at(kFwdDst);
        diff_residual = at(kDiffResidual);
        weight = at(kWeight);
        bias = at(kBias);
        folded_weight = at(kFoldedWeight);
        folded_bias = at(kFoldedBias);
        src = at(kSrc);
        dst = at(kDst);
        scale = at(kScale);
        shift = at(kShift);
        running_mean = at(kRunningMean);
        running_var = at(kRunningVar);
        mean = at(kMean);
        variance = at(kVariance);
        diff_dst = at(kDiffDst);
        diff_src = at(kDiffSrc);
        diff_scale = at(kDiffScale);
        diff_shift = at(kDiffShift);
        if (api == Api::backward || api == Api::backward_v2) {
            saved_mean = at(kSaveMean);
            saved_invstd = at(kSaveInvstd);
            save_mean = nullptr;
            save_invstd = nullptr;
        } else {
            // Training writes save_mean/save_invstd: the slots start as canaries.
            std::fill(at(kSaveMean), at(kSaveMean) + kSlotFloats, canary());
            std::fill(at(kSaveInvstd), at(kSaveInvstd) + kSlotFloats, canary());
            save_mean = at(kSaveMean);
            save_invstd = at(kSaveInvstd);
            saved_mean = nullptr;
            saved_invstd = nullptr;
        }
        std::memset(init_bytes, kDescCanary, sizeof init_bytes);
        init_target = reinterpret_cast<nk_batch_norm_desc*>(init_bytes);
        create_target = &created;
        REQUIRE(nk_context_create(&owned) == NK_OK);
        // ISA cap scalar: a bad set_max_isa that still stored its value would change nk_context_isa.
        REQUIRE(nk_context_set_max_isa(owned, NK_ISA_SCALAR) == NK_OK);
        target = owned;
    }
    ~Call() {
        nk_context_destroy(owned);
        nk_context_destroy(created);
    }
    Call(const Call&) = delete;
    Call& operator=(const Call&) = delete;

    float* at(Slot slot) { return arena.data() + size_t(slot) * kSlotFloats; }
    nk_batch_norm_desc& d() { return *reinterpret_cast<nk_batch_norm_desc*>(desc_bytes); }

    nk_status run() {
        switch (api) {
        case Api::training:
            return nk_batch_norm_forward_training(ctx, desc, src, dst, scale, shift, running_mean, running_var,
                                                  save_mean, save_invstd);
        case Api::inference:
            return nk_batch_norm_forward_inference(ctx, desc, src, dst, scale, shift, mean, variance);
        case Api::backward:
            return nk_batch_norm_backward(ctx, desc, src, diff_dst, scale, saved_mean, saved_invstd, diff_src,
                                          diff_scale, diff_shift);
        case Api::desc_init: return nk_batch_norm_desc_init(init_target, layout, n, c, s);
        case Api::context_create: return nk_context_create(create_target);
        case Api::set_num_threads: return nk_context_set_num_threads(target, value);
        case Api::set_max_isa: return nk_context_set_max_isa(target, value);
        case Api::set_parallel_for:
            return nk_context_set_parallel_for(target, parallel_for, &parallel_for_calls, value);
        case Api::training_v2:
            return nk_batch_norm_forward_training_v2(ctx, desc, src, residual, dst, scale, shift, running_mean,
                                                     running_var, save_mean, save_invstd);
        case Api::inference_v2:
            return nk_batch_norm_forward_inference_v2(ctx, desc, src, residual, dst, scale, shift, mean, variance);
        case Api::backward_v2:
            return nk_batch_norm_backward_v2(ctx, desc, src, diff_dst, fwd_dst, scale, saved_mean, saved_invstd,
                                             diff_src, diff_residual, diff_scale, diff_shift);
        case Api::fold:
            return nk_batch_norm_fold(desc, mean, variance, scale, shift, weights_per_channel, weight, bias,
                                      folded_weight, folded_bias);
        }
        return -1;
    }
};

struct Row {
    const char* what;
    Api api;
    void (*change)(Call&);
    nk_status status;
    const char* arg;  // the message must name this argument...
    const char* arg2; // ...and this one, when not NULL (the other buffer of an overlap)
};

constexpr int64_t kI64Max = std::numeric_limits<int64_t>::max();
constexpr int64_t kI64Min = std::numeric_limits<int64_t>::min();
constexpr int64_t kMaxCount = int64_t(PTRDIFF_MAX / sizeof(float)); // the largest addressable float tensor
const float kNaN = std::numeric_limits<float>::quiet_NaN();
const float kInf = std::numeric_limits<float>::infinity();

using A = Api;
constexpr nk_status kNull = NK_ERROR_NULL_POINTER, kShape = NK_ERROR_INVALID_SHAPE,
                    kArg = NK_ERROR_INVALID_ARGUMENT, kUnsupported = NK_ERROR_UNSUPPORTED;

const Row kRows[] = {
    // ---- nk_batch_norm_forward_training ----------------------------------------------
    {"desc NULL", A::training, [](Call& c) { c.desc = nullptr; }, kNull, "desc", nullptr},
    {"src NULL", A::training, [](Call& c) { c.src = nullptr; }, kNull, "src", nullptr},
    {"dst NULL", A::training, [](Call& c) { c.dst = nullptr; }, kNull, "dst", nullptr},
    {"dst NULL, with a context", A::training, [](Call& c) { c.ctx = c.owned; c.dst = nullptr; }, kNull, "dst", nullptr},
    {"running_mean without running_var", A::training, [](Call& c) { c.running_var = nullptr; }, kNull,
     "running_var", nullptr},
    {"running_var without running_mean", A::training, [](Call& c) { c.running_mean = nullptr; }, kNull,
     "running_mean", nullptr},
    {"n negative", A::training, [](Call& c) { c.d().n = -1; }, kShape, "n", nullptr},
    {"c negative", A::training, [](Call& c) { c.d().c = -3; }, kShape, "c", nullptr},
    {"spatial negative", A::training, [](Call& c) { c.d().spatial = -4; }, kShape, "spatial", nullptr},
    {"n INT64_MIN", A::training, [](Call& c) { c.d().n = kI64Min; }, kShape, "n", nullptr},
    {"n*c overflows int64", A::training, [](Call& c) { c.d().n = int64_t(1) << 32; c.d().c = int64_t(1) << 32; },
     kShape, "n", "c"},
    {"n*c*spatial overflows int64 (n*c does not)", A::training,
     [](Call& c) { c.d().n = int64_t(1) << 31; c.d().c = int64_t(1) << 31; c.d().spatial = 4; }, kShape,
     "spatial", nullptr},
    {"n, c, spatial INT64_MAX", A::training,
     [](Call& c) { c.d().n = kI64Max; c.d().c = kI64Max; c.d().spatial = kI64Max; }, kShape, "spatial", nullptr},
    {"count*4 > PTRDIFF_MAX", A::training, [](Call& c) { c.d().n = kMaxCount + 1; c.d().c = 1; c.d().spatial = 1; },
     kShape, "n", nullptr},
    {"count*4 > PTRDIFF_MAX via spatial", A::training,
     [](Call& c) { c.d().n = 2; c.d().c = 2; c.d().spatial = (kMaxCount / 4) + 1; }, kShape, "spatial", nullptr},
    {"src wraps the address space", A::training, [](Call& c) { c.src = wrapping_tensor(); }, kShape, "src", nullptr},
    {"dst wraps the address space", A::training, [](Call& c) { c.dst = wrapping_tensor(); }, kShape, "dst", nullptr},
    {"scale wraps the address space", A::training, [](Call& c) { c.scale = wrapping_channels(); }, kShape, "scale",
     nullptr},
    {"save_invstd wraps the address space", A::training, [](Call& c) { c.save_invstd = wrapping_channels(); },
     kShape, "save_invstd", nullptr},
    {"layout 2", A::training, [](Call& c) { c.d().layout = 2; }, kArg, "layout", nullptr},
    {"layout -1", A::training, [](Call& c) { c.d().layout = -1; }, kArg, "layout", nullptr},
    {"dtype 3 (after F16)", A::training, [](Call& c) { c.d().dtype = 3; }, kArg, "dtype", nullptr},
    {"dtype -1", A::training, [](Call& c) { c.d().dtype = -1; }, kArg, "dtype", nullptr},
    {"flags bit 4", A::training, [](Call& c) { c.d().flags = 0x10u; }, kArg, "flags", nullptr},
    {"flags bit 31 with known bits", A::training,
     [](Call& c) { c.d().flags = NK_BN_KERAS_MOMENTUM | 0x80000000u; }, kArg, "flags", nullptr},
    {"struct_size 0", A::training, [](Call& c) { c.d().struct_size = 0; }, kArg, "struct_size", nullptr},
    {"struct_size 4", A::training, [](Call& c) { c.d().struct_size = 4; }, kArg, "struct_size", nullptr},
    {"struct_size one byte short", A::training,
     [](Call& c) { c.d().struct_size = uint32_t(sizeof(nk_batch_norm_desc) - 1); }, kArg, "struct_size", nullptr},
    {"struct_size larger, a newer field set", A::training,
     [](Call& c) {
         c.d().struct_size = uint32_t(sizeof(nk_batch_norm_desc) + 8);
         c.desc_bytes[sizeof(nk_batch_norm_desc) + 3] = 1;
     },
     kUnsupported, "struct_size", nullptr},
    {"struct_size larger by one byte, that byte set", A::training,
     [](Call& c) {
         c.d().struct_size = uint32_t(sizeof(nk_batch_norm_desc) + 1);
         c.desc_bytes[sizeof(nk_batch_norm_desc)] = 0x80;
     },
     kUnsupported, "struct_size", nullptr},
    {"reserved0 nonzero", A::training, [](Call& c) { c.d().reserved0 = 1; }, kArg, "reserved0", nullptr},
    {"reserved0 negative", A::training, [](Call& c) { c.d().reserved0 = -1; }, kArg, "reserved0", nullptr},
    {"reserved1 nonzero", A::training, [](Call& c) { c.d().reserved1 = 0x100u; }, kArg, "reserved1", nullptr},
    {"epsilon 0", A::training, [](Call& c) { c.d().epsilon = 0.0f; }, kArg, "epsilon", nullptr},
    {"epsilon -0", A::training, [](Call& c) { c.d().epsilon = -0.0f; }, kArg, "epsilon", nullptr},
    {"epsilon negative", A::training, [](Call& c) { c.d().epsilon = -1e-5f; }, kArg, "epsilon", nullptr},
    {"epsilon NaN", A::training, [](Call& c) { c.d().epsilon = kNaN; }, kArg, "epsilon", nullptr},
    {"epsilon +Inf", A::training, [](Call& c) { c.d().epsilon = kInf; }, kArg, "epsilon", nullptr},
    {"momentum negative", A::training, [](Call& c) { c.d().momentum = -0.01f; }, kArg, "momentum", nullptr},
    {"momentum above 1", A::training, [](Call& c) { c.d().momentum = 1.0001f; }, kArg, "momentum", nullptr},
    {"momentum NaN", A::training, [](Call& c) { c.d().momentum = kNaN; }, kArg, "momentum", nullptr},
    {"momentum +Inf", A::training, [](Call& c) { c.d().momentum = kInf; }, kArg, "momentum", nullptr},
    {"dst = src + 1 element", A::training, [](Call& c) { c.dst = c.at(kSrc) + 1; }, kArg, "src", "dst"},
    {"dst = src - 1 element", A::training,
     [](Call& c) {
         c.src = c.at(kDst) + 1; // src inside dst's slot, one element after dst
         std::copy(c.at(kSrc), c.at(kSrc) + kCount, c.at(kDst) + 1);
     },
     kArg, "src", "dst"},
    {"scale inside dst", A::training, [](Call& c) { c.scale = static_cast<float*>(c.dst) + 5; }, kArg, "dst",
     "scale"},
    {"dst == shift", A::training, [](Call& c) { c.dst = c.at(kShift); }, kArg, "dst", "shift"},
    {"running_mean == running_var", A::training, [](Call& c) { c.running_var = c.running_mean; }, kArg,
     "running_mean", "running_var"},
    {"running_var = running_mean + 2", A::training, [](Call& c) { c.running_var = c.running_mean + 2; }, kArg,
     "running_mean", "running_var"},
    {"save_invstd = save_mean + 1", A::training, [](Call& c) { c.save_invstd = c.save_mean + 1; }, kArg,
     "save_mean", "save_invstd"},
    {"save_mean inside src", A::training, [](Call& c) { c.save_mean = c.at(kSrc) + 21; }, kArg, "src", "save_mean"},
    {"running_mean overlapping shift", A::training, [](Call& c) { c.running_mean = c.at(kShift) + 2; }, kArg,
     "shift", "running_mean"},
    {"save_mean == running_mean", A::training, [](Call& c) { c.save_mean = c.running_mean; }, kArg, "running_mean",
     "save_mean"},
    {"one value per channel (n=1, spatial=1)", A::training, [](Call& c) { c.d().n = 1; c.d().spatial = 1; },
     kShape, "n", "spatial"},
    {"one value per channel, channels-last", A::training,
     [](Call& c) { c.d().layout = NK_LAYOUT_NSC; c.d().n = 1; c.d().spatial = 1; }, kShape, "n", "spatial"},

    // ---- nk_batch_norm_forward_inference ---------------------------------------------
    {"desc NULL", A::inference, [](Call& c) { c.desc = nullptr; }, kNull, "desc", nullptr},
    {"src NULL", A::inference, [](Call& c) { c.src = nullptr; }, kNull, "src", nullptr},
    {"dst NULL", A::inference, [](Call& c) { c.dst = nullptr; }, kNull, "dst", nullptr},
    {"mean NULL", A::inference, [](Call& c) { c.mean = nullptr; }, kNull, "mean", nullptr},
    {"variance NULL", A::inference, [](Call& c) { c.variance = nullptr; }, kNull, "variance", nullptr},
    {"variance NULL, with a context", A::inference, [](Call& c) { c.ctx = c.owned; c.variance = nullptr; }, kNull,
     "variance", nullptr},
    {"c negative", A::inference, [](Call& c) { c.d().c = -1; }, kShape, "c", nullptr},
    {"n*c*spatial overflows int64", A::inference,
     [](Call& c) { c.d().n = kI64Max / 2; c.d().c = 3; c.d().spatial = 1; }, kShape, "n", nullptr},
    {"src wraps the address space", A::inference, [](Call& c) { c.src = wrapping_tensor(); }, kShape, "src",
     nullptr},
    {"variance wraps the address space", A::inference, [](Call& c) { c.variance = wrapping_channels(); }, kShape,
     "variance", nullptr},
    {"layout 99", A::inference, [](Call& c) { c.d().layout = 99; }, kArg, "layout", nullptr},
    {"epsilon -Inf", A::inference, [](Call& c) { c.d().epsilon = -kInf; }, kArg, "epsilon", nullptr},
    {"struct_size larger, last byte set", A::inference,
     [](Call& c) {
         c.d().struct_size = 128;
         c.desc_bytes[127] = 1;
     },
     kUnsupported, "struct_size", nullptr},
    {"dst = src + 1 element", A::inference, [](Call& c) { c.dst = c.at(kSrc) + 1; }, kArg, "src", "dst"},
    {"dst overlapping mean", A::inference, [](Call& c) { c.mean = static_cast<float*>(c.dst) + 22; }, kArg, "dst",
     "mean"},
    {"variance inside dst", A::inference, [](Call& c) { c.variance = static_cast<float*>(c.dst); }, kArg, "dst",
     "variance"},

    // ---- nk_batch_norm_backward ------------------------------------------------------
    {"desc NULL", A::backward, [](Call& c) { c.desc = nullptr; }, kNull, "desc", nullptr},
    {"src NULL", A::backward, [](Call& c) { c.src = nullptr; }, kNull, "src", nullptr},
    {"diff_dst NULL", A::backward, [](Call& c) { c.diff_dst = nullptr; }, kNull, "diff_dst", nullptr},
    {"save_mean NULL", A::backward, [](Call& c) { c.saved_mean = nullptr; }, kNull, "save_mean", nullptr},
    {"save_invstd NULL", A::backward, [](Call& c) { c.saved_invstd = nullptr; }, kNull, "save_invstd", nullptr},
    {"spatial negative", A::backward, [](Call& c) { c.d().spatial = -1; }, kShape, "spatial", nullptr},
    {"count*4 > PTRDIFF_MAX", A::backward, [](Call& c) { c.d().n = 1; c.d().c = kMaxCount + 1; c.d().spatial = 1; },
     kShape, "c", nullptr},
    {"diff_dst wraps the address space", A::backward, [](Call& c) { c.diff_dst = wrapping_tensor(); }, kShape,
     "diff_dst", nullptr},
    {"diff_scale wraps the address space", A::backward, [](Call& c) { c.diff_scale = wrapping_channels(); }, kShape,
     "diff_scale", nullptr},
    {"flags bit 4", A::backward, [](Call& c) { c.d().flags = NK_BN_USE_GLOBAL_STATS | 0x10u; }, kArg, "flags",
     nullptr},
    {"dtype 7", A::backward, [](Call& c) { c.d().dtype = 7; }, kArg, "dtype", nullptr},
    {"momentum NaN", A::backward, [](Call& c) { c.d().momentum = kNaN; }, kArg, "momentum", nullptr},
    {"struct_size one byte short", A::backward,
     [](Call& c) { c.d().struct_size = uint32_t(sizeof(nk_batch_norm_desc) - 1); }, kArg, "struct_size", nullptr},
    {"diff_src = diff_dst + 1 element", A::backward,
     [](Call& c) { c.diff_src = static_cast<float*>(c.at(kDiffDst)) + 1; }, kArg, "diff_dst", "diff_src"},
    {"diff_dst = diff_src + 1 element", A::backward,
     [](Call& c) {
         c.diff_dst = c.at(kDiffSrc) + 1;
         std::copy(c.at(kDiffDst), c.at(kDiffDst) + kCount, c.at(kDiffSrc) + 1);
     },
     kArg, "diff_dst", "diff_src"},
    {"diff_src == src", A::backward, [](Call& c) { c.diff_src = c.at(kSrc); }, kArg, "src", "diff_src"},
    {"diff_scale overlapping src", A::backward, [](Call& c) { c.diff_scale = c.at(kSrc) + 22; }, kArg, "src",
     "diff_scale"},
    {"diff_shift == diff_scale", A::backward, [](Call& c) { c.diff_shift = c.diff_scale; }, kArg, "diff_scale",
     "diff_shift"},
    {"diff_shift overlapping save_invstd", A::backward, [](Call& c) { c.diff_shift = c.at(kSaveInvstd) + 1; }, kArg,
     "save_invstd", "diff_shift"},
    {"scale inside diff_src", A::backward, [](Call& c) { c.scale = static_cast<float*>(c.diff_src) + 10; }, kArg,
     "scale", "diff_src"},
    {"diff_scale overlapping save_mean", A::backward, [](Call& c) { c.diff_scale = c.at(kSaveMean) + 2; }, kArg,
     "save_mean", "diff_scale"},

    // ---- the fusions: NK_BN_FUSE_RELU, the residual, nk_batch_norm_backward_v2 ----------
    {"NK_BN_FUSE_RELU without a dst", A::backward, [](Call& c) { c.d().flags = NK_BN_FUSE_RELU; }, kArg, "flags",
     "nk_batch_norm_backward_v2"},
    {"residual wraps the address space", A::training_v2, [](Call& c) { c.residual = wrapping_tensor(); }, kShape,
     "residual", nullptr},
    {"dst = residual + 1 element", A::training_v2, [](Call& c) { c.dst = c.at(kResidual) + 1; }, kArg, "residual",
     "dst"},
    {"residual inside save_mean", A::training_v2, [](Call& c) { c.save_mean = c.at(kResidual) + 2; }, kArg,
     "residual", "save_mean"},
    {"flags bit 5", A::training_v2, [](Call& c) { c.d().flags |= 0x20u; }, kArg, "flags", nullptr},
    {"src NULL", A::inference_v2, [](Call& c) { c.src = nullptr; }, kNull, "src", nullptr},
    {"dst = residual - 1 element", A::inference_v2, [](Call& c) { c.dst = c.at(kResidual) - 1; }, kArg,
     "residual", "dst"},
    {"residual wraps the address space", A::inference_v2, [](Call& c) { c.residual = wrapping_tensor(); }, kShape,
     "residual", nullptr},
    {"dst NULL with NK_BN_FUSE_RELU", A::backward_v2, [](Call& c) { c.fwd_dst = nullptr; }, kNull, "dst", nullptr},
    {"dst without NK_BN_FUSE_RELU", A::backward_v2, [](Call& c) { c.d().flags = 0; c.diff_residual = nullptr; },
     kArg, "dst", nullptr},
    {"diff_residual without NK_BN_FUSE_RELU", A::backward_v2,
     [](Call& c) { c.d().flags = 0; c.fwd_dst = nullptr; }, kArg, "diff_residual", nullptr},
    {"diff_residual == diff_src", A::backward_v2, [](Call& c) { c.diff_residual = c.diff_src; }, kArg, "diff_src",
     "diff_residual"},
    {"diff_residual == diff_src == diff_dst", A::backward_v2,
     [](Call& c) {
         c.diff_residual = c.diff_src = c.at(kDiffDst);
     },
     kArg, "diff_src", "diff_residual"},
    {"diff_residual == dst", A::backward_v2, [](Call& c) { c.diff_residual = const_cast<void*>(c.fwd_dst); }, kArg,
     "dst", "diff_residual"},
    {"diff_residual overlapping src", A::backward_v2, [](Call& c) { c.diff_residual = c.at(kSrc) + 3; }, kArg,
     "src", "diff_residual"},
    {"diff_src == dst", A::backward_v2, [](Call& c) { c.diff_src = const_cast<void*>(c.fwd_dst); }, kArg, "dst",
     "diff_src"},
    {"dst wraps the address space", A::backward_v2, [](Call& c) { c.fwd_dst = wrapping_tensor(); }, kShape, "dst",
     nullptr},

    // ---- nk_batch_norm_fold ------------------------------------------------------------
    {"desc NULL", A::fold, [](Call& c) { c.desc = nullptr; }, kNull, "desc", nullptr},
    {"mean NULL", A::fold, [](Call& c) { c.mean = nullptr; }, kNull, "mean", nullptr},
    {"variance NULL", A::fold, [](Call& c) { c.variance = nullptr; }, kNull, "variance", nullptr},
    {"weight NULL", A::fold, [](Call& c) { c.weight = nullptr; }, kNull, "weight", nullptr},
    {"folded_weight NULL", A::fold, [](Call& c) { c.folded_weight = nullptr; }, kNull, "folded_weight", nullptr},
    {"folded_bias NULL", A::fold, [](Call& c) { c.folded_bias = nullptr; }, kNull, "folded_bias", nullptr},
    {"weights_per_channel negative", A::fold, [](Call& c) { c.weights_per_channel = -1; }, kShape,
     "weights_per_channel", nullptr},
    {"c * weights_per_channel overflows", A::fold, [](Call& c) { c.weights_per_channel = kI64Max / 2; }, kShape,
     "weights_per_channel", nullptr},
    {"folded_weight = weight + 1 element", A::fold, [](Call& c) { c.folded_weight = c.at(kWeight) + 1; }, kArg,
     "weight", "folded_weight"},
    {"folded_bias == mean", A::fold, [](Call& c) { c.folded_bias = c.at(kMean); }, kArg, "mean", "folded_bias"},
    {"folded_bias inside folded_weight", A::fold, [](Call& c) { c.folded_bias = c.folded_weight + 4; }, kArg,
     "folded_weight", "folded_bias"},
    {"epsilon 0", A::fold, [](Call& c) { c.d().epsilon = 0.0f; }, kArg, "epsilon", nullptr},
    {"c negative", A::fold, [](Call& c) { c.d().c = -3; }, kShape, "c", nullptr},

    // ---- nk_batch_norm_desc_init -----------------------------------------------------
    {"desc NULL", A::desc_init, [](Call& c) { c.init_target = nullptr; }, kNull, "desc", nullptr},
    {"layout 2", A::desc_init, [](Call& c) { c.layout = 2; }, kArg, "layout", nullptr},
    {"layout -7", A::desc_init, [](Call& c) { c.layout = -7; }, kArg, "layout", nullptr},
    {"n negative", A::desc_init, [](Call& c) { c.n = -1; }, kShape, "n", nullptr},
    {"spatial negative", A::desc_init, [](Call& c) { c.s = -5; }, kShape, "spatial", nullptr},
    {"n*c overflows int64", A::desc_init, [](Call& c) { c.n = int64_t(1) << 32; c.c = int64_t(1) << 32; }, kShape,
     "n", "c"},
    {"count*4 > PTRDIFF_MAX", A::desc_init, [](Call& c) { c.n = kMaxCount + 1; c.c = 1; c.s = 1; }, kShape, "n",
     nullptr},

    // ---- context API -----------------------------------------------------------------
    {"create(NULL)", A::context_create, [](Call& c) { c.create_target = nullptr; }, kNull, "ctx", nullptr},
    {"set_num_threads(NULL, 2)", A::set_num_threads, [](Call& c) { c.target = nullptr; c.value = 2; }, kNull,
     "ctx", nullptr},
    {"set_num_threads(NULL, -1)", A::set_num_threads, [](Call& c) { c.target = nullptr; c.value = -1; }, kNull,
     "ctx", nullptr},
    {"set_num_threads(ctx, -1)", A::set_num_threads, [](Call& c) { c.value = -1; }, kArg, "n", nullptr},
    {"set_num_threads(ctx, INT32_MIN)", A::set_num_threads,
     [](Call& c) { c.value = std::numeric_limits<int32_t>::min(); }, kArg, "n", nullptr},
    {"set_max_isa(NULL, scalar)", A::set_max_isa, [](Call& c) { c.target = nullptr; c.value = NK_ISA_SCALAR; },
     kNull, "ctx", nullptr},
    {"set_max_isa(ctx, -1)", A::set_max_isa, [](Call& c) { c.value = -1; }, kArg, "isa", nullptr},
    {"set_max_isa(ctx, 4)", A::set_max_isa, [](Call& c) { c.value = 4; }, kArg, "isa", nullptr},
    {"set_max_isa(ctx, 99)", A::set_max_isa, [](Call& c) { c.value = 99; }, kArg, "isa", nullptr},
    {"set_max_isa(ctx, INT32_MIN)", A::set_max_isa, [](Call& c) { c.value = std::numeric_limits<int32_t>::min(); },
     kArg, "isa", nullptr},
    {"set_parallel_for(NULL, fn, 2)", A::set_parallel_for, [](Call& c) { c.target = nullptr; c.value = 2; }, kNull,
     "ctx", nullptr},
    {"set_parallel_for(NULL, NULL, 0)", A::set_parallel_for,
     [](Call& c) { c.target = nullptr; c.parallel_for = nullptr; c.value = 0; }, kNull, "ctx", nullptr},
    {"set_parallel_for(ctx, fn, 0)", A::set_parallel_for, [](Call& c) { c.value = 0; }, kArg, "threads", nullptr},
    {"set_parallel_for(ctx, fn, -1)", A::set_parallel_for, [](Call& c) { c.value = -1; }, kArg, "threads", nullptr},
    {"set_parallel_for(ctx, fn, INT32_MIN)", A::set_parallel_for,
     [](Call& c) { c.value = std::numeric_limits<int32_t>::min(); }, kArg, "threads", nullptr},
};

// A successful call: clears the calling thread's message.
void succeed() {
    nk_batch_norm_desc d;
    REQUIRE(nk_batch_norm_desc_init(&d, NK_LAYOUT_NCS, 1, 1, 1) == NK_OK);
    REQUIRE(std::string(nk_last_error_message()).empty());
}

} // namespace

TEST_CASE("errors: the unchanged call of every row is valid") {
    for (Api api : {A::training, A::inference, A::backward, A::desc_init, A::context_create, A::set_num_threads,
                    A::set_max_isa, A::set_parallel_for, A::training_v2, A::inference_v2, A::backward_v2, A::fold}) {
        const std::string api_str = api_name(api);
        CAPTURE(api_str);
        Call call(api);
        CHECK(call.run() == NK_OK);
        CHECK(std::string(nk_last_error_message()).empty());
        if (api == A::training) {
            CHECK_FALSE(all_canary(call.at(kDst), kCount));
            CHECK_FALSE(all_canary(call.at(kSaveInvstd), kC));
        }
        if (api == A::inference) CHECK_FALSE(all_canary(call.at(kDst), kCount));
        if (api == A::backward || api == A::backward_v2) {
            CHECK_FALSE(all_canary(call.at(kDiffSrc), kCount));
            CHECK_FALSE(all_canary(call.at(kDiffScale), kC));
        }
        if (api == A::training_v2 || api == A::inference_v2) CHECK_FALSE(all_canary(call.at(kDst), kCount));
        if (api == A::backward_v2) CHECK_FALSE(all_canary(call.at(kDiffResidual), kCount));
        if (api == A::fold) {
            CHECK_FALSE(all_canary(call.at(kFoldedWeight), size_t(kC * kWeightsPerChannel)));
            CHECK_FALSE(all_canary(call.at(kFoldedBias), kC));
        }
        if (api == A::context_create) CHECK(call.created != nullptr);
    }
}

TEST_CASE("errors: every bad call fails with its status, names the argument and writes nothing") {
    const size_t rows = sizeof kRows / sizeof kRows[0];
    CHECK(rows >= 40);
    int failed_rows = 0;
    for (const Row& row : kRows) {
        Call call(row.api);
        row.change(call);
        const std::vector<float> arena_before = call.arena;
        unsigned char init_before[sizeof call.init_bytes];
        std::memcpy(init_before, call.init_bytes, sizeof init_before);
        const int32_t isa_before = nk_context_isa(call.owned);

        succeed();
        const nk_status status = call.run();
        const std::string message = nk_last_error_message();

        INFO(std::string(api_name(row.api)) << ": " << row.what << " -> " << nk_status_string(status) << " \"" << message << "\"");
        const bool ok_status = status == row.status;
        const bool ok_message = names(message, row.arg) && (row.arg2 == nullptr || names(message, row.arg2));
        const bool ok_arena =
            std::memcmp(arena_before.data(), call.arena.data(), arena_before.size() * sizeof(float)) == 0;
        const bool ok_init = std::memcmp(init_before, call.init_bytes, sizeof init_before) == 0;
        const bool ok_isa = nk_context_isa(call.owned) == isa_before;
        CHECK_MESSAGE(ok_status, "expected " << nk_status_string(row.status));
        CHECK_MESSAGE(ok_message, "the message must name " << row.arg << (row.arg2 ? " and " : "")
                                                         << (row.arg2 ? row.arg2 : ""));
        CHECK_MESSAGE(ok_arena, "a buffer was written on error");
        CHECK_MESSAGE(ok_init, "desc_init wrote its target on error");
        CHECK_MESSAGE(ok_isa, "the context's ISA cap changed on error");
        CHECK_MESSAGE(call.created == nullptr, "nk_context_create wrote its target on error");
        if (!(ok_status && ok_message && ok_arena && ok_init && ok_isa)) ++failed_rows;
    }
    MESSAGE(rows << " bad calls, " << failed_rows << " wrong");
}

// Channel-sized arrays must be addressable too. With n = 0 (or spatial = 0) the tensor
// is empty and passes the count check, but scale/mean/running_mean... still hold c
// floats: c * 4 > PTRDIFF_MAX is a shape beyond addressable memory. (Regression test:
// unchecked, the byte size c * 4 wrapped size_t: c = 2^62 made mean "0 bytes" so NULL
// was accepted, c = 2^61 reported two distinct 4-byte buffers as overlapping, and
// c = INT64_MAX said a valid pointer "wraps the address space".)
TEST_CASE("errors: an empty tensor with more channels than memory can hold") {
    const int64_t big_c[] = {kMaxCount + 1 /* 2^61 */, int64_t(1) << 62, (int64_t(1) << 62) + 1, kI64Max};
    for (int64_t c : big_c) {
        for (int64_t n : {int64_t(0), int64_t(2)}) {
            const int64_t s = n == 0 ? 1 : 0;
            CAPTURE(c);
            CAPTURE(n);
            nk_batch_norm_desc d;
            std::memset(&d, kDescCanary, sizeof d);
            CHECK(nk_batch_norm_desc_init(&d, NK_LAYOUT_NCS, n, c, s) == NK_ERROR_INVALID_SHAPE);
            CHECK(names(nk_last_error_message(), "c"));
            // The same shape in a descriptor built by hand.
            Call call(A::training);
            call.d().n = n;
            call.d().c = c;
            call.d().spatial = s;
            const std::vector<float> before = call.arena;
            for (Api api : {A::training, A::inference, A::backward}) {
                call.api = api;
                const std::string api_str = api_name(api);
        CAPTURE(api_str);
                if (api == A::backward) {
                    call.saved_mean = call.at(kMean);
                    call.saved_invstd = call.at(kVariance);
                }
                const nk_status status = call.run();
                INFO(std::string(nk_status_string(status)) << " \"" << std::string(nk_last_error_message()) << "\"");
                CHECK(status == NK_ERROR_INVALID_SHAPE);
                CHECK(names(nk_last_error_message(), "c"));
            }
            CHECK(std::memcmp(before.data(), call.arena.data(), before.size() * sizeof(float)) == 0);
        }
    }
}

// The in-place pair is (diff_dst, diff_src), not "any buffer at the diff_dst address":
// src == diff_dst == diff_src still makes diff_src overlap the input src, which the
// header calls an error ("any other overlap is an error"). (Regression test: the pair
// was once matched by address, which let this call through.)
TEST_CASE("errors: backward with src == diff_dst == diff_src is an overlap of diff_src and src") {
    Call call(A::backward);
    call.diff_dst = call.src;
    call.diff_src = const_cast<void*>(call.src);
    const std::vector<float> before = call.arena;
    succeed();
    const nk_status status = call.run();
    const std::string message = nk_last_error_message();
    INFO(std::string(nk_status_string(status)) << " \"" << message << "\"");
    CHECK(status == NK_ERROR_INVALID_ARGUMENT);
    CHECK(names(message, "diff_src"));
    CHECK(std::memcmp(before.data(), call.arena.data(), before.size() * sizeof(float)) == 0);
}

TEST_CASE("errors: edge values that are valid") {
    // Aliased inputs are fine; only outputs must be disjoint.
    SUBCASE("scale == shift") {
        Call call(A::training);
        call.shift = call.scale;
        CHECK(call.run() == NK_OK);
    }
    SUBCASE("mean == variance") {
        Call call(A::inference);
        call.mean = call.variance;
        CHECK(call.run() == NK_OK);
    }
    SUBCASE("src == diff_dst") {
        Call call(A::backward);
        call.diff_dst = call.src;
        CHECK(call.run() == NK_OK);
    }
    SUBCASE("save_mean == save_invstd == scale in backward") {
        Call call(A::backward);
        call.saved_invstd = call.saved_mean;
        call.scale = call.saved_mean;
        CHECK(call.run() == NK_OK);
    }
    SUBCASE("epsilon = FLT_TRUE_MIN, momentum 0, 1 and -0") {
        for (float eps : {FLT_TRUE_MIN, FLT_MIN, 1e30f, FLT_MAX})
            for (float momentum : {0.0f, 1.0f, -0.0f}) {
                Call call(A::training);
                call.d().epsilon = eps;
                call.d().momentum = momentum;
                CAPTURE(eps);
                CAPTURE(momentum);
                CHECK(call.run() == NK_OK);
                CHECK(std::string(nk_last_error_message()).empty());
            }
    }
    SUBCASE("the fusions in place: dst == residual, dst == src, diff_residual == diff_dst; fold in place") {
        Call training(A::training_v2);
        training.dst = const_cast<void*>(training.residual);
        CHECK(training.run() == NK_OK);
        Call inference(A::inference_v2);
        inference.dst = const_cast<void*>(inference.src);
        CHECK(inference.run() == NK_OK);
        Call backward(A::backward_v2);
        backward.diff_residual = const_cast<void*>(backward.diff_dst);
        CHECK(backward.run() == NK_OK);
        Call fold(A::fold);
        fold.folded_weight = const_cast<float*>(fold.weight);
        fold.folded_bias = const_cast<float*>(fold.bias);
        CHECK(fold.run() == NK_OK);
        Call fold_empty(A::fold); // no weights: only the bias is folded
        fold_empty.weights_per_channel = 0;
        fold_empty.weight = fold_empty.folded_weight = nullptr;
        fold_empty.bias = fold_empty.scale = fold_empty.shift = nullptr;
        CHECK(fold_empty.run() == NK_OK);
        CHECK_FALSE(all_canary(fold_empty.at(kFoldedBias), kC));
    }
    SUBCASE("the _v2 calls without a residual, a diff_residual or the ReLU") {
        Call training(A::training_v2);
        training.residual = nullptr;
        CHECK(training.run() == NK_OK);
        Call inference(A::inference_v2);
        inference.d().flags = 0;
        CHECK(inference.run() == NK_OK);
        Call backward(A::backward_v2);
        backward.diff_residual = nullptr;
        CHECK(backward.run() == NK_OK);
        Call plain(A::backward_v2);
        plain.d().flags = 0;
        plain.fwd_dst = plain.diff_residual = nullptr;
        CHECK(plain.run() == NK_OK);
    }
    SUBCASE("every known flag") {
        for (Api api : {A::training, A::inference, A::backward}) {
            Call call(api);
            call.d().flags = NK_BN_KERAS_MOMENTUM | NK_BN_BIASED_RUNNING_VAR | NK_BN_USE_GLOBAL_STATS;
            CHECK(call.run() == NK_OK);
        }
    }
    SUBCASE("every optional pointer NULL") {
        Call training(A::training);
        training.scale = training.shift = nullptr;
        training.running_mean = training.running_var = training.save_mean = training.save_invstd = nullptr;
        CHECK(training.run() == NK_OK);
        CHECK_FALSE(all_canary(training.at(kDst), kCount));
        Call inference(A::inference);
        inference.scale = inference.shift = nullptr;
        CHECK(inference.run() == NK_OK);
        Call backward(A::backward);
        backward.scale = nullptr;
        backward.diff_src = nullptr;
        backward.diff_scale = backward.diff_shift = nullptr;
        const std::vector<float> before = backward.arena;
        CHECK(backward.run() == NK_OK);
        CHECK(std::memcmp(before.data(), backward.arena.data(), before.size() * sizeof(float)) == 0);
    }
    SUBCASE("nk_context_set_num_threads: 0, 1, large") {
        Call call(A::set_num_threads);
        for (int32_t n : {0, 1, 2, 3, 64, std::numeric_limits<int32_t>::max()}) {
            call.value = n;
            CAPTURE(n);
            CHECK(call.run() == NK_OK);
        }
    }
    SUBCASE("nk_context_set_parallel_for: 1 or many threads; fn NULL with any threads") {
        Call call(A::set_parallel_for);
        for (int32_t n : {1, 2, 64, std::numeric_limits<int32_t>::max()}) {
            call.value = n;
            CAPTURE(n);
            CHECK(call.run() == NK_OK);
        }
        call.parallel_for = nullptr;
        for (int32_t n : {0, -1, 5}) {
            call.value = n;
            CAPTURE(n);
            CHECK(call.run() == NK_OK);
        }
    }
    SUBCASE("nk_context_set_max_isa: every NK_ISA_*, capped by the CPU") {
        Call call(A::set_max_isa);
        const int32_t best = nk_context_isa(nullptr);
        for (int32_t isa = NK_ISA_SCALAR; isa <= NK_ISA_AVX512; ++isa) {
            call.value = isa;
            CAPTURE(isa);
            CHECK(call.run() == NK_OK);
            CHECK(nk_context_isa(call.owned) == std::min(isa, best));
        }
    }
    SUBCASE("nk_batch_norm_desc_init: the largest addressable tensor") {
        nk_batch_norm_desc d;
        CHECK(nk_batch_norm_desc_init(&d, NK_LAYOUT_NSC, kMaxCount, 1, 1) == NK_OK);
        CHECK(nk_batch_norm_desc_init(&d, NK_LAYOUT_NCS, 1, 1, kMaxCount) == NK_OK);
    }
}

TEST_CASE("errors: nk_batch_norm_desc_init fills the documented defaults") {
    nk_batch_norm_desc d;
    std::memset(&d, 0xff, sizeof d);
    REQUIRE(nk_batch_norm_desc_init(&d, NK_LAYOUT_NSC, 5, 6, 7) == NK_OK);
    CHECK(d.struct_size == sizeof(nk_batch_norm_desc));
    CHECK(d.layout == NK_LAYOUT_NSC);
    CHECK(d.dtype == NK_DTYPE_F32);
    CHECK(d.reserved0 == 0);
    CHECK(d.n == 5);
    CHECK(d.c == 6);
    CHECK(d.spatial == 7);
    CHECK(d.epsilon == 1e-5f);
    CHECK(d.momentum == 0.1f);
    CHECK(d.flags == 0u);
    CHECK(d.reserved1 == 0u);
}

TEST_CASE("errors: a larger descriptor whose extra bytes are zero is accepted and gives the same bits") {
    for (Api api : {A::training, A::inference, A::backward}) {
        const std::string api_str = api_name(api);
        CAPTURE(api_str);
        Call plain(api);
        REQUIRE(plain.run() == NK_OK);
        for (uint32_t extra : {1u, 8u, 64u, 160u}) {
            CAPTURE(extra);
            Call larger(api);
            larger.d().struct_size = uint32_t(sizeof(nk_batch_norm_desc) + extra);
            CHECK(larger.run() == NK_OK);
            CHECK(std::string(nk_last_error_message()).empty());
            CHECK(std::memcmp(plain.arena.data(), larger.arena.data(), plain.arena.size() * sizeof(float)) == 0);
        }
    }
}

TEST_CASE("errors: zero-size tensors succeed, write nothing and accept NULL tensors") {
    const ref::Shape shapes[] = {{0, 0, 3, 4}, {0, 2, 0, 4}, {0, 2, 3, 0}, {0, 0, 0, 0}, {0, 0, 1, 1}};
    for (ref::Shape sh : shapes) {
        for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
            sh.layout = layout;
            CAPTURE(test::shape_name(sh));
            nk_batch_norm_desc d;
            REQUIRE(nk_batch_norm_desc_init(&d, layout, sh.n, sh.c, sh.s) == NK_OK);
            // Channel-sized buffers: canaries for outputs, valid values for inputs.
            std::vector<float> stats(size_t(sh.c) + 1, 1.0f);
            std::vector<float> out(6 * (size_t(sh.c) + 1), canary());
            float* o = out.data();
            const size_t stride = size_t(sh.c) + 1;
            const float* in_stats = sh.c > 0 ? stats.data() : nullptr; // required unless c == 0

            succeed();
            // All tensors NULL, every output given.
            CHECK(nk_batch_norm_forward_training(nullptr, &d, nullptr, nullptr, stats.data(), stats.data(),
                                                 o, o + stride, o + 2 * stride, o + 3 * stride) == NK_OK);
            CHECK(std::string(nk_last_error_message()).empty());
            CHECK(nk_batch_norm_forward_inference(nullptr, &d, nullptr, nullptr, nullptr, nullptr, in_stats,
                                                  in_stats) == NK_OK);
            CHECK(nk_batch_norm_backward(nullptr, &d, nullptr, nullptr, nullptr, in_stats, in_stats, nullptr,
                                         o + 4 * stride, o + 5 * stride) == NK_OK);
            CHECK(std::string(nk_last_error_message()).empty());
            // Every pointer NULL, with a context.
            test::Context ctx(NK_ISA_SCALAR, 2);
            CHECK(nk_batch_norm_forward_training(ctx.get(), &d, nullptr, nullptr, nullptr, nullptr, nullptr,
                                                 nullptr, nullptr, nullptr) == NK_OK);
            CHECK(nk_batch_norm_backward(ctx.get(), &d, nullptr, nullptr, nullptr, in_stats, in_stats, nullptr,
                                         nullptr, nullptr) == NK_OK);
            // Real (empty) tensors are not written either.
            std::vector<float> tensor(8, canary());
            CHECK(nk_batch_norm_forward_inference(ctx.get(), &d, stats.data(), tensor.data(), nullptr, nullptr,
                                                  in_stats, in_stats) == NK_OK);
            CHECK(all_canary(tensor.data(), tensor.size()));
            CHECK_MESSAGE(all_canary(out.data(), out.size()), "a zero-size call wrote a channel output");
        }
    }
}

TEST_CASE("errors: in place (dst == src, diff_src == diff_dst) gives the out-of-place bits") {
    const ref::Shape shapes[] = {{NK_LAYOUT_NCS, 3, 5, 40}, {NK_LAYOUT_NSC, 2, 1100, 3}, {NK_LAYOUT_NSC, 4, 7, 9}};
    for (const ref::Shape& sh : shapes) {
        for (int32_t threads : {1, 2}) {
            CAPTURE(test::shape_name(sh));
            CAPTURE(threads);
            test::Context ctx(nk_context_isa(nullptr), threads);
            const size_t count = size_t(sh.count()), c = size_t(sh.c);
            const nk_batch_norm_desc d = test::make_desc(sh);
            const std::vector<float> src = test::normal(count, 1.0, 2.0, 5);
            const std::vector<float> dy = test::normal(count, 0.0, 1.0, 6);
            const std::vector<float> scale = test::uniform(c, 0.5, 1.5, 7), shift = test::uniform(c, -1, 1, 8);
            const std::vector<float> var = test::uniform(c, 0.5, 2.0, 9);

            std::vector<float> dst(count), mean(c), invstd(c);
            REQUIRE(nk_batch_norm_forward_training(ctx.get(), &d, src.data(), dst.data(), scale.data(),
                                                   shift.data(), nullptr, nullptr, mean.data(),
                                                   invstd.data()) == NK_OK);
            std::vector<float> inplace = src, mean2(c), invstd2(c);
            CHECK(nk_batch_norm_forward_training(ctx.get(), &d, inplace.data(), inplace.data(), scale.data(),
                                                 shift.data(), nullptr, nullptr, mean2.data(),
                                                 invstd2.data()) == NK_OK);
            CHECK(test::same_bits(inplace, dst));
            CHECK(test::same_bits(mean2, mean));
            CHECK(test::same_bits(invstd2, invstd));

            std::vector<float> inf(count);
            REQUIRE(nk_batch_norm_forward_inference(ctx.get(), &d, src.data(), inf.data(), scale.data(),
                                                    shift.data(), mean.data(), var.data()) == NK_OK);
            inplace = src;
            CHECK(nk_batch_norm_forward_inference(ctx.get(), &d, inplace.data(), inplace.data(), scale.data(),
                                                  shift.data(), mean.data(), var.data()) == NK_OK);
            CHECK(test::same_bits(inplace, inf));

            std::vector<float> dsrc(count), dscale(c), dshift(c);
            REQUIRE(nk_batch_norm_backward(ctx.get(), &d, src.data(), dy.data(), scale.data(), mean.data(),
                                           invstd.data(), dsrc.data(), dscale.data(), dshift.data()) == NK_OK);
            inplace = dy;
            std::vector<float> dscale2(c), dshift2(c);
            CHECK(nk_batch_norm_backward(ctx.get(), &d, src.data(), inplace.data(), scale.data(), mean.data(),
                                         invstd.data(), inplace.data(), dscale2.data(), dshift2.data()) == NK_OK);
            CHECK(test::same_bits(inplace, dsrc));
            CHECK(test::same_bits(dscale2, dscale));
            CHECK(test::same_bits(dshift2, dshift));
            CHECK(std::string(nk_last_error_message()).empty());
        }
    }
}

TEST_CASE("errors: the message is cleared by the next successful call") {
    Call bad(A::inference);
    bad.d().epsilon = -1.0f;
    REQUIRE(bad.run() == NK_ERROR_INVALID_ARGUMENT);
    REQUIRE(names(nk_last_error_message(), "epsilon"));
    for (Api api : {A::training, A::inference, A::backward, A::desc_init, A::context_create, A::set_num_threads,
                    A::set_max_isa, A::set_parallel_for}) {
        const std::string api_str = api_name(api);
        CAPTURE(api_str);
        Call good(api); // its constructor makes calls of its own: set the error after it
        REQUIRE(bad.run() == NK_ERROR_INVALID_ARGUMENT);
        REQUIRE_FALSE(std::string(nk_last_error_message()).empty());
        CHECK(good.run() == NK_OK);
        CHECK(nk_last_error_message() != nullptr);
        CHECK(std::string(nk_last_error_message()).empty());
    }
    // nk_context_isa and nk_context_destroy are normkit calls too.
    REQUIRE(bad.run() == NK_ERROR_INVALID_ARGUMENT);
    CHECK(nk_context_isa(nullptr) >= NK_ISA_SCALAR);
    CHECK(std::string(nk_last_error_message()).empty());
    REQUIRE(bad.run() == NK_ERROR_INVALID_ARGUMENT);
    nk_context_destroy(nullptr); // NULL is a no-op
    CHECK(std::string(nk_last_error_message()).empty());
}

TEST_CASE("errors: a destroyed context; NULL then works as the default") {
    const ref::Shape sh{NK_LAYOUT_NCS, 4, 5, 6};
    const nk_batch_norm_desc d = test::make_desc(sh);
    const std::vector<float> src = test::normal(size_t(sh.count()), 0.0, 1.0, 3);
    std::vector<float> with_ctx(src.size()), with_null(src.size(), canary());

    nk_context* ctx = nullptr;
    REQUIRE(nk_context_create(&ctx) == NK_OK);
    REQUIRE(ctx != nullptr);
    REQUIRE(nk_context_set_num_threads(ctx, 2) == NK_OK);
    REQUIRE(nk_context_set_max_isa(ctx, NK_ISA_SSE4_2) == NK_OK);
    CHECK(nk_context_isa(ctx) == std::min<int32_t>(NK_ISA_SSE4_2, nk_context_isa(nullptr)));
    REQUIRE(nk_batch_norm_forward_training(ctx, &d, src.data(), with_ctx.data(), nullptr, nullptr, nullptr, nullptr,
                                           nullptr, nullptr) == NK_OK);
    nk_context_destroy(ctx);
    ctx = nullptr;
    CHECK(nk_batch_norm_forward_training(ctx, &d, src.data(), with_null.data(), nullptr, nullptr, nullptr, nullptr,
                                         nullptr, nullptr) == NK_OK);
    CHECK(std::string(nk_last_error_message()).empty());
    CHECK(test::same_bits(with_ctx, with_null));
    nk_context_destroy(nullptr);
}

TEST_CASE("errors: nk_status_string names every status, and unknown ones") {
    const std::pair<nk_status, const char*> known[] = {
        {NK_OK, "NK_OK"},
        {NK_ERROR_NULL_POINTER, "NK_ERROR_NULL_POINTER"},
        {NK_ERROR_INVALID_SHAPE, "NK_ERROR_INVALID_SHAPE"},
        {NK_ERROR_INVALID_ARGUMENT, "NK_ERROR_INVALID_ARGUMENT"},
        {NK_ERROR_UNSUPPORTED, "NK_ERROR_UNSUPPORTED"},
        {NK_ERROR_OUT_OF_MEMORY, "NK_ERROR_OUT_OF_MEMORY"},
        {NK_ERROR_INTERNAL, "NK_ERROR_INTERNAL"},
    };
    // The numbers are pinned.
    CHECK(NK_OK == 0);
    CHECK(NK_ERROR_NULL_POINTER == 1);
    CHECK(NK_ERROR_INVALID_SHAPE == 2);
    CHECK(NK_ERROR_INVALID_ARGUMENT == 3);
    CHECK(NK_ERROR_UNSUPPORTED == 4);
    CHECK(NK_ERROR_OUT_OF_MEMORY == 5);
    CHECK(NK_ERROR_INTERNAL == 6);
    for (const auto& k : known) {
        CAPTURE(k.first);
        const char* s = nk_status_string(k.first);
        REQUIRE(s != nullptr);
        CHECK(std::string(s) == k.second);
        CHECK(nk_status_string(k.first) == s); // static storage
    }
    for (nk_status unknown : {-1, 7, 8, 100, std::numeric_limits<int32_t>::max(), std::numeric_limits<int32_t>::min()}) {
        CAPTURE(unknown);
        const char* s = nk_status_string(unknown);
        REQUIRE(s != nullptr);
        CHECK(std::string(s).size() > 0);
        for (const auto& k : known) CHECK(std::string(s) != k.second);
    }
}

TEST_CASE("errors: nk_version is the header's version") {
    CHECK(nk_version() == uint32_t(NK_VERSION_NUMBER));
    CHECK(nk_version() == uint32_t(NK_VERSION_MAJOR * 10000 + NK_VERSION_MINOR * 100 + NK_VERSION_PATCH));
}

TEST_CASE("errors: messages are thread-local") {
    Call bad(A::training);
    bad.d().momentum = 2.0f;
    REQUIRE(bad.run() == NK_ERROR_INVALID_ARGUMENT);
    const char* mine = nk_last_error_message();
    const std::string before = mine;
    REQUIRE(names(before, "momentum"));

    std::string fresh, after_error, after_success;
    std::thread other([&] {
        fresh = nk_last_error_message(); // a new thread has made no call yet
        nk_context_set_max_isa(nullptr, 0);
        after_error = nk_last_error_message();
    });
    other.join();
    CHECK(fresh.empty());
    CHECK(names(after_error, "ctx"));
    CHECK(std::string(nk_last_error_message()) == before); // another thread's error leaves mine alone
    CHECK(std::string(mine) == before);                    // and my pointer still holds my message

    std::thread cleaner([&] {
        nk_batch_norm_desc d;
        nk_batch_norm_desc_init(&d, NK_LAYOUT_NCS, 1, 1, 1);
        after_success = nk_last_error_message();
    });
    cleaner.join();
    CHECK(after_success.empty());
    CHECK(std::string(nk_last_error_message()) == before); // another thread's success does not clear mine
    succeed();
}

// ---- Out-of-bounds accesses that ASan cannot see ------------------------------------
// ASan does not instrument the masked vector loads/stores of the AVX2/AVX-512 paths,
// so every buffer here sits flush against a PROT_NONE page (ending at one, or starting
// right after one, and therefore only 4-byte aligned): any access past either end, on
// any ISA path, crashes the test.
namespace {

class Guarded {
public:
    Guarded(size_t count, bool flush_end) {
        page_ = size_t(sysconf(_SC_PAGESIZE));
        const size_t bytes = count * sizeof(float);
        const size_t pages = (bytes + page_ - 1) / page_;
        size_ = (pages + 2) * page_;
        void* base = mmap(nullptr, size_, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
        REQUIRE(base != MAP_FAILED);
        base_ = static_cast<char*>(base);
        REQUIRE(mprotect(base_, page_, PROT_NONE) == 0);
        REQUIRE(mprotect(base_ + (pages + 1) * page_, page_, PROT_NONE) == 0);
        char* first = base_ + page_;
        data_ = reinterpret_cast<float*>(flush_end ? first + pages * page_ - bytes : first);
        count_ = count;
    }
    ~Guarded() { munmap(base_, size_); }
    Guarded(const Guarded&) = delete;
    Guarded& operator=(const Guarded&) = delete;
    float* data() const { return data_; }
    void assign(const std::vector<float>& v) { std::copy(v.begin(), v.end(), data_); }
    std::vector<float> get() const { return {data_, data_ + count_}; }

private:
    char* base_ = nullptr;
    float* data_ = nullptr;
    size_t page_ = 0, size_ = 0, count_ = 0;
};

} // namespace

TEST_CASE("bounds: buffers flush against guard pages, every ISA path, nothing read or written outside") {
    const ref::Shape shapes[] = {
        {NK_LAYOUT_NCS, 3, 5, 7},  {NK_LAYOUT_NCS, 2, 3, 17},  {NK_LAYOUT_NCS, 1, 1, 2},   {NK_LAYOUT_NCS, 2, 1, 1},
        {NK_LAYOUT_NCS, 5, 3, 1},  {NK_LAYOUT_NCS, 2, 7, 33},  {NK_LAYOUT_NCS, 1, 2, 17000},
        {NK_LAYOUT_NSC, 2, 7, 3},  {NK_LAYOUT_NSC, 3, 1, 5},   {NK_LAYOUT_NSC, 1, 1100, 2}, {NK_LAYOUT_NSC, 2, 65, 3},
        {NK_LAYOUT_NSC, 3, 17, 1}, {NK_LAYOUT_NSC, 1, 31, 37},
    };
    for (const ref::Shape& sh : shapes) {
        const size_t count = size_t(sh.count()), c = size_t(sh.c);
        const std::vector<float> src = test::normal(count, 0.5, 2.0, 31), dy = test::normal(count, 0.0, 1.0, 32);
        const std::vector<float> scale = test::uniform(c, 0.5, 1.5, 33), shift = test::uniform(c, -1, 1, 34);
        const std::vector<float> rm = test::uniform(c, -0.5, 0.5, 35), rv = test::uniform(c, 0.5, 2.0, 36);
        bool have_first = false;
        std::vector<std::vector<float>> first;
        for (int32_t isa : test::isas()) {
            for (int32_t threads : {1, 2}) {
                for (bool flush_end : {true, false}) {
                    CAPTURE(test::shape_name(sh));
                    CAPTURE(test::isa_name(isa));
                    CAPTURE(threads);
                    CAPTURE(flush_end);
                    test::Context ctx(isa, threads);
                    nk_batch_norm_desc d = test::make_desc(sh);
                    Guarded g_src(count, flush_end), g_dst(count, flush_end), g_dy(count, flush_end),
                        g_dsrc(count, flush_end), g_inf(count, flush_end);
                    Guarded g_scale(c, flush_end), g_shift(c, flush_end), g_rm(c, flush_end), g_rv(c, flush_end),
                        g_sm(c, flush_end), g_si(c, flush_end), g_dscale(c, flush_end), g_dshift(c, flush_end);
                    g_src.assign(src);
                    g_dy.assign(dy);
                    g_scale.assign(scale);
                    g_shift.assign(shift);
                    g_rm.assign(rm);
                    g_rv.assign(rv);
                    REQUIRE(nk_batch_norm_forward_training(ctx.get(), &d, g_src.data(), g_dst.data(), g_scale.data(),
                                                           g_shift.data(), g_rm.data(), g_rv.data(), g_sm.data(),
                                                           g_si.data()) == NK_OK);
                    REQUIRE(nk_batch_norm_forward_inference(ctx.get(), &d, g_src.data(), g_inf.data(),
                                                            g_scale.data(), g_shift.data(), g_rm.data(),
                                                            g_rv.data()) == NK_OK);
                    REQUIRE(nk_batch_norm_backward(ctx.get(), &d, g_src.data(), g_dy.data(), g_scale.data(),
                                                   g_sm.data(), g_si.data(), g_dsrc.data(), g_dscale.data(),
                                                   g_dshift.data()) == NK_OK);
                    std::vector<std::vector<float>> results = {g_dst.get(),  g_rm.get(),     g_rv.get(),
                                                               g_sm.get(),   g_si.get(),     g_inf.get(),
                                                               g_dsrc.get(), g_dscale.get(), g_dshift.get()};
                    // In place, and the frozen-statistics backward, against the same guards.
                    d.flags = NK_BN_USE_GLOBAL_STATS;
                    g_dsrc.assign(dy);
                    REQUIRE(nk_batch_norm_backward(ctx.get(), &d, g_src.data(), g_dsrc.data(), g_scale.data(),
                                                   g_sm.data(), g_si.data(), g_dsrc.data(), g_dscale.data(),
                                                   g_dshift.data()) == NK_OK);
                    REQUIRE(nk_batch_norm_forward_inference(ctx.get(), &d, g_src.data(), g_src.data(), nullptr,
                                                            nullptr, g_rm.data(), g_rv.data()) == NK_OK);
                    results.push_back(g_dsrc.get());
                    results.push_back(g_src.get());
                    if (!have_first) {
                        first = results;
                        have_first = true;
                    }
                    bool same = true;
                    for (size_t i = 0; i < results.size(); ++i) same = same && test::same_bits(results[i], first[i]);
                    CHECK_MESSAGE(same, "results differ from the first configuration");
                }
            }
        }
    }
}

TEST_CASE("errors: the message gives the value at fault") {
    const struct {
        const char* what;
        Api api;
        void (*change)(Call&);
        const char* value;
    } rows[] = {
        {"layout 2", A::training, [](Call& c) { c.d().layout = 2; }, "2"},
        {"dtype 5", A::inference, [](Call& c) { c.d().dtype = 5; }, "5"},
        {"n -7", A::backward, [](Call& c) { c.d().n = -7; }, "-7"},
        {"spatial -123456789012", A::training, [](Call& c) { c.d().spatial = -123456789012; }, "-123456789012"},
        {"epsilon -0.5", A::training, [](Call& c) { c.d().epsilon = -0.5f; }, "-0.5"},
        {"epsilon NaN", A::inference, [](Call& c) { c.d().epsilon = kNaN; }, "nan"},
        {"momentum 1.5", A::training, [](Call& c) { c.d().momentum = 1.5f; }, "1.5"},
        {"flags 0x40", A::backward, [](Call& c) { c.d().flags = 0x40u; }, "0x40"},
        {"struct_size 12", A::training, [](Call& c) { c.d().struct_size = 12; }, "12"},
        {"reserved1 77", A::training, [](Call& c) { c.d().reserved1 = 77u; }, "77"},
        {"set_max_isa 99", A::set_max_isa, [](Call& c) { c.value = 99; }, "99"},
        {"set_num_threads -3", A::set_num_threads, [](Call& c) { c.value = -3; }, "-3"},
        {"set_parallel_for threads -9", A::set_parallel_for, [](Call& c) { c.value = -9; }, "-9"},
    };
    for (const auto& row : rows) {
        Call call(row.api);
        row.change(call);
        REQUIRE(call.run() != NK_OK);
        const std::string message = nk_last_error_message();
        INFO(std::string(row.what) << ": \"" << message << "\"");
        CHECK(names(message, row.value));
    }
}
