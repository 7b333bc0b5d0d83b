// The checks on a block's float-term sums, and the fixed fold of 16 lanes. Compiled
// only into baseline code (the planner), never into an ISA translation unit. The
// blocks' moments are merged by the epilogue kernels (batch_norm_channel_kernels.hpp).
#pragma once

#include <cmath>
#include <cstdint>

namespace nk {

// The reductions form their terms in float and flush float partials of a few terms
// into double sums (batch_norm_kernels.hpp). The planner trusts such sums of a block only
// when float could hold every term, and redoes the block with double terms otherwise:
//  - range: an overflow leaves a non-finite sum. Terms under float's normal range
//    (2^-126) lose digits, but at most 2^-149 each: negligible when the average |term| is
//    at least kMinAverageTerm (2^-100). A smaller sum means tiny terms, or cancellation,
//    or an all-zero block; the double terms are then only slower, never worse;
//  - statistics only, cancellation: with the pivot at distance delta from the block's
//    mean, s2 = M2 + n delta^2, and the float roundings of s2 (relative 2^-24 per term)
//    reach M2 multiplied by s2 / M2. It may be at most kMaxCancellation.
constexpr double kMinAverageTerm = 0x1p-100;
constexpr double kMaxCancellation = 16;

// Each check is written once for V = double (the planner, one block) and for V = a
// register of doubles (the rows kernels check a tile of lanes at once; ISA code must use
// the templates with register types only). Mask is bool or the register's mask.
template <class V>
auto finite_mask(V x) {
    return x - x == V(0.0); // false for an infinity and for NaN
}

template <class V>
auto stats_sums_trusted_mask(V count, V s1, V s2) {
    const V m2 = s2 - s1 * (s1 / count);
    return finite_mask(s1) & finite_mask(s2) & (s2 >= V(kMinAverageTerm) * count) &
           (m2 * V(kMaxCancellation) >= s2);
}

template <class V>
auto grad_sums_trusted_mask(V count, V s1, V s2) {
    using std::fabs;
    return finite_mask(s1) & finite_mask(s2) & (fabs(s2) >= V(kMinAverageTerm) * count);
}

inline bool stats_sums_trusted(double count, double s1, double s2) {
    return stats_sums_trusted_mask(count, s1, s2);
}

inline bool grad_sums_trusted(double count, double s1, double s2) { return grad_sums_trusted_mask(count, s1, s2); }

// Sum of 16 lanes in a fixed pairwise order.
// (Written out level by level: a loop over the levels was not unrolled, and kept the
// partial sums on the stack.)
inline double fold16(const double* lanes) {
    double t[8];
    for (int i = 0; i < 8; ++i) t[i] = lanes[i] + lanes[i + 8];
    for (int i = 0; i < 4; ++i) t[i] += t[i + 4];
    for (int i = 0; i < 2; ++i) t[i] += t[i + 2];
    return t[0] + t[1];
}

} // namespace nk
