// Group norm and instance norm: both layouts x every ISA path x threads 1/2/3 against the
// float64 reference (tests/reference/group_norm_reference.hpp), every configuration
// bitwise equal to every other, batch invariance, hard numerics, finite differences,
// the error table.
//
// Tolerances (float32 results vs float64 reference on the same float32 inputs), as batch norm's:
//   save_mean                 |err| <= 1e-7 + 1e-6 |ref|
//   save_invstd               |err| <= 1e-6 |ref|
//   dst                       |err| <= 2e-6 (1 + |ref|)
//   diff_src                  |err| <= 2e-6 max|terms| of its group
//   diff_scale, diff_shift    |err| <= 1e-6 (sum of |terms|) + 1e-6 |ref|
#include "reference/group_norm_reference.hpp"
#include "test_util.hpp"

#include <cctype>
#include <limits>

namespace {

using ref::GroupShape;

std::string name_of(const GroupShape& s) {
    return std::string(s.layout == 0 ? "NCS " : "NSC ") + std::to_string(s.n) + "x" + std::to_string(s.c) + "x" +
           std::to_string(s.s) + " groups " + std::to_string(s.groups);
}

nk_group_norm_desc make_desc(const GroupShape& s) {
    nk_group_norm_desc d;
    REQUIRE(nk_group_norm_desc_init(&d, s.layout, s.n, s.c, s.s, s.groups) == NK_OK);
    return d;
}

struct Inputs {
    GroupShape sh;
    std::vector<float> src, dy, scale, shift;
};

Inputs make_inputs(const GroupShape& sh, uint64_t seed, double offset = 0.3) {
    Inputs in{sh, test::normal(size_t(sh.count()), offset, 1.5, seed), test::normal(size_t(sh.count()), 0.0, 1.0, seed + 1),
              test::uniform(size_t(sh.c), 0.5, 1.5, seed + 2), test::uniform(size_t(sh.c), -1.0, 1.0, seed + 3)};
    // A different offset per channel and sample, so that a mix-up cannot pass.
    for (int64_t n = 0; n < sh.n; ++n)
        for (int64_t c = 0; c < sh.c; ++c)
            for (int64_t s = 0; s < sh.s; ++s) in.src[size_t(sh.at(n, c, s))] += 0.1f * float(c % 5) + 0.05f * float(n);
    return in;
}

struct Outputs {
    std::vector<float> dst, save_mean, save_invstd, diff_src, diff_scale, diff_shift;
    bool operator==(const Outputs& o) const {
        return test::same_bits(dst, o.dst) && test::same_bits(save_mean, o.save_mean) &&
               test::same_bits(save_invstd, o.save_invstd) && test::same_bits(diff_src, o.diff_src) &&
               test::same_bits(diff_scale, o.diff_scale) && test::same_bits(diff_shift, o.diff_shift);
    }
};

Outputs run(const Inputs& in, nk_context* ctx) {
    const GroupShape& s = in.sh;
    const nk_group_norm_desc d = make_desc(s);
    const size_t n = size_t(s.count()), q = size_t(s.n * s.groups), c = size_t(s.c);
    Outputs o{std::vector<float>(n, -7.0f), std::vector<float>(q, -7.0f), std::vector<float>(q, -7.0f),
              std::vector<float>(n, -7.0f), std::vector<float>(c, -7.0f), std::vector<float>(c, -7.0f)};
    REQUIRE(nk_group_norm_forward(ctx, &d, in.src.data(), o.dst.data(), in.scale.data(), in.shift.data(),
                                  o.save_mean.data(), o.save_invstd.data()) == NK_OK);
    REQUIRE(nk_group_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(), o.save_mean.data(),
                                   o.save_invstd.data(), o.diff_src.data(), o.diff_scale.data(),
                                   o.diff_shift.data()) == NK_OK);
    return o;
}

