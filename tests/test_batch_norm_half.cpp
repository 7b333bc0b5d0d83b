// Batch norm with bf16 and f16 tensors: training, inference and backward, the fused
// residual + ReLU forward, and the synchronized functions, both layouts x dtype x every ISA
// path x threads 1/2/3, against the float64 reference computed from the same (already
// rounded) inputs, and every configuration the same bits.
//
// Tolerances: dst and diff_src: 1 ulp of the storage type (tests/half_util.hpp); the
// fused residual forward's dst, where bn(x) + residual cancels: the float32 path's
// 2e-6 (1 + |ref|) plus half an ulp, in at most 1% of the elements;
// statistics, running statistics and diff_scale / diff_shift (float32): the float32
// path's (tests/test_batch_norm.cpp): save_mean, running_mean |err| <= 1e-7 + 1e-6 |ref|;
// save_invstd, running_var <= 1e-6 |ref|; column sums <= 1e-6 (sum of |terms|) + 1e-6 |ref|.
// The synchronized functions over one rank give the plain calls' bits.
#include "half_util.hpp"

namespace {

std::vector<ref::Shape> shapes() {
    std::vector<ref::Shape> v;
    // Short channels, NC (S = 1), long channels (channels-first groups and splits, the
    // channels-last rows path).
    for (ref::Shape s : {ref::Shape{0, 4, 5, 33}, ref::Shape{0, 64, 7, 1}, ref::Shape{0, 2, 16, 700},
                         ref::Shape{0, 3, 2, 40000}})
        for (int layout : {0, 1}) {
            s.layout = layout;
            v.push_back(s);
        }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    v.resize(v.size() - 2); // 3x2x40000: the paths of 2x16x700 on more values
#endif
    return v;
}

struct Inputs {
    test::HalfTensor src, residual, dy;
    std::vector<float> scale, shift, running_mean, running_var;
};

Inputs make_inputs(const test::Dtype& t, const ref::Shape& sh, uint64_t seed) {
    const size_t n = size_t(sh.count());
    std::vector<float> x = test::normal(n, 0.3, 1.5, seed);
    for (int64_t c = 0; c < sh.c; ++c) // an offset per channel: a mix-up cannot pass
        ref::for_channel(sh, c, [&](int64_t i) { x[size_t(i)] += 0.1f * float(c % 7); });
    return {test::to_half(t, x),
            test::to_half(t, test::normal(n, 0.0, 0.5, seed + 1)),
            test::to_half(t, test::normal(n, 0.0, 1.0, seed + 2)),
            test::uniform(size_t(sh.c), 0.5, 1.5, seed + 3),
            test::uniform(size_t(sh.c), -1.0, 1.0, seed + 4),
            test::uniform(size_t(sh.c), -0.5, 0.5, seed + 5),
            test::uniform(size_t(sh.c), 0.5, 2.0, seed + 6)};
}

struct Outputs {
    std::vector<uint16_t> dst, inf_dst, fused_dst, diff_src, sync_dst, sync_diff_src;
    std::vector<float> mean, invstd, rmean, rvar, diff_scale, diff_shift, sync_mean, sync_invstd, sync_rmean,
        sync_rvar, sync_diff_scale, sync_diff_shift;
    bool operator==(const Outputs& o) const {
        return dst == o.dst && inf_dst == o.inf_dst && fused_dst == o.fused_dst && diff_src == o.diff_src &&
               sync_dst == o.sync_dst && sync_diff_src == o.sync_diff_src && test::same_bits(mean, o.mean) &&
               test::same_bits(invstd, o.invstd) && test::same_bits(rmean, o.rmean) && test::same_bits(rvar, o.rvar) &&
               test::same_bits(diff_scale, o.diff_scale) && test::same_bits(diff_shift, o.diff_shift);
    }
};

Outputs run(const test::Dtype& t, const ref::Shape& s, const Inputs& in, nk_context* ctx) {
    nk_batch_norm_desc d = test::make_desc(s);
    d.dtype = t.id;
    const size_t n = size_t(s.count()), c = size_t(s.c);
    Outputs o;
    for (auto* v : {&o.dst, &o.inf_dst, &o.fused_dst, &o.diff_src, &o.sync_dst, &o.sync_diff_src}) v->assign(n, 0x7777);
    for (auto* v : {&o.mean, &o.invstd, &o.diff_scale, &o.diff_shift, &o.sync_mean, &o.sync_invstd,
                    &o.sync_diff_scale, &o.sync_diff_shift})
        v->assign(c, -7.0f);
    o.rmean = o.sync_rmean = in.running_mean;
    o.rvar = o.sync_rvar = in.running_var;
    const void *x = in.src.bits.data(), *dy = in.dy.bits.data();
    REQUIRE(nk_batch_norm_forward_training(ctx, &d, x, o.dst.data(), in.scale.data(), in.shift.data(), o.rmean.data(),
                                           o.rvar.data(), o.mean.data(), o.invstd.data()) == NK_OK);
    REQUIRE(nk_batch_norm_forward_inference(ctx, &d, x, o.inf_dst.data(), in.scale.data(), in.shift.data(),
                                            in.running_mean.data(), in.running_var.data()) == NK_OK);
    REQUIRE(nk_batch_norm_backward(ctx, &d, x, dy, in.scale.data(), o.mean.data(), o.invstd.data(),
                                   o.diff_src.data(), o.diff_scale.data(), o.diff_shift.data()) == NK_OK);
    nk_batch_norm_desc fused = d;
    fused.flags = NK_BN_FUSE_RELU;
    std::vector<float> m(c), is(c);
    REQUIRE(nk_batch_norm_forward_training_v2(ctx, &fused, x, in.residual.bits.data(), o.fused_dst.data(),
                                              in.scale.data(), in.shift.data(), nullptr, nullptr, m.data(),
                                              is.data()) == NK_OK);
    // One rank of the synchronized step: stats, a merge of one partial, the forward; the
    // gradient sums, their merge, the backward.
    int64_t bytes = 0;
    REQUIRE(nk_batch_norm_partial_size(&d, 0, &bytes) == NK_OK);
    std::vector<unsigned char> part(static_cast<size_t>(bytes)), merged(static_cast<size_t>(bytes));
    const void* parts[] = {part.data()};
    REQUIRE(nk_batch_norm_stats(ctx, &d, 0, x, part.data(), bytes) == NK_OK);
    REQUIRE(nk_batch_norm_merge_partials(&d, parts, &bytes, 1, merged.data(), bytes) == NK_OK);
    REQUIRE(nk_batch_norm_forward_from_partial(ctx, &d, merged.data(), bytes, x, o.sync_dst.data(), in.scale.data(),
                                               in.shift.data(), o.sync_rmean.data(), o.sync_rvar.data(),
                                               o.sync_mean.data(), o.sync_invstd.data()) == NK_OK);
    REQUIRE(nk_batch_norm_backward_reduce(ctx, &d, 0, x, dy, o.mean.data(), part.data(), bytes) == NK_OK);
    REQUIRE(nk_batch_norm_merge_partials(&d, parts, &bytes, 1, merged.data(), bytes) == NK_OK);
    REQUIRE(nk_batch_norm_backward_from_reduced(ctx, &d, merged.data(), bytes, x, dy, in.scale.data(), o.mean.data(),
                                                o.invstd.data(), o.sync_diff_src.data(), o.sync_diff_scale.data(),
                                                o.sync_diff_shift.data()) == NK_OK);
    return o;
}

void check_against_reference(const test::Dtype& t, const ref::Shape& s, const Inputs& in, const Outputs& o) {
    const std::vector<float>& x = in.src.values;
    const ref::Stats st = ref::batch_stats(s, x);
    std::vector<double> invstd(size_t(s.c)), rmean(size_t(s.c)), rvar(size_t(s.c));
    for (size_t c = 0; c < size_t(s.c); ++c) {
        invstd[c] = 1 / std::sqrt(st.var[c] + 1e-5);
        rmean[c] = ref::running_update(in.running_mean[c], st.mean[c], 0.1, false);
        rvar[c] = ref::running_update(in.running_var[c], ref::running_var_input(st.var[c], s.per_channel(), false), 0.1,
                                      false);
    }
    const std::vector<double> dst = ref::normalize(s, x, st.mean, st.var, in.scale, in.shift, 1e-5);
    test::check_half("training dst", t, o.dst, dst);
    test::check_close("save_mean", o.mean.data(), st.mean, 1e-7, 1e-6);
    test::check_close("save_invstd", o.invstd.data(), invstd, 0, 1e-6);
    test::check_close("running_mean", o.rmean.data(), rmean, 1e-7, 1e-6);
    test::check_close("running_var", o.rvar.data(), rvar, 0, 1e-6);
    const std::vector<double> given_mean(in.running_mean.begin(), in.running_mean.end()),
        given_var(in.running_var.begin(), in.running_var.end());
    test::check_half("inference dst", t, o.inf_dst, ref::normalize(s, x, given_mean, given_var, in.scale, in.shift, 1e-5));
    std::vector<double> fused(dst.size());
    for (size_t i = 0; i < fused.size(); ++i) fused[i] = std::max(0.0, dst[i] + double(in.residual.values[i]));
    // bn(x) + residual cancels near 0 in some elements: there the float32 path's own
    // tolerance, 2e-6 (1 + |ref|), plus the final rounding (tests/half_util.hpp).
    std::vector<double> f32_bound(fused.size());
    for (size_t i = 0; i < fused.size(); ++i) f32_bound[i] = 2e-6 * (1 + std::fabs(fused[i]));
    test::check_half("fused residual + ReLU dst", t, o.fused_dst, fused, f32_bound);
    // Backward with the saved statistics as given.
    const std::vector<double> mean(o.mean.begin(), o.mean.end()), inv(o.invstd.begin(), o.invstd.end());
    const ref::Gradients g = ref::backward(s, x, in.dy.values, in.scale, mean, inv, false);
    test::check_half("diff_src", t, o.diff_src, g.diff_src);
    for (int64_t c = 0; c < s.c; ++c) {
        double abs_s = 0, abs_b = 0;
        ref::for_channel(s, c, [&](int64_t i) {
            abs_b += std::fabs(double(in.dy.values[size_t(i)]));
            abs_s += std::fabs(double(in.dy.values[size_t(i)]) * (x[size_t(i)] - mean[size_t(c)]) * inv[size_t(c)]);
        });
        const size_t k = size_t(c);
        INFO("channel " << c);
        CHECK(std::fabs(o.diff_scale[k] - g.diff_scale[k]) <= 1e-6 * abs_s + 1e-6 * std::fabs(g.diff_scale[k]));
        CHECK(std::fabs(o.diff_shift[k] - g.diff_shift[k]) <= 1e-6 * abs_b + 1e-6 * std::fabs(g.diff_shift[k]));
    }
    // One rank reproduces the plain calls bit for bit.
    CHECK(o.sync_dst == o.dst);
    CHECK(test::same_bits(o.sync_mean, o.mean));
    CHECK(test::same_bits(o.sync_invstd, o.invstd));
    CHECK(test::same_bits(o.sync_rmean, o.rmean));
    CHECK(test::same_bits(o.sync_rvar, o.rvar));
    CHECK(o.sync_diff_src == o.diff_src);
    CHECK(test::same_bits(o.sync_diff_scale, o.diff_scale));
    CHECK(test::same_bits(o.sync_diff_shift, o.diff_shift));
}

} // namespace

