// Numerical robustness and determinism of batch norm.
//
// Accuracy: float32 results against the float64 reference (tests/reference) run on the
// same float32 inputs. Each quantity is measured as the worst error / scale, where the
// scale is the natural size of the quantity, and must stay within its bound:
//
//   quantity      output                 error / scale                         bound
//   mean          save_mean              |err| / max(|mean|, std)              1e-6
//   var           1/save_invstd^2 - eps  |err| / (var + eps)                   1e-6
//   invstd        save_invstd            |err| / invstd                        1e-5
//   dst           training dst           |err| (absolute)                      1e-5
//   infer dst     inference dst          |err| (absolute)                      1e-5
//   rmean         running_mean           |err| / (|w_r rm0| + w_b max(|mean|, std))  1e-5
//   rvar          running_var            |err| / rvar                          1e-5
//   diff_src      backward diff_src      |err| / max |diff_src| of the channel 1e-5
//   g diff_src    the same with NK_BN_USE_GLOBAL_STATS                         1e-5
//   diff_scale    sum dy*xhat            |err| / sum |dy*xhat|                 1e-5
//   diff_shift    sum dy                 |err| / sum |dy|                      1e-5
//
// The running statistics are checked for both momentum conventions (PyTorch default
// and NK_BN_KERAS_MOMENTUM); w_r, w_b are the weights of the old running mean rm0 and of
// the batch mean. The mean is relative to max(|mean|, std): ~|offset| on offset data,
// the spread when the offset is 0. diff_scale and diff_shift are sums whose true value
// can be ~0 by cancellation, so their error is relative to the sum of the magnitudes of
// their terms. The variance is read back from save_invstd, relative to var + eps since
// that is what invstd encodes (for var << eps invstd does not depend on var). A true
// value beyond FLT_MAX may only come back as an infinity of its sign (the running
// variance of data with spread 1e27). NaN where a number is expected always fails.
//
// The backward pass differentiates at normkit's own save_mean / save_invstd, and the
// reference backward uses those same float values.
//
// Determinism: every output bitwise identical across thread counts, repeated runs and
// ISA paths.
//
// NK_NUMERICS_REPORT=1 prints the worst error / scale of every quantity per case.
#include "test_util.hpp"

#include <array>
#include <cfloat>
#include <cstdio>
#include <cstdlib>
#include <map>
#include <memory>