void check_against_reference(const Inputs& in, const Outputs& o) {
    const GroupShape& s = in.sh;
    const ref::GroupNormForward f = ref::group_norm_forward(s, in.src, in.scale, in.shift, 1e-5);
    test::check_close("dst", o.dst.data(), f.dst, 2e-6, 2e-6);
    test::check_close("save_mean", o.save_mean.data(), f.mean, 1e-7, 1e-6);
    test::check_close("save_invstd", o.save_invstd.data(), f.invstd, 0, 1e-6);
    const ref::GroupNormBackward b = ref::group_norm_backward(s, in.src, in.dy, in.scale, o.save_mean, o.save_invstd);
    // diff_src: 2e-6 of the largest term of its group.
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t g = 0; g < s.groups; ++g) {
            double bound = 0, worst = 0;
            s.for_group(n, g, [&](int64_t i, int64_t) { bound = std::max(bound, b.bound[size_t(i)]); });
            s.for_group(n, g, [&](int64_t i, int64_t) {
                worst = std::max(worst, std::fabs(double(o.diff_src[size_t(i)]) - b.diff_src[size_t(i)]));
            });
            INFO("diff_src of group (" << n << ", " << g << "): worst error " << worst << ", bound " << 2e-6 * bound);
            CHECK(worst <= 2e-6 * bound);
        }
    std::vector<double> abs_s(size_t(s.c)), abs_b(size_t(s.c));
    for (int64_t n = 0; n < s.n; ++n)
        for (int64_t g = 0; g < s.groups; ++g)
            s.for_group(n, g, [&](int64_t i, int64_t c) {
                const size_t q = size_t(n * s.groups + g);
                abs_s[size_t(c)] += std::fabs(double(in.dy[size_t(i)]) * (in.src[size_t(i)] - o.save_mean[q]) * o.save_invstd[q]);
                abs_b[size_t(c)] += std::fabs(double(in.dy[size_t(i)]));
            });
    for (int64_t c = 0; c < s.c; ++c) {
        const size_t j = size_t(c);
        INFO("channel " << c << ": diff_scale " << o.diff_scale[j] << " want " << b.diff_scale[j] << ", diff_shift "
                        << o.diff_shift[j] << " want " << b.diff_shift[j]);
        CHECK(std::fabs(o.diff_scale[j] - b.diff_scale[j]) <= 1e-6 * abs_s[j] + 1e-6 * std::fabs(b.diff_scale[j]));
        CHECK(std::fabs(o.diff_shift[j] - b.diff_shift[j]) <= 1e-6 * abs_b[j] + 1e-6 * std::fabs(b.diff_shift[j]));
    }
}

std::vector<GroupShape> shapes() {
    std::vector<GroupShape> v;
    const GroupShape base[] = {
        {0, 2, 3, 7, 1},      {0, 2, 3, 4096, 3},  {0, 2, 32, 1, 32}, {0, 3, 32, 7, 2},  {0, 2, 32, 4096, 1},
        {0, 2, 320, 7, 32},   {0, 2, 320, 1, 320}, {0, 1, 4, 20000, 2}, {0, 2, 320, 4096, 32},
    };
    for (GroupShape s : base)
        for (int layout : {0, 1}) {
            s.layout = layout;
            v.push_back(s);
        }
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    v.resize(v.size() - 2); // 2x320x4096: the kernels of 2x32x4096 on more channels
#endif
    return v;
}

} // namespace

TEST_CASE("group norm: every path against the reference, every configuration the same bits") {
    for (const GroupShape& s : shapes()) {
        const Inputs in = make_inputs(s, 300 + uint64_t(s.c * 7 + s.s));
        const Outputs first = run(in, nullptr);
        INFO(name_of(s));
        check_against_reference(in, first);
        for (int32_t isa : test::isas())
            for (int32_t threads : {1, 2, 3}) {
                test::Context ctx(isa, threads);
                INFO(test::isa_name(isa) << ", " << threads << " threads");
                CHECK(run(in, ctx.get()) == first);
            }
    }
}

