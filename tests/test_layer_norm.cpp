// Layer norm and RMS norm: every op x mode x ISA path x thread count against the float64
// reference (tests/reference/layer_norm_reference.hpp), every configuration bitwise equal
// to every other, batch invariance, hard numerics, finite differences.
//
// Tolerances (float32 results vs float64 reference on the same float32 inputs):
//   save_mean                 |err| <= 1e-7 + 1e-6 |ref|
//   save_invstd / invrms      |err| <= 1e-6 |ref|
//   dst                       |err| <= 2e-6 (1 + |ref|)
//   diff_src                  |err| <= 2e-6 max|terms| of its row (terms as in batch norm)
//   diff_scale, diff_shift    |err| <= 1e-6 (sum of |terms|) + 1e-6 |ref|
#include "reference/layer_norm_reference.hpp"
#include "test_util.hpp"

#include <limits>

namespace {

struct Shape {
    int64_t M, K;
};

std::string name_of(const Shape& s, bool rms) {
    return std::string(rms ? "rms " : "layer ") + std::to_string(s.M) + "x" + std::to_string(s.K);
}

nk_layer_norm_desc make_desc(const Shape& s) {
    nk_layer_norm_desc d;
    REQUIRE(nk_layer_norm_desc_init(&d, s.M, s.K) == NK_OK);
    return d;
}

struct Inputs {
    Shape sh;
    std::vector<float> src, residual, dy, scale, shift;
};

Inputs make_inputs(const Shape& sh, uint64_t seed, double offset = 0.3) {
    Inputs in{sh, {}, {}, {}, {}, {}};
    const size_t n = size_t(sh.M * sh.K);
    in.src = test::normal(n, offset, 1.5, seed);
    // A different offset per row, so a row mix-up cannot pass.
    for (int64_t r = 0; r < sh.M; ++r)
        for (int64_t i = 0; i < sh.K; ++i) in.src[size_t(r * sh.K + i)] += 0.05f * float(r % 17);
    in.residual = test::normal(n, 0.0, 0.5, seed + 1);
    in.dy = test::normal(n, 0.0, 1.0, seed + 2);
    in.scale = test::uniform(size_t(sh.K), 0.5, 1.5, seed + 3);
    in.shift = test::uniform(size_t(sh.K), -1.0, 1.0, seed + 4);
    return in;
}

// Everything one configuration produces.
struct Outputs {
    std::vector<float> dst, save_mean, save_invstd;              // plain forward
    std::vector<float> res_sum, res_dst, res_mean, res_invstd;   // forward with residual
    std::vector<float> diff_src, diff_scale, diff_shift;         // backward of the plain forward
    bool operator==(const Outputs& o) const {
        return test::same_bits(dst, o.dst) && test::same_bits(save_mean, o.save_mean) &&
               test::same_bits(save_invstd, o.save_invstd) && test::same_bits(res_sum, o.res_sum) &&
               test::same_bits(res_dst, o.res_dst) && test::same_bits(res_mean, o.res_mean) &&
               test::same_bits(res_invstd, o.res_invstd) && test::same_bits(diff_src, o.diff_src) &&
               test::same_bits(diff_scale, o.diff_scale) && test::same_bits(diff_shift, o.diff_shift);
    }
};

Outputs run(const Inputs& in, bool rms, nk_context* ctx) {
    const Shape& s = in.sh;
    const nk_layer_norm_desc d = make_desc(s);
    const size_t n = size_t(s.M * s.K), M = size_t(s.M), K = size_t(s.K);
    Outputs o;
    o.dst.assign(n, -7.0f);
    o.save_mean.assign(M, -7.0f);
    o.save_invstd.assign(M, -7.0f);
    o.res_sum.assign(n, -7.0f);
    o.res_dst.assign(n, -7.0f);
    o.res_mean.assign(M, -7.0f);
    o.res_invstd.assign(M, -7.0f);
    o.diff_src.assign(n, -7.0f);
    o.diff_scale.assign(K, -7.0f);
    o.diff_shift.assign(K, -7.0f);
    if (rms) {
        REQUIRE(nk_rms_norm_forward(ctx, &d, in.src.data(), nullptr, nullptr, o.dst.data(), in.scale.data(),
                                    o.save_invstd.data()) == NK_OK);
        REQUIRE(nk_rms_norm_forward(ctx, &d, in.src.data(), in.residual.data(), o.res_sum.data(), o.res_dst.data(),
                                    in.scale.data(), o.res_invstd.data()) == NK_OK);
        REQUIRE(nk_rms_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(), o.save_invstd.data(),
                                     o.diff_src.data(), o.diff_scale.data()) == NK_OK);
        o.save_mean.clear();
        o.res_mean.clear();
        o.diff_shift.clear();
    } else {
        REQUIRE(nk_layer_norm_forward(ctx, &d, in.src.data(), nullptr, nullptr, o.dst.data(), in.scale.data(),
                                      in.shift.data(), o.save_mean.data(), o.save_invstd.data()) == NK_OK);
        REQUIRE(nk_layer_norm_forward(ctx, &d, in.src.data(), in.residual.data(), o.res_sum.data(),
                                      o.res_dst.data(), in.scale.data(), in.shift.data(), o.res_mean.data(),
                                      o.res_invstd.data()) == NK_OK);
        REQUIRE(nk_layer_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(), o.save_mean.data(),
                                       o.save_invstd.data(), o.diff_src.data(), o.diff_scale.data(),
                                       o.diff_shift.data()) == NK_OK);
    }
    return o;
}

