// Float64 reference of group norm: short and obviously right, the judge of every test.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace ref {

struct GroupShape {
    int layout; // 0: channels-first (n*C + c)*S + s; 1: channels-last (n*S + s)*C + c
    int64_t n, c, s, groups;
    int64_t count() const { return n * c * s; }
    int64_t at(int64_t in, int64_t ic, int64_t is) const {
        return layout == 0 ? (in * c + ic) * s + is : (in * s + is) * c + ic;
    }
    template <class F>
    void for_group(int64_t in, int64_t g, F f) const { // f(index, channel)
        const int64_t cg = c / groups;
        for (int64_t ic = g * cg; ic < (g + 1) * cg; ++ic)
            for (int64_t is = 0; is < s; ++is) f(at(in, ic, is), ic);
    }
};

struct GroupNormForward {
    std::vector<double> dst, mean, invstd;
};

inline GroupNormForward group_norm_forward(const GroupShape& sh, const std::vector<float>& x,
                                           const std::vector<float>& scale, const std::vector<float>& shift,
                                           double eps) {
    GroupNormForward out{std::vector<double>(size_t(sh.count())), {}, {}};
    const double count = double(sh.c / sh.groups * sh.s);
    for (int64_t n = 0; n < sh.n; ++n)
        for (int64_t g = 0; g < sh.groups; ++g) {
            double mean = 0, var = 0;
            sh.for_group(n, g, [&](int64_t i, int64_t) { mean += x[size_t(i)]; });
            mean /= count;
            sh.for_group(n, g, [&](int64_t i, int64_t) { var += (x[size_t(i)] - mean) * (x[size_t(i)] - mean); });
            const double invstd = 1 / std::sqrt(var / count + eps);
            out.mean.push_back(mean);
            out.invstd.push_back(invstd);
            sh.for_group(n, g, [&](int64_t i, int64_t c) {
                out.dst[size_t(i)] = (x[size_t(i)] - mean) * invstd * (scale.empty() ? 1.0 : scale[size_t(c)]) +
                                     (shift.empty() ? 0.0 : shift[size_t(c)]);
            });
        }
    return out;
}

struct GroupNormBackward {
    std::vector<double> diff_src, diff_scale, diff_shift, bound;
};

// With the statistics as given.
inline GroupNormBackward group_norm_backward(const GroupShape& sh, const std::vector<float>& x,
                                             const std::vector<float>& dy, const std::vector<float>& scale,
                                             const std::vector<float>& mean, const std::vector<float>& invstd) {
    GroupNormBackward out{std::vector<double>(size_t(sh.count())), std::vector<double>(size_t(sh.c)),
                          std::vector<double>(size_t(sh.c)), std::vector<double>(size_t(sh.count()))};
    const double count = double(sh.c / sh.groups * sh.s);
    for (int64_t n = 0; n < sh.n; ++n)
        for (int64_t g = 0; g < sh.groups; ++g) {
            const size_t q = size_t(n * sh.groups + g);
            const double m = mean[q], a = invstd[q];
            double sg = 0, sgx = 0;
            sh.for_group(n, g, [&](int64_t i, int64_t c) {
                const double gv = double(dy[size_t(i)]) * (scale.empty() ? 1.0 : scale[size_t(c)]);
                const double xhat = (x[size_t(i)] - m) * a;
                sg += gv;
                sgx += gv * xhat;
                out.diff_scale[size_t(c)] += double(dy[size_t(i)]) * xhat;
                out.diff_shift[size_t(c)] += dy[size_t(i)];
            });
            sh.for_group(n, g, [&](int64_t i, int64_t c) {
                const double gv = double(dy[size_t(i)]) * (scale.empty() ? 1.0 : scale[size_t(c)]);
                const double xhat = (x[size_t(i)] - m) * a;
                out.diff_src[size_t(i)] = a * (gv - sg / count - xhat * sgx / count);
                out.bound[size_t(i)] = a * (std::fabs(gv) + std::fabs(sg / count) + std::fabs(xhat * sgx / count));
            });
        }
    return out;
}

} // namespace ref