TEST_CASE("group norm: a sample's results do not depend on the batch (batch invariance)") {
    for (int layout : {0, 1})
        for (GroupShape s : {GroupShape{layout, 5, 32, 300, 4}, GroupShape{layout, 5, 8, 20000, 8}}) {
            const Inputs all = make_inputs(s, 41);
            const int64_t per = s.c * s.s, pick = 3;
            GroupShape one = s;
            one.n = 1;
            Inputs alone{one, std::vector<float>(all.src.begin() + pick * per, all.src.begin() + (pick + 1) * per),
                         std::vector<float>(all.dy.begin() + pick * per, all.dy.begin() + (pick + 1) * per), all.scale,
                         all.shift};
            const Outputs want = run(alone, nullptr);
            for (int32_t isa : test::isas())
                for (int32_t threads : {1, 2, 16}) {
                    test::Context ctx(isa, threads);
                    const Outputs o = run(all, ctx.get());
                    INFO(name_of(s) << ", " << test::isa_name(isa) << ", " << threads << " threads");
                    CHECK(test::same_bits(std::vector<float>(o.dst.begin() + pick * per, o.dst.begin() + (pick + 1) * per),
                                          want.dst));
                    CHECK(test::same_bits(
                        std::vector<float>(o.diff_src.begin() + pick * per, o.diff_src.begin() + (pick + 1) * per),
                        want.diff_src));
                    CHECK(test::same_bits(std::vector<float>(o.save_mean.begin() + pick * s.groups,
                                                             o.save_mean.begin() + (pick + 1) * s.groups),
                                          want.save_mean));
                    CHECK(test::same_bits(std::vector<float>(o.save_invstd.begin() + pick * s.groups,
                                                             o.save_invstd.begin() + (pick + 1) * s.groups),
                                          want.save_invstd));
                }
        }
}

// Channels-last reductions sum all channels of a block of rows at once and redo, in
// double, the channels whose float-term sums fail their checks: the other groups of the
// sample must keep their bits (only their own values decide).
TEST_CASE("group norm: a group's bits do not depend on the other groups of its sample") {
    for (int layout : {0, 1}) {
        const GroupShape s{layout, 2, 12, 500, 3};
        const Inputs plain = make_inputs(s, 51);
        Inputs odd = plain;
        int k = 0;
        s.for_group(1, 1, [&](int64_t i, int64_t) { odd.src[size_t(i)] = (++k % 2 ? 3e29f : -3e29f); });
        s.for_group(0, 2, [&](int64_t i, int64_t) { odd.src[size_t(i)] += 1e6f; });
        for (int32_t isa : test::isas()) {
            test::Context ctx(isa, 2);
            const Outputs a = run(plain, ctx.get()), b = run(odd, ctx.get());
            INFO(name_of(s) << ", " << test::isa_name(isa));
            for (int64_t n = 0; n < s.n; ++n)
                for (int64_t g = 0; g < s.groups; ++g) {
                    if ((n == 1 && g == 1) || (n == 0 && g == 2)) continue;
                    CAPTURE(n);
                    CAPTURE(g);
                    bool same = true;
                    s.for_group(n, g, [&](int64_t i, int64_t) {
                        same = same && std::memcmp(&a.dst[size_t(i)], &b.dst[size_t(i)], sizeof(float)) == 0 &&
                               std::memcmp(&a.diff_src[size_t(i)], &b.diff_src[size_t(i)], sizeof(float)) == 0;
                    });
                    CHECK(same);
                    const size_t q = size_t(n * s.groups + g);
                    CHECK(std::memcmp(&a.save_mean[q], &b.save_mean[q], sizeof(float)) == 0);
                    CHECK(std::memcmp(&a.save_invstd[q], &b.save_invstd[q], sizeof(float)) == 0);
                }
        }
    }
}