// Per-element bound of diff_src: 2e-6 times the largest term of its row.
std::vector<double> row_max_bound(const Shape& s, const std::vector<double>& bound) {
    std::vector<double> out(bound.size());
    for (int64_t r = 0; r < s.M; ++r) {
        double m = 0;
        for (int64_t i = 0; i < s.K; ++i) m = std::max(m, bound[size_t(r * s.K + i)]);
        for (int64_t i = 0; i < s.K; ++i) out[size_t(r * s.K + i)] = m;
    }
    return out;
}

void check_forward(const char* what, const Shape& s, bool rms, const std::vector<float>& x, const Inputs& in,
                   const std::vector<float>& dst, const std::vector<float>& mean, const std::vector<float>& invstd) {
    const ref::RowNormForward want = ref::row_norm_forward(s.M, s.K, x, in.scale, in.shift, 1e-5, rms);
    INFO(what);
    test::check_close("dst", dst.data(), want.dst, 2e-6, 2e-6);
    if (!rms) test::check_close("save_mean", mean.data(), want.mean, 1e-7, 1e-6);
    test::check_close("save_invstd", invstd.data(), want.invstd, 0, 1e-6);
}

void check_backward(const Shape& s, bool rms, const Inputs& in, const Outputs& o) {
    const ref::RowNormBackward want =
        ref::row_norm_backward(s.M, s.K, in.src, in.dy, in.scale, o.save_mean, o.save_invstd, rms);
    const std::vector<double> bound = row_max_bound(s, want.bound);
    for (size_t e = 0; e < want.diff_src.size(); ++e) {
        const double err = std::fabs(double(o.diff_src[e]) - want.diff_src[e]);
        if (!(err <= 2e-6 * bound[e])) {
            INFO("diff_src[" << e << "] got " << o.diff_src[e] << " want " << want.diff_src[e] << " bound "
                             << bound[e]);
            CHECK(err <= 2e-6 * bound[e]);
            break;
        }
    }
    // Column sums: bounded by the sum of |terms| of the column.
    for (int64_t i = 0; i < s.K; ++i) {
        double abs_s = 0, abs_b = 0;
        for (int64_t r = 0; r < s.M; ++r) {
            const size_t e = size_t(r * s.K + i);
            const double xhat = (in.src[e] - (rms ? 0.0 : double(o.save_mean[size_t(r)]))) * o.save_invstd[size_t(r)];
            abs_s += std::fabs(double(in.dy[e]) * xhat);
            abs_b += std::fabs(double(in.dy[e]));
        }
        const double es = std::fabs(o.diff_scale[size_t(i)] - want.diff_scale[size_t(i)]);
        INFO("diff_scale[" << i << "] got " << o.diff_scale[size_t(i)] << " want " << want.diff_scale[size_t(i)]);
        CHECK(es <= 1e-6 * abs_s + 1e-6 * std::fabs(want.diff_scale[size_t(i)]));
        if (!rms) {
            const double eb = std::fabs(o.diff_shift[size_t(i)] - want.diff_shift[size_t(i)]);
            INFO("diff_shift[" << i << "] got " << o.diff_shift[size_t(i)] << " want " << want.diff_shift[size_t(i)]);
            CHECK(eb <= 1e-6 * abs_b + 1e-6 * std::fabs(want.diff_shift[size_t(i)]));
        }
        if (es > 1e-6 * abs_s + 1e-6 * std::fabs(want.diff_scale[size_t(i)])) break;
    }
}

