// The batch-norm fusions (NK_BN_FUSE_RELU, the residual of the _v2 forwards, backward
// through them with nk_batch_norm_backward_v2) and nk_batch_norm_fold.
//
// Each fused result is checked twice:
//  - against the float64 reference with the tolerances of test_batch_norm.cpp: dst
//    |err| <= 2e-6 (1 + |ref|) (relu(ref + residual), residual added in float64); backward
//    against ref::backward of g = (dst <= 0 ? 0 : dy), diff_residual exactly g;
//  - bitwise against the unfused calls it replaces: nk_batch_norm_forward_* then the
//    residual add and the ReLU in float, and nk_batch_norm_backward on g. The fused
//    kernels compute the same float operations in the same order, so nothing may differ.
// Every ISA x threads 1/2/3 and every forced schedule, both layouts, on shapes that reach
// each kernel family (seg runs, short runs, split channels, narrow, held and wide rows).
#include "test_util.hpp"

namespace {

constexpr double kEps = 1e-5;

float relu(float v) { return v < 0.0f ? 0.0f : v; }
double relu(double v) { return v < 0.0 ? 0.0 : v; }

struct Inputs {
    ref::Shape sh;
    std::vector<float> src, residual, dy, scale, shift, running_mean, running_var;
};

Inputs make_inputs(const ref::Shape& sh, uint64_t seed) {
    Inputs in{sh, {}, {}, {}, {}, {}, {}, {}};
    const size_t count = size_t(sh.count()), c = size_t(sh.c);
    in.src = test::normal(count, 0.3, 1.5, seed);
    for (int64_t ch = 0; ch < sh.c; ++ch) ref::for_channel(sh, ch, [&](int64_t i) { in.src[i] += 0.1f * float(ch); });
    in.residual = test::normal(count, 0.0, 1.0, seed + 1);
    in.dy = test::normal(count, 0.0, 1.0, seed + 2);
    in.scale = test::uniform(c, 0.5, 1.5, seed + 3);
    in.shift = test::uniform(c, -1.0, 1.0, seed + 4);
    in.running_mean = test::uniform(c, -0.5, 0.5, seed + 5);
    in.running_var = test::uniform(c, 0.5, 2.0, seed + 6);
    return in;
}

// One fused variant: the ReLU, the residual, or both.
struct Variant {
    bool relu, residual;
};
const Variant kVariants[] = {{true, false}, {true, true}, {false, true}};

std::string variant_name(const Variant& v) {
    return std::string(v.relu ? "relu" : "") + (v.relu && v.residual ? "+" : "") + (v.residual ? "residual" : "");
}

// Everything one configuration produces for one variant.
struct Outputs {
    std::vector<float> dst, save_mean, save_invstd, running_mean, running_var, inference_dst;
    // backward_v2 (with the ReLU only): all outputs; frozen statistics; sums alone
    std::vector<float> diff_src, diff_residual, diff_scale, diff_shift;
    std::vector<float> global_diff_src, global_diff_residual, sums_diff_scale, sums_diff_shift;
    std::vector<float> only_diff_residual; // diff_residual alone