namespace {

// ---- measured quantities --------------------------------------------------------

enum Q {
    kMean,
    kVar,
    kInvstd,
    kDst,
    kInferDst,
    kRunMeanTorch,
    kRunVarTorch,
    kRunMeanKeras,
    kRunVarKeras,
    kDiffSrc,
    kGlobalDiffSrc,
    kDiffScale,
    kDiffShift,
    kQuantities
};

struct Quantity {
    const char* name;
    double bound;
};

const Quantity kQuantity[kQuantities] = {
    {"mean", 1e-6},        {"var", 1e-6},        {"invstd", 1e-5},     {"dst", 1e-5},
    {"infer dst", 1e-5},   {"rmean torch", 1e-5}, {"rvar torch", 1e-5}, {"rmean keras", 1e-5},
    {"rvar keras", 1e-5},  {"diff_src", 1e-5},   {"g diff_src", 1e-5}, {"diff_scale", 1e-5},
    {"diff_shift", 1e-5},
};

using Errors = std::array<double, kQuantities>;

// Worst ratio per case label, printed when NK_NUMERICS_REPORT is set.
using Table = std::map<std::string, Errors>;

void print_table(const char* title, const Table& table) {
    if (!std::getenv("NK_NUMERICS_REPORT")) return;
    int width = 4;
    for (const auto& row : table) width = std::max(width, int(row.first.size()));
    std::printf("\n%s (worst error/scale; bounds: mean, var 1e-6, others 1e-5)\n%-*s", title, width, "case");
    for (const Quantity& q : kQuantity) std::printf(" %11s", q.name);
    std::printf("\n");
    for (const auto& [label, e] : table) {
        std::printf("%-*s", width, label.c_str());
        for (double v : e) std::printf(" %11.2e", v);
        std::printf("\n");
    }
    std::fflush(stdout);
}

std::string fmt(double v) {
    char b[40];
    std::snprintf(b, sizeof b, "%.9g", v);
    return b;
}

std::string fmt_offset(double v) {
    char b[40];
    std::snprintf(b, sizeof b, "%g", v);
    return b;
}

// ---- inputs, outputs, reference -------------------------------------------------

struct Data {
    ref::Shape sh;
    float eps = 1e-5f, momentum = 0.1f;
    std::vector<float> src, dy, scale, shift, rm0, rv0; // rm0/rv0: running stats before the step
    std::vector<float> infer_mean, infer_var;           // given statistics of the inference pass
};

int64_t channel_of(const ref::Shape& sh, int64_t i) { return sh.layout == 0 ? (i / sh.s) % sh.c : i % sh.c; }

// Data of channel c = offset(c) + N(0, 1) * spread(c).
template <class Offset, class Spread>
Data make_data(const ref::Shape& sh, Offset offset, Spread spread, uint64_t seed) {
    Data d;
    d.sh = sh;
    const size_t count = size_t(sh.count()), c = size_t(sh.c);
    std::vector<double> offs(c), spreads(c);
    for (size_t k = 0; k < c; ++k) {
        offs[k] = offset(int64_t(k));
        spreads[k] = spread(int64_t(k));
    }
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> z(0.0, 1.0);
    d.src.resize(count);
    for (size_t i = 0; i < count; ++i) {
        const int64_t ch = channel_of(sh, int64_t(i));
        d.src[i] = float(offs[size_t(ch)] + z(rng) * spreads[size_t(ch)]);
    }
    d.dy = test::normal(count, 0.0, 1.0, seed + 1);
    d.scale = test::uniform(c, 0.5, 1.5, seed + 2);
    d.shift = test::uniform(c, -1.0, 1.0, seed + 3);
    d.rm0 = test::uniform(c, -1.0, 1.0, seed + 4);
    for (size_t k = 0; k < c; ++k) d.rm0[k] = float(offs[k] + d.rm0[k] * spreads[k]);
    d.rv0 = test::uniform(c, 0.5, 2.0, seed + 5);
    for (size_t k = 0; k < c; ++k)
        d.rv0[k] = float(d.rv0[k] * (spreads[k] > 0 ? std::min(spreads[k] * spreads[k], 1e38) : 1.0));
    return d;
}

// Everything one configuration produces.
struct Outputs {
    std::vector<float> dst, save_mean, save_invstd;
    std::vector<float> run_mean[2], run_var[2]; // [0] PyTorch momentum, [1] Keras momentum
    std::vector<float> infer_dst;
    std::vector<float> bwd_mean, bwd_invstd; // statistics the backward pass was given
    std::vector<float> diff_src, diff_scale, diff_shift;
    std::vector<float> g_diff_src, g_diff_scale, g_diff_shift; // NK_BN_USE_GLOBAL_STATS
};

// Names of the outputs that differ bitwise ("" when none does).
std::string differing(const Outputs& a, const Outputs& b) {
    std::string out;
    auto cmp = [&](const char* name, const std::vector<float>& x, const std::vector<float>& y) {
        if (!test::same_bits(x, y)) out += std::string(out.empty() ? "" : ", ") + name;
    };
    cmp("dst", a.dst, b.dst);
    cmp("save_mean", a.save_mean, b.save_mean);
    cmp("save_invstd", a.save_invstd, b.save_invstd);
    cmp("running_mean", a.run_mean[0], b.run_mean[0]);
    cmp("running_var", a.run_var[0], b.run_var[0]);
    cmp("running_mean (keras)", a.run_mean[1], b.run_mean[1]);
    cmp("running_var (keras)", a.run_var[1], b.run_var[1]);
    cmp("inference dst", a.infer_dst, b.infer_dst);
    cmp("diff_src", a.diff_src, b.diff_src);
    cmp("diff_scale", a.diff_scale, b.diff_scale);
    cmp("diff_shift", a.diff_shift, b.diff_shift);
    cmp("global diff_src", a.g_diff_src, b.g_diff_src);
    cmp("global diff_scale", a.g_diff_scale, b.g_diff_scale);
    cmp("global diff_shift", a.g_diff_shift, b.g_diff_shift);
    return out;
}

// Runs every mode once. Backward gets bwd_mean / bwd_invstd, or (when NULL) the
// save_mean / save_invstd of this run's own training forward.
Outputs run(nk_context* ctx, const Data& d, const std::vector<float>* bwd_mean = nullptr,
            const std::vector<float>* bwd_invstd = nullptr) {
    const size_t count = size_t(d.sh.count()), c = size_t(d.sh.c);
    nk_batch_norm_desc desc = test::make_desc(d.sh);
    desc.epsilon = d.eps;
    desc.momentum = d.momentum;
    Outputs o;
    o.dst.assign(count, -7.0f);
    o.save_mean.assign(c, -7.0f);
    o.save_invstd.assign(c, -7.0f);
    std::vector<float> dst2(count, -7.0f), mean2(c, -7.0f), invstd2(c, -7.0f);
    for (int keras = 0; keras < 2; ++keras) {
        desc.flags = keras ? NK_BN_KERAS_MOMENTUM : 0u;
        o.run_mean[keras] = d.rm0;
        o.run_var[keras] = d.rv0;
        REQUIRE(nk_batch_norm_forward_training(ctx, &desc, d.src.data(), keras ? dst2.data() : o.dst.data(),
                                               d.scale.data(), d.shift.data(), o.run_mean[keras].data(),
                                               o.run_var[keras].data(), keras ? mean2.data() : o.save_mean.data(),
                                               keras ? invstd2.data() : o.save_invstd.data()) == NK_OK);
    }
    // The momentum convention touches the running statistics only.
    CHECK(test::same_bits(dst2, o.dst));
    CHECK(test::same_bits(mean2, o.save_mean));
    CHECK(test::same_bits(invstd2, o.save_invstd));

    desc.flags = 0;
    o.infer_dst.assign(count, -7.0f);
    REQUIRE(nk_batch_norm_forward_inference(ctx, &desc, d.src.data(), o.infer_dst.data(), d.scale.data(),
                                            d.shift.data(), d.infer_mean.data(), d.infer_var.data()) == NK_OK);

    o.bwd_mean = bwd_mean ? *bwd_mean : o.save_mean;
    o.bwd_invstd = bwd_invstd ? *bwd_invstd : o.save_invstd;
    for (int global = 0; global < 2; ++global) {
        desc.flags = global ? NK_BN_USE_GLOBAL_STATS : 0u;
        std::vector<float>& dsrc = global ? o.g_diff_src : o.diff_src;
        std::vector<float>& dscale = global ? o.g_diff_scale : o.diff_scale;
        std::vector<float>& dshift = global ? o.g_diff_shift : o.diff_shift;
        dsrc.assign(count, -7.0f);
        dscale.assign(c, -7.0f);
        dshift.assign(c, -7.0f);
        REQUIRE(nk_batch_norm_backward(ctx, &desc, d.src.data(), d.dy.data(), d.scale.data(), o.bwd_mean.data(),
                                       o.bwd_invstd.data(), dsrc.data(), dscale.data(), dshift.data()) == NK_OK);
    }
    return o;
}

// Reference forward results of one Data, and the scales of the error ratios.
struct Expected {
    ref::Stats st;
    std::vector<double> var_scale, invstd, mean_scale, dst, infer_dst;
    std::vector<double> run_mean[2], run_var[2], run_mean_scale[2];
};

// Fills d.infer_mean / d.infer_var with the batch statistics rounded to float when empty.
Expected expect_forward(Data& d) {
    const ref::Shape& sh = d.sh;
    const double eps = d.eps, m = d.momentum;
    Expected e;
    e.st = ref::batch_stats(sh, d.src);
    if (d.infer_mean.empty()) {
        for (int64_t c = 0; c < sh.c; ++c) {
            d.infer_mean.push_back(float(e.st.mean[size_t(c)]));
            d.infer_var.push_back(float(e.st.var[size_t(c)]));
        }
    }
    for (size_t c = 0; c < size_t(sh.c); ++c) {
        const double mean = e.st.mean[c], var = e.st.var[c];
        e.var_scale.push_back(var + eps);
        e.invstd.push_back(1.0 / std::sqrt(var + eps));
        e.mean_scale.push_back(std::max(std::fabs(mean), std::sqrt(var)));
        for (int keras = 0; keras < 2; ++keras) {
            const double w_running = keras ? m : 1 - m, w_batch = keras ? 1 - m : m;
            e.run_mean[keras].push_back(ref::running_update(d.rm0[c], mean, m, keras));
            e.run_var[keras].push_back(
                ref::running_update(d.rv0[c], ref::running_var_input(var, sh.per_channel(), false), m, keras));
            e.run_mean_scale[keras].push_back(std::fabs(w_running * d.rm0[c]) + w_batch * e.mean_scale[c]);
        }
    }
    e.dst = ref::normalize(sh, d.src, e.st.mean, e.st.var, d.scale, d.shift, eps);
    e.infer_dst = ref::normalize(sh, d.src, test::to_double(d.infer_mean), test::to_double(d.infer_var), d.scale,
                                 d.shift, eps);
    return e;
}

// Reference backward at given float statistics, and the scales of the error ratios.
struct ExpectedBackward {
    std::vector<float> mean, invstd; // the statistics it was computed at
    ref::Gradients g, global;
    std::vector<double> diff_src_scale, g_diff_src_scale, diff_scale_scale, diff_shift_scale;
};

ExpectedBackward expect_backward(const Data& d, const std::vector<float>& mean, const std::vector<float>& invstd) {
    const ref::Shape& sh = d.sh;
    ExpectedBackward e;
    e.mean = mean;
    e.invstd = invstd;
    const std::vector<double> mu = test::to_double(mean), is = test::to_double(invstd);
    e.g = ref::backward(sh, d.src, d.dy, d.scale, mu, is, false);
    e.global = ref::backward(sh, d.src, d.dy, d.scale, mu, is, true);
    for (int64_t c = 0; c < sh.c; ++c) {
        double sum_dy = 0, sum_dy_xhat = 0, max_dsrc = 0, max_g_dsrc = 0;
        ref::for_channel(sh, c, [&](int64_t i) {
            sum_dy += std::fabs(d.dy[i]);
            sum_dy_xhat += std::fabs(d.dy[i] * (d.src[i] - mu[c]) * is[c]);
            max_dsrc = std::max(max_dsrc, std::fabs(e.g.diff_src[i]));
            max_g_dsrc = std::max(max_g_dsrc, std::fabs(e.global.diff_src[i]));
        });
        e.diff_shift_scale.push_back(sum_dy);
        e.diff_scale_scale.push_back(sum_dy_xhat);
        e.diff_src_scale.push_back(max_dsrc);
        e.g_diff_src_scale.push_back(max_g_dsrc);
    }
    return e;
}

// The reference backward for o's statistics, recomputed only when they change.
const ExpectedBackward& backward_for(std::unique_ptr<ExpectedBackward>& cache, const Data& d, const Outputs& o) {
    if (!cache || !test::same_bits(cache->mean, o.bwd_mean) || !test::same_bits(cache->invstd, o.bwd_invstd))
        cache = std::make_unique<ExpectedBackward>(expect_backward(d, o.bwd_mean, o.bwd_invstd));
    return *cache;
}

// ---- error measurement ----------------------------------------------------------

// |got - want| / scale; a want beyond the float range may only come back as an
// infinity (or +-FLT_MAX) of its sign. NaN where a number is expected counts as infinite.
double ratio_of(double got, double want, double scale) {
    if (std::fabs(want) > double(FLT_MAX))
        return std::fabs(got) >= double(FLT_MAX) && std::signbit(got) == std::signbit(want) ? 0.0 : INFINITY;
    const double err = std::fabs(got - want);
    if (err == 0) return 0;
    if (!(err < INFINITY)) return INFINITY;
    return err / scale;
}

struct Worst {
    double ratio = 0;
    int64_t at = -1;
    double got = 0, want = 0;
};

template <class T>
Worst worst_channels(const std::vector<T>& got, const std::vector<double>& want, const std::vector<double>& scale,
                     const std::vector<char>& skip) {
    Worst w;
    for (size_t c = 0; c < want.size(); ++c) {
        if (skip[c]) continue;
        const double r = ratio_of(double(got[c]), want[c], scale[c]);
        if (w.at < 0 || r > w.ratio) w = {r, int64_t(c), double(got[c]), want[c]};
    }
    return w;
}

Worst worst_tensor(const ref::Shape& sh, const std::vector<float>& got, const std::vector<double>& want,
                   const std::vector<double>& scale, const std::vector<char>& skip) {
    Worst w;
    for (int64_t i = 0; i < sh.count(); ++i) {
        const int64_t c = channel_of(sh, i);
        if (skip[size_t(c)]) continue;
        const double r = ratio_of(double(got[size_t(i)]), want[size_t(i)], scale[size_t(c)]);
        if (w.at < 0 || r > w.ratio) w = {r, i, double(got[size_t(i)]), want[size_t(i)]};
    }
    return w;
}

void expect_within(Q q, const Worst& w, bool per_element, Errors* record) {
    INFO(std::string(kQuantity[q].name) << ": worst " << (per_element ? "element " : "channel ") << w.at << " got "
                           << fmt(w.got) << " want " << fmt(w.want) << ": error/scale " << fmt(w.ratio)
                           << " > bound " << fmt(kQuantity[q].bound));
    CHECK(w.ratio <= kQuantity[q].bound);
    if (record) (*record)[q] = std::max((*record)[q], w.ratio);
}

struct CheckOptions {
    std::vector<char> skip_forward, skip_backward; // channels not compared (checked elsewhere)
    bool inference = true;                         // the inference pass has meaningful statistics
};

// Every output of one configuration against the reference.
void check_outputs(const Data& d, const Expected& e, const ExpectedBackward& b, const Outputs& o,
                   const CheckOptions& opt, Errors* record) {
    const ref::Shape& sh = d.sh;
    const std::vector<char>& sf = opt.skip_forward;
    const std::vector<char>& sb = opt.skip_backward;
    REQUIRE(sf.size() == size_t(sh.c)); // a flag per channel of this shape
    REQUIRE(sb.size() == size_t(sh.c));
    const std::vector<double> ones(size_t(sh.c), 1.0);
    std::vector<double> var(size_t(sh.c));
    for (size_t c = 0; c < var.size(); ++c)
        var[c] = 1.0 / (double(o.save_invstd[c]) * o.save_invstd[c]) - double(d.eps);

    expect_within(kMean, worst_channels(o.save_mean, e.st.mean, e.mean_scale, sf), false, record);
    expect_within(kVar, worst_channels(var, e.st.var, e.var_scale, sf), false, record);
    expect_within(kInvstd, worst_channels(o.save_invstd, e.invstd, e.invstd, sf), false, record);
    expect_within(kDst, worst_tensor(sh, o.dst, e.dst, ones, sf), true, record);
    if (opt.inference) expect_within(kInferDst, worst_tensor(sh, o.infer_dst, e.infer_dst, ones, sf), true, record);
    for (int keras = 0; keras < 2; ++keras) {
        expect_within(keras ? kRunMeanKeras : kRunMeanTorch,
                      worst_channels(o.run_mean[keras], e.run_mean[keras], e.run_mean_scale[keras], sf), false, record);
        expect_within(keras ? kRunVarKeras : kRunVarTorch,
                      worst_channels(o.run_var[keras], e.run_var[keras], e.run_var[keras], sf), false, record);
    }
    expect_within(kDiffSrc, worst_tensor(sh, o.diff_src, b.g.diff_src, b.diff_src_scale, sb), true, record);
    expect_within(kGlobalDiffSrc, worst_tensor(sh, o.g_diff_src, b.global.diff_src, b.g_diff_src_scale, sb), true,
                  record);
    expect_within(kDiffScale, worst_channels(o.diff_scale, b.g.diff_scale, b.diff_scale_scale, sb), false, record);
    expect_within(kDiffShift, worst_channels(o.diff_shift, b.g.diff_shift, b.diff_shift_scale, sb), false, record);
    // The global-statistics flag changes diff_src only.
    CHECK(test::same_bits(o.g_diff_scale, o.diff_scale));
    CHECK(test::same_bits(o.g_diff_shift, o.diff_shift));
}

// ---- shapes and configurations --------------------------------------------------

struct NamedShape {
    const char* label;
    ref::Shape sh;
};

// The accuracy shapes of the targets: 8x16x64x64 both layouts, and 4096x64.
const NamedShape kTargetShapes[] = {
    {"NCS 8x16x4096", {NK_LAYOUT_NCS, 8, 16, 4096}},
    {"NSC 8x16x4096", {NK_LAYOUT_NSC, 8, 16, 4096}},
    {"NC 4096x64", {NK_LAYOUT_NCS, 4096, 64, 1}},
};

// Hard cases: ragged sizes (odd channel count, tails in every kernel) with more than
// one reduction block per channel, so that block merges are exercised in every layout:
// channels-first 6 pieces per channel, the rows path 4 blocks (a block takes up to
// 524288 lane-values: 74896 rows of 7 channels).
const NamedShape kHardShapes[] = {
    {"NCS 6x7x13001", {NK_LAYOUT_NCS, 6, 7, 13001}},
    {"NSC 6x7x13001", {NK_LAYOUT_NSC, 6, 7, 13001}},
    {"NC 80007x7", {NK_LAYOUT_NCS, 80007, 7, 1}},
    // One lane per channel (the packed rows of C = 7 never take the lane groups), and
    // runs longer than a piece. (The cases poison channels up to 5: C >= 6.)
    {"NSC 4x70x1001", {NK_LAYOUT_NSC, 4, 70, 1001}},
    {"NCS 2x7x20000", {NK_LAYOUT_NCS, 2, 7, 20000}},
};

// Calls f(ctx) for every ISA path of this CPU x the given thread counts, then for each
// forced schedule on the native path with the last thread count. (A thread count above
// the machine's concurrency runs with the machine's: on 2 cores, 2.)
template <class F>
void for_each_config(const std::vector<int32_t>& threads, F f) {
    for (int32_t isa : test::isas()) {
        for (int32_t t : threads) {
            CAPTURE(test::isa_name(isa));
            CAPTURE(t);
            test::Context ctx(isa, t);
            f(ctx.get());
        }
    }
    // Then each forced schedule of the planner, on the native path.
    for (nk::Schedule schedule : test::forced_schedules()) {
        const std::string name = test::schedule_name(schedule);
        const int32_t t = threads.back();
        CAPTURE(name);
        CAPTURE(t);
        test::Context ctx(nk_context_isa(nullptr), t, schedule);
        f(ctx.get());
    }
}

// A hard case on every hard shape, ISA, 1 and 2 threads: the reference checks, then
// extra(ctx, data, outputs) for the case's own assertions.
template <class MakeData, class Extra>
void run_hard_case(const std::string& name, Table& table, MakeData make, CheckOptions opt, Extra extra) {
    uint64_t seed = 5000;
    for (const NamedShape& ns : kHardShapes) {
        const std::string shape = ns.label;
        CAPTURE(shape);
        Data d = make(ns.sh, seed++);
        const Expected e = expect_forward(d);
        // No channel skipped unless the case says so, sized for this shape's channels.
        CheckOptions shape_opt = opt;
        if (shape_opt.skip_forward.empty()) shape_opt.skip_forward.assign(size_t(d.sh.c), 0);
        if (shape_opt.skip_backward.empty()) shape_opt.skip_backward.assign(size_t(d.sh.c), 0);
        std::unique_ptr<ExpectedBackward> cache;
        Errors& record = table[name + ", " + ns.label];
        for_each_config({1, 2}, [&](nk_context* ctx) {
            const Outputs o = run(ctx, d);
            check_outputs(d, e, backward_for(cache, d, o), o, shape_opt, &record);
            extra(ctx, d, o);
        });
    }
}

// A hard case with the reference checks only.
template <class MakeData>
void run_hard_case(const std::string& name, Table& table, MakeData make) {
    run_hard_case(name, table, make, CheckOptions{}, [](nk_context*, const Data&, const Outputs&) {});
}

bool all_nan_in_channel(const ref::Shape& sh, const std::vector<float>& v, int64_t c) {
    bool all = true;
    ref::for_channel(sh, c, [&](int64_t i) { all = all && std::isnan(v[size_t(i)]); });
    return all;
}

// Bitwise equality of every channel not in skip.
bool same_except(const ref::Shape& sh, const std::vector<float>& a, const std::vector<float>& b,
                 const std::vector<char>& skip) {
    if (a.size() != b.size()) return false;
    const bool tensor = int64_t(a.size()) == sh.count();
    for (size_t i = 0; i < a.size(); ++i) {
        const int64_t c = tensor ? channel_of(sh, int64_t(i)) : int64_t(i);
        if (!skip[size_t(c)] && std::memcmp(&a[i], &b[i], sizeof(float)) != 0) return false;
    }
    return true;
}

bool any_nan(const std::vector<float>& v) {
    return std::any_of(v.begin(), v.end(), [](float x) { return std::isnan(x); });
}

} // namespace