// The shapes every path runs: K from 1 to past a piece (16384), M up to 2048.
std::vector<Shape> shapes() {
    std::vector<Shape> v = {{2, 1}, {7, 3}, {7, 17}, {3, 64}, {2048, 64}, {7, 768}, {2, 4096}, {1, 8193}, {3, 20000}};
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
    v.erase(v.begin() + 4); // 2048x64: the same kernels as 3x64 on more rows
#endif
    return v;
}

} // namespace

TEST_CASE("layer norm: every path against the reference, every configuration the same bits") {
    for (bool rms : {false, true}) {
        for (const Shape& s : shapes()) {
            const Inputs in = make_inputs(s, 1000 + uint64_t(s.K));
            std::vector<float> x(in.src.size());
            for (size_t i = 0; i < x.size(); ++i) x[i] = in.src[i] + in.residual[i];
            const Outputs first = run(in, rms, nullptr);
            INFO(name_of(s, rms));
            check_forward("forward", s, rms, in.src, in, first.dst, first.save_mean, first.save_invstd);
            CHECK(test::same_bits(first.res_sum, x));
            check_forward("residual forward", s, rms, x, in, first.res_dst, first.res_mean, first.res_invstd);
            check_backward(s, rms, in, first);
            for (int32_t isa : test::isas())
                for (int32_t threads : {1, 2, 3}) {
                    test::Context ctx(isa, threads);
                    INFO(test::isa_name(isa) << ", " << threads << " threads");
                    CHECK(run(in, rms, ctx.get()) == first);
                }
        }
    }
}

TEST_CASE("layer norm: batch invariance (a row's bits never depend on the other rows)") {
    // Row `pick` of a 4096-row batch, computed alone, at place 3 of 7 rows, and in the
    // whole batch, on every ISA and with 1..16 threads: the same bits.
    for (bool rms : {false, true}) {
        for (int64_t K : {17, 768, 20000}) {
            const int64_t M = K > 1000 ? 64 : 4096, pick = M / 2 + 1;
            const Inputs all = make_inputs({M, K}, 77 + uint64_t(K));
            auto rows_of = [&](int64_t first, int64_t count) {
                Inputs in{{count, K}, {}, {}, {}, all.scale, all.shift};
                auto cut = [&](const std::vector<float>& v) {
                    return std::vector<float>(v.begin() + first * K, v.begin() + (first + count) * K);
                };
                in.src = cut(all.src);
                in.residual = cut(all.residual);
                in.dy = cut(all.dy);
                return in;
            };
            auto row = [&](const std::vector<float>& v, int64_t r, int64_t width) {
                return std::vector<float>(v.begin() + r * width, v.begin() + (r + 1) * width);
            };
            const Outputs alone = run(rows_of(pick, 1), rms, nullptr);
            INFO(name_of({M, K}, rms));
            for (int32_t isa : test::isas())
                for (int32_t threads : {1, 2, 16})
                    for (int64_t batch : {int64_t(1), int64_t(7), M}) {
                        const int64_t first = batch == 1 ? pick : batch == 7 ? pick - 3 : 0, at = pick - first;
                        test::Context ctx(isa, threads);
                        const Outputs o = run(rows_of(first, batch), rms, ctx.get());
                        INFO(test::isa_name(isa) << ", " << threads << " threads, batch " << batch);
                        CHECK(test::same_bits(row(o.dst, at, K), alone.dst));
                        CHECK(test::same_bits(row(o.res_sum, at, K), alone.res_sum));
                        CHECK(test::same_bits(row(o.res_dst, at, K), alone.res_dst));
                        CHECK(test::same_bits(row(o.save_invstd, at, 1), alone.save_invstd));
                        CHECK(test::same_bits(row(o.diff_src, at, K), alone.diff_src));
                        if (!rms) CHECK(test::same_bits(row(o.save_mean, at, 1), alone.save_mean));
                    }
        }
    }
}

