// The error table of the synchronized batch-norm functions, in the style of
// test_errors.cpp: each row starts from a valid call (2x3x4 channels-first slice, every
// buffer in its own slot of one byte arena, outputs filled with canaries), changes one
// thing (an argument, or bytes of a partial), and expects the documented status, a
// message naming the argument as a whole word, and not one byte of the arena changed.
#include "test_util.hpp"

#include <cctype>
#include <cstdint>
#include <functional>
#include <string>

namespace {

enum class Api { partial_size, stats, merge, from_partial, backward_reduce, from_reduced };

const char* api_name(Api api) {
    switch (api) {
    case Api::partial_size: return "nk_batch_norm_partial_size";
    case Api::stats: return "nk_batch_norm_stats";
    case Api::merge: return "nk_batch_norm_merge_partials";
    case Api::from_partial: return "nk_batch_norm_forward_from_partial";
    case Api::backward_reduce: return "nk_batch_norm_backward_reduce";
    case Api::from_reduced: return "nk_batch_norm_backward_from_reduced";
    }
    return "?";
}

bool names(const std::string& message, const std::string& name) {
    auto ident = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; };
    for (size_t at = message.find(name); at != std::string::npos; at = message.find(name, at + 1)) {
        const bool left = at == 0 || !ident(message[at - 1]);
        const size_t end = at + name.size();
        if (left && (end == message.size() || !ident(message[end]))) return true;
    }
    return false;
}

enum Slot { kSrc, kDy, kScale, kShift, kRunningMean, kRunningVar, kSaveMean, kSaveInvstd, kDst, kDiffSrc,
            kDiffScale, kDiffShift, kStatsA, kStatsB, kMerged, kGrads, kOut, kSlots };
constexpr size_t kSlotBytes = 256; // > any partial or tensor of the call: the slack is checked too
constexpr int64_t kN = 2, kC = 3, kS = 4;
constexpr unsigned char kCanary = 0xa7;

struct Call {
    Api api;
    std::vector<unsigned char> arena;
    nk_batch_norm_desc d{};
    int64_t g = 0;
    int64_t* bytes_out;
    int64_t bytes_value = -1;
    const void* src;
    const void* dy;
    const float *scale, *shift, *saved_mean, *saved_invstd;
    float *running_mean, *running_var, *save_mean, *save_invstd, *diff_scale, *diff_shift;
    void *dst, *diff_src;
    // stats / backward_reduce output
    void* out;
    int64_t out_bytes;
    // merge inputs
    const void* parts[2];
    int64_t part_bytes[2];
    const void* const* partials = parts;
    const int64_t* partial_bytes = part_bytes;
    int32_t count = 2;
    // from_partial / from_reduced input
    const void* in;
    int64_t in_bytes;

    unsigned char* at(Slot s) { return arena.data() + size_t(s) * kSlotBytes; }
    float* f(Slot s) { return reinterpret_cast<float*>(at(s)); }