    bool operator==(const Outputs& o) const {
        using test::same_bits;
        return same_bits(dst, o.dst) && same_bits(save_mean, o.save_mean) && same_bits(save_invstd, o.save_invstd) &&
               same_bits(running_mean, o.running_mean) && same_bits(running_var, o.running_var) &&
               same_bits(inference_dst, o.inference_dst) && same_bits(diff_src, o.diff_src) &&
               same_bits(diff_residual, o.diff_residual) && same_bits(diff_scale, o.diff_scale) &&
               same_bits(diff_shift, o.diff_shift) && same_bits(global_diff_src, o.global_diff_src) &&
               same_bits(global_diff_residual, o.global_diff_residual) &&
               same_bits(sums_diff_scale, o.sums_diff_scale) && same_bits(sums_diff_shift, o.sums_diff_shift) &&
               same_bits(only_diff_residual, o.only_diff_residual);
    }
};

Outputs run_fused(nk_context* ctx, const Inputs& in, const Variant& v) {
    const size_t count = size_t(in.sh.count()), c = size_t(in.sh.c);
    nk_batch_norm_desc d = test::make_desc(in.sh);
    d.flags = v.relu ? NK_BN_FUSE_RELU : 0u;
    const float* residual = v.residual ? in.residual.data() : nullptr;
    Outputs o;
    o.dst.assign(count, -7.0f);
    o.save_mean.assign(c, -7.0f);
    o.save_invstd.assign(c, -7.0f);
    o.running_mean = in.running_mean;
    o.running_var = in.running_var;
    REQUIRE(nk_batch_norm_forward_training_v2(ctx, &d, in.src.data(), residual, o.dst.data(), in.scale.data(),
                                              in.shift.data(), o.running_mean.data(), o.running_var.data(),
                                              o.save_mean.data(), o.save_invstd.data()) == NK_OK);
    o.inference_dst.assign(count, -7.0f);
    REQUIRE(nk_batch_norm_forward_inference_v2(ctx, &d, in.src.data(), residual, o.inference_dst.data(),
                                               in.scale.data(), in.shift.data(), in.running_mean.data(),
                                               in.running_var.data()) == NK_OK);
    if (!v.relu) return o; // without the ReLU, backward is nk_batch_norm_backward's (test_batch_norm.cpp)

    // Backward at the forward's own statistics, masked by its dst.
    o.diff_src.assign(count, -7.0f);
    o.diff_residual.assign(count, -7.0f);
    o.diff_scale.assign(c, -7.0f);
    o.diff_shift.assign(c, -7.0f);
    REQUIRE(nk_batch_norm_backward_v2(ctx, &d, in.src.data(), in.dy.data(), o.dst.data(), in.scale.data(),
                                      o.save_mean.data(), o.save_invstd.data(), o.diff_src.data(),
                                      o.diff_residual.data(), o.diff_scale.data(), o.diff_shift.data()) == NK_OK);
    o.sums_diff_scale.assign(c, -7.0f);
    o.sums_diff_shift.assign(c, -7.0f);
    REQUIRE(nk_batch_norm_backward_v2(ctx, &d, in.src.data(), in.dy.data(), o.dst.data(), in.scale.data(),
                                      o.save_mean.data(), o.save_invstd.data(), nullptr, nullptr,
                                      o.sums_diff_scale.data(), o.sums_diff_shift.data()) == NK_OK);
    CHECK(test::same_bits(o.sums_diff_scale, o.diff_scale));
    CHECK(test::same_bits(o.sums_diff_shift, o.diff_shift));
    o.only_diff_residual.assign(count, -7.0f);
    REQUIRE(nk_batch_norm_backward_v2(ctx, &d, in.src.data(), in.dy.data(), o.dst.data(), in.scale.data(),
                                      o.save_mean.data(), o.save_invstd.data(), nullptr, o.only_diff_residual.data(),
                                      nullptr, nullptr) == NK_OK);
    d.flags |= NK_BN_USE_GLOBAL_STATS;
    o.global_diff_src.assign(count, -7.0f);
    o.global_diff_residual.assign(count, -7.0f);
    REQUIRE(nk_batch_norm_backward_v2(ctx, &d, in.src.data(), in.dy.data(), o.dst.data(), in.scale.data(),
                                      o.save_mean.data(), o.save_invstd.data(), o.global_diff_src.data(),
                                      o.global_diff_residual.data(), nullptr, nullptr) == NK_OK);
    return o;
}

// The unfused calls the fusion replaces, on the same context: their bits must be the fused ones.
void check_against_unfused(nk_context* ctx, const Inputs& in, const Variant& v, const Outputs& o) {
    const size_t count = size_t(in.sh.count()), c = size_t(in.sh.c);
    nk_batch_norm_desc d = test::make_desc(in.sh);
    auto post = [&](std::vector<float>& y) {
        for (size_t i = 0; i < count; ++i) {
            if (v.residual) y[i] = y[i] + in.residual[i];
            if (v.relu) y[i] = relu(y[i]);
        }
    };
    std::vector<float> dst(count), save_mean(c), save_invstd(c), rm = in.running_mean, rv = in.running_var;
    REQUIRE(nk_batch_norm_forward_training(ctx, &d, in.src.data(), dst.data(), in.scale.data(), in.shift.data(),
                                           rm.data(), rv.data(), save_mean.data(), save_invstd.data()) == NK_OK);
    post(dst);
    CHECK_MESSAGE(test::same_bits(dst, o.dst), "training dst differs from the unfused calls");
    CHECK(test::same_bits(save_mean, o.save_mean));
    CHECK(test::same_bits(save_invstd, o.save_invstd));
    CHECK(test::same_bits(rm, o.running_mean));
    CHECK(test::same_bits(rv, o.running_var));
    std::vector<float> inf(count);
    REQUIRE(nk_batch_norm_forward_inference(ctx, &d, in.src.data(), inf.data(), in.scale.data(), in.shift.data(),
                                            in.running_mean.data(), in.running_var.data()) == NK_OK);
    post(inf);
    CHECK_MESSAGE(test::same_bits(inf, o.inference_dst), "inference dst differs from the unfused calls");
    if (!v.relu) return;

    std::vector<float> g(count);
    for (size_t i = 0; i < count; ++i) g[i] = o.dst[i] <= 0.0f ? 0.0f : in.dy[i];
    CHECK_MESSAGE(test::same_bits(g, o.diff_residual), "diff_residual is not the masked diff_dst");
    CHECK(test::same_bits(g, o.global_diff_residual));
    CHECK(test::same_bits(g, o.only_diff_residual));
    std::vector<float> dx(count), dscale(c), dshift(c);
    REQUIRE(nk_batch_norm_backward(ctx, &d, in.src.data(), g.data(), in.scale.data(), o.save_mean.data(),
                                   o.save_invstd.data(), dx.data(), dscale.data(), dshift.data()) == NK_OK);
    CHECK_MESSAGE(test::same_bits(dx, o.diff_src), "diff_src differs from nk_batch_norm_backward on the masked dy");
    CHECK(test::same_bits(dscale, o.diff_scale));
    CHECK(test::same_bits(dshift, o.diff_shift));
    d.flags = NK_BN_USE_GLOBAL_STATS;
    REQUIRE(nk_batch_norm_backward(ctx, &d, in.src.data(), g.data(), in.scale.data(), o.save_mean.data(),
                                   o.save_invstd.data(), dx.data(), nullptr, nullptr) == NK_OK);
    CHECK(test::same_bits(dx, o.global_diff_src));
}

void check_against_reference(const Inputs& in, const Variant& v, const Outputs& o) {
    const ref::Shape& sh = in.sh;
    const ref::Stats st = ref::batch_stats(sh, in.src);
    auto post = [&](std::vector<double> y) {
        for (size_t i = 0; i < y.size(); ++i) {
            if (v.residual) y[i] += in.residual[i];
            if (v.relu) y[i] = relu(y[i]);
        }
        return y;
    };
    test::check_close("dst", o.dst.data(), post(ref::normalize(sh, in.src, st.mean, st.var, in.scale, in.shift, kEps)),
                      2e-6, 2e-6);
    test::check_close("inference dst", o.inference_dst.data(),
                      post(ref::normalize(sh, in.src, test::to_double(in.running_mean),
                                          test::to_double(in.running_var), in.scale, in.shift, kEps)),
                      2e-6, 2e-6);
    if (!v.relu) return;
    // The gradient at the kernel's own saved statistics, masked by its own dst.
    std::vector<float> g(in.dy.size());
    for (size_t i = 0; i < g.size(); ++i) g[i] = o.dst[i] <= 0.0f ? 0.0f : in.dy[i];
    const std::vector<double> mean = test::to_double(o.save_mean), invstd = test::to_double(o.save_invstd);
    const ref::Gradients want = ref::backward(sh, in.src, g, in.scale, mean, invstd, false);
    const ref::Gradients frozen = ref::backward(sh, in.src, g, in.scale, mean, invstd, true);
    // Bounds as in test_batch_norm.cpp: the size of the terms each result is made of.
    double dsrc_terms = 0;
    std::vector<double> b_scale(size_t(sh.c)), b_shift(size_t(sh.c));
    const double m = double(sh.per_channel());
    for (int64_t c = 0; c < sh.c; ++c) {
        const double a = std::fabs(in.scale[c] * invstd[c]);
        ref::for_channel(sh, c, [&](int64_t i) {
            const double xhat = (in.src[i] - mean[c]) * invstd[c];
            b_shift[c] += 1e-6 * std::fabs(g[i]);
            b_scale[c] += 1e-6 * std::fabs(g[i] * xhat);
            dsrc_terms = std::max(dsrc_terms, a * (std::fabs(g[i]) + std::fabs(want.diff_shift[c] / m) +
                                                   std::fabs(xhat * want.diff_scale[c] / m)));
        });
    }
    test::check_close("diff_src", o.diff_src.data(), want.diff_src, 2e-6 * dsrc_terms, 0);
    test::check_close("global diff_src", o.global_diff_src.data(), frozen.diff_src, 2e-6 * dsrc_terms, 0);
    for (int64_t c = 0; c < sh.c; ++c) {
        CAPTURE(c);
        CHECK(std::fabs(o.diff_scale[c] - want.diff_scale[c]) <= b_scale[c] + 1e-6 * std::fabs(want.diff_scale[c]));
        CHECK(std::fabs(o.diff_shift[c] - want.diff_shift[c]) <= b_shift[c] + 1e-6 * std::fabs(want.diff_shift[c]));
    }
}

void check_shape(const ref::Shape& sh, const std::vector<int32_t>& threads, uint64_t seed) {
    const Inputs in = make_inputs(sh, seed);
    CAPTURE(test::shape_name(sh));
    for (const Variant& v : kVariants) {
        CAPTURE(variant_name(v));
        bool have_first = false;
        Outputs first;
        auto check = [&](nk_context* ctx, bool reference) {
            const Outputs o = run_fused(ctx, in, v);
            check_against_unfused(ctx, in, v, o);
            if (reference) check_against_reference(in, v, o);
            if (!have_first) {
                first = o;
                have_first = true;
            }
            CHECK_MESSAGE(o == first, "results differ bitwise from the first configuration");
        };
        for (int32_t isa : test::isas())
            for (int32_t t : threads) {
                CAPTURE(test::isa_name(isa));
                CAPTURE(t);
                test::Context ctx(isa, t);
                check(ctx.get(), isa == NK_ISA_SCALAR && t == 1);
            }
        for (nk::Schedule schedule : test::forced_schedules()) {
            CAPTURE(test::schedule_name(schedule));
            test::Context ctx(test::isas().back(), 2, schedule);
            check(ctx.get(), false);
        }
    }
}

// Seg runs (S 257, 3136), short runs (S 1, 7), a split channel (S 20000), rows of 3 and 5
// lanes (narrow), 128 channels-last (held coefficient registers on AVX-512), 1500 lanes
// (wide rows).
const ref::Shape kShapes[] = {
    {0, 2, 3, 7}, {0, 16, 17, 1}, {0, 1, 17, 257}, {0, 2, 64, 3136}, {0, 2, 2, 20000},
    {0, 3, 5, 33}, {0, 3, 128, 5}, {0, 5, 1500, 3},
};

} // namespace

