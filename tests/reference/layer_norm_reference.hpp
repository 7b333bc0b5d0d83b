// Float64 reference of layer norm and RMS norm: short and obviously right, the judge
// of every test. Rows of K contiguous values.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace ref {

struct RowNormForward {
    std::vector<double> dst, mean, invstd; // invstd: RMS norm's invrms
};

// x is the (already summed, float) input; scale/shift may be empty (1 / 0).
inline RowNormForward row_norm_forward(int64_t M, int64_t K, const std::vector<float>& x,
                                       const std::vector<float>& scale, const std::vector<float>& shift,
                                       double eps, bool rms) {
    RowNormForward out{std::vector<double>(size_t(M * K)), std::vector<double>(size_t(M)),
                       std::vector<double>(size_t(M))};
    for (int64_t r = 0; r < M; ++r) {
        const float* xr = x.data() + r * K;
        double mean = 0, sq = 0;
        for (int64_t i = 0; i < K; ++i) mean += xr[i];
        mean /= double(K);
        for (int64_t i = 0; i < K; ++i) sq += rms ? double(xr[i]) * xr[i] : (xr[i] - mean) * (xr[i] - mean);
        const double invstd = 1 / std::sqrt(sq / double(K) + eps);
        out.mean[size_t(r)] = mean;
        out.invstd[size_t(r)] = invstd;
        for (int64_t i = 0; i < K; ++i) {
            const double w = scale.empty() ? 1.0 : scale[size_t(i)], b = shift.empty() ? 0.0 : shift[size_t(i)];
            out.dst[size_t(r * K + i)] = ((rms ? double(xr[i]) : xr[i] - mean) * invstd) * w + (rms ? 0.0 : b);
        }
    }
    return out;
}

struct RowNormBackward {
    std::vector<double> diff_src, diff_scale, diff_shift;
    std::vector<double> bound; // per element: invstd * (|g| + |mean g| + |xhat mean(g xhat)|)
};

// With the statistics as given (mean ignored for RMS norm).
inline RowNormBackward row_norm_backward(int64_t M, int64_t K, const std::vector<float>& x,
                                         const std::vector<float>& dy, const std::vector<float>& scale,
                                         const std::vector<float>& mean, const std::vector<float>& invstd, bool rms) {
    RowNormBackward out{std::vector<double>(size_t(M * K)), std::vector<double>(size_t(K)),
                        std::vector<double>(size_t(K)), std::vector<double>(size_t(M * K))};
    for (int64_t r = 0; r < M; ++r) {
        const double m = rms ? 0.0 : mean[size_t(r)], a = invstd[size_t(r)];
        double sg = 0, sgx = 0;
        for (int64_t i = 0; i < K; ++i) {
            const size_t e = size_t(r * K + i);
            const double g = double(dy[e]) * (scale.empty() ? 1.0 : scale[size_t(i)]);
            const double xhat = (x[e] - m) * a;
            sg += g;
            sgx += g * xhat;
            out.diff_scale[size_t(i)] += double(dy[e]) * xhat;
            out.diff_shift[size_t(i)] += dy[e];
        }
        const double mg = rms ? 0.0 : sg / double(K), mgx = sgx / double(K);
        for (int64_t i = 0; i < K; ++i) {
            const size_t e = size_t(r * K + i);
            const double g = double(dy[e]) * (scale.empty() ? 1.0 : scale[size_t(i)]);
            const double xhat = (x[e] - m) * a;
            out.diff_src[e] = a * (g - mg - xhat * mgx);
            out.bound[e] = a * (std::fabs(g) + std::fabs(mg) + std::fabs(xhat * mgx));
        }
    }
    return out;
}

} // namespace ref