    explicit Call(Api a) : api(a), arena(kSlots * kSlotBytes, kCanary) {
        REQUIRE(nk_batch_norm_desc_init(&d, NK_LAYOUT_NCS, kN, kC, kS) == NK_OK);
        auto fill = [&](Slot s, const std::vector<float>& v) { std::memcpy(at(s), v.data(), v.size() * sizeof(float)); };
        const size_t count_values = size_t(kN * kC * kS);
        fill(kSrc, test::normal(count_values, 0.5, 2.0, 1));
        fill(kDy, test::normal(count_values, 0.0, 1.0, 2));
        fill(kScale, test::uniform(kC, 0.5, 1.5, 3));
        fill(kShift, test::uniform(kC, -1, 1, 4));
        fill(kRunningMean, test::uniform(kC, -0.5, 0.5, 5));
        fill(kRunningVar, test::uniform(kC, 0.5, 2, 6));
        src = at(kSrc);
        dy = at(kDy);
        scale = f(kScale);
        shift = f(kShift);
        running_mean = f(kRunningMean);
        running_var = f(kRunningVar);
        dst = at(kDst);
        diff_src = at(kDiffSrc);
        diff_scale = f(kDiffScale);
        diff_shift = f(kDiffShift);
        bytes_out = &bytes_value;
        // Valid partials: stats of the whole slice (A) and of its first sample (B), their
        // merge, and the gradient sums at that merge's statistics.
        int64_t one = 0;
        REQUIRE(nk_batch_norm_partial_size(&d, 0, &one) == NK_OK);
        REQUIRE(nk_batch_norm_stats(nullptr, &d, 0, src, at(kStatsA), one) == NK_OK);
        nk_batch_norm_desc first = d;
        first.n = 1;
        REQUIRE(nk_batch_norm_stats(nullptr, &first, 0, src, at(kStatsB), one) == NK_OK);
        parts[0] = at(kStatsA);
        parts[1] = at(kStatsB);
        part_bytes[0] = part_bytes[1] = one;
        REQUIRE(nk_batch_norm_merge_partials(&d, partials, partial_bytes, 2, at(kMerged), one) == NK_OK);
        std::vector<float> sm(kC), si(kC);
        REQUIRE(nk_batch_norm_forward_from_partial(nullptr, &d, at(kMerged), one, src, dst, nullptr, nullptr, nullptr,
                                                   nullptr, sm.data(), si.data()) == NK_OK);
        fill(kSaveMean, sm);
        fill(kSaveInvstd, si);
        REQUIRE(nk_batch_norm_backward_reduce(nullptr, &d, 0, src, dy, f(kSaveMean), at(kGrads), one) == NK_OK);
        std::memset(at(kDst), kCanary, kSlotBytes);
        if (api == Api::from_partial) {
            saved_mean = saved_invstd = nullptr;
            save_mean = f(kSaveMean); // outputs here: canaries
            save_invstd = f(kSaveInvstd);
            std::memset(at(kSaveMean), kCanary, 2 * kSlotBytes);
        } else {
            saved_mean = f(kSaveMean);
            saved_invstd = f(kSaveInvstd);
            save_mean = save_invstd = nullptr;
        }
        out = at(kOut);
        out_bytes = one;
        in = api == Api::from_reduced ? at(kGrads) : at(kMerged);
        in_bytes = one;
    }

    nk_status run() {
        switch (api) {
        case Api::partial_size: return nk_batch_norm_partial_size(desc(), g, bytes_out);
        case Api::stats: return nk_batch_norm_stats(nullptr, desc(), g, src, out, out_bytes);
        case Api::merge: return nk_batch_norm_merge_partials(desc(), partials, partial_bytes, count, out, out_bytes);
        case Api::from_partial:
            return nk_batch_norm_forward_from_partial(nullptr, desc(), in, in_bytes, src, dst, scale, shift, running_mean,
                                                      running_var, save_mean, save_invstd);
        case Api::backward_reduce:
            return nk_batch_norm_backward_reduce(nullptr, desc(), g, src, dy, saved_mean, out, out_bytes);
        case Api::from_reduced:
            return nk_batch_norm_backward_from_reduced(nullptr, desc(), in, in_bytes, src, dy, scale, saved_mean,
                                                       saved_invstd, diff_src, diff_scale, diff_shift);
        }
        return -1;
    }
    bool null_desc = false;
    const nk_batch_norm_desc* desc() const { return null_desc ? nullptr : &d; }
};

// Byte `offset` of the partial in slot s set to a value of type T.
template <class T>
void patch(Call& c, Slot s, size_t offset, T value) {
    std::memcpy(c.at(s) + offset, &value, sizeof value);
}

struct Row {
    Api api;
    const char* what;
    std::function<void(Call&)> change;
    nk_status status;
    const char* name; // the argument the message must name
};