TEST_CASE("batch norm fusions: ReLU, residual and both, forward and backward, every path") {
    uint64_t seed = 5000;
    for (ref::Shape sh : kShapes)
        for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
            sh.layout = layout;
            check_shape(sh, {1, 2, 3}, seed++);
        }
}

// With 1 thread a 3 MB channels-last tensor takes the prefetching wide-row kernels.
TEST_CASE("batch norm fusions: wide channels-last rows larger than the L2") {
    check_shape({NK_LAYOUT_NSC, 8, 1500, 64}, {1}, 5100);
}

TEST_CASE("batch norm fusions: NaN stays NaN through the ReLU, and its gradient passes") {
    const ref::Shape sh{NK_LAYOUT_NCS, 2, 2, 8};
    Inputs in = make_inputs(sh, 5200);
    in.residual[3] = std::numeric_limits<float>::quiet_NaN(); // channel 0, sample 0
    nk_batch_norm_desc d = test::make_desc(sh);
    d.flags = NK_BN_FUSE_RELU;
    std::vector<float> dst(size_t(sh.count())), mean(2), invstd(2);
    REQUIRE(nk_batch_norm_forward_training_v2(nullptr, &d, in.src.data(), in.residual.data(), dst.data(), nullptr,
                                              nullptr, nullptr, nullptr, mean.data(), invstd.data()) == NK_OK);
    CHECK(std::isnan(dst[3]));
    for (size_t i = 0; i < dst.size(); ++i)
        if (i != 3) CHECK(dst[i] >= 0.0f);
    std::vector<float> dres(dst.size());
    REQUIRE(nk_batch_norm_backward_v2(nullptr, &d, in.src.data(), in.dy.data(), dst.data(), nullptr, mean.data(),
                                      invstd.data(), nullptr, dres.data(), nullptr, nullptr) == NK_OK);
    CHECK(dres[3] == in.dy[3]);
    for (size_t i = 0; i < dst.size(); ++i) CHECK(dres[i] == (dst[i] > 0.0f || i == 3 ? in.dy[i] : 0.0f));
}

