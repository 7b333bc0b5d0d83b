// Synchronized batch norm (nk_batch_norm_stats ... nk_batch_norm_backward_from_reduced):
// R "ranks" in one process, each holding a consecutive slice of the global batch, exchange
// partials as plain bytes and must agree with one call over the whole batch.
//
// Tolerances:
//   merged mean / variance (double) vs the single call's       |err| <= 1e-7 |ref|
//   save_mean, save_invstd, running stats (float) vs single     |err| <= 1 float ulp (the
//                                                               doubles above round either way)
//   dst vs single                                               |err| <= 1e-6
//   partial mean / variance vs float64 reference (float terms)  |err| <= 1e-6 (sd + |mean|), 1e-6 var
//   dst, diff_src, diff_scale, diff_shift vs float64 reference   those of test_batch_norm.cpp
// With samples_per_piece = g > 0 every split at multiples of g gives the same bits, and
// with one rank and g = 0 the bits of nk_batch_norm_forward_training / nk_batch_norm_backward.
#include "test_util.hpp"

#include <cctype>
#include <cstdint>
#include <numeric>
#include <string>

namespace {

using Bytes = std::vector<unsigned char>;

struct Inputs {
    ref::Shape sh;
    std::vector<float> src, dy, scale, shift, running_mean, running_var;
};

Inputs make_inputs(const ref::Shape& sh, uint64_t seed) {
    Inputs in{sh, {}, {}, {}, {}, {}, {}};
    in.src = test::normal(size_t(sh.count()), 0.3, 1.5, seed);
    for (int64_t c = 0; c < sh.c; ++c) ref::for_channel(sh, c, [&](int64_t i) { in.src[i] += 0.5f * float(c + 1); });
    in.dy = test::normal(size_t(sh.count()), 0.0, 1.0, seed + 1);
    in.scale = test::uniform(size_t(sh.c), 0.5, 1.5, seed + 2);
    in.shift = test::uniform(size_t(sh.c), -1.0, 1.0, seed + 3);
    in.running_mean = test::uniform(size_t(sh.c), -0.5, 0.5, seed + 4);
    in.running_var = test::uniform(size_t(sh.c), 0.5, 2.0, seed + 5);
    return in;
}

nk_batch_norm_desc slice_desc(const ref::Shape& sh, int64_t n) {
    nk_batch_norm_desc d;
    REQUIRE(nk_batch_norm_desc_init(&d, sh.layout, n, sh.c, sh.s) == NK_OK);
    return d;
}

int64_t partial_size(const nk_batch_norm_desc& d, int64_t g) {
    int64_t bytes = -1;
    REQUIRE(nk_batch_norm_partial_size(&d, g, &bytes) == NK_OK);
    return bytes;
}

// The per-channel doubles of a one-piece partial: a (mean or sum dy), b (M2 or sum dy xmu), and its count.
struct Piece {
    int64_t count;
    std::vector<double> a, b;
};
Piece read_piece(const Bytes& p, int64_t c) {
    Piece r{0, std::vector<double>(size_t(c)), std::vector<double>(size_t(c))};
    REQUIRE(p.size() == size_t(32 + 8 + 16 * c));
    std::memcpy(&r.count, p.data() + 32, 8);
    std::memcpy(r.a.data(), p.data() + 40, size_t(c) * 8);
    std::memcpy(r.b.data(), p.data() + 40 + size_t(c) * 8, size_t(c) * 8);
    return r;
}

Bytes merge(const nk_batch_norm_desc& d, const std::vector<Bytes>& parts) {
    std::vector<const void*> ptrs;
    std::vector<int64_t> sizes;
    for (const Bytes& p : parts) {
        ptrs.push_back(p.data());
        sizes.push_back(int64_t(p.size()));
    }
    Bytes out(size_t(partial_size(d, 0)), 0xa5);
    REQUIRE(nk_batch_norm_merge_partials(&d, ptrs.data(), sizes.data(), int32_t(parts.size()), out.data(),
                                         int64_t(out.size())) == NK_OK);
    return out;
}

// What every rank ends with; the per-channel ones must be the same on every rank.
struct Results {
    Bytes merged_stats, merged_grads;
    std::vector<float> dst, save_mean, save_invstd, running_mean, running_var;
    std::vector<float> diff_src, diff_scale, diff_shift;
    bool operator==(const Results& o) const {
        using test::same_bits;
        return merged_stats == o.merged_stats && merged_grads == o.merged_grads && same_bits(dst, o.dst) &&
               same_bits(save_mean, o.save_mean) && same_bits(save_invstd, o.save_invstd) &&
               same_bits(running_mean, o.running_mean) && same_bits(running_var, o.running_var) &&
               same_bits(diff_src, o.diff_src) && same_bits(diff_scale, o.diff_scale) &&
               same_bits(diff_shift, o.diff_shift);
    }
};

// One synchronized training step of `split` ranks (samples per rank, in batch order).
Results run_sync(nk_context* ctx, const Inputs& in, const std::vector<int64_t>& split, int64_t g) {
    const ref::Shape& sh = in.sh;
    const size_t C = size_t(sh.c), per_sample = size_t(sh.c * sh.s);
    REQUIRE(std::accumulate(split.begin(), split.end(), int64_t(0)) == sh.n);
    const size_t R = split.size();
    std::vector<size_t> first(R, 0);
    for (size_t r = 1; r < R; ++r) first[r] = first[r - 1] + size_t(split[r - 1]);

    std::vector<Bytes> stats(R), grads(R);
    for (size_t r = 0; r < R; ++r) {
        const nk_batch_norm_desc d = slice_desc(sh, split[r]);
        stats[r].assign(size_t(partial_size(d, g)), 0xa5);
        REQUIRE(nk_batch_norm_stats(ctx, &d, g, in.src.data() + first[r] * per_sample, stats[r].data(),
                                    int64_t(stats[r].size())) == NK_OK);
    }
    Results out;
    out.dst.assign(in.src.size(), -7.0f);
    out.diff_src.assign(in.src.size(), -7.0f);
    for (size_t r = 0; r < R; ++r) {
        const nk_batch_norm_desc d = slice_desc(sh, split[r]);
        const Bytes merged = merge(d, stats);
        std::vector<float> save_mean(C, -7.0f), save_invstd(C, -7.0f), rm = in.running_mean, rv = in.running_var;
        REQUIRE(nk_batch_norm_forward_from_partial(ctx, &d, merged.data(), int64_t(merged.size()),
                                                   in.src.data() + first[r] * per_sample,
                                                   out.dst.data() + first[r] * per_sample, in.scale.data(),
                                                   in.shift.data(), rm.data(), rv.data(), save_mean.data(),
                                                   save_invstd.data()) == NK_OK);
        if (r == 0) {
            out.merged_stats = merged;
            out.save_mean = save_mean;
            out.save_invstd = save_invstd;
            out.running_mean = rm;
            out.running_var = rv;
        } else {
            // Every rank, the empty one included, holds the same statistics.
            CHECK(merged == out.merged_stats);
            CHECK(test::same_bits(save_mean, out.save_mean));
            CHECK(test::same_bits(save_invstd, out.save_invstd));
            CHECK(test::same_bits(rm, out.running_mean));
            CHECK(test::same_bits(rv, out.running_var));
        }
    }
    for (size_t r = 0; r < R; ++r) {
        const nk_batch_norm_desc d = slice_desc(sh, split[r]);
        grads[r].assign(size_t(partial_size(d, g)), 0xa5);
        REQUIRE(nk_batch_norm_backward_reduce(ctx, &d, g, in.src.data() + first[r] * per_sample,
                                              in.dy.data() + first[r] * per_sample, out.save_mean.data(),
                                              grads[r].data(), int64_t(grads[r].size())) == NK_OK);
    }
    for (size_t r = 0; r < R; ++r) {
        const nk_batch_norm_desc d = slice_desc(sh, split[r]);
        const Bytes merged = merge(d, grads);
        std::vector<float> diff_scale(C, -7.0f), diff_shift(C, -7.0f);
        REQUIRE(nk_batch_norm_backward_from_reduced(ctx, &d, merged.data(), int64_t(merged.size()),
                                                    in.src.data() + first[r] * per_sample,
                                                    in.dy.data() + first[r] * per_sample, in.scale.data(),
                                                    out.save_mean.data(), out.save_invstd.data(),
                                                    out.diff_src.data() + first[r] * per_sample, diff_scale.data(),
                                                    diff_shift.data()) == NK_OK);
        if (r == 0) {
            out.merged_grads = merged;
            out.diff_scale = diff_scale;
            out.diff_shift = diff_shift;
        } else {
            CHECK(merged == out.merged_grads);
            CHECK(test::same_bits(diff_scale, out.diff_scale));
            CHECK(test::same_bits(diff_shift, out.diff_shift));
        }
    }
    return out;
}

// The same step as one process: training forward, then backward with its statistics.
Results run_single(nk_context* ctx, const Inputs& in) {
    const size_t C = size_t(in.sh.c);
    const nk_batch_norm_desc d = test::make_desc(in.sh);
    Results out;
    out.dst.assign(in.src.size(), -7.0f);
    out.diff_src.assign(in.src.size(), -7.0f);
    out.save_mean.assign(C, -7.0f);
    out.save_invstd.assign(C, -7.0f);
    out.diff_scale.assign(C, -7.0f);
    out.diff_shift.assign(C, -7.0f);
    out.running_mean = in.running_mean;
    out.running_var = in.running_var;
    REQUIRE(nk_batch_norm_forward_training(ctx, &d, in.src.data(), out.dst.data(), in.scale.data(), in.shift.data(),
                                           out.running_mean.data(), out.running_var.data(), out.save_mean.data(),
                                           out.save_invstd.data()) == NK_OK);
    REQUIRE(nk_batch_norm_backward(ctx, &d, in.src.data(), in.dy.data(), in.scale.data(), out.save_mean.data(),
                                   out.save_invstd.data(), out.diff_src.data(), out.diff_scale.data(),
                                   out.diff_shift.data()) == NK_OK);
    return out;
}

// Splits of n samples over r ranks: uneven, and uneven with rank 1 empty.
std::vector<std::vector<int64_t>> splits_of(int64_t n, int r) {
    if (r == 1) return {{n}};
    std::vector<std::vector<int64_t>> out;
    for (bool empty : {false, true}) {
        std::vector<int64_t> w(static_cast<size_t>(r));
        for (int i = 0; i < r; ++i) w[size_t(i)] = (empty && i == 1) ? 0 : i + 1; // rank i weighs i + 1
        const int64_t total = std::accumulate(w.begin(), w.end(), int64_t(0));
        std::vector<int64_t> s(static_cast<size_t>(r));
        int64_t used = 0;
        for (int i = 0; i < r; ++i) {
            s[size_t(i)] = i == r - 1 ? n - used : n * w[size_t(i)] / total;
            used += s[size_t(i)];
        }
        out.push_back(s);
    }
    return out;
}

std::string split_name(const std::vector<int64_t>& s) {
    std::string r;
    for (int64_t v : s) r += (r.empty() ? "" : "+") + std::to_string(v);
    return r;
}

// Within one float ulp (the float of a double that moved by ~1e-16 may round either way).
void check_ulp(const char* what, const std::vector<float>& got, const std::vector<float>& want) {
    REQUIRE(got.size() == want.size());
    for (size_t i = 0; i < got.size(); ++i) {
        INFO(what << "[" << i << "] got " << got[i] << " want " << want[i]);
        CHECK(std::fabs(double(got[i]) - double(want[i])) <=
              double(std::nextafter(std::fabs(want[i]), INFINITY)) - double(std::fabs(want[i])));
    }
}

const std::vector<ref::Shape> kShapes = {
    {0, 13, 3, 5},    // channels-first, short rows
    {0, 6, 2, 20000}, // channels-first, a row longer than a planner piece
    {0, 11, 70, 1},   // NC: the rows path
    {1, 10, 3, 7},    // channels-last with packed short rows
    {1, 9, 70, 3},    // channels-last, one lane per channel
};

// The same kinds with 1000 or more values per channel, for the comparison with one call.
// The single call's statistics carry their own float-term rounding (core/moments.hpp),
// a random error that shrinks as values are added: against float64 its variance is off
// by 8.7e-8 relative over NC 11x70's 11 values per channel, and two decompositions
// differed by up to 9.8e-8 over 100-150 values and by 3.9e-8 over these (deterministic
// data: the same every run), so the 1e-7 bound is held over 1000 values.
const std::vector<ref::Shape> kBatchShapes = {
    {0, 26, 3, 50},
    {0, 6, 2, 20000},
    {0, 1500, 70, 1},
    {1, 20, 3, 70},
    {1, 40, 70, 30},
};
} // namespace

