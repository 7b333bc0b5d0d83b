// The judge: batch normalization in float64, written for clarity, not speed.
// Two-pass statistics (mean first, then squared deviations) on the float32 inputs.
#pragma once

#include <cmath>
#include <cstdint>
#include <vector>

namespace ref {

struct Shape {
    int layout; // 0: channels-first (n*C + c)*S + s; 1: channels-last (n*S + s)*C + c
    int64_t n, c, s;
    int64_t count() const { return n * c * s; }
    int64_t per_channel() const { return n * s; }
    int64_t at(int64_t in, int64_t ic, int64_t is) const {
        return layout == 0 ? (in * c + ic) * s + is : (in * s + is) * c + ic;
    }
};

// Calls f(index) for every element of channel ic.
template <class F>
void for_channel(const Shape& sh, int64_t ic, F f) {
    for (int64_t in = 0; in < sh.n; ++in)
        for (int64_t is = 0; is < sh.s; ++is) f(sh.at(in, ic, is));
}

struct Stats {
    std::vector<double> mean, var; // var: biased (population)
};

inline Stats batch_stats(const Shape& sh, const std::vector<float>& x) {
    Stats st{std::vector<double>(sh.c), std::vector<double>(sh.c)};
    const double m = double(sh.per_channel());
    for (int64_t c = 0; c < sh.c; ++c) {
        double sum = 0;
        for_channel(sh, c, [&](int64_t i) { sum += x[i]; });
        const double mean = sum / m;
        double sq = 0;
        for_channel(sh, c, [&](int64_t i) { sq += (x[i] - mean) * (x[i] - mean); });
        st.mean[c] = mean;
        st.var[c] = sq / m;
    }
    return st;
}

inline double param(const std::vector<float>& v, int64_t c, double fallback) {
    return v.empty() ? fallback : double(v[c]);
}

// dst = (x - mean) / sqrt(var + eps) * scale + shift; empty scale/shift mean 1/0.
inline std::vector<double> normalize(const Shape& sh, const std::vector<float>& x,
                                     const std::vector<double>& mean, const std::vector<double>& var,
                                     const std::vector<float>& scale, const std::vector<float>& shift,
                                     double eps) {
    std::vector<double> y(x.size());
    for (int64_t c = 0; c < sh.c; ++c) {
        const double invstd = 1.0 / std::sqrt(var[c] + eps);
        for_channel(sh, c, [&](int64_t i) {
            y[i] = (x[i] - mean[c]) * invstd * param(scale, c, 1) + param(shift, c, 0);
        });
    }
    return y;
}

// Running statistics after one training step.
inline double running_update(double running, double batch, double momentum, bool keras) {
    return keras ? momentum * running + (1 - momentum) * batch : (1 - momentum) * running + momentum * batch;
}
inline double running_var_input(double biased_var, int64_t m, bool biased) {
    return biased ? biased_var : biased_var * double(m) / double(m - 1);
}

struct Gradients {
    std::vector<double> diff_src, diff_scale, diff_shift;
};

// With xhat = (x - mean) * invstd:
//   diff_src = scale*invstd*(dy - mean(dy) - xhat*mean(dy*xhat)), or dy*scale*invstd (global);
//   diff_scale = sum(dy*xhat); diff_shift = sum(dy).
inline Gradients backward(const Shape& sh, const std::vector<float>& x, const std::vector<float>& dy,
                          const std::vector<float>& scale, const std::vector<double>& mean,
                          const std::vector<double>& invstd, bool global) {
    Gradients g{std::vector<double>(x.size()), std::vector<double>(sh.c), std::vector<double>(sh.c)};
    const double m = double(sh.per_channel());
    for (int64_t c = 0; c < sh.c; ++c) {
        double sum_dy = 0, sum_dy_xhat = 0;
        for_channel(sh, c, [&](int64_t i) {
            sum_dy += dy[i];
            sum_dy_xhat += dy[i] * (x[i] - mean[c]) * invstd[c];
        });
        g.diff_shift[c] = sum_dy;
        g.diff_scale[c] = sum_dy_xhat;
        const double a = param(scale, c, 1) * invstd[c];
        for_channel(sh, c, [&](int64_t i) {
            const double xhat = (x[i] - mean[c]) * invstd[c];
            g.diff_src[i] = global ? dy[i] * a : a * (dy[i] - sum_dy / m - xhat * sum_dy_xhat / m);
        });
    }
    return g;
}

} // namespace ref