// ---- accuracy on offset data ----------------------------------------------------

TEST_CASE("numerics: offset + N(0,1) data, every layout and ISA, against the float64 reference") {
    Table table;
    uint64_t seed = 100;
    for (double offset : {0.0, 1e2, 1e4, 1e5, 1e6}) {
        for (const NamedShape& ns : kTargetShapes) {
            const std::string shape = ns.label;
            CAPTURE(shape);
            CAPTURE(offset);
            Data d = make_data(ns.sh, [&](int64_t) { return offset; }, [](int64_t) { return 1.0; }, seed++);
            const Expected e = expect_forward(d);
            const CheckOptions opt{std::vector<char>(size_t(d.sh.c), 0), std::vector<char>(size_t(d.sh.c), 0), true};
            std::unique_ptr<ExpectedBackward> cache;
            Errors& record = table[std::string(ns.label).substr(0, 3) + " offset " + fmt_offset(offset)];
            for_each_config({1, 2}, [&](nk_context* ctx) {
                const Outputs o = run(ctx, d);
                check_outputs(d, e, backward_for(cache, d, o), o, opt, &record);
            });
        }
    }
    print_table("offset + N(0,1): 8x16x4096 NCS / NSC, 4096x64 NC; every ISA, 1 and 2 threads", table);
}