// The synchronized forward honours the ReLU: one rank gives training's bits.
TEST_CASE("batch norm fusions: nk_batch_norm_forward_from_partial with NK_BN_FUSE_RELU") {
    for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
        const ref::Shape sh{layout, 4, 6, 50};
        const Inputs in = make_inputs(sh, 5300);
        nk_batch_norm_desc d = test::make_desc(sh);
        d.flags = NK_BN_FUSE_RELU;
        int64_t bytes = 0;
        REQUIRE(nk_batch_norm_partial_size(&d, 0, &bytes) == NK_OK);
        std::vector<unsigned char> partial(static_cast<size_t>(bytes)), merged(static_cast<size_t>(bytes));
        REQUIRE(nk_batch_norm_stats(nullptr, &d, 0, in.src.data(), partial.data(), bytes) == NK_OK);
        const void* parts[] = {partial.data()};
        REQUIRE(nk_batch_norm_merge_partials(&d, parts, &bytes, 1, merged.data(), bytes) == NK_OK);
        std::vector<float> a(size_t(sh.count())), b(a.size());
        REQUIRE(nk_batch_norm_forward_from_partial(nullptr, &d, merged.data(), bytes, in.src.data(), a.data(),
                                                   in.scale.data(), in.shift.data(), nullptr, nullptr, nullptr,
                                                   nullptr) == NK_OK);
        REQUIRE(nk_batch_norm_forward_training(nullptr, &d, in.src.data(), b.data(), in.scale.data(), in.shift.data(),
                                               nullptr, nullptr, nullptr, nullptr) == NK_OK);
        CHECK(test::same_bits(a, b));
        CHECK(*std::min_element(a.begin(), a.end()) == 0.0f);
    }
}