TEST_CASE("batch norm sync: R = 1..4 ranks, uneven slices and an empty rank match one training step") {
    test::Context ctx(nk_context_isa(nullptr), 2);
    for (const ref::Shape& sh : kBatchShapes) {
        const Inputs in = make_inputs(sh, 100 + uint64_t(sh.n * sh.c));
        const Results single = run_single(ctx.get(), in);
        // The single step's statistics in double: one rank's partial (bitwise theirs, checked below).
        const nk_batch_norm_desc whole = test::make_desc(sh);
        Bytes whole_stats(size_t(partial_size(whole, 0)));
        REQUIRE(nk_batch_norm_stats(ctx.get(), &whole, 0, in.src.data(), whole_stats.data(),
                                    int64_t(whole_stats.size())) == NK_OK);
        const Piece want = read_piece(whole_stats, sh.c);
        for (int R = 1; R <= 4; ++R) {
            for (const std::vector<int64_t>& split : splits_of(sh.n, R)) {
                CAPTURE(test::shape_name(sh));
                CAPTURE(split_name(split));
                const Results got = run_sync(ctx.get(), in, split, 0);
                const Piece merged = read_piece(got.merged_stats, sh.c);
                CHECK(merged.count == sh.n * sh.s);
                for (int64_t c = 0; c < sh.c; ++c) {
                    const size_t i = size_t(c);
                    const double var = merged.b[i] / double(merged.count), want_var = want.b[i] / double(want.count);
                    CHECK(std::fabs(merged.a[i] - want.a[i]) <= 1e-7 * std::fabs(want.a[i]));
                    CHECK(std::fabs(var - want_var) <= 1e-7 * want_var);
                }
                check_ulp("save_mean", got.save_mean, single.save_mean);
                check_ulp("save_invstd", got.save_invstd, single.save_invstd);
                check_ulp("running_mean", got.running_mean, single.running_mean);
                check_ulp("running_var", got.running_var, single.running_var);
                test::check_close("dst", got.dst.data(), test::to_double(single.dst), 1e-6, 0);
                if (R == 1) CHECK(got == Results{got.merged_stats, got.merged_grads, single.dst, single.save_mean,
                                                 single.save_invstd, single.running_mean, single.running_var,
                                                 single.diff_src, single.diff_scale, single.diff_shift});
                // Backward against the float64 reference at the synchronized statistics.
                std::vector<double> mean(size_t(sh.c)), invstd(size_t(sh.c));
                for (int64_t c = 0; c < sh.c; ++c) {
                    mean[size_t(c)] = got.save_mean[size_t(c)];
                    invstd[size_t(c)] = got.save_invstd[size_t(c)];
                }
                const ref::Gradients rg = ref::backward(sh, in.src, in.dy, in.scale, mean, invstd, false);
                double terms = 0;
                std::vector<double> dscale_terms(size_t(sh.c)), dshift_terms(size_t(sh.c));
                for (int64_t c = 0; c < sh.c; ++c) {
                    const double m = double(sh.n * sh.s);
                    const double a = in.scale[size_t(c)] * invstd[size_t(c)];
                    ref::for_channel(sh, c, [&](int64_t i) {
                        const double xhat = (in.src[size_t(i)] - mean[size_t(c)]) * invstd[size_t(c)];
                        terms = std::max(terms, a * (std::fabs(in.dy[size_t(i)]) + std::fabs(rg.diff_shift[size_t(c)] / m) +
                                                     std::fabs(xhat * rg.diff_scale[size_t(c)] / m)));
                        dscale_terms[size_t(c)] += std::fabs(in.dy[size_t(i)] * xhat);
                        dshift_terms[size_t(c)] += std::fabs(in.dy[size_t(i)]);
                    });
                }
                test::check_close("diff_src", got.diff_src.data(), rg.diff_src, 2e-6 * terms, 0);
                for (int64_t c = 0; c < sh.c; ++c) {
                    const size_t i = size_t(c);
                    CHECK(std::fabs(got.diff_scale[i] - rg.diff_scale[i]) <= 1e-6 * dscale_terms[i] + 1e-6 * std::fabs(rg.diff_scale[i]));
                    CHECK(std::fabs(got.diff_shift[i] - rg.diff_shift[i]) <= 1e-6 * dshift_terms[i] + 1e-6 * std::fabs(rg.diff_shift[i]));
                }
            }
        }
    }
}