TEST_CASE("layer norm: large offsets, constant rows, huge values, NaN confined to its row") {
    for (int32_t isa : test::isas()) {
        test::Context ctx(isa, 2);
        INFO(test::isa_name(isa));
        // Offsets: PyTorch's mean-shifted layer norm lost the variance here (#40302, #51102).
        for (double offset : {0.0, 1e2, 1e4, 1e6}) {
            const Shape s{16, 1024};
            Inputs in = make_inputs(s, 5, offset);
            const Outputs o = run(in, false, ctx.get());
            const ref::RowNormForward want = ref::row_norm_forward(s.M, s.K, in.src, in.scale, in.shift, 1e-5, false);
            INFO("offset " << offset);
            test::check_close("dst", o.dst.data(), want.dst, 1e-5, 0);
            for (int64_t r = 0; r < s.M; ++r) {
                const double var_want = 1 / (want.invstd[size_t(r)] * want.invstd[size_t(r)]) - 1e-5;
                const double inv = o.save_invstd[size_t(r)], var_got = 1 / (inv * inv) - 1e-5;
                CHECK(std::fabs(var_got - var_want) <= 1e-6 * var_want);
            }
        }
        // A constant row (variance exactly 0: dst == shift), a row near +-1e30, a NaN row, an
        // infinite row, and a normal row between them, which must stay exact.
        const Shape s{5, 300};
        Inputs in = make_inputs(s, 9);
        const float nan = std::numeric_limits<float>::quiet_NaN(), inf = std::numeric_limits<float>::infinity();
        for (int64_t i = 0; i < s.K; ++i) {
            in.src[size_t(i)] = 3.25f;
            in.src[size_t(s.K + i)] = (i % 2 ? 1e30f : -1e30f) * (1.0f + 1e-3f * float(i % 7));
            in.src[size_t(3 * s.K + i)] = 0.5f * float(i);
        }
        in.src[size_t(2 * s.K + 5)] = nan;
        in.src[size_t(4 * s.K + 9)] = inf;
        const Outputs o = run(in, false, ctx.get());
        const ref::RowNormForward want = ref::row_norm_forward(s.M, s.K, in.src, in.scale, in.shift, 1e-5, false);
        for (int64_t i = 0; i < s.K; ++i) {
            CHECK(o.dst[size_t(i)] == in.shift[size_t(i)]);
            CHECK(std::fabs(o.dst[size_t(s.K + i)] - want.dst[size_t(s.K + i)]) <= 2e-6 * (1 + std::fabs(want.dst[size_t(s.K + i)])));
            CHECK(std::isnan(o.dst[size_t(2 * s.K + i)]));
            CHECK(std::fabs(o.dst[size_t(3 * s.K + i)] - want.dst[size_t(3 * s.K + i)]) <= 2e-6 * (1 + std::fabs(want.dst[size_t(3 * s.K + i)])));
            CHECK(std::isnan(o.dst[size_t(4 * s.K + i)]));
        }
        CHECK(o.save_mean[0] == 3.25f);
        CHECK(std::isnan(o.save_mean[2]));
        CHECK(std::isnan(o.save_invstd[4]));
        // RMS norm on the same rows: the huge row is exact, zeros give zeros.
        const Outputs q = run(in, true, ctx.get());
        const ref::RowNormForward rw = ref::row_norm_forward(s.M, s.K, in.src, in.scale, {}, 1e-5, true);
        for (int64_t i = 0; i < s.K; ++i) {
            for (int64_t r : {0, 1, 3}) {
                const size_t e = size_t(r * s.K + i);
                CHECK(std::fabs(q.dst[e] - rw.dst[e]) <= 2e-6 * (1 + std::fabs(rw.dst[e])));
            }
            CHECK(std::isnan(q.dst[size_t(2 * s.K + i)]));
        }
    }
    // features == 1: the output is shift, exactly.
    const Shape one{9, 1};
    const Inputs in = make_inputs(one, 3);
    const Outputs o = run(in, false, nullptr);
    for (float y : o.dst) CHECK(y == in.shift[0]);
}

TEST_CASE("layer norm: backward against float64 finite differences") {
    // The reference backward is checked against central differences of the reference
    // forward (loss = sum dy * dst), and normkit against both.
    for (bool rms : {false, true}) {
        const Shape s{3, 17};
        const Inputs in = make_inputs(s, 11);
        const Outputs o = run(in, rms, nullptr);
        const std::vector<float> mean = rms ? std::vector<float>() : o.save_mean;
        auto loss = [&](const std::vector<double>& x) {
            // The reference forward in double on double inputs.
            double total = 0;
            for (int64_t r = 0; r < s.M; ++r) {
                double m = 0, q = 0;
                for (int64_t i = 0; i < s.K; ++i) m += x[size_t(r * s.K + i)];
                m /= double(s.K);
                for (int64_t i = 0; i < s.K; ++i) {
                    const double d = rms ? x[size_t(r * s.K + i)] : x[size_t(r * s.K + i)] - m;
                    q += d * d;
                }
                const double a = 1 / std::sqrt(q / double(s.K) + 1e-5);
                for (int64_t i = 0; i < s.K; ++i) {
                    const size_t e = size_t(r * s.K + i);
                    const double y = (rms ? x[e] : x[e] - m) * a * in.scale[size_t(i)] + (rms ? 0 : in.shift[size_t(i)]);
                    total += in.dy[e] * y;
                }
            }
            return total;
        };
        std::vector<double> x(in.src.begin(), in.src.end());
        const double h = 1e-6;
        INFO((rms ? "rms" : "layer"));
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
        // diff_scale: d loss / d scale[i] = sum_r dy * xhat.
        const ref::RowNormBackward want = ref::row_norm_backward(s.M, s.K, in.src, in.dy, in.scale,
                                                                 o.save_mean, o.save_invstd, rms);
        for (int64_t i = 0; i < s.K; ++i) CHECK(std::fabs(o.diff_scale[size_t(i)] - want.diff_scale[size_t(i)]) <= 1e-5);
    }
}

