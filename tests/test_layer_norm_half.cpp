// Layer norm and RMS norm with bf16 and f16 tensors: every op x mode x dtype x ISA path x
// thread count against the float64 reference computed from the same (already rounded)
// inputs, and every configuration the same bits.
//
// Tolerances: dst, sum, diff_src: 1 ulp of the storage type (tests/half_util.hpp);
// statistics and diff_scale / diff_shift (float32): the float32 path's
// (tests/test_layer_norm.cpp): save_mean |err| <= 1e-7 + 1e-6 |ref|, save_invstd
// <= 1e-6 |ref|, column sums <= 1e-6 (sum of |terms|) + 1e-6 |ref|.
#include "half_util.hpp"
#include "reference/layer_norm_reference.hpp"

namespace {

struct Shape {
    int64_t M, K;
};

std::vector<Shape> shapes() {
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    return {{7, 3}, {3, 64}, {5, 768}, {1, 17000}};
#else
    return {{7, 3}, {3, 64}, {256, 64}, {5, 768}, {1, 17000}, {2, 20001}};
#endif
}

struct Inputs {
    test::HalfTensor src, residual, dy;
    std::vector<float> scale, shift;
};

Inputs make_inputs(const test::Dtype& t, const Shape& s, uint64_t seed) {
    const size_t n = size_t(s.M * s.K);
    std::vector<float> x = test::normal(n, 0.3, 1.5, seed);
    for (int64_t r = 0; r < s.M; ++r)
        for (int64_t i = 0; i < s.K; ++i) x[size_t(r * s.K + i)] += 0.05f * float(r % 17);
    return {test::to_half(t, x), test::to_half(t, test::normal(n, 0.0, 0.5, seed + 1)),
            test::to_half(t, test::normal(n, 0.0, 1.0, seed + 2)), test::uniform(size_t(s.K), 0.5, 1.5, seed + 3),
            test::uniform(size_t(s.K), -1.0, 1.0, seed + 4)};
}

struct Outputs {
    std::vector<uint16_t> dst, res_sum, res_dst, diff_src;
    std::vector<float> mean, invstd, res_mean, res_invstd, diff_scale, diff_shift;
    bool operator==(const Outputs& o) const {
        return dst == o.dst && res_sum == o.res_sum && res_dst == o.res_dst && diff_src == o.diff_src &&
               test::same_bits(mean, o.mean) && test::same_bits(invstd, o.invstd) &&
               test::same_bits(res_mean, o.res_mean) && test::same_bits(res_invstd, o.res_invstd) &&
               test::same_bits(diff_scale, o.diff_scale) && test::same_bits(diff_shift, o.diff_shift);
    }
};

Outputs run(const test::Dtype& t, const Shape& s, const Inputs& in, bool rms, nk_context* ctx) {
    nk_layer_norm_desc d;
    REQUIRE(nk_layer_norm_desc_init(&d, s.M, s.K) == NK_OK);
    d.dtype = t.id;
    const size_t n = size_t(s.M * s.K), M = size_t(s.M), K = size_t(s.K);
    Outputs o{std::vector<uint16_t>(n, 0x7777), std::vector<uint16_t>(n, 0x7777), std::vector<uint16_t>(n, 0x7777),
              std::vector<uint16_t>(n, 0x7777), std::vector<float>(rms ? 0 : M, -7.0f), std::vector<float>(M, -7.0f),
              std::vector<float>(rms ? 0 : M, -7.0f), std::vector<float>(M, -7.0f), std::vector<float>(K, -7.0f),
              std::vector<float>(rms ? 0 : K, -7.0f)};
    const void *src = in.src.bits.data(), *res = in.residual.bits.data(), *dy = in.dy.bits.data();
    if (rms) {
        REQUIRE(nk_rms_norm_forward(ctx, &d, src, nullptr, nullptr, o.dst.data(), in.scale.data(), o.invstd.data()) == NK_OK);
        REQUIRE(nk_rms_norm_forward(ctx, &d, src, res, o.res_sum.data(), o.res_dst.data(), in.scale.data(),
                                    o.res_invstd.data()) == NK_OK);
        REQUIRE(nk_rms_norm_backward(ctx, &d, src, dy, in.scale.data(), o.invstd.data(), o.diff_src.data(),
                                     o.diff_scale.data()) == NK_OK);
    } else {
        REQUIRE(nk_layer_norm_forward(ctx, &d, src, nullptr, nullptr, o.dst.data(), in.scale.data(), in.shift.data(),
                                      o.mean.data(), o.invstd.data()) == NK_OK);
        REQUIRE(nk_layer_norm_forward(ctx, &d, src, res, o.res_sum.data(), o.res_dst.data(), in.scale.data(),
                                      in.shift.data(), o.res_mean.data(), o.res_invstd.data()) == NK_OK);
        REQUIRE(nk_layer_norm_backward(ctx, &d, src, dy, in.scale.data(), o.mean.data(), o.invstd.data(),
                                       o.diff_src.data(), o.diff_scale.data(), o.diff_shift.data()) == NK_OK);
    }
    return o;
}

void check_forward(const char* what, const test::Dtype& t, const Shape& s, bool rms, const std::vector<float>& x,
                   const Inputs& in, const std::vector<uint16_t>& dst, const std::vector<float>& mean,
                   const std::vector<float>& invstd) {
    INFO(what);
    const ref::RowNormForward want = ref::row_norm_forward(s.M, s.K, x, in.scale, in.shift, 1e-5, rms);
    test::check_half("dst", t, dst, want.dst);
    if (!rms) test::check_close("save_mean", mean.data(), want.mean, 1e-7, 1e-6);
    test::check_close("save_invstd", invstd.data(), want.invstd, 0, 1e-6);
}

void check_backward(const test::Dtype& t, const Shape& s, bool rms, const Inputs& in, const Outputs& o) {
    const std::vector<float>& x = in.src.values;
    const std::vector<float>& dy = in.dy.values;
    const ref::RowNormBackward want = ref::row_norm_backward(s.M, s.K, x, dy, in.scale, o.mean, o.invstd, rms);
    test::check_half("diff_src", t, o.diff_src, want.diff_src);
    for (int64_t i = 0; i < s.K; ++i) {
        double abs_s = 0, abs_b = 0;
        for (int64_t r = 0; r < s.M; ++r) {
            const size_t e = size_t(r * s.K + i);
            const double xhat = (x[e] - (rms ? 0.0 : double(o.mean[size_t(r)]))) * o.invstd[size_t(r)];
            abs_s += std::fabs(double(dy[e]) * xhat);
            abs_b += std::fabs(double(dy[e]));
        }
        const size_t c = size_t(i);
        INFO("column " << i);
        CHECK(std::fabs(o.diff_scale[c] - want.diff_scale[c]) <= 1e-6 * abs_s + 1e-6 * std::fabs(want.diff_scale[c]));
        if (!rms)
            CHECK(std::fabs(o.diff_shift[c] - want.diff_shift[c]) <= 1e-6 * abs_b + 1e-6 * std::fabs(want.diff_shift[c]));
    }
}

} // namespace

