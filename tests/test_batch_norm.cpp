// Every mode x layout x ISA path x thread count against the float64 reference, and
// every configuration bitwise equal to every other.
//
// Tolerances (float32 results vs float64 reference on the same float32 inputs):
//   save_mean, running_mean        |err| <= 1e-7 + 1e-6 |ref|
//   save_invstd, running_var       |err| <= 1e-6 |ref|
//   dst (training and inference)   |err| <= 2e-6 (1 + |ref|)
//   diff_src                       |err| <= 2e-6 max|terms|, terms = scale*invstd*(|dy| +
//                                  |mean dy| + |xhat mean(dy xhat)|): diff_src is a difference
//                                  of these and cannot be more exact than they are
//   diff_scale, diff_shift         |err| <= 1e-6 (sum of |terms|) + 1e-6 |ref|
// Each is ~10x the rounding error of the float32 outputs themselves.
#include "test_util.hpp"

namespace {

struct Inputs {
    ref::Shape sh;
    std::vector<float> src, dy, scale, shift, running_mean, running_var;
};

Inputs make_inputs(const ref::Shape& sh, uint64_t seed) {
    Inputs in{sh, {}, {}, {}, {}, {}, {}};
    in.src = test::normal(size_t(sh.count()), 0.3, 1.5, seed);
    // A different offset per channel, so a channel mix-up cannot pass.
    for (int64_t c = 0; c < sh.c; ++c) ref::for_channel(sh, c, [&](int64_t i) { in.src[i] += 0.1f * float(c); });
    in.dy = test::normal(size_t(sh.count()), 0.0, 1.0, seed + 1);
    in.scale = test::uniform(size_t(sh.c), 0.5, 1.5, seed + 2);
    in.shift = test::uniform(size_t(sh.c), -1.0, 1.0, seed + 3);
    in.running_mean = test::uniform(size_t(sh.c), -0.5, 0.5, seed + 4);
    in.running_var = test::uniform(size_t(sh.c), 0.5, 2.0, seed + 5);
    return in;
}

// Everything one configuration produces.
struct Outputs {
    std::vector<float> dst, save_mean, save_invstd, running_mean, running_var;
    std::vector<float> inference_dst;
    std::vector<float> diff_src, diff_scale, diff_shift;
    std::vector<float> global_diff_src, global_diff_scale, global_diff_shift;
    // Backward with some outputs NULL: diff_src alone with frozen statistics (nothing to
    // reduce), and diff_scale/diff_shift alone (no element-wise pass).
    std::vector<float> frozen_diff_src, sums_diff_scale, sums_diff_shift;

    bool operator==(const Outputs& o) const {
        using test::same_bits;
        return same_bits(dst, o.dst) && same_bits(save_mean, o.save_mean) &&
               same_bits(save_invstd, o.save_invstd) && same_bits(running_mean, o.running_mean) &&
               same_bits(running_var, o.running_var) && same_bits(inference_dst, o.inference_dst) &&
               same_bits(diff_src, o.diff_src) && same_bits(diff_scale, o.diff_scale) &&
               same_bits(diff_shift, o.diff_shift) && same_bits(global_diff_src, o.global_diff_src) &&
               same_bits(global_diff_scale, o.global_diff_scale) &&
               same_bits(global_diff_shift, o.global_diff_shift) && same_bits(frozen_diff_src, o.frozen_diff_src) &&
               same_bits(sums_diff_scale, o.sums_diff_scale) && same_bits(sums_diff_shift, o.sums_diff_shift);
    }
};

// The statistics backward receives: the reference's, rounded to float, so that every
// configuration differentiates at the same point.
struct SavedStats {
    std::vector<float> mean, invstd;
};

Outputs run_all_modes(nk_context* ctx, const Inputs& in, const SavedStats& saved) {
    const size_t count = size_t(in.sh.count()), c = size_t(in.sh.c);
    nk_batch_norm_desc d = test::make_desc(in.sh);
    Outputs o;
    o.dst.assign(count, -7.0f);
    o.save_mean.assign(c, -7.0f);
    o.save_invstd.assign(c, -7.0f);
    o.running_mean = in.running_mean;
    o.running_var = in.running_var;
    REQUIRE(nk_batch_norm_forward_training(ctx, &d, in.src.data(), o.dst.data(), in.scale.data(),
                                           in.shift.data(), o.running_mean.data(), o.running_var.data(),
                                           o.save_mean.data(), o.save_invstd.data()) == NK_OK);

    o.inference_dst.assign(count, -7.0f);
    REQUIRE(nk_batch_norm_forward_inference(ctx, &d, in.src.data(), o.inference_dst.data(),
                                            in.scale.data(), in.shift.data(), in.running_mean.data(),
                                            in.running_var.data()) == NK_OK);

    o.diff_src.assign(count, -7.0f);
    o.diff_scale.assign(c, -7.0f);
    o.diff_shift.assign(c, -7.0f);
    REQUIRE(nk_batch_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(),
                                   saved.mean.data(), saved.invstd.data(), o.diff_src.data(),
                                   o.diff_scale.data(), o.diff_shift.data()) == NK_OK);