// ---- hard cases -----------------------------------------------------------------

TEST_CASE("numerics: constant input gives variance 0, dst == shift, no NaN") {
    // Per channel constants: zeros of both signs, ordinary, large, near FLT_MAX, subnormal.
    const float constants[] = {0.0f, -0.0f, 3.7f, -1e6f, 1e30f, 3e38f, 1e-40f};
    for (float eps : {1e-5f, 1e-12f}) {
        CAPTURE(eps);
        Table table;
        const float want_invstd = float(1.0 / std::sqrt(double(eps)));
        run_hard_case(
            "constant eps " + fmt_offset(eps), table,
            [&](const ref::Shape& sh, uint64_t seed) {
                Data d = make_data(sh, [&](int64_t c) { return double(constants[c % 7]); },
                                   [](int64_t) { return 0.0; }, seed);
                d.eps = eps;
                return d;
            },
            CheckOptions{},
            [&](nk_context*, const Data& d, const Outputs& o) {
                for (int64_t c = 0; c < d.sh.c; ++c) {
                    CAPTURE(c);
                    CHECK(o.save_mean[size_t(c)] == constants[c % 7]);
                    CHECK(o.save_invstd[size_t(c)] == want_invstd);
                    bool dst_is_shift = true, infer_is_shift = true;
                    ref::for_channel(d.sh, c, [&](int64_t i) {
                        dst_is_shift = dst_is_shift && o.dst[size_t(i)] == d.shift[size_t(c)];
                        infer_is_shift = infer_is_shift && o.infer_dst[size_t(i)] == d.shift[size_t(c)];
                    });
                    CHECK(dst_is_shift);
                    CHECK(infer_is_shift);
                }
                for (const std::vector<float>* v :
                     {&o.dst, &o.save_mean, &o.save_invstd, &o.run_mean[0], &o.run_var[0], &o.run_mean[1],
                      &o.run_var[1], &o.infer_dst, &o.diff_src, &o.diff_scale, &o.diff_shift, &o.g_diff_src})
                    CHECK_FALSE(any_nan(*v));
            });
        print_table("constant input", table);
    }
}

