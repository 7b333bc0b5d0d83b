// Group norm with bf16 and f16 tensors: both layouts x dtype x every ISA path x threads
// 1/2/3 against the float64 reference computed from the same (already rounded) inputs,
// and every configuration the same bits.
//
// Tolerances: dst and diff_src: 1 ulp of the storage type (tests/half_util.hpp);
// statistics and diff_scale / diff_shift (float32): the float32 path's
// (tests/test_group_norm.cpp): save_mean |err| <= 1e-7 + 1e-6 |ref|, save_invstd
// <= 1e-6 |ref|, column sums <= 1e-6 (sum of |terms|) + 1e-6 |ref|.
#include "half_util.hpp"
#include "reference/group_norm_reference.hpp"

namespace {

using ref::GroupShape;

std::vector<GroupShape> shapes() {
    std::vector<GroupShape> v;
    // A group over several channels, instance norm, one group, S = 1, a group past a
    // reduction piece (channels-first), a channels-last block of several rows.
    const GroupShape base[] = {{0, 2, 6, 7, 3}, {0, 2, 32, 1, 32}, {0, 3, 32, 49, 8}, {0, 2, 12, 300, 1},
                               {0, 1, 4, 9000, 2}};
    for (GroupShape s : base)
        for (int layout : {0, 1}) {
            s.layout = layout;
            v.push_back(s);
        }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    v.resize(v.size() - 2); // 1x4x9000: the long-group path of 2x12x300 on more values
#endif
    return v;
}

struct Inputs {
    test::HalfTensor src, dy;
    std::vector<float> scale, shift;
};

Inputs make_inputs(const test::Dtype& t, const GroupShape& sh, uint64_t seed) {
    std::vector<float> x = test::normal(size_t(sh.count()), 0.3, 1.5, seed);
    for (int64_t n = 0; n < sh.n; ++n) // an offset per channel and sample: a mix-up cannot pass
        for (int64_t c = 0; c < sh.c; ++c)
            for (int64_t s = 0; s < sh.s; ++s) x[size_t(sh.at(n, c, s))] += 0.1f * float(c % 5) + 0.05f * float(n);
    return {test::to_half(t, x), test::to_half(t, test::normal(size_t(sh.count()), 0.0, 1.0, seed + 1)),
            test::uniform(size_t(sh.c), 0.5, 1.5, seed + 2), test::uniform(size_t(sh.c), -1.0, 1.0, seed + 3)};
}

struct Outputs {
    std::vector<uint16_t> dst, diff_src;
    std::vector<float> mean, invstd, diff_scale, diff_shift;
    bool operator==(const Outputs& o) const {
        return dst == o.dst && diff_src == o.diff_src && test::same_bits(mean, o.mean) &&
               test::same_bits(invstd, o.invstd) && test::same_bits(diff_scale, o.diff_scale) &&
               test::same_bits(diff_shift, o.diff_shift);
    }
};

Outputs run(const test::Dtype& t, const GroupShape& s, const Inputs& in, nk_context* ctx) {
    nk_group_norm_desc d;
    REQUIRE(nk_group_norm_desc_init(&d, s.layout, s.n, s.c, s.s, s.groups) == NK_OK);
    d.dtype = t.id;
    const size_t n = size_t(s.count()), q = size_t(s.n * s.groups), c = size_t(s.c);
    Outputs o{std::vector<uint16_t>(n, 0x7777), std::vector<uint16_t>(n, 0x7777), std::vector<float>(q, -7.0f),
              std::vector<float>(q, -7.0f), std::vector<float>(c, -7.0f), std::vector<float>(c, -7.0f)};
    REQUIRE(nk_group_norm_forward(ctx, &d, in.src.bits.data(), o.dst.data(), in.scale.data(), in.shift.data(),
                                  o.mean.data(), o.invstd.data()) == NK_OK);
    REQUIRE(nk_group_norm_backward(ctx, &d, in.src.bits.data(), in.dy.bits.data(), in.scale.data(), o.mean.data(),
                                   o.invstd.data(), o.diff_src.data(), o.diff_scale.data(),
                                   o.diff_shift.data()) == NK_OK);
    return o;
}

void check_against_reference(const test::Dtype& t, const GroupShape& s, const Inputs& in, const Outputs& o) {
    const ref::GroupNormForward f = ref::group_norm_forward(s, in.src.values, in.scale, in.shift, 1e-5);
    test::check_half("dst", t, o.dst, f.dst);
    test::check_close("save_mean", o.mean.data(), f.mean, 1e-7, 1e-6);
    test::check_close("save_invstd", o.invstd.data(), f.invstd, 0, 1e-6);
    const ref::GroupNormBackward b =
        ref::group_norm_backward(s, in.src.values, in.dy.values, in.scale, o.mean, o.invstd);
    test::check_half("diff_src", t, o.diff_src, b.diff_src);
    std::vector<double> abs_s(size_t(s.c)), abs_b(size_t(s.c));
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t g = 0; g < s.groups; ++g) {
            const size_t q = size_t(n * s.groups + g);
            s.for_group(n, g, [&](int64_t i, int64_t c) {
                const double dy = in.dy.values[size_t(i)];
                abs_s[size_t(c)] += std::fabs(dy * (in.src.values[size_t(i)] - o.mean[q]) * o.invstd[q]);
                abs_b[size_t(c)] += std::fabs(dy);
            });
        }
    for (size_t c = 0; c < size_t(s.c); ++c) {
        INFO("channel " << c);
        CHECK(std::fabs(o.diff_scale[c] - b.diff_scale[c]) <= 1e-6 * abs_s[c] + 1e-6 * std::fabs(b.diff_scale[c]));
        CHECK(std::fabs(o.diff_shift[c] - b.diff_shift[c]) <= 1e-6 * abs_b[c] + 1e-6 * std::fabs(b.diff_shift[c]));
    }
}

} // namespace