TEST_CASE("layer norm bf16/f16: every path against the reference, every configuration the same bits") {
    for (const test::Dtype& t : test::half_dtypes())
        for (bool rms : {false, true})
            for (const Shape& s : shapes()) {
                const Inputs in = make_inputs(t, s, 2600 + uint64_t(s.K));
                INFO(std::string(t.name) << (rms ? " rms " : " layer ") << s.M << "x" << s.K);
                // x = src + residual, the float addition of the stored values; sum is x rounded once.
                std::vector<float> x(in.src.values.size());
                for (size_t i = 0; i < x.size(); ++i) x[i] = in.src.values[i] + in.residual.values[i];
                const Outputs first = run(t, s, in, rms, nullptr);
                check_forward("forward", t, s, rms, in.src.values, in, first.dst, first.mean, first.invstd);
                CHECK(first.res_sum == test::to_half(t, x).bits);
                check_forward("residual forward", t, s, rms, x, in, first.res_dst, first.res_mean, first.res_invstd);
                check_backward(t, s, rms, in, first);
                test::check_every_path(first, [&](nk_context* ctx) { return run(t, s, in, rms, ctx); });
            }
}

TEST_CASE("layer norm bf16/f16: in place, and buffers sized by the 2-byte element") {
    const Shape s{9, 40};
    for (const test::Dtype& t : test::half_dtypes()) {
        INFO(std::string(t.name));
        const Inputs in = make_inputs(t, s, 31);
        const Outputs want = run(t, s, in, false, nullptr);
        nk_layer_norm_desc d;
        REQUIRE(nk_layer_norm_desc_init(&d, s.M, s.K) == NK_OK);
        d.dtype = t.id;
        const size_t n = size_t(s.M * s.K);
        // One allocation: src, then residual right after it (adjacent, not overlapping, in
        // 2-byte elements; a 4-byte element size would see them overlap).
        std::vector<uint16_t> buf(3 * n);
        std::copy(in.src.bits.begin(), in.src.bits.end(), buf.begin());
        std::copy(in.residual.bits.begin(), in.residual.bits.end(), buf.begin() + long(n));
        std::vector<float> mean(size_t(s.M)), invstd(size_t(s.M));
        // sum == residual (the residual stream updated in place), dst right after it.
        CHECK(nk_layer_norm_forward(nullptr, &d, buf.data(), buf.data() + n, buf.data() + n, buf.data() + 2 * n,
                                    in.scale.data(), in.shift.data(), mean.data(), invstd.data()) == NK_OK);
        CHECK(std::equal(want.res_sum.begin(), want.res_sum.end(), buf.begin() + long(n)));
        CHECK(std::equal(want.res_dst.begin(), want.res_dst.end(), buf.begin() + long(2 * n)));
        // dst == src.
        std::copy(in.src.bits.begin(), in.src.bits.end(), buf.begin());
        CHECK(nk_layer_norm_forward(nullptr, &d, buf.data(), nullptr, nullptr, buf.data(), in.scale.data(),
                                    in.shift.data(), mean.data(), invstd.data()) == NK_OK);
        CHECK(std::equal(want.dst.begin(), want.dst.end(), buf.begin()));
        // diff_src == diff_dst.
        std::copy(in.dy.bits.begin(), in.dy.bits.end(), buf.begin() + long(n));
        std::copy(in.src.bits.begin(), in.src.bits.end(), buf.begin());
        std::vector<float> ds(size_t(s.K)), db(size_t(s.K));
        CHECK(nk_layer_norm_backward(nullptr, &d, buf.data(), buf.data() + n, in.scale.data(), want.mean.data(),
                                     want.invstd.data(), buf.data() + n, ds.data(), db.data()) == NK_OK);
        CHECK(std::equal(want.diff_src.begin(), want.diff_src.end(), buf.begin() + long(n)));
        // One element of overlap is refused, nothing written.
        std::vector<uint16_t> before(buf);
        CHECK(nk_layer_norm_forward(nullptr, &d, buf.data(), nullptr, nullptr, buf.data() + n - 1, in.scale.data(),
                                    in.shift.data(), mean.data(), invstd.data()) == NK_ERROR_INVALID_ARGUMENT);
        CHECK(std::string(nk_last_error_message()).find("overlap") != std::string::npos);
        CHECK(buf == before);
    }
}
