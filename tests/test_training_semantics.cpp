// Training semantics beyond one call: running statistics over several steps under
// each convention, optional arguments, in-place calls, and backward against float64
// finite differences of the forward.
#include "test_util.hpp"

namespace {

// Tolerance of running statistics after several steps: each step rounds to float
// once, so the error stays within a few float ulps of the value.
constexpr double kRunningRel = 1e-6;

struct Convention {
    const char* name;
    uint32_t flags;
};

} // namespace

TEST_CASE("running statistics follow PyTorch's and Keras' formulas over several steps") {
    const Convention conventions[] = {
        {"pytorch", 0},
        {"pytorch biased", NK_BN_BIASED_RUNNING_VAR},
        {"keras", NK_BN_KERAS_MOMENTUM},
        {"keras/onnx", NK_BN_KERAS_MOMENTUM | NK_BN_BIASED_RUNNING_VAR},
    };
    for (const Convention& conv : conventions) {
        for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
            CAPTURE(std::string(conv.name));
            CAPTURE(layout);
            const ref::Shape sh{layout, 4, 5, 37};
            nk_batch_norm_desc d = test::make_desc(sh);
            d.flags = conv.flags;
            d.momentum = 0.3f;
            std::vector<float> running_mean(5, 0.0f), running_var(5, 1.0f);
            std::vector<double> want_mean(5, 0.0), want_var(5, 1.0);
            std::vector<float> dst(size_t(sh.count()));
            for (int step = 0; step < 6; ++step) {
                const std::vector<float> src = test::normal(size_t(sh.count()), 2.0 + step, 0.5 + step, 50 + step);
                REQUIRE(nk_batch_norm_forward_training(nullptr, &d, src.data(), dst.data(), nullptr, nullptr,
                                                       running_mean.data(), running_var.data(), nullptr,
                                                       nullptr) == NK_OK);
                const ref::Stats st = ref::batch_stats(sh, src);
                const bool keras = conv.flags & NK_BN_KERAS_MOMENTUM;
                const bool biased = conv.flags & NK_BN_BIASED_RUNNING_VAR;
                for (int64_t c = 0; c < sh.c; ++c) {
                    // The library starts each step from its own float state, as the reference does.
                    want_mean[c] = ref::running_update(want_mean[c], st.mean[c], 0.3f, keras);
                    want_var[c] = ref::running_update(
                        want_var[c], ref::running_var_input(st.var[c], sh.per_channel(), biased), 0.3f, keras);
                }
                test::check_close("running_mean", running_mean.data(), want_mean, 0, 4 * kRunningRel);
                test::check_close("running_var", running_var.data(), want_var, 0, 4 * kRunningRel);
            }
        }
    }
}

TEST_CASE("momentum 1/k at step k gives the cumulative average (PyTorch momentum=None)") {
    const ref::Shape sh{NK_LAYOUT_NCS, 3, 4, 11};
    nk_batch_norm_desc d = test::make_desc(sh);
    std::vector<float> running_mean(4, 123.0f), running_var(4, 456.0f), dst(size_t(sh.count()));
    std::vector<double> sum_mean(4, 0.0), sum_var(4, 0.0);
    for (int k = 1; k <= 5; ++k) {
        d.momentum = 1.0f / float(k);
        const std::vector<float> src = test::normal(size_t(sh.count()), k, 1.0 + k, 90 + k);
        REQUIRE(nk_batch_norm_forward_training(nullptr, &d, src.data(), dst.data(), nullptr, nullptr,
                                               running_mean.data(), running_var.data(), nullptr, nullptr) == NK_OK);
        const ref::Stats st = ref::batch_stats(sh, src);
        std::vector<double> avg_mean(4), avg_var(4);
        for (int64_t c = 0; c < 4; ++c) {
            sum_mean[c] += st.mean[c];
            sum_var[c] += ref::running_var_input(st.var[c], sh.per_channel(), false);
            avg_mean[c] = sum_mean[c] / k;
            avg_var[c] = sum_var[c] / k;
        }
        // Step 1 (momentum 1) forgets the initial 123/456 entirely.
        test::check_close("cumulative running_mean", running_mean.data(), avg_mean, 0, 1e-6 * k);
        test::check_close("cumulative running_var", running_var.data(), avg_var, 0, 1e-6 * k);
    }
}