    d.flags = NK_BN_USE_GLOBAL_STATS;
    o.global_diff_src.assign(count, -7.0f);
    o.global_diff_scale.assign(c, -7.0f);
    o.global_diff_shift.assign(c, -7.0f);
    REQUIRE(nk_batch_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(),
                                   saved.mean.data(), saved.invstd.data(), o.global_diff_src.data(),
                                   o.global_diff_scale.data(), o.global_diff_shift.data()) == NK_OK);

    o.frozen_diff_src.assign(count, -7.0f);
    REQUIRE(nk_batch_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(), saved.mean.data(),
                                   saved.invstd.data(), o.frozen_diff_src.data(), nullptr, nullptr) == NK_OK);
    d.flags = 0;
    o.sums_diff_scale.assign(c, -7.0f);
    o.sums_diff_shift.assign(c, -7.0f);
    REQUIRE(nk_batch_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(), saved.mean.data(),
                                   saved.invstd.data(), nullptr, o.sums_diff_scale.data(),
                                   o.sums_diff_shift.data()) == NK_OK);
    // The same bits as the calls that compute everything.
    CHECK(test::same_bits(o.frozen_diff_src, o.global_diff_src));
    CHECK(test::same_bits(o.sums_diff_scale, o.diff_scale));
    CHECK(test::same_bits(o.sums_diff_shift, o.diff_shift));
    return o;
}

// The reference results of one shape.
struct Expected {
    std::vector<double> mean, invstd, dst, running_mean, running_var, inference_dst;
    ref::Gradients grad, global_grad;
    std::vector<double> bound_dscale, bound_dshift; // 1e-6 * sum |terms|
    double dsrc_terms = 0;                          // max |terms| of diff_src
};