TEST_CASE("group norm: large offsets, constant groups, huge values, NaN confined to its group") {
    for (int layout : {0, 1})
        for (int32_t isa : test::isas()) {
            test::Context ctx(isa, 2);
            INFO((layout ? "NSC " : "NCS ") << test::isa_name(isa));
            for (double offset : {0.0, 1e2, 1e4, 1e6}) {
                const GroupShape s{layout, 2, 16, 1024, 4};
                const Inputs in = make_inputs(s, 5, offset);
                const Outputs o = run(in, ctx.get());
                const ref::GroupNormForward f = ref::group_norm_forward(s, in.src, in.scale, in.shift, 1e-5);
                INFO("offset " << offset);
                test::check_close("dst", o.dst.data(), f.dst, 1e-5, 0);
                for (size_t q = 0; q < f.invstd.size(); ++q) {
                    const double want = 1 / (f.invstd[q] * f.invstd[q]) - 1e-5, inv = o.save_invstd[q];
                    CHECK(std::fabs(1 / (inv * inv) - 1e-5 - want) <= 1e-6 * want);
                }
            }
            // Groups of 2 channels x 64 values: (0, 0) constant, (0, 1) near +-1e30, (0, 2) a
            // NaN, (0, 3) an infinity, (1, *) ordinary: each must be exact or NaN on its own.
            const GroupShape s{layout, 2, 8, 64, 4};
            Inputs in = make_inputs(s, 9);
            const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
            s.for_group(0, 0, [&](int64_t i, int64_t) { in.src[size_t(i)] = -2.5f; });
            int k = 0;
            s.for_group(0, 1, [&](int64_t i, int64_t) {
                ++k;
                in.src[size_t(i)] = (k % 2 ? 1e30f : -1e30f) * (1 + 1e-3f * float(k % 5));
            });
            s.for_group(0, 2, [&](int64_t i, int64_t) { if (i % 7 == 0) in.src[size_t(i)] = nan; });
            s.for_group(0, 3, [&](int64_t i, int64_t) { if (i % 9 == 0) in.src[size_t(i)] = inf; });
            const Outputs o = run(in, ctx.get());
            const ref::GroupNormForward f = ref::group_norm_forward(s, in.src, in.scale, in.shift, 1e-5);
            s.for_group(0, 0, [&](int64_t i, int64_t c) { CHECK(o.dst[size_t(i)] == in.shift[size_t(c)]); });
            for (int g : {1}) s.for_group(0, g, [&](int64_t i, int64_t) {
                CHECK(std::fabs(o.dst[size_t(i)] - f.dst[size_t(i)]) <= 2e-6 * (1 + std::fabs(f.dst[size_t(i)])));
            });
            for (int g : {2, 3}) s.for_group(0, g, [&](int64_t i, int64_t) { CHECK(std::isnan(o.dst[size_t(i)])); });
            for (int g = 0; g < 4; ++g) s.for_group(1, g, [&](int64_t i, int64_t) {
                CHECK(std::fabs(o.dst[size_t(i)] - f.dst[size_t(i)]) <= 2e-6 * (1 + std::fabs(f.dst[size_t(i)])));
            });
            CHECK(o.save_mean[0] == -2.5f);
            CHECK(std::isnan(o.save_mean[2]));
            CHECK(std::isnan(o.save_invstd[3]));
        }
}

TEST_CASE("group norm: backward against float64 finite differences") {
    for (int layout : {0, 1}) {
        const GroupShape s{layout, 2, 6, 5, 3};
        const Inputs in = make_inputs(s, 13);
        const Outputs o = run(in, nullptr);
        auto loss = [&](const std::vector<double>& x) {
            double total = 0;
            const double count = double(s.c / s.groups * s.s);
            for (int64_t n = 0; n < s.n; ++n)
                for (int64_t g = 0; g < s.groups; ++g) {
                    double m = 0, v = 0;
                    s.for_group(n, g, [&](int64_t i, int64_t) { m += x[size_t(i)]; });
                    m /= count;
                    s.for_group(n, g, [&](int64_t i, int64_t) { v += (x[size_t(i)] - m) * (x[size_t(i)] - m); });
                    const double a = 1 / std::sqrt(v / count + 1e-5);
                    s.for_group(n, g, [&](int64_t i, int64_t c) {
                        total += in.dy[size_t(i)] * ((x[size_t(i)] - m) * a * in.scale[size_t(c)] + in.shift[size_t(c)]);
                    });
                }
            return total;
        };
        std::vector<double> x(in.src.begin(), in.src.end());
        const double h = 1e-6;
        INFO((layout ? "NSC" : "NCS"));
        for (size_t e = 0; e < x.size(); ++e) {
            const double keep = x[e];
            x[e] = keep + h;
            const double up = loss(x);
            x[e] = keep - h;
            const double down = loss(x);
            x[e] = keep;
            const double fd = (up - down) / (2 * h);
            CHECK(std::fabs(double(o.diff_src[e]) - fd) <= 1e-4 * (1 + std::fabs(fd)));
        }
    }
}