// ---- nk_batch_norm_fold ----

// y[c, p] = bias[c] + sum over (ci, kh, kw) of w[c, ci, kh, kw] * x[ci, p + (kh, kw)]: a
// 3x3 convolution without padding, in float64.
std::vector<double> conv3x3(const std::vector<float>& w, const std::vector<double>& bias, const std::vector<float>& x,
                            int64_t C, int64_t Ci, int64_t H, int64_t W) {
    const int64_t Ho = H - 2, Wo = W - 2;
    std::vector<double> y(size_t(C * Ho * Wo));
    for (int64_t c = 0; c < C; ++c)
        for (int64_t i = 0; i < Ho; ++i)
            for (int64_t j = 0; j < Wo; ++j) {
                double acc = bias[c];
                for (int64_t ci = 0; ci < Ci; ++ci)
                    for (int64_t u = 0; u < 3; ++u)
                        for (int64_t v = 0; v < 3; ++v)
                            acc += double(w[size_t(((c * Ci + ci) * 3 + u) * 3 + v)]) *
                                   double(x[size_t((ci * H + i + u) * W + j + v)]);
                y[size_t((c * Ho + i) * Wo + j)] = acc;
            }
    return y;
}

TEST_CASE("batch norm fold: the folded convolution computes bn(conv(x)) in float64") {
    const int64_t C = 8, Ci = 3, H = 9, W = 7, K = Ci * 9, P = (H - 2) * (W - 2);
    const std::vector<float> w = test::normal(size_t(C * K), 0.0, 0.5, 6000), x = test::normal(size_t(Ci * H * W), 1.0, 2.0, 6001);
    const std::vector<float> bias = test::normal(size_t(C), 0.0, 1.0, 6002), scale = test::uniform(size_t(C), 0.5, 2.0, 6003),
                             shift = test::uniform(size_t(C), -1.0, 1.0, 6004), mean = test::normal(size_t(C), 3.0, 1.0, 6005),
                             var = test::uniform(size_t(C), 0.01, 4.0, 6006);
    nk_batch_norm_desc d = test::make_desc({NK_LAYOUT_NCS, 1, C, P});
    d.epsilon = 1e-3f;
    for (bool with_bias : {true, false}) {
        CAPTURE(with_bias);
        std::vector<float> fw(w.size()), fb(static_cast<size_t>(C));
        REQUIRE(nk_batch_norm_fold(&d, mean.data(), var.data(), scale.data(), shift.data(), K, w.data(),
                                   with_bias ? bias.data() : nullptr, fw.data(), fb.data()) == NK_OK);
        // Each folded value is the float64 formula rounded once.
        for (int64_t c = 0; c < C; ++c) {
            const double s = double(scale[c]) / std::sqrt(double(var[c]) + double(d.epsilon));
            CHECK(fb[c] == float(((with_bias ? double(bias[c]) : 0.0) - double(mean[c])) * s + double(shift[c])));
            for (int64_t i = 0; i < K; ++i) CHECK(fw[size_t(c * K + i)] == float(double(w[size_t(c * K + i)]) * s));
        }
        // End to end: bn(conv(x)) against the folded conv, both in float64; the folded
        // weights are rounded to float once, so they agree to a few float ulps of the terms.
        std::vector<double> b0(size_t(C), 0.0), fbd(fb.begin(), fb.end());
        if (with_bias) b0.assign(bias.begin(), bias.end());
        const std::vector<double> y = conv3x3(w, b0, x, C, Ci, H, W), yf = conv3x3(fw, fbd, x, C, Ci, H, W);
        for (int64_t c = 0; c < C; ++c) {
            const double s = double(scale[c]) / std::sqrt(double(var[c]) + double(d.epsilon));
            double terms = std::fabs(b0[c] - mean[c]) * std::fabs(s) + std::fabs(shift[c]);
            for (int64_t i = 0; i < K; ++i) terms += std::fabs(w[size_t(c * K + i)] * s) * 6.0; // |x| <= ~6 here
            for (int64_t p = 0; p < P; ++p) {
                const double want = (y[size_t(c * P + p)] - mean[c]) * s + shift[c];
                CHECK(std::fabs(yf[size_t(c * P + p)] - want) <= 2e-7 * terms);
            }
        }
    }
}

TEST_CASE("batch norm fold: a linear layer in place, with default scale and shift") {
    const int64_t C = 5, K = 11;
    std::vector<float> w = test::normal(size_t(C * K), 0.0, 1.0, 6100), b = test::normal(size_t(C), 0.0, 1.0, 6101);
    const std::vector<float> w0 = w, b0 = b, mean = test::normal(size_t(C), 0.0, 1.0, 6102),
                             var = test::uniform(size_t(C), 0.1, 3.0, 6103);
    nk_batch_norm_desc d = test::make_desc({NK_LAYOUT_NSC, 4, C, 1});
    REQUIRE(nk_batch_norm_fold(&d, mean.data(), var.data(), nullptr, nullptr, K, w.data(), b.data(), w.data(),
                               b.data()) == NK_OK);
    for (int64_t c = 0; c < C; ++c) {
        const double s = 1.0 / std::sqrt(double(var[c]) + double(d.epsilon));
        CHECK(b[c] == float((double(b0[c]) - double(mean[c])) * s));
        for (int64_t i = 0; i < K; ++i) CHECK(w[size_t(c * K + i)] == float(double(w0[size_t(c * K + i)]) * s));
    }
}