TEST_CASE("group norm bf16/f16: every path against the reference, every configuration the same bits") {
    for (const test::Dtype& t : test::half_dtypes())
        for (const GroupShape& s : shapes()) {
            const Inputs in = make_inputs(t, s, 2610 + uint64_t(s.c * 7 + s.s));
            INFO(std::string(t.name) << (s.layout == 0 ? " NCS " : " NSC ") << s.n << "x" << s.c << "x" << s.s
                                     << " groups " << s.groups);
            const Outputs first = run(t, s, in, nullptr);
            check_against_reference(t, s, in, first);
            test::check_every_path(first, [&](nk_context* ctx) { return run(t, s, in, ctx); });
        }
}

TEST_CASE("group norm bf16/f16: in place, and buffers sized by the 2-byte element") {
    for (const test::Dtype& t : test::half_dtypes())
        for (int layout : {0, 1}) {
            const GroupShape s{layout, 2, 8, 10, 4};
            INFO(std::string(t.name) << " layout " << layout);
            const Inputs in = make_inputs(t, s, 41);
            const Outputs want = run(t, s, in, nullptr);
            nk_group_norm_desc d;
            REQUIRE(nk_group_norm_desc_init(&d, s.layout, s.n, s.c, s.s, s.groups) == NK_OK);
            d.dtype = t.id;
            const size_t n = size_t(s.count());
            std::vector<uint16_t> buf(2 * n); // src, then diff_dst right after it (2-byte elements)
            std::vector<float> mean(size_t(s.n * s.groups)), invstd(mean.size()), ds(size_t(s.c)), db(ds.size());
            std::copy(in.src.bits.begin(), in.src.bits.end(), buf.begin());
            std::copy(in.dy.bits.begin(), in.dy.bits.end(), buf.begin() + long(n));
            CHECK(nk_group_norm_backward(nullptr, &d, buf.data(), buf.data() + n, in.scale.data(), want.mean.data(),
                                         want.invstd.data(), buf.data() + n, ds.data(), db.data()) == NK_OK);
            CHECK(std::equal(want.diff_src.begin(), want.diff_src.end(), buf.begin() + long(n)));
            CHECK(nk_group_norm_forward(nullptr, &d, buf.data(), buf.data(), in.scale.data(), in.shift.data(),
                                        mean.data(), invstd.data()) == NK_OK);
            CHECK(std::equal(want.dst.begin(), want.dst.end(), buf.begin()));
            std::vector<uint16_t> before(buf);
            CHECK(nk_group_norm_forward(nullptr, &d, buf.data(), buf.data() + n - 1, in.scale.data(), in.shift.data(),
                                        mean.data(), invstd.data()) == NK_ERROR_INVALID_ARGUMENT);
            CHECK(std::string(nk_last_error_message()).find("overlap") != std::string::npos);
            CHECK(buf == before);
        }
}
