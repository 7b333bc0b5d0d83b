// The layer-norm and RMS-norm error table: each row starts from a valid call (3 rows of
// 4 features, every buffer in its own slot of one arena), changes one thing, and expects
// the documented status, a message naming the argument at fault, and not one byte of the
// arena written.
#include "test_util.hpp"

#include <cctype>
#include <functional>
#include <limits>

namespace {

constexpr int64_t kM = 3, kK = 4;
constexpr size_t kSlotFloats = 32; // > the 12-float tensor: slack between slots is checked too

enum Slot { kSrc, kResidual, kSum, kDst, kScale, kShift, kMean, kInvstd, kDiffDst, kDiffSrc, kDiffScale, kDiffShift, kSlots };

enum class Api { ln_forward, ln_backward, rms_forward, rms_backward, desc_init };

struct Call {
    Api api;
    std::vector<float> arena = std::vector<float>(kSlots * kSlotFloats);
    alignas(8) unsigned char desc_bytes[128] = {};
    nk_layer_norm_desc* desc = reinterpret_cast<nk_layer_norm_desc*>(desc_bytes);
    const nk_layer_norm_desc* desc_arg = desc;
    const void *src, *residual, *diff_dst;
    void *sum, *dst, *diff_src;
    const float *scale, *shift, *mean_in, *invstd_in;
    float *mean_out, *invstd_out, *diff_scale, *diff_shift;
    nk_layer_norm_desc* init_target = nullptr;
    int64_t rows = kM, features = kK;

    explicit Call(Api a) : api(a) {
        REQUIRE(nk_layer_norm_desc_init(desc, kM, kK) == NK_OK);
        for (size_t i = 0; i < arena.size(); ++i) arena[i] = float(int(i % 13)) * 0.25f + 0.5f;
        src = slot(kSrc);
        residual = api == Api::ln_forward || api == Api::rms_forward ? slot(kResidual) : nullptr;
        sum = residual ? slot(kSum) : nullptr;
        dst = slot(kDst);
        scale = slot(kScale);
        shift = slot(kShift);
        mean_in = slot(kMean);
        invstd_in = slot(kInvstd);
        mean_out = slot(kMean);
        invstd_out = slot(kInvstd);
        diff_dst = slot(kDiffDst);
        diff_src = slot(kDiffSrc);
        diff_scale = slot(kDiffScale);
        diff_shift = slot(kDiffShift);
    }
    float* slot(Slot s) { return arena.data() + size_t(s) * kSlotFloats; }

    nk_status invoke() {
        switch (api) {
        case Api::ln_forward:
            return nk_layer_norm_forward(nullptr, desc_arg, src, residual, sum, dst, scale, shift, mean_out, invstd_out);
        case Api::ln_backward:
            return nk_layer_norm_backward(nullptr, desc_arg, src, diff_dst, scale, mean_in, invstd_in, diff_src,
                                          diff_scale, diff_shift);
        case Api::rms_forward:
            return nk_rms_norm_forward(nullptr, desc_arg, src, residual, sum, dst, scale, invstd_out);
        case Api::rms_backward:
            return nk_rms_norm_backward(nullptr, desc_arg, src, diff_dst, scale, invstd_in, diff_src, diff_scale);
        case Api::desc_init: return nk_layer_norm_desc_init(init_target, rows, features);
        }
        return -1;
    }
};

bool names(const std::string& message, const std::string& name) {
    auto ident = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; };
    for (size_t at = message.find(name); at != std::string::npos; at = message.find(name, at + 1)) {
        const size_t end = at + name.size();
        if ((at == 0 || !ident(message[at - 1])) && (end == message.size() || !ident(message[end]))) return true;
    }
    return false;
}

struct Row {
    const char* what;
    Api api;
    std::function<void(Call&)> change;
    nk_status status;
    const char* name; // named in the message
};

} // namespace

