#include "core/run_moments.hpp"

#include "core/moments.hpp"

#include <algorithm>

namespace nk {

float run_pivot(const float* x, int64_t len) {
    double sum = 0;
    for (int64_t q = 0; q < 4; ++q) sum += x[q * len / 4];
    return float(sum / 4);
}

PieceSums checked_stats(const RunKernelTable& k, const float* x, int64_t len, float pivot, bool squares,
                        const double* acc1, const double* acc2) {
    const double count = double(len);
    PieceSums s{fold16(acc1), fold16(acc2)};
    const bool trusted = squares ? grad_sums_trusted(count, s.s1, s.s2) : stats_sums_trusted(count, s.s1, s.s2);
    if (trusted) return s;
    double a1[16] = {}, a2[16] = {};
    k.stats_seg_double(x, 1, len, len, pivot, a1, a2);
    return {fold16(a1), fold16(a2)};
}

PieceSums checked_grads(const RunKernelTable& k, const float* x, const float* dy, const float* w, int64_t len,
                        float mean, const double* acc1, const double* acc2) {
    PieceSums s{fold16(acc1), fold16(acc2)};
    if (grad_sums_trusted(double(len), s.s1, s.s2)) return s;
    double a1[16] = {}, a2[16] = {};
    k.grad_seg_double(x, dy, w, 1, len, len, mean, a1, a2);
    return {fold16(a1), fold16(a2)};
}

RunMoments run_moments(const RunKernelTable& k, const float* x, int64_t len, bool squares) {
    double count = 0, mean = 0, m2 = 0;
    for (int64_t off = 0; off < len; off += kRunPiece) {
        const int64_t n = std::min(kRunPiece, len - off);
        const float pivot = squares ? 0.0f : run_pivot(x + off, n);
        double a1[16] = {}, a2[16] = {};
        k.stats_seg(x + off, 1, n, n, pivot, a1, a2);
        const PieceSums s = checked_stats(k, x + off, n, pivot, squares, a1, a2);
        if (squares) {
            m2 += s.s2;
            continue;
        }
        double mean_b, m2_b;
        moments_from_sums(double(n), s.s1, s.s2, double(pivot), mean_b, m2_b);
        chan_merge(count, mean, m2, double(n), mean_b, m2_b);
    }
    return {mean, m2};
}

PieceSums run_grads(const RunKernelTable& k, const float* x, const float* dy, const float* w, int64_t len,
                    float mean) {
    PieceSums total{0, 0};
    for (int64_t off = 0; off < len; off += kRunPiece) {
        const int64_t n = std::min(kRunPiece, len - off);
        double a1[16] = {}, a2[16] = {};
        k.grad_seg(x + off, dy + off, w ? w + off : nullptr, n, mean, a1, a2);
        const PieceSums s = checked_grads(k, x + off, dy + off, w ? w + off : nullptr, n, mean, a1, a2);
        total.s1 += s.s1;
        total.s2 += s.s2;
    }
    return total;
}

} // namespace nk