TEST_CASE("group norm: in place, optional outputs, one value per group, empty tensors") {
    for (int layout : {0, 1}) {
        const GroupShape s{layout, 3, 12, 50, 3};
        const Inputs in = make_inputs(s, 17);
        const Outputs want = run(in, nullptr);
        const nk_group_norm_desc d = make_desc(s);
        std::vector<float> a = in.src;
        REQUIRE(nk_group_norm_forward(nullptr, &d, a.data(), a.data(), in.scale.data(), in.shift.data(), nullptr,
                                      nullptr) == NK_OK);
        CHECK(test::same_bits(a, want.dst));
        std::vector<float> g = in.dy, ds(size_t(s.c)), db(size_t(s.c));
        REQUIRE(nk_group_norm_backward(nullptr, &d, in.src.data(), g.data(), in.scale.data(), want.save_mean.data(),
                                       want.save_invstd.data(), g.data(), nullptr, nullptr) == NK_OK);
        CHECK(test::same_bits(g, want.diff_src));
        REQUIRE(nk_group_norm_backward(nullptr, &d, in.src.data(), in.dy.data(), in.scale.data(), want.save_mean.data(),
                                       want.save_invstd.data(), nullptr, ds.data(), db.data()) == NK_OK);
        CHECK(test::same_bits(ds, want.diff_scale));
        CHECK(test::same_bits(db, want.diff_shift));
        // NULL scale and shift are 1 and 0.
        std::vector<float> ones(size_t(s.c), 1.0f), zeros(size_t(s.c), 0.0f), y1(in.src.size()), y2(in.src.size());
        REQUIRE(nk_group_norm_forward(nullptr, &d, in.src.data(), y1.data(), nullptr, nullptr, nullptr, nullptr) == NK_OK);
        REQUIRE(nk_group_norm_forward(nullptr, &d, in.src.data(), y2.data(), ones.data(), zeros.data(), nullptr,
                                      nullptr) == NK_OK);
        CHECK(test::same_bits(y1, y2));
        // One value per group: dst is shift.
        const GroupShape one{layout, 2, 4, 1, 4};
        const Inputs in1 = make_inputs(one, 3);
        const Outputs o1 = run(in1, nullptr);
        for (int64_t n = 0; n < 2; ++n)
            for (int64_t c = 0; c < 4; ++c) CHECK(o1.dst[size_t(one.at(n, c, 0))] == in1.shift[size_t(c)]);
    }
    // With S == 1 both layouts are the same memory, and give the same bits.
    const Inputs nc = make_inputs({0, 6, 64, 1, 8}, 23);
    Inputs nsc = nc;
    nsc.sh.layout = 1;
    CHECK(run(nc, nullptr) == run(nsc, nullptr));
    nk_group_norm_desc e;
    REQUIRE(nk_group_norm_desc_init(&e, NK_LAYOUT_NSC, 0, 8, 4, 2) == NK_OK);
    float canary = 1.5f;
    CHECK(nk_group_norm_forward(nullptr, &e, nullptr, nullptr, nullptr, nullptr, &canary, nullptr) == NK_OK);
    CHECK(nk_group_norm_backward(nullptr, &e, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, &canary, nullptr) ==
          NK_OK);
    CHECK(canary == 1.5f);
}