const std::vector<Row>& rows() {
    static const std::vector<Row> r = {
        {Api::partial_size, "desc NULL", [](Call& c) { c.null_desc = true; }, NK_ERROR_NULL_POINTER, "desc"},
        {Api::partial_size, "bytes NULL", [](Call& c) { c.bytes_out = nullptr; }, NK_ERROR_NULL_POINTER, "bytes"},
        {Api::partial_size, "negative samples_per_piece", [](Call& c) { c.g = -1; }, NK_ERROR_INVALID_ARGUMENT, "samples_per_piece"},
        {Api::partial_size, "negative n", [](Call& c) { c.d.n = -1; }, NK_ERROR_INVALID_SHAPE, "n"},

        {Api::stats, "src NULL", [](Call& c) { c.src = nullptr; }, NK_ERROR_NULL_POINTER, "src"},
        {Api::stats, "partial NULL", [](Call& c) { c.out = nullptr; }, NK_ERROR_NULL_POINTER, "partial"},
        {Api::stats, "partial_bytes short", [](Call& c) { c.out_bytes -= 8; }, NK_ERROR_INVALID_ARGUMENT, "partial_bytes"},
        {Api::stats, "partial_bytes of another granularity", [](Call& c) { c.g = 1; }, NK_ERROR_INVALID_ARGUMENT, "partial_bytes"},
        {Api::stats, "negative samples_per_piece", [](Call& c) { c.g = -2; }, NK_ERROR_INVALID_ARGUMENT, "samples_per_piece"},
        {Api::stats, "partial overlaps src", [](Call& c) { c.out = c.at(kSrc) + 8; }, NK_ERROR_INVALID_ARGUMENT, "partial"},
        {Api::stats, "bad dtype", [](Call& c) { c.d.dtype = 9; }, NK_ERROR_INVALID_ARGUMENT, "dtype"},

        {Api::merge, "partials NULL", [](Call& c) { c.partials = nullptr; }, NK_ERROR_NULL_POINTER, "partials"},
        {Api::merge, "partial_bytes NULL", [](Call& c) { c.partial_bytes = nullptr; }, NK_ERROR_NULL_POINTER, "partial_bytes"},
        {Api::merge, "count 0", [](Call& c) { c.count = 0; }, NK_ERROR_INVALID_ARGUMENT, "count"},
        {Api::merge, "count -1", [](Call& c) { c.count = -1; }, NK_ERROR_INVALID_ARGUMENT, "count"},
        {Api::merge, "partials[1] NULL", [](Call& c) { c.parts[1] = nullptr; }, NK_ERROR_NULL_POINTER, "partials"},
        {Api::merge, "merged NULL", [](Call& c) { c.out = nullptr; }, NK_ERROR_NULL_POINTER, "merged"},
        {Api::merge, "merged_bytes long", [](Call& c) { c.out_bytes += 8; }, NK_ERROR_INVALID_ARGUMENT, "merged_bytes"},
        {Api::merge, "a size that does not match its header", [](Call& c) { c.part_bytes[1] += 8; },
         NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "a size under the header", [](Call& c) { c.part_bytes[0] = 16; }, NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "bad magic", [](Call& c) { patch<uint32_t>(c, kStatsB, 0, 0x4e424b4eu); }, NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "a newer version", [](Call& c) { patch<uint16_t>(c, kStatsB, 4, 2); }, NK_ERROR_UNSUPPORTED, "partials"},
        {Api::merge, "channel count differs from desc",
         [](Call& c) {
             c.d.c = 4;
             c.out_bytes = 32 + 8 + 16 * 4;
         },
         NK_ERROR_INVALID_SHAPE, "partials"},
        {Api::merge, "channel count differs between partials (header says 4)",
         [](Call& c) { patch<int64_t>(c, kStatsB, 16, 4); }, NK_ERROR_INVALID_SHAPE, "partials"},
        {Api::merge, "dtype differs", [](Call& c) { patch<int32_t>(c, kStatsB, 8, 5); }, NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "kinds differ (statistics and gradient sums)", [](Call& c) { c.parts[1] = c.at(kGrads); },
         NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "unknown kind", [](Call& c) { patch<uint16_t>(c, kStatsA, 6, 7); }, NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "negative count", [](Call& c) { patch<int64_t>(c, kStatsB, 32, -4); }, NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "negative piece count in the header", [](Call& c) { patch<int64_t>(c, kStatsB, 24, -1); },
         NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "totals above 2^53", [](Call& c) { patch<int64_t>(c, kStatsB, 32, (int64_t(1) << 53) - 2); },
         NK_ERROR_INVALID_ARGUMENT, "partials"},
        {Api::merge, "merged overlaps partials[1]", [](Call& c) { c.out = c.at(kStatsB) + 16; }, NK_ERROR_INVALID_ARGUMENT, "merged"},

        {Api::from_partial, "partial NULL", [](Call& c) { c.in = nullptr; }, NK_ERROR_NULL_POINTER, "partial"},
        {Api::from_partial, "gradient sums given", [](Call& c) { c.in = c.at(kGrads); }, NK_ERROR_INVALID_ARGUMENT, "partial"},
        {Api::from_partial, "partial_bytes off by one", [](Call& c) { c.in_bytes += 1; }, NK_ERROR_INVALID_ARGUMENT, "partial"},
        {Api::from_partial, "fewer values than the slice", [](Call& c) { patch<int64_t>(c, kMerged, 32, 3); },
         NK_ERROR_INVALID_ARGUMENT, "partial"},
        {Api::from_partial, "one value in the whole batch",
         [](Call& c) {
             patch<int64_t>(c, kMerged, 32, 1);
             c.d.n = 0;
         },
         NK_ERROR_INVALID_SHAPE, "partial"},
        {Api::from_partial, "negative count", [](Call& c) { patch<int64_t>(c, kMerged, 32, -1); }, NK_ERROR_INVALID_ARGUMENT, "partial"},
        {Api::from_partial, "channel count differs", [](Call& c) { c.d.c = 2; }, NK_ERROR_INVALID_SHAPE, "partial"},
        {Api::from_partial, "running_var NULL alone", [](Call& c) { c.running_var = nullptr; }, NK_ERROR_NULL_POINTER, "running_var"},
        {Api::from_partial, "dst NULL", [](Call& c) { c.dst = nullptr; }, NK_ERROR_NULL_POINTER, "dst"},
        {Api::from_partial, "dst overlaps partial", [](Call& c) { c.dst = c.at(kMerged) - 8; }, NK_ERROR_INVALID_ARGUMENT, "dst"},

        {Api::backward_reduce, "save_mean NULL", [](Call& c) { c.saved_mean = nullptr; }, NK_ERROR_NULL_POINTER, "save_mean"},
        {Api::backward_reduce, "diff_dst NULL", [](Call& c) { c.dy = nullptr; }, NK_ERROR_NULL_POINTER, "diff_dst"},
        {Api::backward_reduce, "reduced NULL", [](Call& c) { c.out = nullptr; }, NK_ERROR_NULL_POINTER, "reduced"},
        {Api::backward_reduce, "reduced_bytes short", [](Call& c) { c.out_bytes = 0; }, NK_ERROR_INVALID_ARGUMENT, "reduced_bytes"},
        {Api::backward_reduce, "reduced overlaps diff_dst", [](Call& c) { c.out = c.at(kDy) + 4; }, NK_ERROR_INVALID_ARGUMENT, "reduced"},

        {Api::from_reduced, "statistics given", [](Call& c) { c.in = c.at(kMerged); }, NK_ERROR_INVALID_ARGUMENT, "reduced"},
        {Api::from_reduced, "reduced NULL", [](Call& c) { c.in = nullptr; }, NK_ERROR_NULL_POINTER, "reduced"},
        {Api::from_reduced, "negative count", [](Call& c) { patch<int64_t>(c, kGrads, 32, -8); }, NK_ERROR_INVALID_ARGUMENT, "reduced"},
        {Api::from_reduced, "fewer values than the slice", [](Call& c) { patch<int64_t>(c, kGrads, 32, 7); },
         NK_ERROR_INVALID_ARGUMENT, "reduced"},
        {Api::from_reduced, "save_invstd NULL", [](Call& c) { c.saved_invstd = nullptr; }, NK_ERROR_NULL_POINTER, "save_invstd"},
        {Api::from_reduced, "diff_scale overlaps reduced", [](Call& c) { c.diff_scale = c.f(kGrads) + 2; },
         NK_ERROR_INVALID_ARGUMENT, "diff_scale"},
        {Api::from_reduced, "channel count differs", [](Call& c) { c.d.c = 4; }, NK_ERROR_INVALID_SHAPE, "reduced"},
    };
    return r;
}

} // namespace

TEST_CASE("batch norm sync errors: the unchanged call of every row is valid") {
    for (Api api : {Api::partial_size, Api::stats, Api::merge, Api::from_partial, Api::backward_reduce, Api::from_reduced}) {
        Call c(api);
        CAPTURE(api_name(api));
        CHECK(c.run() == NK_OK);
        CHECK(std::string(nk_last_error_message()).empty());
    }
}

TEST_CASE("batch norm sync errors: every bad call fails with its status, names the argument and writes nothing") {
    for (const Row& row : rows()) {
        Call c(row.api);
        row.change(c);
        const std::vector<unsigned char> before = c.arena;
        const int64_t bytes_before = c.bytes_value;
        CAPTURE(api_name(row.api));
        CAPTURE(row.what);
        const nk_status s = c.run();
        const std::string message = nk_last_error_message();
        CAPTURE(message);
        CHECK(nk_status_string(s) == std::string(nk_status_string(row.status)));
        CHECK(names(message, row.name));
        CHECK(c.arena == before);
        CHECK(c.bytes_value == bytes_before);
    }
}