TEST_CASE("optional arguments: NULL scale/shift are 1/0; NULL running and save buffers are skipped") {
    for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
        const ref::Shape sh{layout, 2, 6, 19};
        const std::vector<float> src = test::normal(size_t(sh.count()), -1.0, 2.0, 5);
        nk_batch_norm_desc d = test::make_desc(sh);
        std::vector<float> dst(size_t(sh.count())), save_mean(6), save_invstd(6);
        REQUIRE(nk_batch_norm_forward_training(nullptr, &d, src.data(), dst.data(), nullptr, nullptr, nullptr,
                                               nullptr, save_mean.data(), save_invstd.data()) == NK_OK);
        const ref::Stats st = ref::batch_stats(sh, src);
        test::check_close("dst", dst.data(), ref::normalize(sh, src, st.mean, st.var, {}, {}, 1e-5), 2e-6, 2e-6);

        std::vector<float> dst2(size_t(sh.count()));
        REQUIRE(nk_batch_norm_forward_training(nullptr, &d, src.data(), dst2.data(), nullptr, nullptr, nullptr,
                                               nullptr, nullptr, nullptr) == NK_OK);
        CHECK(test::same_bits(dst, dst2));

        // Backward with only diff_scale requested computes it and touches nothing else.
        const std::vector<float> dy = test::normal(size_t(sh.count()), 0, 1, 6);
        std::vector<float> diff_scale(6, -1.0f);
        REQUIRE(nk_batch_norm_backward(nullptr, &d, src.data(), dy.data(), nullptr, save_mean.data(),
                                       save_invstd.data(), nullptr, diff_scale.data(), nullptr) == NK_OK);
        const ref::Gradients g = ref::backward(sh, src, dy, {}, test::to_double(save_mean),
                                               test::to_double(save_invstd), false);
        test::check_close("diff_scale", diff_scale.data(), g.diff_scale, 1e-5, 1e-5);
    }
}

TEST_CASE("in place: dst == src and diff_src == diff_dst give the out-of-place bits") {
    for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
        for (int64_t s : {int64_t(1), int64_t(45)}) {
            const ref::Shape sh{layout, 3, 70, s};
            const size_t count = size_t(sh.count());
            const std::vector<float> src = test::normal(count, 1.0, 3.0, 8);
            const std::vector<float> dy = test::normal(count, 0.0, 1.0, 9);
            const std::vector<float> scale = test::uniform(70, 0.5, 2, 10), shift = test::uniform(70, -1, 1, 11);
            nk_batch_norm_desc d = test::make_desc(sh);
            std::vector<float> dst(count), mean(70), invstd(70);
            REQUIRE(nk_batch_norm_forward_training(nullptr, &d, src.data(), dst.data(), scale.data(), shift.data(),
                                                   nullptr, nullptr, mean.data(), invstd.data()) == NK_OK);
            std::vector<float> inplace = src;
            REQUIRE(nk_batch_norm_forward_training(nullptr, &d, inplace.data(), inplace.data(), scale.data(),
                                                   shift.data(), nullptr, nullptr, nullptr, nullptr) == NK_OK);
            CHECK(test::same_bits(inplace, dst));

            std::vector<float> infer(count);
            REQUIRE(nk_batch_norm_forward_inference(nullptr, &d, src.data(), infer.data(), scale.data(),
                                                    shift.data(), mean.data(), invstd.data()) == NK_OK);
            inplace = src;
            REQUIRE(nk_batch_norm_forward_inference(nullptr, &d, inplace.data(), inplace.data(), scale.data(),
                                                    shift.data(), mean.data(), invstd.data()) == NK_OK);
            CHECK(test::same_bits(inplace, infer));

            std::vector<float> dx(count);
            REQUIRE(nk_batch_norm_backward(nullptr, &d, src.data(), dy.data(), scale.data(), mean.data(),
                                           invstd.data(), dx.data(), nullptr, nullptr) == NK_OK);
            inplace = dy;
            REQUIRE(nk_batch_norm_backward(nullptr, &d, src.data(), inplace.data(), scale.data(), mean.data(),
                                           invstd.data(), inplace.data(), nullptr, nullptr) == NK_OK);
            CHECK(test::same_bits(inplace, dx));
        }
    }
}

