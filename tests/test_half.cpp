// bf16 and f16 conversions (src/core/half.hpp) on every ISA path against a short float64
// reference (tests/reference/half_reference.hpp): every one of the 2^16 values of each
// type to float and back, and a sweep of floats (ties both ways, subnormals of both
// formats, overflow, the largest finite, NaNs with payloads, -0, random bit patterns).
// Exact: every path gives the reference's bits.
#include "core/half.hpp"
#include "reference/half_reference.hpp"
#include "test_util.hpp"

#include <cstdio>
#include <limits>
#include <random>

namespace {

std::string hex(uint32_t v) {
    char b[16];
    std::snprintf(b, sizeof b, "0x%x", v);
    return b;
}

struct Path {
    std::string name;
    const nk::HalfKernelTable* k;
};

// Every conversion table this CPU can run (the AVX-512 BF16 one as a path of its own).
std::vector<Path> paths() {
    std::vector<Path> v;
    for (int32_t isa : test::isas())
        v.push_back({test::isa_name(isa), &nk::half_kernels(static_cast<nk::Isa>(isa))});
    if (nk_context_isa(nullptr) == NK_ISA_AVX512) {
        v.push_back({"avx512 (emulated bf16)", &nk::half_kernels_avx512()});
        if (nk::half_kernels_avx512_bf16()) v.push_back({"avx512 bf16", nk::half_kernels_avx512_bf16()});
    }
    return v;
}

struct Format {
    const char* name;
    ref::HalfFormat f;
    void (*to_f32)(const nk::HalfKernelTable&, const uint16_t*, float*, int64_t);
    void (*from_f32)(const nk::HalfKernelTable&, const float*, uint16_t*, int64_t);
};

const Format kFormats[] = {
    {"bf16", ref::kBf16, [](const nk::HalfKernelTable& k, const uint16_t* s, float* d, int64_t n) { k.bf16_to_f32(s, d, n); },
     [](const nk::HalfKernelTable& k, const float* s, uint16_t* d, int64_t n) { k.f32_to_bf16(s, d, n); }},
    {"f16", ref::kF16, [](const nk::HalfKernelTable& k, const uint16_t* s, float* d, int64_t n) { k.f16_to_f32(s, d, n); },
     [](const nk::HalfKernelTable& k, const float* s, uint16_t* d, int64_t n) { k.f32_to_f16(s, d, n); }},
};

// The documented NaN results: float -> half keeps sign and top payload bits, quiet.
uint16_t nan_to_half(const Format& fm, uint32_t u) {
    if (fm.f.fraction == 7) return uint16_t((u >> 16) | 0x0040);
    return uint16_t(((u >> 16) & 0x8000) | 0x7e00 | ((u >> 13) & 0x3ff));
}

// The expected half bits of float x.
uint16_t want_half(const Format& fm, float x) {
    if (std::isnan(x)) return nan_to_half(fm, nk::float_bits(x));
    return ref::encode(fm.f, ref::round_to(fm.f, double(x)));
}

// The expected float bits of half h.
uint32_t want_float(const Format& fm, uint16_t h) {
    if (!ref::is_nan(fm.f, h)) return nk::float_bits(float(ref::decode(fm.f, h)));
    const uint32_t sign = uint32_t(h & 0x8000) << 16, payload = uint32_t(h) & ((1u << fm.f.fraction) - 1);
    // bf16: the bits shifted up (a signaling NaN stays signaling); f16: quieted.
    if (fm.f.fraction == 7) return uint32_t(h) << 16;
    return sign | 0x7fc00000u | (payload << 13);
}

// The floats of the sweep.
std::vector<float> sweep() {
    std::vector<uint32_t> bits;
    auto add = [&](double v) {
        bits.push_back(nk::float_bits(float(v)));
        bits.push_back(nk::float_bits(float(-v)));
    };
    for (const ref::HalfFormat& f : {ref::kBf16, ref::kF16}) {
        // Around every power of two of the format's range, the subnormals included: the
        // values of the format, ties to even both ways, and just off the ties.
        for (int e = f.emin - f.precision; e <= f.emax + 1; ++e) {
            const double q = std::ldexp(1.0, std::max(e, f.emin) - f.precision + 1); // quantum at 2^e
            for (int k : {0, 1, 2, 3}) {
                const double base = std::ldexp(1.0, e) + k * q;
                for (double off : {0.0, 0.5, -0.5})
                    if (base + off * q > 0) {
                        const float t = float(base + off * q);
                        add(t);
                        add(std::nextafter(t, 0.0f));
                        add(std::nextafter(t, INFINITY));
                    }
            }
        }
        const double largest = std::ldexp(2.0 - std::ldexp(1.0, 1 - f.precision), f.emax);
        const double q = std::ldexp(1.0, f.emax - f.precision + 1);
        for (double v : {largest, largest + q / 2, largest + q / 4}) { // the largest, the overflow tie
            add(v);
            add(std::nextafter(float(v), 0.0f));
            add(std::nextafter(float(v), INFINITY));
        }
    }
    // Float subnormals and zeros, the extremes, infinities, NaNs with payloads.
    for (uint32_t u : {0x00000000u, 0x00000001u, 0x00007fffu, 0x00008000u, 0x00018000u, 0x00400000u, 0x007fffffu,
                       0x00800000u, 0x7f7fffffu, 0x7f7f7fffu, 0x7f7f8000u, 0x7f800000u, 0x7f800001u, 0x7f802000u,
                       0x7f810000u, 0x7fa00000u, 0x7fbfffffu, 0x7fc00000u, 0x7fc00001u, 0x7fffffffu, 0x7f812345u}) {
        bits.push_back(u);
        bits.push_back(u | 0x80000000u);
    }
    std::mt19937_64 rng(26);
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    const int randoms = 1 << 14;
#else
    const int randoms = 1 << 20;
#endif
    for (int i = 0; i < randoms; ++i) bits.push_back(uint32_t(rng()));
    bits.push_back(0x3f800001u); // an odd count: every path's tail runs
    std::vector<float> v(bits.size());
    for (size_t i = 0; i < v.size(); ++i) v[i] = nk::bits_float(bits[i]);
    return v;
}

} // namespace