TEST_CASE("numerics: offset 1e6 with std 1e-3 (and 1e3, 1e4 with std 1e-3)") {
    // At 1e6 the float grid spacing is 0.0625, so offset 1e6 + N(0, 1e-3) rounds to a
    // constant: the variance must come out 0, not the garbage of E[x^2] - E[x]^2. At
    // 1e3 and 1e4 the values fall on a handful of grid points: a small, real variance.
    Table table;
    for (double offset : {1e6, 1e4, 1e3}) {
        for (float eps : {1e-5f, 1e-12f}) {
            CAPTURE(offset);
            CAPTURE(eps);
            run_hard_case(
                "offset " + fmt_offset(offset) + " std 1e-3 eps " + fmt_offset(eps), table,
                [&](const ref::Shape& sh, uint64_t seed) {
                    Data d = make_data(sh, [&](int64_t c) { return c % 2 ? -offset : offset; },
                                       [](int64_t) { return 1e-3; }, seed);
                    d.eps = eps;
                    return d;
                });
        }
    }
    print_table("offset with std 1e-3", table);
}

TEST_CASE("numerics: values near +-1e30 with spread 1e27 do not overflow the statistics") {
    // var ~1e54: invstd ~1e-27 is a normal float, but the running variance (~1e53) is
    // beyond FLT_MAX, so +inf is the right float for it (ratio_of allows exactly that).
    // The inference pass is not checked: its float variance would have to be > FLT_MAX.
    Table table;
    CheckOptions opt;
    opt.inference = false;
    run_hard_case(
        "+-1e30 spread 1e27", table,
        [](const ref::Shape& sh, uint64_t seed) {
            return make_data(sh, [](int64_t c) { return c % 2 ? -1e30 : 1e30; }, [](int64_t) { return 1e27; }, seed);
        },
        opt,
        [](nk_context*, const Data& d, const Outputs& o) {
            for (int64_t c = 0; c < d.sh.c; ++c) {
                CAPTURE(c);
                CHECK(std::isfinite(o.save_mean[size_t(c)]));
                CHECK(std::isfinite(o.save_invstd[size_t(c)]));
                CHECK(std::isfinite(o.run_mean[0][size_t(c)]));
                CHECK(std::isfinite(o.run_mean[1][size_t(c)]));
                CHECK(o.run_var[0][size_t(c)] == INFINITY);
                CHECK(o.run_var[1][size_t(c)] == INFINITY);
            }
            CHECK_FALSE(any_nan(o.dst));
            CHECK_FALSE(any_nan(o.diff_src));
        });
    print_table("+-1e30", table);
}