TEST_CASE("layer norm: in place, optional outputs, empty tensors") {
    const Shape s{33, 200};
    const Inputs in = make_inputs(s, 21);
    const Outputs want = run(in, false, nullptr);
    const nk_layer_norm_desc d = make_desc(s);
    // dst == src, and sum == residual with dst == src.
    std::vector<float> a = in.src;
    REQUIRE(nk_layer_norm_forward(nullptr, &d, a.data(), nullptr, nullptr, a.data(), in.scale.data(), in.shift.data(),
                                  nullptr, nullptr) == NK_OK);
    CHECK(test::same_bits(a, want.dst));
    a = in.src;
    std::vector<float> r = in.residual;
    REQUIRE(nk_layer_norm_forward(nullptr, &d, a.data(), r.data(), r.data(), a.data(), in.scale.data(),
                                  in.shift.data(), nullptr, nullptr) == NK_OK);
    CHECK(test::same_bits(a, want.res_dst));
    CHECK(test::same_bits(r, want.res_sum));
    // Residual without sum: dst alone; dst == residual.
    r = in.residual;
    REQUIRE(nk_layer_norm_forward(nullptr, &d, in.src.data(), r.data(), nullptr, r.data(), in.scale.data(),
                                  in.shift.data(), nullptr, nullptr) == NK_OK);
    CHECK(test::same_bits(r, want.res_dst));
    // diff_src == diff_dst; each backward output alone gives the bits of the full call.
    std::vector<float> g = in.dy, ds(size_t(s.K)), db(size_t(s.K));
    REQUIRE(nk_layer_norm_backward(nullptr, &d, in.src.data(), g.data(), in.scale.data(), want.save_mean.data(),
                                   want.save_invstd.data(), g.data(), nullptr, nullptr) == NK_OK);
    CHECK(test::same_bits(g, want.diff_src));
    REQUIRE(nk_layer_norm_backward(nullptr, &d, in.src.data(), in.dy.data(), in.scale.data(), want.save_mean.data(),
                                   want.save_invstd.data(), nullptr, ds.data(), nullptr) == NK_OK);
    CHECK(test::same_bits(ds, want.diff_scale));
    REQUIRE(nk_layer_norm_backward(nullptr, &d, in.src.data(), in.dy.data(), in.scale.data(), want.save_mean.data(),
                                   want.save_invstd.data(), nullptr, nullptr, db.data()) == NK_OK);
    CHECK(test::same_bits(db, want.diff_shift));
    // NULL scale and shift are 1 and 0.
    std::vector<float> ones(size_t(s.K), 1.0f), zeros(size_t(s.K), 0.0f), y1(in.src.size()), y2(in.src.size());
    REQUIRE(nk_layer_norm_forward(nullptr, &d, in.src.data(), nullptr, nullptr, y1.data(), nullptr, nullptr, nullptr,
                                  nullptr) == NK_OK);
    REQUIRE(nk_layer_norm_forward(nullptr, &d, in.src.data(), nullptr, nullptr, y2.data(), ones.data(), zeros.data(),
                                  nullptr, nullptr) == NK_OK);
    CHECK(test::same_bits(y1, y2));
    // Empty tensors: success, nothing written, NULL data allowed.
    for (Shape e : {Shape{0, 5}, Shape{5, 0}}) {
        const nk_layer_norm_desc de = make_desc(e);
        float canary = 1.5f;
        CHECK(nk_layer_norm_forward(nullptr, &de, nullptr, nullptr, nullptr, nullptr, nullptr, nullptr, &canary,
                                    nullptr) == NK_OK);
        CHECK(nk_rms_norm_backward(nullptr, &de, nullptr, nullptr, nullptr, nullptr, nullptr, &canary) == NK_OK);
        CHECK(canary == 1.5f);
    }
}
