// Reference rounding of a real number to bf16 or f16, in double arithmetic: short and
// independent of the library's bit manipulation (src/core/half.hpp).
#pragma once

#include <cmath>
#include <cstdint>
#include <cstring>

namespace ref {

struct HalfFormat {
    int precision; // significand bits, the implicit one included
    int emin;      // exponent of the smallest normal
    int emax;      // exponent of the largest finite
    int fraction;  // stored fraction bits
};
constexpr HalfFormat kBf16{8, -126, 127, 7};
constexpr HalfFormat kF16{11, -14, 15, 10};

// x rounded to the format, to nearest with ties to even (the default rounding mode of
// nearbyint); beyond the largest finite by half a unit or more: infinity.
inline double round_to(const HalfFormat& f, double x) {
    if (x == 0 || !std::isfinite(x)) return x;
    int e;
    std::frexp(std::fabs(x), &e); // |x| = m * 2^e, m in [0.5, 1)
    const int exponent = std::max(e - 1, f.emin);
    const double quantum = std::ldexp(1.0, exponent - f.precision + 1);
    const double r = std::nearbyint(x / quantum) * quantum;
    const double largest = std::ldexp(2.0 - std::ldexp(1.0, 1 - f.precision), f.emax);
    return std::fabs(r) > largest ? std::copysign(INFINITY, x) : r;
}

// The bits of a value representable in the format (not NaN).
inline uint16_t encode(const HalfFormat& f, double v) {
    const uint16_t sign = std::signbit(v) ? 0x8000 : 0;
    const int bias = -f.emin + 1;
    const double a = std::fabs(v);
    if (a == 0) return sign;
    if (std::isinf(a)) return uint16_t(sign | (((1 << (15 - f.fraction)) - 1) << f.fraction));
    int e;
    std::frexp(a, &e);
    if (e - 1 < f.emin) // subnormal: a multiple of the smallest one
        return uint16_t(sign | uint16_t(a / std::ldexp(1.0, f.emin - f.fraction)));
    const double m = a / std::ldexp(1.0, e - 1) - 1; // fraction in [0, 1)
    return uint16_t(sign | ((e - 1 + bias) << f.fraction) | uint16_t(m * (1 << f.fraction)));
}

// A value of the format as a double (not NaN).
inline double decode(const HalfFormat& f, uint16_t h) {
    const int bias = -f.emin + 1, e = (h & 0x7fff) >> f.fraction, m = h & ((1 << f.fraction) - 1);
    const double s = (h & 0x8000) ? -1.0 : 1.0;
    if (e == (1 << (15 - f.fraction)) - 1) return s * INFINITY;
    if (e == 0) return s * std::ldexp(double(m), f.emin - f.fraction);
    return s * std::ldexp(1.0 + std::ldexp(double(m), -f.fraction), e - bias);
}

inline bool is_nan(const HalfFormat& f, uint16_t h) {
    const int exp_ones = ((1 << (15 - f.fraction)) - 1) << f.fraction;
    return (h & exp_ones) == exp_ones && (h & ((1 << f.fraction) - 1)) != 0;
}

} // namespace ref