TEST_CASE("numerics: a channel holding NaN or +-Inf poisons that channel only") {
    Table table;
    uint64_t seed = 7000;
    // Variant 0: one NaN in channel 2. Variant 1: +Inf in the middle of channel 1, +Inf
    // as the first element of channel 4 (the element a reduction block pivots on), -Inf
    // as the last element of channel 5.
    for (int variant = 0; variant < 2; ++variant) {
        for (const NamedShape& ns : kHardShapes) {
            const std::string shape = ns.label;
            CAPTURE(shape);
            CAPTURE(variant);
            const ref::Shape& sh = ns.sh;
            Data clean = make_data(sh, [](int64_t c) { return 0.5 * double(c); }, [](int64_t) { return 1.0; }, seed++);
            Data bad = clean;
            std::vector<char> poisoned(size_t(sh.c), 0);
            auto mid = [&](int64_t c) { return sh.at(sh.n / 2, c, sh.s / 2); };
            if (variant == 0) {
                bad.src[size_t(mid(2))] = NAN;
                poisoned[2] = 1;
            } else {
                bad.src[size_t(mid(1))] = INFINITY;
                bad.src[size_t(sh.at(0, 4, 0))] = INFINITY;
                bad.src[size_t(sh.at(sh.n - 1, 5, sh.s - 1))] = -INFINITY;
                poisoned[1] = poisoned[4] = poisoned[5] = 1;
            }
            expect_forward(clean); // fills clean.infer_mean / infer_var: the batch statistics
            bad.infer_mean = clean.infer_mean;
            bad.infer_var = clean.infer_var;
            const Expected e_bad = expect_forward(bad);
            std::unique_ptr<ExpectedBackward> cache;
            const CheckOptions opt{poisoned, poisoned, true};
            Errors& record = table[std::string(variant ? "Inf, " : "NaN, ") + ns.label];
            for_each_config({1, 2}, [&](nk_context* ctx) {
                const Outputs o = run(ctx, bad);
                check_outputs(bad, e_bad, backward_for(cache, bad, o), o, opt, &record);
                const Outputs oc = run(ctx, clean);
                for (int64_t c = 0; c < sh.c; ++c) {
                    if (!poisoned[size_t(c)]) continue;
                    CAPTURE(c);
                    CHECK(std::isnan(o.save_mean[size_t(c)]));
                    CHECK(std::isnan(o.save_invstd[size_t(c)]));
                    CHECK(all_nan_in_channel(sh, o.dst, c));
                }
                // The other channels come out exactly as if the bad values were not there.
                CHECK(same_except(sh, o.dst, oc.dst, poisoned));
                CHECK(same_except(sh, o.save_mean, oc.save_mean, poisoned));
                CHECK(same_except(sh, o.save_invstd, oc.save_invstd, poisoned));
                CHECK(same_except(sh, o.run_mean[0], oc.run_mean[0], poisoned));
                CHECK(same_except(sh, o.run_var[0], oc.run_var[0], poisoned));
                CHECK(same_except(sh, o.infer_dst, oc.infer_dst, poisoned));
                CHECK(same_except(sh, o.diff_src, oc.diff_src, poisoned));
                CHECK(same_except(sh, o.diff_scale, oc.diff_scale, poisoned));
                CHECK(same_except(sh, o.diff_shift, oc.diff_shift, poisoned));
            });
        }
    }
    print_table("NaN / Inf input channels", table);
}