namespace {

bool names(const std::string& message, const std::string& name) {
    auto ident = [](char ch) { return std::isalnum(static_cast<unsigned char>(ch)) || ch == '_'; };
    for (size_t at = message.find(name); at != std::string::npos; at = message.find(name, at + 1)) {
        const size_t end = at + name.size();
        if ((at == 0 || !ident(message[at - 1])) && (end == message.size() || !ident(message[end]))) return true;
    }
    return false;
}

} // namespace

TEST_CASE("group norm: error table (status, message, nothing written)") {
    // A valid call on 2 x 4 x 3 channels-first in 2 groups; every buffer in its own slot.
    constexpr size_t kSlot = 32;
    enum { kSrc, kDst, kScale, kShift, kMean, kInvstd, kDiffDst, kDiffSrc, kDiffScale, kDiffShift, kSlots };
    struct Call {
        bool backward;
        std::vector<float> arena = std::vector<float>(kSlots * kSlot, 0.75f);
        nk_group_norm_desc desc;
        const nk_group_norm_desc* desc_arg = &desc;
        const float *src, *scale, *shift, *mean_in, *invstd_in, *diff_dst;
        float *dst, *mean_out, *invstd_out, *diff_src, *diff_scale, *diff_shift;
        explicit Call(bool b) : backward(b) {
            REQUIRE(nk_group_norm_desc_init(&desc, NK_LAYOUT_NCS, 2, 4, 3, 2) == NK_OK);
            for (size_t i = 0; i < arena.size(); ++i) arena[i] = float(i % 11) * 0.5f + 0.25f;
            src = slot(kSrc), scale = slot(kScale), shift = slot(kShift), mean_in = slot(kMean);
            invstd_in = slot(kInvstd), diff_dst = slot(kDiffDst), dst = slot(kDst), mean_out = slot(kMean);
            invstd_out = slot(kInvstd), diff_src = slot(kDiffSrc), diff_scale = slot(kDiffScale);
            diff_shift = slot(kDiffShift);
        }
        float* slot(int s) { return arena.data() + size_t(s) * kSlot; }
        nk_status invoke() {
            if (backward)
                return nk_group_norm_backward(nullptr, desc_arg, src, diff_dst, scale, mean_in, invstd_in, diff_src,
                                              diff_scale, diff_shift);
            return nk_group_norm_forward(nullptr, desc_arg, src, dst, scale, shift, mean_out, invstd_out);
        }
    };
    struct Row {
        const char* what;
        bool backward;
        void (*change)(Call&);
        nk_status status;
        const char* name;
    };
    const Row rows[] = {
        {"NULL desc", false, [](Call& c) { c.desc_arg = nullptr; }, NK_ERROR_NULL_POINTER, "desc"},
        {"struct_size too small", false, [](Call& c) { c.desc.struct_size = 16; }, NK_ERROR_INVALID_ARGUMENT, "struct_size"},
        {"unknown layout", true, [](Call& c) { c.desc.layout = 2; }, NK_ERROR_INVALID_ARGUMENT, "layout"},
        {"unknown dtype", false, [](Call& c) { c.desc.dtype = 5; }, NK_ERROR_INVALID_ARGUMENT, "dtype"},
        {"dtype 3 (after F16)", true, [](Call& c) { c.desc.dtype = 3; }, NK_ERROR_INVALID_ARGUMENT, "dtype"},
        {"reserved0 set", false, [](Call& c) { c.desc.reserved0 = 1; }, NK_ERROR_INVALID_ARGUMENT, "reserved0"},
        {"negative n", false, [](Call& c) { c.desc.n = -1; }, NK_ERROR_INVALID_SHAPE, "n"},
        {"negative spatial", true, [](Call& c) { c.desc.spatial = -3; }, NK_ERROR_INVALID_SHAPE, "spatial"},
        {"groups 0", false, [](Call& c) { c.desc.groups = 0; }, NK_ERROR_INVALID_ARGUMENT, "groups"},
        {"groups not dividing c", false, [](Call& c) { c.desc.groups = 3; }, NK_ERROR_INVALID_ARGUMENT, "c"},
        {"negative groups", true, [](Call& c) { c.desc.groups = -2; }, NK_ERROR_INVALID_ARGUMENT, "groups"},
        {"overflowing shape", false, [](Call& c) { c.desc.n = c.desc.spatial = int64_t(1) << 40; }, NK_ERROR_INVALID_SHAPE, "spatial"},
        {"NaN epsilon", false, [](Call& c) { c.desc.epsilon = std::numeric_limits<float>::quiet_NaN(); },
         NK_ERROR_INVALID_ARGUMENT, "epsilon"},
        {"unknown flags", true, [](Call& c) { c.desc.flags = 1; }, NK_ERROR_INVALID_ARGUMENT, "flags"},
        {"NULL src", false, [](Call& c) { c.src = nullptr; }, NK_ERROR_NULL_POINTER, "src"},
        {"NULL dst", false, [](Call& c) { c.dst = nullptr; }, NK_ERROR_NULL_POINTER, "dst"},
        {"NULL save_mean", true, [](Call& c) { c.mean_in = nullptr; }, NK_ERROR_NULL_POINTER, "save_mean"},
        {"NULL save_invstd", true, [](Call& c) { c.invstd_in = nullptr; }, NK_ERROR_NULL_POINTER, "save_invstd"},
        {"NULL diff_dst", true, [](Call& c) { c.diff_dst = nullptr; }, NK_ERROR_NULL_POINTER, "diff_dst"},
        {"dst overlaps src", false, [](Call& c) { c.dst = c.slot(kSrc) + 3; }, NK_ERROR_INVALID_ARGUMENT, "dst"},
        {"save_invstd overlaps shift", false, [](Call& c) { c.invstd_out = c.slot(kShift) + 1; }, NK_ERROR_INVALID_ARGUMENT,
         "save_invstd"},
        {"diff_src overlaps diff_dst by one", true, [](Call& c) { c.diff_src = c.slot(kDiffDst) + 1; },
         NK_ERROR_INVALID_ARGUMENT, "diff_src"},
        {"diff_shift is diff_scale", true, [](Call& c) { c.diff_shift = c.diff_scale; }, NK_ERROR_INVALID_ARGUMENT,
         "diff_shift"},
        {"diff_scale overlaps scale", true, [](Call& c) { c.diff_scale = c.slot(kScale) + 2; }, NK_ERROR_INVALID_ARGUMENT,
         "scale"},
    };
    for (const Row& row : rows) {
        Call call(row.backward);
        row.change(call);
        const std::vector<float> before = call.arena;
        const nk_group_norm_desc desc_before = call.desc;
        INFO(row.what);
        CHECK(call.invoke() == row.status);
        const std::string message = nk_last_error_message();
        INFO("message: " << message);
        CHECK(names(message, row.name));
        CHECK(std::memcmp(before.data(), call.arena.data(), before.size() * sizeof(float)) == 0);
        CHECK(std::memcmp(&desc_before, &call.desc, sizeof desc_before) == 0);
    }
    for (bool backward : {false, true}) {
        Call call(backward);
        CHECK(call.invoke() == NK_OK);
    }
    nk_group_norm_desc untouched;
    std::memset(&untouched, 0x5a, sizeof untouched);
    nk_group_norm_desc target = untouched;
    CHECK(nk_group_norm_desc_init(&target, NK_LAYOUT_NSC, 2, 6, 4, 4) == NK_ERROR_INVALID_ARGUMENT);
    CHECK(names(nk_last_error_message(), "groups"));
    CHECK(nk_group_norm_desc_init(nullptr, NK_LAYOUT_NSC, 2, 6, 4, 3) == NK_ERROR_NULL_POINTER);
    CHECK(std::memcmp(&target, &untouched, sizeof target) == 0);
}