namespace {

// L = sum(w * dst) of the float64 training forward, as a function of every input.
double loss(const ref::Shape& sh, const std::vector<double>& x, const std::vector<double>& scale,
            const std::vector<double>& shift, const std::vector<double>& w, double eps) {
    double total = 0;
    const double m = double(sh.per_channel());
    for (int64_t c = 0; c < sh.c; ++c) {
        double mean = 0, var = 0;
        ref::for_channel(sh, c, [&](int64_t i) { mean += x[i] / m; });
        ref::for_channel(sh, c, [&](int64_t i) { var += (x[i] - mean) * (x[i] - mean) / m; });
        ref::for_channel(sh, c, [&](int64_t i) {
            total += w[i] * ((x[i] - mean) / std::sqrt(var + eps) * scale[c] + shift[c]);
        });
    }
    return total;
}

} // namespace

TEST_CASE("backward equals float64 central finite differences of the training forward") {
    // Central differences with h = 1e-4 on O(1) data have truncation error ~h^2 = 1e-8;
    // the float32 kernel results carry ~1e-6 relative error: the bound is 2e-5 of the
    // largest gradient.
    for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
        for (int64_t s : {int64_t(1), int64_t(5)}) {
            const ref::Shape sh{layout, 3, 4, s};
            CAPTURE(test::shape_name(sh));
            const size_t count = size_t(sh.count());
            const std::vector<float> src = test::normal(count, 0.5, 1.0, 21);
            const std::vector<float> dy = test::normal(count, 0, 1, 22);
            const std::vector<float> scale = test::uniform(4, 0.5, 1.5, 23), shift = test::uniform(4, -1, 1, 24);
            nk_batch_norm_desc d = test::make_desc(sh);
            std::vector<float> dst(count), mean(4), invstd(4), dx(count), dscale(4), dshift(4);
            REQUIRE(nk_batch_norm_forward_training(nullptr, &d, src.data(), dst.data(), scale.data(), shift.data(),
                                                   nullptr, nullptr, mean.data(), invstd.data()) == NK_OK);
            REQUIRE(nk_batch_norm_backward(nullptr, &d, src.data(), dy.data(), scale.data(), mean.data(),
                                           invstd.data(), dx.data(), dscale.data(), dshift.data()) == NK_OK);

            std::vector<double> x = test::to_double(src), g = test::to_double(scale), b = test::to_double(shift);
            const std::vector<double> w = test::to_double(dy);
            const double h = 1e-4, eps = 1e-5;
            auto central = [&](std::vector<double>& v, size_t i) {
                const double keep = v[i];
                v[i] = keep + h;
                const double up = loss(sh, x, g, b, w, eps);
                v[i] = keep - h;
                const double down = loss(sh, x, g, b, w, eps);
                v[i] = keep;
                return (up - down) / (2 * h);
            };
            std::vector<double> fd_dx(count), fd_dscale(4), fd_dshift(4);
            for (size_t i = 0; i < count; ++i) fd_dx[i] = central(x, i);
            for (size_t c = 0; c < 4; ++c) {
                fd_dscale[c] = central(g, c);
                fd_dshift[c] = central(b, c);
            }
            test::check_close("diff_src vs finite differences", dx.data(), fd_dx, 2e-5 * test::max_abs(fd_dx), 0);
            test::check_close("diff_scale vs finite differences", dscale.data(), fd_dscale,
                              2e-5 * test::max_abs(fd_dscale), 0);
            test::check_close("diff_shift vs finite differences", dshift.data(), fd_dshift,
                              2e-5 * test::max_abs(fd_dshift), 0);
        }
    }
}
