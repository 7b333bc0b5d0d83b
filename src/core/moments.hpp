// The moments of every op: the checks on a piece's float-term sums, the fixed fold of 16
// lanes, and Chan's merge of pieces. Each template is written once for V = double (the
// planners, one statistic) and for V = a register of doubles (the per-channel kernels, a
// register of statistics at once): the same IEEE operations in the same order, so every
// path gives the same bits. ISA code must instantiate them with register types only.
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

// max(v, 0) with v's NaN kept (not std::max, which has no register form).
inline double select_below_zero(double v) { return v < 0 ? 0.0 : v; }
template <class V>
V select_below_zero(V v) {
    return select(v < V(0.0), V(0.0), v);
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

// One piece's moments from its shifted sums s1 = sum(x - center), s2 = sum((x - center)^2)
// over `count` values: with the center inside the data the cancellation in
// s2 - s1^2/count is mild. A rounding below zero is clamped.
template <class V>
void moments_from_sums(double count, V s1, V s2, V center, V& mean, V& m2) {
    const V d = s1 / V(count);
    mean = center + d;
    m2 = s2 - s1 * d;
    m2 = select_below_zero(m2);
}

// Chan et al.'s merge (the batched form of Welford's update): (count_a, mean_a, m2_a)
// takes in piece b. Pieces are merged in a fixed order; an empty piece changes nothing,
// and the first non-empty one is taken as it is.
template <class V>
void chan_merge(double& count_a, V& mean_a, V& m2_a, double count_b, V mean_b, V m2_b) {
    if (count_b == 0) return;
    if (count_a == 0) {
        count_a = count_b;
        mean_a = mean_b;
        m2_a = m2_b;
        return;
    }
    const double count_r = count_a + count_b, wb = count_b / count_r;
    const V delta = mean_b - mean_a;
    mean_a = mean_a + delta * V(wb);
    m2_a = m2_a + m2_b + delta * delta * V(count_a) * V(wb);
    count_a = count_r;
}

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