TEST_CASE("numerics: a NaN in diff_dst poisons that channel's gradients only") {
    Table table;
    uint64_t seed = 8000;
    for (const NamedShape& ns : kHardShapes) {
        const std::string shape = ns.label;
        CAPTURE(shape);
        const ref::Shape& sh = ns.sh;
        Data clean = make_data(sh, [](int64_t c) { return 0.5 * double(c); }, [](int64_t) { return 1.0; }, seed++);
        Data bad = clean;
        const int64_t c_bad = 3, i_bad = sh.at(sh.n / 2, c_bad, sh.s / 2);
        bad.dy[size_t(i_bad)] = NAN;
        std::vector<char> poisoned(size_t(sh.c), 0), none(size_t(sh.c), 0);
        poisoned[size_t(c_bad)] = 1;
        const Expected e = expect_forward(clean);
        bad.infer_mean = clean.infer_mean;
        bad.infer_var = clean.infer_var;
        std::unique_ptr<ExpectedBackward> cache;
        const CheckOptions opt{none, poisoned, true};
        Errors& record = table[std::string("NaN dy, ") + ns.label];
        for_each_config({1, 2}, [&](nk_context* ctx) {
            const Outputs o = run(ctx, bad);
            check_outputs(bad, e, backward_for(cache, bad, o), o, opt, &record);
            const Outputs oc = run(ctx, clean);
            CHECK(all_nan_in_channel(sh, o.diff_src, c_bad));
            CHECK(std::isnan(o.diff_scale[size_t(c_bad)]));
            CHECK(std::isnan(o.diff_shift[size_t(c_bad)]));
            CHECK(std::isnan(o.g_diff_scale[size_t(c_bad)]));
            CHECK(std::isnan(o.g_diff_shift[size_t(c_bad)]));
            CHECK(same_except(sh, o.diff_src, oc.diff_src, poisoned));
            CHECK(same_except(sh, o.diff_scale, oc.diff_scale, poisoned));
            CHECK(same_except(sh, o.diff_shift, oc.diff_shift, poisoned));
            // With frozen statistics diff_src is element-wise: only the NaN element is NaN.
            bool others_same = true;
            for (size_t i = 0; i < o.g_diff_src.size(); ++i)
                if (int64_t(i) != i_bad)
                    others_same = others_same && std::memcmp(&o.g_diff_src[i], &oc.g_diff_src[i], 4) == 0;
            CHECK(others_same);
            CHECK(std::isnan(o.g_diff_src[size_t(i_bad)]));
        });
    }
    print_table("NaN in diff_dst", table);
}

TEST_CASE("numerics: huge (1e6 +- 1e3) and tiny (1e-6 +- 1e-7) channels in one tensor") {
    Table table;
    for (float eps : {1e-5f, 1e-20f}) {
        CAPTURE(eps);
        run_hard_case(
            "huge/tiny eps " + fmt_offset(eps), table,
            [&](const ref::Shape& sh, uint64_t seed) {
                Data d = make_data(sh, [](int64_t c) { return c % 2 ? 1e-6 : 1e6; },
                                   [](int64_t c) { return c % 2 ? 1e-7 : 1e3; }, seed);
                d.eps = eps;
                return d;
            });
    }
    print_table("huge and tiny channels", table);
}

TEST_CASE("numerics: spread 1e-17 (squares far under float's usual range) and spiky channels") {
    // The reductions form their terms in float and check the sums (core/moments.hpp;
    // test_moments.cpp tests the checks themselves). Squares ~1e-34 are under the
    // average-term floor: those blocks are summed again with double terms. With every
    // 32nd value +1e4, a pivot sampled on spikes sits ~5.6 standard deviations from the
    // mean. Either way the results must match the reference like any other case.
    Table table;
    run_hard_case(
        "1e-16 +- 1e-17", table,
        [](const ref::Shape& sh, uint64_t seed) {
            Data d = make_data(sh, [](int64_t) { return 1e-16; }, [](int64_t) { return 1e-17; }, seed);
            d.eps = 1e-38f;
            return d;
        });
    run_hard_case(
        "spikes", table,
        [](const ref::Shape& sh, uint64_t seed) {
            Data d = make_data(sh, [](int64_t c) { return c % 2 ? 1e3 : 0.0; }, [](int64_t) { return 1.0; }, seed);
            int64_t k = 0;
            for (int64_t c = 0; c < sh.c; ++c)
                ref::for_channel(sh, c, [&](int64_t i) { d.src[size_t(i)] += (k++ % 32 == 0) ? 1e4f : 0.0f; });
            return d;
        });
    print_table("spread 1e-17, spikes", table);
}