Expected expect(const Inputs& in, const SavedStats& saved) {
    const ref::Shape& sh = in.sh;
    const double eps = 1e-5, momentum = 0.1;
    Expected e;
    const ref::Stats st = ref::batch_stats(sh, in.src);
    e.mean = st.mean;
    for (int64_t c = 0; c < sh.c; ++c) {
        e.invstd.push_back(1.0 / std::sqrt(st.var[c] + eps));
        e.running_mean.push_back(ref::running_update(in.running_mean[c], st.mean[c], momentum, false));
        e.running_var.push_back(ref::running_update(
            in.running_var[c], ref::running_var_input(st.var[c], sh.per_channel(), false), momentum, false));
    }
    e.dst = ref::normalize(sh, in.src, st.mean, st.var, in.scale, in.shift, eps);
    e.inference_dst = ref::normalize(sh, in.src, test::to_double(in.running_mean),
                                     test::to_double(in.running_var), in.scale, in.shift, eps);
    const std::vector<double> mean = test::to_double(saved.mean), invstd = test::to_double(saved.invstd);
    e.grad = ref::backward(sh, in.src, in.dy, in.scale, mean, invstd, false);
    e.global_grad = ref::backward(sh, in.src, in.dy, in.scale, mean, invstd, true);
    for (int64_t c = 0; c < sh.c; ++c) {
        double sum_dy = 0, sum_dy_xhat = 0;
        ref::for_channel(sh, c, [&](int64_t i) {
            sum_dy += std::fabs(in.dy[i]);
            sum_dy_xhat += std::fabs(in.dy[i] * (in.src[i] - mean[c]) * invstd[c]);
        });
        e.bound_dshift.push_back(1e-6 * sum_dy);
        e.bound_dscale.push_back(1e-6 * sum_dy_xhat);
        const double m = double(sh.per_channel());
        const double a = std::fabs(in.scale[c] * invstd[c]);
        ref::for_channel(sh, c, [&](int64_t i) {
            const double xhat = (in.src[i] - mean[c]) * invstd[c];
            const double terms = a * (std::fabs(in.dy[i]) + std::fabs(e.grad.diff_shift[c] / m) +
                                      std::fabs(xhat * e.grad.diff_scale[c] / m));
            e.dsrc_terms = std::max(e.dsrc_terms, terms);
        });
    }
    return e;
}

void check_per_channel(const char* what, const std::vector<float>& got, const std::vector<double>& want,
                       const std::vector<double>& abs_bound, double rel) {
    test::Worst w;
    for (size_t c = 0; c < want.size(); ++c) {
        const double r = std::fabs(got[c] - want[c]) / (abs_bound[c] + rel * std::fabs(want[c]));
        if (!(r <= w.ratio)) w = {std::isnan(r) ? INFINITY : r, c, got[c], want[c]};
    }
    INFO(std::string(what) << ": worst channel " << w.index << " got " << w.got << " want " << w.want << " (error/bound "
              << w.ratio << ")");
    CHECK(w.ratio <= 1.0);
}

void check_against_reference(const Outputs& o, const Expected& e) {
    test::check_close("save_mean", o.save_mean.data(), e.mean, 1e-7, 1e-6);
    test::check_close("save_invstd", o.save_invstd.data(), e.invstd, 0, 1e-6);
    test::check_close("running_mean", o.running_mean.data(), e.running_mean, 1e-7, 1e-6);
    test::check_close("running_var", o.running_var.data(), e.running_var, 0, 1e-6);
    test::check_close("dst", o.dst.data(), e.dst, 2e-6, 2e-6);
    test::check_close("inference dst", o.inference_dst.data(), e.inference_dst, 2e-6, 2e-6);
    test::check_close("diff_src", o.diff_src.data(), e.grad.diff_src, 2e-6 * e.dsrc_terms, 0);
    check_per_channel("diff_scale", o.diff_scale, e.grad.diff_scale, e.bound_dscale, 1e-6);
    check_per_channel("diff_shift", o.diff_shift, e.grad.diff_shift, e.bound_dshift, 1e-6);
    test::check_close("global diff_src", o.global_diff_src.data(), e.global_grad.diff_src,
                      2e-6 * e.dsrc_terms, 0);
    check_per_channel("global diff_scale", o.global_diff_scale, e.global_grad.diff_scale, e.bound_dscale, 1e-6);
    check_per_channel("global diff_shift", o.global_diff_shift, e.global_grad.diff_shift, e.bound_dshift, 1e-6);
}