TEST_CASE("batch norm sync: each function of one slice against the float64 reference") {
    test::Context ctx(nk_context_isa(nullptr), 1);
    for (const ref::Shape& whole : kShapes) {
        const Inputs in = make_inputs(whole, 7 + uint64_t(whole.s));
        // In-process ranks: samples [lo, hi) of the batch as a tensor of their own.
        const int64_t lo = whole.n / 3, hi = whole.n - 1;
        ref::Shape sh = whole;
        sh.n = hi - lo;
        const size_t per_sample = size_t(whole.c * whole.s);
        const std::vector<float> x(in.src.begin() + lo * per_sample, in.src.begin() + hi * per_sample);
        const std::vector<float> dy(in.dy.begin() + lo * per_sample, in.dy.begin() + hi * per_sample);
        CAPTURE(test::shape_name(sh));
        const ref::Stats st = ref::batch_stats(sh, x);
        const nk_batch_norm_desc d = slice_desc(sh, sh.n);
        for (int64_t g : {int64_t(0), int64_t(1), int64_t(4)}) {
            CAPTURE(g);
            const int64_t pieces = g == 0 ? 1 : (sh.n + g - 1) / g;
            Bytes p(size_t(partial_size(d, g)), 0xa5);
            CHECK(p.size() == size_t(32 + pieces * (8 + 16 * sh.c)));
            REQUIRE(nk_batch_norm_stats(ctx.get(), &d, g, x.data(), p.data(), int64_t(p.size())) == NK_OK);
            // Each piece against the reference of its samples.
            for (int64_t q = 0; q < pieces; ++q) {
                ref::Shape ps = sh;
                const int64_t n0 = g == 0 ? 0 : q * g;
                ps.n = g == 0 ? sh.n : std::min(g, sh.n - n0);
                const std::vector<float> px(x.begin() + n0 * per_sample, x.begin() + (n0 + ps.n) * per_sample);
                const ref::Stats ps_st = ref::batch_stats(ps, px);
                int64_t count;
                std::memcpy(&count, p.data() + 32 + 8 * q, 8);
                CHECK(count == ps.n * ps.s);
                for (int64_t c = 0; c < sh.c; ++c) {
                    double mean, m2;
                    std::memcpy(&mean, p.data() + 32 + 8 * pieces + 8 * (q * sh.c + c), 8);
                    std::memcpy(&m2, p.data() + 32 + 8 * pieces + 8 * (pieces * sh.c + q * sh.c + c), 8);
                    const double sd = std::sqrt(ps_st.var[size_t(c)]);
                    CHECK(std::fabs(mean - ps_st.mean[size_t(c)]) <= 1e-6 * (sd + std::fabs(ps_st.mean[size_t(c)])));
                    CHECK(std::fabs(m2 / double(count) - ps_st.var[size_t(c)]) <= 1e-6 * ps_st.var[size_t(c)]);
                }
            }
            // One rank: from_partial normalizes with the slice's own statistics.
            std::vector<float> dst(x.size(), -7.0f), sm(size_t(sh.c)), si(size_t(sh.c));
            std::vector<float> rm = in.running_mean, rv = in.running_var;
            REQUIRE(nk_batch_norm_forward_from_partial(ctx.get(), &d, p.data(), int64_t(p.size()), x.data(), dst.data(),
                                                       in.scale.data(), in.shift.data(), rm.data(), rv.data(), sm.data(),
                                                       si.data()) == NK_OK);
            test::check_close("dst", dst.data(), ref::normalize(sh, x, st.mean, st.var, in.scale, in.shift, 1e-5), 2e-6, 2e-6);
            for (int64_t c = 0; c < sh.c; ++c) {
                const size_t i = size_t(c);
                const double m = double(sh.n * sh.s);
                CHECK(std::fabs(sm[i] - st.mean[i]) <= 1e-7 + 1e-6 * std::fabs(st.mean[i]));
                CHECK(std::fabs(si[i] - 1 / std::sqrt(st.var[i] + 1e-5)) <= 1e-6 / std::sqrt(st.var[i] + 1e-5));
                const double want_rm = ref::running_update(in.running_mean[i], st.mean[i], 0.1, false);
                const double want_rv =
                    ref::running_update(in.running_var[i], ref::running_var_input(st.var[i], int64_t(m), false), 0.1, false);
                CHECK(std::fabs(rm[i] - want_rm) <= 1e-7 + 1e-6 * std::fabs(want_rm));
                CHECK(std::fabs(rv[i] - want_rv) <= 1e-6 * std::fabs(want_rv));
            }
            // Backward: the sums, then diff_src / diff_scale / diff_shift at (sm, si).
            Bytes r(size_t(partial_size(d, g)), 0xa5);
            REQUIRE(nk_batch_norm_backward_reduce(ctx.get(), &d, g, x.data(), dy.data(), sm.data(), r.data(),
                                                  int64_t(r.size())) == NK_OK);
            std::vector<double> mean(sm.begin(), sm.end()), invstd(si.begin(), si.end());
            const ref::Gradients rg = ref::backward(sh, x, dy, in.scale, mean, invstd, false);
            for (int64_t c = 0; c < sh.c; ++c) {
                double s1 = 0, s2 = 0, abs1 = 0, abs2 = 0;
                for (int64_t q = 0; q < pieces; ++q) {
                    double a, b;
                    std::memcpy(&a, r.data() + 32 + 8 * pieces + 8 * (q * sh.c + c), 8);
                    std::memcpy(&b, r.data() + 32 + 8 * pieces + 8 * (pieces * sh.c + q * sh.c + c), 8);
                    s1 += a;
                    s2 += b;
                }
                ref::for_channel(sh, c, [&](int64_t i) {
                    abs1 += std::fabs(dy[size_t(i)]);
                    abs2 += std::fabs(dy[size_t(i)] * (x[size_t(i)] - mean[size_t(c)]));
                });
                CHECK(std::fabs(s1 - rg.diff_shift[size_t(c)]) <= 1e-6 * abs1);
                CHECK(std::fabs(s2 * invstd[size_t(c)] - rg.diff_scale[size_t(c)]) <= 1e-6 * abs2 * invstd[size_t(c)]);
            }
            std::vector<float> dx(x.size(), -7.0f), dscale(size_t(sh.c)), dshift(size_t(sh.c));
            REQUIRE(nk_batch_norm_backward_from_reduced(ctx.get(), &d, r.data(), int64_t(r.size()), x.data(), dy.data(),
                                                        in.scale.data(), sm.data(), si.data(), dx.data(), dscale.data(),
                                                        dshift.data()) == NK_OK);
            double terms = 0;
            for (size_t i = 0; i < dx.size(); ++i) terms = std::max(terms, std::fabs(rg.diff_src[i]) + std::fabs(dy[i]) * 4);
            test::check_close("diff_src", dx.data(), rg.diff_src, 2e-6 * terms, 0);
            for (int64_t c = 0; c < sh.c; ++c) {
                CHECK(std::fabs(dscale[size_t(c)] - rg.diff_scale[size_t(c)]) <= 1e-5 * (1 + std::fabs(rg.diff_scale[size_t(c)])));
                CHECK(std::fabs(dshift[size_t(c)] - rg.diff_shift[size_t(c)]) <= 1e-5 * (1 + std::fabs(rg.diff_shift[size_t(c)])));
            }
            // Frozen statistics: diff_src = dy * scale * invstd.
            nk_batch_norm_desc frozen = d;
            frozen.flags = NK_BN_USE_GLOBAL_STATS;
            REQUIRE(nk_batch_norm_backward_from_reduced(ctx.get(), &frozen, r.data(), int64_t(r.size()), x.data(), dy.data(),
                                                        in.scale.data(), sm.data(), si.data(), dx.data(), nullptr,
                                                        nullptr) == NK_OK);
            const ref::Gradients rf = ref::backward(sh, x, dy, in.scale, mean, invstd, true);
            test::check_close("frozen diff_src", dx.data(), rf.diff_src, 1e-6, 1e-6);
        }
    }
}