TEST_CASE("numerics: inference with given statistics at offset 1e6") {
    // Given statistics that are not the batch's own (as running estimates are not).
    Table table;
    run_hard_case(
        "inference offset 1e6", table,
        [](const ref::Shape& sh, uint64_t seed) {
            Data d = make_data(sh, [](int64_t c) { return c % 2 ? -1e6 : 1e6; }, [](int64_t) { return 1.0; }, seed);
            const ref::Stats st = ref::batch_stats(sh, d.src);
            for (int64_t c = 0; c < sh.c; ++c) {
                d.infer_mean.push_back(float(st.mean[size_t(c)] + 0.3 * double(c % 3)));
                d.infer_var.push_back(float(st.var[size_t(c)] * (1.0 + 0.1 * double(c % 4))));
            }
            return d;
        });
    print_table("inference at offset 1e6", table);
}

// ---- determinism ----------------------------------------------------------------

namespace {

// Shapes that split the work in every way the planner can: several pieces per
// channel, rows longer than a piece, packed short rows, several lane tiles, tails.
const NamedShape kDeterminismShapes[] = {
    {"NCS 8x16x4096", {NK_LAYOUT_NCS, 8, 16, 4096}},
    {"NSC 8x16x4096", {NK_LAYOUT_NSC, 8, 16, 4096}},
    {"NC 4096x64", {NK_LAYOUT_NCS, 4096, 64, 1}},
    {"NSC 4096x64x1", {NK_LAYOUT_NSC, 4096, 64, 1}},
    {"NCS 6x7x13001", {NK_LAYOUT_NCS, 6, 7, 13001}},
    {"NSC 6x7x13001", {NK_LAYOUT_NSC, 6, 7, 13001}},
    {"NCS 2x3x40000", {NK_LAYOUT_NCS, 2, 3, 40000}},
    {"NSC 2x3x40000", {NK_LAYOUT_NSC, 2, 3, 40000}},
    {"NCS 5x1500x7", {NK_LAYOUT_NCS, 5, 1500, 7}},
    {"NSC 5x1500x7", {NK_LAYOUT_NSC, 5, 1500, 7}},
    {"NC 80007x7", {NK_LAYOUT_NCS, 80007, 7, 1}},
};

// Channels at offsets 0, 1e2, 1e4, 1e6 (what rounding the mean to float lost matters), and
// fixed statistics for the inference and backward passes.
Data determinism_data(const ref::Shape& sh, uint64_t seed) {
    const double offsets[] = {0.0, 1e2, 1e4, 1e6};
    Data d = make_data(sh, [&](int64_t c) { return offsets[c % 4]; }, [](int64_t) { return 1.0; }, seed);
    for (int64_t c = 0; c < sh.c; ++c) {
        d.infer_mean.push_back(float(offsets[c % 4] + 0.25));
        d.infer_var.push_back(1.5f);
    }
    return d;
}

} // namespace

TEST_CASE("determinism: bitwise identical for 1, 2, 3, 4, 7, 16 threads and from run to run") {
    uint64_t seed = 9000;
    for (const NamedShape& ns : kDeterminismShapes) {
        const std::string shape = ns.label;
        CAPTURE(shape);
        const Data d = determinism_data(ns.sh, seed++);
        const int32_t isa = nk_context_isa(nullptr);
        CAPTURE(test::isa_name(isa));
        std::unique_ptr<Outputs> first;
        for (int32_t t : {1, 2, 3, 4, 7, 16}) {
            CAPTURE(t);
            test::Context ctx(isa, t);
            for (int repeat = 0; repeat < 2; ++repeat) {
                CAPTURE(repeat);
                if (!first) {
                    first = std::make_unique<Outputs>(run(ctx.get(), d));
                    continue;
                }
                const Outputs o = run(ctx.get(), d, &first->bwd_mean, &first->bwd_invstd);
                const std::string diff = differing(o, *first);
                INFO("differ from 1 thread, first run: " << diff);
                CHECK(diff.empty());
            }
        }
    }
}

TEST_CASE("determinism: every ISA path gives the bits of the scalar path") {
    uint64_t seed = 9500;
    for (const NamedShape& ns : kDeterminismShapes) {
        const std::string shape = ns.label;
        CAPTURE(shape);
        const Data d = determinism_data(ns.sh, seed++);
        std::unique_ptr<Outputs> first;
        for_each_config({1, 2}, [&](nk_context* ctx) {
            if (!first) {
                first = std::make_unique<Outputs>(run(ctx, d));
                return;
            }
            const Outputs o = run(ctx, d, &first->bwd_mean, &first->bwd_invstd);
            const std::string diff = differing(o, *first);
            INFO("differ from scalar, 1 thread: " << diff);
            CHECK(diff.empty());
        });
    }
}

TEST_CASE("determinism: NC through either layout gives the same bits") {
    // With spatial = 1 both layouts name the same memory order.
    const Data ncs = determinism_data({NK_LAYOUT_NCS, 4096, 64, 1}, 9900);
    Data nsc = ncs;
    nsc.sh.layout = NK_LAYOUT_NSC;
    test::Context ctx(nk_context_isa(nullptr), 2);
    const Outputs a = run(ctx.get(), ncs);
    const Outputs b = run(ctx.get(), nsc, &a.bwd_mean, &a.bwd_invstd);
    const std::string diff = differing(a, b);
    INFO("differ: " << diff);
    CHECK(diff.empty());
}