// Runs `isas` x `threads` on one shape and layout, then (with `forced`) each forced
// schedule of the planner with the last ISA and 2 threads: each matches the reference,
// and all give the bits of the first.
void check_shape(const ref::Shape& sh, const std::vector<int32_t>& isas, const std::vector<int32_t>& threads,
                 uint64_t seed, bool forced = true) {
    const Inputs in = make_inputs(sh, seed);
    const ref::Stats st = ref::batch_stats(sh, in.src);
    SavedStats saved;
    for (int64_t c = 0; c < sh.c; ++c) {
        saved.mean.push_back(float(st.mean[c]));
        saved.invstd.push_back(float(1.0 / std::sqrt(st.var[c] + 1e-5)));
    }
    const Expected e = expect(in, saved);
    bool have_first = false;
    Outputs first;
    auto check = [&](nk_context* ctx) {
        const Outputs o = run_all_modes(ctx, in, saved);
        check_against_reference(o, e);
        if (!have_first) {
            first = o;
            have_first = true;
        }
        CHECK_MESSAGE(o == first, "results differ bitwise from the first configuration");
    };
    CAPTURE(test::shape_name(sh));
    for (int32_t isa : isas) {
        for (int32_t t : threads) {
            CAPTURE(test::isa_name(isa));
            CAPTURE(t);
            test::Context ctx(isa, t);
            check(ctx.get());
        }
    }
    if (!forced) return;
    for (nk::Schedule schedule : test::forced_schedules()) {
        CAPTURE(test::schedule_name(schedule));
        test::Context ctx(isas.back(), 2, schedule);
        check(ctx.get());
    }
}

const ref::Shape kShapes[] = {
    // n, c, s: covers C = 1, 3, 17, 64; S = 1, 7, 257, 3136; N = 1, 2, 16, plus ragged
    // shapes for the tails: S > 16384 (split rows), C > 1024 (several lane tiles), odd C.
    // Channels-last C = 5, 3, 7 and 128 give rows of 5 to 8 whole AVX-512 registers,
    // whose element-wise kernels hold the coefficients in registers. 2x64x4200
    // channels-last is 4 row blocks (blocks take up to 524288 lane-values), merged.
    {0, 16, 1, 1},  {0, 2, 3, 7},     {0, 1, 17, 257}, {0, 16, 64, 1}, {0, 2, 64, 3136},
    {0, 16, 3, 257}, {0, 1, 1, 3136}, {0, 2, 17, 1},   {0, 16, 17, 7}, {0, 1, 64, 257},
    {0, 16, 3, 3136}, {0, 2, 1, 7},   {0, 3, 5, 33},   {0, 2, 2, 20000}, {0, 5, 1500, 3},
    {0, 33, 100, 9}, {0, 40, 7, 5},  {0, 3, 128, 5},   {0, 2, 64, 4200},
};

} // namespace

TEST_CASE("batch norm: every mode, layout, ISA and thread count matches the float64 reference") {
    uint64_t seed = 1000;
    for (ref::Shape sh : kShapes) {
        for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
            sh.layout = layout;
            check_shape(sh, test::isas(), {1, 2, 3}, seed++);
        }
    }
}

// Wide channels-last rows prefetch their inputs only when a thread's share exceeds its
// L2 (prefetch_inputs in the planner); the shapes above are all smaller. 3 MB of input:
// with 1 thread every wide-row kernel runs with its prefetches.
TEST_CASE("batch norm: wide channels-last rows larger than the L2 (the prefetching kernels)") {
    check_shape({NK_LAYOUT_NSC, 8, 1500, 64}, test::isas(), {1, 2}, 4242);
}

// The native ISA with 1 and 2 threads on one large shape, in its automatic schedule (the
// shapes above take every schedule).
void check_native_threads(const ref::Shape& sh, uint64_t seed) {
    check_shape(sh, {nk_context_isa(nullptr)}, {1, 2}, seed, false);
}

TEST_CASE("batch norm: a tensor above 10 million elements") {
    for (int layout : {NK_LAYOUT_NCS, NK_LAYOUT_NSC}) {
        const ref::Shape sh{layout, 16, 64, 10000};
        REQUIRE(sh.count() > 10000000);
        check_native_threads(sh, 77);
    }
}

// A channels-first tensor of 25.7 MB of input and output in training, with 1 and 2 threads.
TEST_CASE("batch norm: a channels-first tensor in the L3, 1 and 2 threads") {
    check_native_threads({NK_LAYOUT_NCS, 16, 64, 3136}, 78);
}
