// Helpers of the bf16 / f16 suites: tensors in a storage type, and the check of results
// rounded to it against the float64 reference.
//
// Tolerance of a bf16 / f16 result: within 1 ulp of the storage type of the correctly
// rounded float64 reference (bit distance <= 1 from round_to_nearest_even(ref)), except
// where check_half says (a result that cancels below the float32 arithmetic's error).
#pragma once

#include "core/half.hpp"
#include "reference/half_reference.hpp"
#include "test_util.hpp"

namespace test {

struct Dtype {
    int32_t id;
    const char* name;
    ref::HalfFormat format;
};
inline std::vector<Dtype> half_dtypes() { return {{NK_DTYPE_BF16, "bf16", ref::kBf16}, {NK_DTYPE_F16, "f16", ref::kF16}}; }

// A tensor in a half-precision storage type, with its values as floats.
struct HalfTensor {
    std::vector<uint16_t> bits;
    std::vector<float> values;
};

inline uint16_t to_half(const Dtype& t, float x) { return t.id == NK_DTYPE_BF16 ? nk::bf16_from_float(x) : nk::f16_from_float(x); }
inline float from_half(const Dtype& t, uint16_t h) { return t.id == NK_DTYPE_BF16 ? nk::float_from_bf16(h) : nk::float_from_f16(h); }

// x rounded to the storage type.
inline HalfTensor to_half(const Dtype& t, const std::vector<float>& x) {
    HalfTensor h{std::vector<uint16_t>(x.size()), std::vector<float>(x.size())};
    for (size_t i = 0; i < x.size(); ++i) {
        h.bits[i] = to_half(t, x[i]);
        h.values[i] = from_half(t, h.bits[i]);
    }
    return h;
}

inline std::vector<float> values_of(const Dtype& t, const std::vector<uint16_t>& bits) {
    std::vector<float> v(bits.size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = from_half(t, bits[i]);
    return v;
}

// Bits in an order where neighbours differ by 1 (-0 and +0 both 0).
inline int64_t ordered(uint16_t h) { return (h & 0x8000) ? -int64_t(h & 0x7fff) : int64_t(h); }

// Checks every got[i] against want[i] (float64): within 1 ulp of the storage type of the
// correctly rounded want[i]. With f32_bound given (the float32 path's tolerance of each
// element), an element that cancels (bn(x) + residual near 0: the float32 arithmetic's own
// error, a few 1e-7 of the terms, then exceeds an ulp of the tiny result) passes within
// f32_bound + half an ulp of the storage type, the float32 result rounded once; such
// elements must stay rare (at most 1%).
inline void check_half(const char* what, const Dtype& t, const std::vector<uint16_t>& got,
                       const std::vector<double>& want, const std::vector<double>& f32_bound = {}) {
    size_t bad = 0, cancelled = 0;
    for (size_t i = 0; i < want.size(); ++i) {
        const uint16_t rn = ref::encode(t.format, ref::round_to(t.format, want[i]));
        if (std::llabs(ordered(got[i]) - ordered(rn)) <= 1) continue;
        const double g = double(from_half(t, got[i]));
        if (!f32_bound.empty()) {
            int e;
            std::frexp(std::fabs(want[i]), &e);
            const double half_ulp = std::ldexp(1.0, std::max(e - 1, t.format.emin) - t.format.precision);
            if (std::fabs(g - want[i]) <= f32_bound[i] + half_ulp) {
                ++cancelled;
                continue;
            }
        }
        if (bad++ < 3)
            CHECK_MESSAGE(false, std::string(what) << "[" << i << "] got " << g << " want " << want[i] << " ("
                                                   << std::string(t.name) << " nearest " << double(from_half(t, rn))
                                                   << ")");
    }
    CHECK(bad == 0);
    INFO(std::string(what) << ": " << cancelled << " of " << want.size() << " within the float32 bound only");
    CHECK(cancelled * 100 <= want.size());
}

// Every ISA path with 1, 2 and 3 threads gives first's bits: run(ctx) returns the outputs.
template <class Outputs, class Run>
void check_every_path(const Outputs& first, Run run) {
    for (int32_t isa : isas())
        for (int32_t threads : {1, 2, 3}) {
            Context ctx(isa, threads);
            INFO(isa_name(isa) << ", " << threads << " threads");
            CHECK(run(ctx.get()) == first);
        }
}

} // namespace test