TEST_CASE("batch norm sync: with samples_per_piece g, every split at multiples of g gives the same bits") {
    test::Context ctx(nk_context_isa(nullptr), 2);
    for (const ref::Shape& sh : kShapes) {
        const Inputs in = make_inputs(sh, 31);
        for (int64_t g : {int64_t(1), int64_t(3)}) {
            CAPTURE(test::shape_name(sh));
            CAPTURE(g);
            const Results one = run_sync(ctx.get(), in, {sh.n}, g);
            for (int R = 2; R <= 4; ++R) {
                for (std::vector<int64_t> split : splits_of(sh.n, R)) {
                    // Cut at multiples of g: each rank but the last rounded down, the last takes the rest.
                    int64_t used = 0;
                    for (size_t r = 0; r + 1 < split.size(); ++r) {
                        split[r] = split[r] / g * g;
                        used += split[r];
                    }
                    split.back() = sh.n - used;
                    CAPTURE(split_name(split));
                    CHECK(run_sync(ctx.get(), in, split, g) == one);
                }
            }
            // Close to the single training step too (a different fold, so not its bits).
            const Results single = run_single(ctx.get(), in);
            test::check_close("dst", one.dst.data(), test::to_double(single.dst), 1e-6, 0);
        }
    }
}

TEST_CASE("batch norm sync: every ISA path and 1, 2, 3 threads give the same bits") {
    for (const ref::Shape& sh : kShapes) {
        const Inputs in = make_inputs(sh, 57);
        for (int64_t g : {int64_t(0), int64_t(2)}) {
            // Rank 1 empty; with g > 0 the first cut at a multiple of g.
            const int64_t half = g == 0 ? sh.n / 2 : sh.n / 2 / g * g;
            const std::vector<int64_t> s = {half, 0, sh.n - half};
            test::Context base_ctx(NK_ISA_SCALAR, 1);
            const Results base = run_sync(base_ctx.get(), in, s, g);
            for (int32_t isa : test::isas())
                for (int32_t threads : {1, 2, 3}) {
                    CAPTURE(test::shape_name(sh));
                    CAPTURE(g);
                    CAPTURE(test::isa_name(isa));
                    CAPTURE(threads);
                    test::Context c(isa, threads);
                    CHECK(run_sync(c.get(), in, s, g) == base);
                }
        }
    }
}

