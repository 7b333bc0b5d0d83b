// The checks on a block's float-term sums, and the fixed fold of 16 lanes. Compiled
// only into baseline code (the planner), never into an ISA translation unit. The
// blocks' moments are merged by the epilogue kernels (batch_norm_epilogues.hpp).
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

inline bool stats_sums_trusted(double count, double s1, double s2) {
    if (!std::isfinite(s1) || !std::isfinite(s2) || !(s2 >= kMinAverageTerm * count)) return false;
    const double m2 = s2 - s1 * (s1 / count);
    return m2 * kMaxCancellation >= s2;
}

inline bool grad_sums_trusted(double count, double s1, double s2) {
    return std::isfinite(s1) && std::isfinite(s2) && std::fabs(s2) >= kMinAverageTerm * count;
}

// Sum of 16 lanes in a fixed pairwise order.
inline double fold16(const double* lanes) {
    double t[16];
    for (int i = 0; i < 16; ++i) t[i] = lanes[i];
    for (int w = 8; w >= 1; w /= 2)
        for (int i = 0; i < w; ++i) t[i] += t[i + w];
    return t[0];
}

} // namespace nk