TEST_CASE("batch norm bf16/f16: every path against the reference, every configuration the same bits") {
    for (const test::Dtype& t : test::half_dtypes())
        for (const ref::Shape& s : shapes()) {
            const Inputs in = make_inputs(t, s, 2620 + uint64_t(s.c * 7 + s.s));
            INFO(std::string(t.name) << " " << test::shape_name(s));
            const Outputs first = run(t, s, in, nullptr);
            check_against_reference(t, s, in, first);
            test::check_every_path(first, [&](nk_context* ctx) { return run(t, s, in, ctx); });
        }
}

TEST_CASE("batch norm bf16/f16: in place, and buffers sized by the 2-byte element") {
    for (const test::Dtype& t : test::half_dtypes()) {
        const ref::Shape s{1, 3, 4, 10};
        INFO(std::string(t.name));
        const Inputs in = make_inputs(t, s, 51);
        const Outputs want = run(t, s, in, nullptr);
        nk_batch_norm_desc d = test::make_desc(s);
        d.dtype = t.id;
        const size_t n = size_t(s.count());
        std::vector<uint16_t> buf(2 * n); // src, then diff_dst right after it (2-byte elements)
        std::vector<float> mean(size_t(s.c)), invstd(mean.size()), ds(mean.size()), db(mean.size());
        std::copy(in.src.bits.begin(), in.src.bits.end(), buf.begin());
        std::copy(in.dy.bits.begin(), in.dy.bits.end(), buf.begin() + long(n));
        CHECK(nk_batch_norm_backward(nullptr, &d, buf.data(), buf.data() + n, in.scale.data(), want.mean.data(),
                                     want.invstd.data(), buf.data() + n, ds.data(), db.data()) == NK_OK);
        CHECK(std::equal(want.diff_src.begin(), want.diff_src.end(), buf.begin() + long(n)));
        CHECK(nk_batch_norm_forward_training(nullptr, &d, buf.data(), buf.data(), in.scale.data(), in.shift.data(),
                                             nullptr, nullptr, mean.data(), invstd.data()) == NK_OK);
        CHECK(std::equal(want.dst.begin(), want.dst.end(), buf.begin()));
        std::vector<uint16_t> before(buf);
        CHECK(nk_batch_norm_forward_inference(nullptr, &d, buf.data(), buf.data() + n - 1, in.scale.data(),
                                              in.shift.data(), mean.data(), invstd.data()) == NK_ERROR_INVALID_ARGUMENT);
        CHECK(std::string(nk_last_error_message()).find("overlap") != std::string::npos);
        CHECK(buf == before);
    }
}
