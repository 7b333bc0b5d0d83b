// Per-block statistics and their exact-order merge. Compiled only into baseline
// code (the planner), never into an ISA translation unit.
#pragma once

#include <cstdint>

namespace nk {

// count, mean and sum of squared deviations (M2) of a block of values.
struct Moments {
    double count = 0;
    double mean = 0;
    double m2 = 0;
};

// Block moments from sums of (x - pivot) and (x - pivot)^2 over `count` values.
// With the pivot inside the data, the cancellation in s2 - s1^2/n is mild and double
// sums lose nothing measurable at float32 input precision.
inline Moments moments_from_shifted_sums(double count, double pivot, double s1, double s2) {
    Moments m;
    m.count = count;
    double d = s1 / count;
    m.mean = pivot + d;
    m.m2 = s2 - s1 * d;
    if (m.m2 < 0) m.m2 = 0;
    return m;
}

// Chan et al. merge of two disjoint blocks (the batched form of Welford's update).
inline Moments merge(const Moments& a, const Moments& b) {
    if (b.count == 0) return a;
    if (a.count == 0) return b;
    Moments r;
    r.count = a.count + b.count;
    double delta = b.mean - a.mean;
    double wb = b.count / r.count;
    r.mean = a.mean + delta * wb;
    r.m2 = a.m2 + b.m2 + delta * delta * a.count * wb;
    return r;
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