TEST_CASE("layer norm: error table (status, message, nothing written)") {
    const float nan = std::numeric_limits<float>::quiet_NaN();
    const std::vector<Row> rows = {
        {"NULL desc", Api::ln_forward, [](Call& c) { c.desc_arg = nullptr; }, NK_ERROR_NULL_POINTER, "desc"},
        {"struct_size too small", Api::ln_forward, [](Call& c) { c.desc->struct_size = 8; }, NK_ERROR_INVALID_ARGUMENT, "struct_size"},
        {"newer descriptor using new fields", Api::ln_forward,
         [](Call& c) { c.desc->struct_size = sizeof(nk_layer_norm_desc) + 8; c.desc_bytes[sizeof(nk_layer_norm_desc) + 3] = 1; },
         NK_ERROR_UNSUPPORTED, "struct_size"},
        {"unknown dtype", Api::ln_forward, [](Call& c) { c.desc->dtype = 9; }, NK_ERROR_INVALID_ARGUMENT, "dtype"},
        {"dtype 3 (after F16)", Api::rms_backward, [](Call& c) { c.desc->dtype = 3; }, NK_ERROR_INVALID_ARGUMENT, "dtype"},
        {"dtype -1", Api::ln_backward, [](Call& c) { c.desc->dtype = -1; }, NK_ERROR_INVALID_ARGUMENT, "dtype"},
        {"negative rows", Api::ln_backward, [](Call& c) { c.desc->rows = -1; }, NK_ERROR_INVALID_SHAPE, "rows"},
        {"negative features", Api::rms_forward, [](Call& c) { c.desc->features = -4; }, NK_ERROR_INVALID_SHAPE, "features"},
        {"overflowing shape", Api::ln_forward, [](Call& c) { c.desc->rows = int64_t(1) << 40; c.desc->features = int64_t(1) << 40; },
         NK_ERROR_INVALID_SHAPE, "rows"},
        {"zero epsilon", Api::ln_forward, [](Call& c) { c.desc->epsilon = 0.0f; }, NK_ERROR_INVALID_ARGUMENT, "epsilon"},
        {"NaN epsilon", Api::rms_backward, [=](Call& c) { c.desc->epsilon = nan; }, NK_ERROR_INVALID_ARGUMENT, "epsilon"},
        {"infinite epsilon", Api::ln_backward, [](Call& c) { c.desc->epsilon = INFINITY; }, NK_ERROR_INVALID_ARGUMENT, "epsilon"},
        {"unknown flags", Api::rms_forward, [](Call& c) { c.desc->flags = 0x10; }, NK_ERROR_INVALID_ARGUMENT, "flags"},
        {"NULL src", Api::ln_forward, [](Call& c) { c.src = nullptr; }, NK_ERROR_NULL_POINTER, "src"},
        {"NULL dst", Api::ln_forward, [](Call& c) { c.dst = nullptr; }, NK_ERROR_NULL_POINTER, "dst"},
        {"NULL dst (rms)", Api::rms_forward, [](Call& c) { c.dst = nullptr; }, NK_ERROR_NULL_POINTER, "dst"},
        {"sum without residual", Api::ln_forward, [](Call& c) { c.residual = nullptr; }, NK_ERROR_INVALID_ARGUMENT, "sum"},
        {"NULL diff_dst", Api::ln_backward, [](Call& c) { c.diff_dst = nullptr; }, NK_ERROR_NULL_POINTER, "diff_dst"},
        {"NULL save_mean", Api::ln_backward, [](Call& c) { c.mean_in = nullptr; }, NK_ERROR_NULL_POINTER, "save_mean"},
        {"NULL save_invstd", Api::ln_backward, [](Call& c) { c.invstd_in = nullptr; }, NK_ERROR_NULL_POINTER, "save_invstd"},
        {"NULL save_invrms", Api::rms_backward, [](Call& c) { c.invstd_in = nullptr; }, NK_ERROR_NULL_POINTER, "save_invrms"},
        {"NULL src (rms backward)", Api::rms_backward, [](Call& c) { c.src = nullptr; }, NK_ERROR_NULL_POINTER, "src"},
        {"dst overlaps src by one", Api::ln_forward, [](Call& c) { c.dst = c.slot(kSrc) + 1; }, NK_ERROR_INVALID_ARGUMENT, "dst"},
        {"dst is sum", Api::ln_forward, [](Call& c) { c.dst = c.sum; }, NK_ERROR_INVALID_ARGUMENT, "sum"},
        {"sum overlaps residual by two", Api::rms_forward, [](Call& c) { c.sum = c.slot(kResidual) + 2; },
         NK_ERROR_INVALID_ARGUMENT, "residual"},
        {"dst overlaps scale", Api::ln_forward, [](Call& c) { c.dst = c.slot(kScale) - 2; }, NK_ERROR_INVALID_ARGUMENT, "scale"},
        {"save_mean is save_invstd", Api::ln_forward, [](Call& c) { c.mean_out = c.invstd_out; }, NK_ERROR_INVALID_ARGUMENT,
         "save_mean"},
        {"save_invrms overlaps dst", Api::rms_forward, [](Call& c) { c.invstd_out = c.slot(kDst) + 11; },
         NK_ERROR_INVALID_ARGUMENT, "save_invrms"},
        {"diff_src overlaps src", Api::ln_backward, [](Call& c) { c.diff_src = c.slot(kSrc); }, NK_ERROR_INVALID_ARGUMENT, "diff_src"},
        {"diff_src offset from diff_dst", Api::rms_backward, [](Call& c) { c.diff_src = c.slot(kDiffDst) + 1; },
         NK_ERROR_INVALID_ARGUMENT, "diff_dst"},
        {"diff_scale is diff_shift", Api::ln_backward, [](Call& c) { c.diff_scale = c.diff_shift; }, NK_ERROR_INVALID_ARGUMENT,
         "diff_scale"},
        {"diff_scale overlaps save_invstd", Api::ln_backward, [](Call& c) { c.diff_scale = c.slot(kInvstd) + 1; },
         NK_ERROR_INVALID_ARGUMENT, "diff_scale"},
        {"diff_scale overlaps scale", Api::rms_backward, [](Call& c) { c.diff_scale = const_cast<float*>(c.scale); },
         NK_ERROR_INVALID_ARGUMENT, "diff_scale"},
        {"src wraps the address space", Api::ln_forward,
         [](Call& c) { c.src = reinterpret_cast<const void*>(std::numeric_limits<uintptr_t>::max() - 31); },
         NK_ERROR_INVALID_SHAPE, "src"},
        {"desc_init: NULL desc", Api::desc_init, [](Call& c) { c.init_target = nullptr; }, NK_ERROR_NULL_POINTER, "desc"},
        {"desc_init: negative rows", Api::desc_init, [](Call& c) { c.rows = -2; }, NK_ERROR_INVALID_SHAPE, "rows"},
        {"desc_init: overflowing shape", Api::desc_init, [](Call& c) { c.rows = c.features = int64_t(1) << 33; },
         NK_ERROR_INVALID_SHAPE, "features"},
    };
    CHECK(rows.size() >= 25);
    for (const Row& row : rows) {
        Call call(row.api);
        nk_layer_norm_desc target;
        std::memset(&target, 0x5a, sizeof target);
        if (row.api == Api::desc_init) call.init_target = &target;
        row.change(call);
        const std::vector<float> before = call.arena;
        unsigned char desc_before[sizeof call.desc_bytes];
        std::memcpy(desc_before, call.desc_bytes, sizeof desc_before);
        INFO(row.what);
        CHECK(call.invoke() == row.status);
        const std::string message = nk_last_error_message();
        INFO("message: " << message);
        CHECK(names(message, row.name));
        CHECK(std::memcmp(before.data(), call.arena.data(), before.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(desc_before, call.desc_bytes, sizeof desc_before) == 0);
        unsigned char untouched[sizeof target];
        std::memset(untouched, 0x5a, sizeof untouched);
        CHECK(std::memcmp(&target, untouched, sizeof target) == 0);
    }
    // The valid call of each API succeeds (so that every row above fails for its own change).
    for (Api api : {Api::ln_forward, Api::ln_backward, Api::rms_forward, Api::rms_backward}) {
        Call call(api);
        CHECK(call.invoke() == NK_OK);
        CHECK(std::string(nk_last_error_message()).empty());
    }
}