TEST_CASE("half: every bf16 and f16 value to float and back, on every path") {
    std::vector<uint16_t> all(1 << 16);
    for (size_t i = 0; i < all.size(); ++i) all[i] = uint16_t(i);
    for (const Format& fm : kFormats)
        for (const Path& p : paths()) {
            INFO(fm.name << " on " << p.name);
            // From offset 1 as well: the vector loops start anywhere, the tails run.
            for (size_t from : {size_t(0), size_t(1)}) {
                std::vector<float> f(all.size(), -7.0f);
                fm.to_f32(*p.k, all.data() + from, f.data() + from, int64_t(all.size() - from));
                size_t bad = 0;
                for (size_t i = from; i < all.size(); ++i)
                    if (nk::float_bits(f[i]) != want_float(fm, all[i]) && bad++ < 3)
                        CHECK_MESSAGE(false, hex(all[i]) << " gave float " << hex(nk::float_bits(f[i])) << ", want " << hex(want_float(fm, all[i])));
                CHECK(bad == 0);
                // And back: every value is itself, a NaN a quiet NaN of the same sign and payload.
                std::vector<uint16_t> back(all.size(), 0x1234);
                fm.from_f32(*p.k, f.data() + from, back.data() + from, int64_t(all.size() - from));
                for (size_t i = from; i < all.size(); ++i) {
                    const uint16_t quiet = fm.f.fraction == 7 ? 0x0040 : 0x0200;
                    const uint16_t want = ref::is_nan(fm.f, all[i]) ? uint16_t(all[i] | quiet) : all[i];
                    if (back[i] != want && bad++ < 3)
                        CHECK_MESSAGE(false, hex(all[i]) << " came back as " << hex(back[i]));
                }
                CHECK(bad == 0);
            }
        }
}

TEST_CASE("half: a sweep of floats rounds to nearest even on every path") {
    const std::vector<float> x = sweep();
    for (const Format& fm : kFormats) {
        std::vector<uint16_t> want(x.size());
        for (size_t i = 0; i < x.size(); ++i) want[i] = want_half(fm, x[i]);
        // The scalar definition against the float64 reference.
        for (size_t i = 0; i < x.size(); ++i) {
            const uint16_t got = fm.f.fraction == 7 ? nk::bf16_from_float(x[i]) : nk::f16_from_float(x[i]);
            if (got != want[i]) {
                CHECK_MESSAGE(false, fm.name << ": float " << hex(nk::float_bits(x[i])) << " gave " << hex(got) << ", want " << hex(want[i]));
                break;
            }
        }
        for (const Path& p : paths()) {
            INFO(fm.name << " on " << p.name);
            for (size_t from : {size_t(0), size_t(3)}) {
                std::vector<uint16_t> got(x.size(), 0x1234);
                fm.from_f32(*p.k, x.data() + from, got.data() + from, int64_t(x.size() - from));
                size_t bad = 0;
                for (size_t i = from; i < x.size(); ++i)
                    if (got[i] != want[i] && bad++ < 3)
                        CHECK_MESSAGE(false, "float " << hex(nk::float_bits(x[i])) << " gave " << hex(got[i]) << ", want " << hex(want[i]));
                CHECK(bad == 0);
                CHECK(got[from - (from ? 1 : 0)] == (from ? 0x1234 : want[0])); // nothing before `from` written
            }
        }
    }
}

TEST_CASE("half: landmarks of the rounding") {
    // A few results spelled out, so that the reference itself is pinned down.
    CHECK(nk::bf16_from_float(1.0f + 0x1p-8f) == 0x3f80);        // tie: down to even
    CHECK(nk::bf16_from_float(1.0f + 3 * 0x1p-8f) == 0x3f82);    // tie: up to even
    CHECK(nk::bf16_from_float(std::numeric_limits<float>::max()) == 0x7f80); // overflow
    CHECK(nk::bf16_from_float(nk::bits_float(0x007fffffu)) == 0x0080);       // float subnormal: kept
    CHECK(nk::bf16_from_float(-0.0f) == 0x8000);
    CHECK(nk::bf16_from_float(nk::bits_float(0x7f800001u)) == 0x7fc0);       // NaN without top payload: quiet
    CHECK(nk::f16_from_float(65504.0f) == 0x7bff);
    CHECK(nk::f16_from_float(65519.996f) == 0x7bff);
    CHECK(nk::f16_from_float(65520.0f) == 0x7c00); // the overflow tie goes to infinity (even)
    CHECK(nk::f16_from_float(0x1p-24f) == 0x0001);
    CHECK(nk::f16_from_float(0x1p-25f) == 0x0000);       // tie: to even zero
    CHECK(nk::f16_from_float(3 * 0x1p-25f) == 0x0002);   // tie: up to even
    CHECK(nk::f16_from_float(nk::bits_float(0xffc12345u)) == (0xfe00 | (0x412345 >> 13)));
    CHECK(nk::float_bits(nk::float_from_f16(0x7c01)) == 0x7fc02000u); // quieted
    CHECK(nk::float_bits(nk::float_from_bf16(0x7f81)) == 0x7f810000u); // exact bits
}