TEST_CASE("batch norm sync: merging is a left fold (merge(merge(a, b), c) == merge(a, b, c))") {
    const ref::Shape sh{1, 12, 5, 3};
    const Inputs in = make_inputs(sh, 3);
    const size_t per = size_t(sh.c * sh.s);
    const int64_t cuts[] = {0, 5, 6, 12};
    std::vector<Bytes> parts;
    for (int r = 0; r < 3; ++r) {
        const nk_batch_norm_desc d = slice_desc(sh, cuts[r + 1] - cuts[r]);
        parts.emplace_back(size_t(partial_size(d, 1)));
        REQUIRE(nk_batch_norm_stats(nullptr, &d, 1, in.src.data() + size_t(cuts[r]) * per, parts.back().data(),
                                    int64_t(parts.back().size())) == NK_OK);
    }
    const nk_batch_norm_desc d = slice_desc(sh, 1);
    CHECK(merge(d, {merge(d, {parts[0], parts[1]}), parts[2]}) == merge(d, parts));
    // Merging a merged partial alone changes nothing.
    const Bytes all = merge(d, parts);
    CHECK(merge(d, {all}) == all);
}

TEST_CASE("batch norm sync: a rank without samples updates its statistics and gets the parameter gradients") {
    const ref::Shape sh{0, 8, 4, 6};
    const Inputs in = make_inputs(sh, 9);
    const Results all = run_sync(nullptr, in, {0, 8, 0}, 0);
    // run_sync checked every rank against rank 0, which holds no sample: these are its results.
    const Results single = run_single(nullptr, in);
    check_ulp("running_mean", all.running_mean, single.running_mean);
    check_ulp("running_var", all.running_var, single.running_var);
    // One rank with the whole batch: the bits of one call.
    CHECK(test::same_bits(all.dst, single.dst));
    CHECK(test::same_bits(all.save_mean, single.save_mean));
    CHECK(test::same_bits(all.diff_src, single.diff_src));
    CHECK(test::same_bits(all.diff_scale, single.diff_scale));
    // Every rank empty: nothing to do, nothing written.
    const nk_batch_norm_desc d = slice_desc(sh, 0);
    Bytes p(size_t(partial_size(d, 0)));
    REQUIRE(nk_batch_norm_stats(nullptr, &d, 0, nullptr, p.data(), int64_t(p.size())) == NK_OK);
    const Bytes merged = merge(d, {p, p});
    std::vector<float> rm(4, 5.0f), rv(4, 5.0f);
    CHECK(nk_batch_norm_forward_from_partial(nullptr, &d, merged.data(), int64_t(merged.size()), nullptr, nullptr,
                                             nullptr, nullptr, rm.data(), rv.data(), nullptr, nullptr) == NK_OK);
    CHECK(rm == std::vector<float>(4, 5.0f));
    CHECK(rv == std::vector<float>(4, 5.0f));
}
