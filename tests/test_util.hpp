// Helpers shared by the doctest suites.
#pragma once

#include "core/context.hpp"
#include "normkit/normkit.h"
#include "reference/batch_norm_reference.hpp"

#include <doctest/doctest.h>

#include <algorithm>
#include <cmath>
#include <cstring>
#include <random>
#include <string>
#include <vector>

namespace test {

// An nk_context with the given caps and schedule, destroyed at scope exit.
class Context {
public:
    Context(int32_t isa, int32_t threads, nk::Schedule schedule = nk::Schedule::automatic) {
        REQUIRE(nk_context_create(&ctx_) == NK_OK);
        REQUIRE(nk_context_set_max_isa(ctx_, isa) == NK_OK);
        REQUIRE(nk_context_set_num_threads(ctx_, threads) == NK_OK);
        ctx_->schedule = schedule; // not shared yet: no lock needed
    }
    ~Context() { nk_context_destroy(ctx_); }
    Context(const Context&) = delete;
    Context& operator=(const Context&) = delete;
    nk_context* get() const { return ctx_; }

private:
    nk_context* ctx_ = nullptr;
};

// Every ISA path this CPU can run, scalar first. Under ThreadSanitizer only the native
// one: the paths share every line that hands work between threads, and the release and
// ASan runs check their arithmetic; TSan's time goes to the thread counts and schedules.
inline std::vector<int32_t> isas() {
#if defined(__SANITIZE_THREAD__)
    return {nk_context_isa(nullptr)};
#else
    std::vector<int32_t> v;
    for (int32_t i = NK_ISA_SCALAR; i <= nk_context_isa(nullptr); ++i) v.push_back(i);
    return v;
#endif
}

// The schedules a test can force on the planner (beside the automatic choice, which
// every other test takes): each must give the bits of every other.
inline std::vector<nk::Schedule> forced_schedules() {
    return {nk::Schedule::fused, nk::Schedule::split, nk::Schedule::two_passes};
}

inline std::string schedule_name(nk::Schedule s) {
    static const char* names[] = {"automatic", "fused", "split", "two passes"};
    return names[static_cast<int>(s)];
}

inline std::string isa_name(int32_t isa) {
    static const char* names[] = {"scalar", "sse4.2", "avx2", "avx512"};
    return names[isa];
}

inline std::vector<float> normal(size_t count, double mean, double stddev, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::normal_distribution<double> dist(mean, stddev);
    std::vector<float> v(count);
    for (float& x : v) x = float(dist(rng));
    return v;
}

inline std::vector<float> uniform(size_t count, double lo, double hi, uint64_t seed) {
    std::mt19937_64 rng(seed);
    std::uniform_real_distribution<double> dist(lo, hi);
    std::vector<float> v(count);
    for (float& x : v) x = float(dist(rng));
    return v;
}

// Worst |got - want| / (abs_floor + rel * |want|) over a buffer: <= 1 passes.
struct Worst {
    double ratio = 0;
    size_t index = 0;
    double got = 0, want = 0;
};

inline Worst worst_error(const float* got, const std::vector<double>& want, double abs_tol, double rel_tol) {
    Worst w;
    for (size_t i = 0; i < want.size(); ++i) {
        const double err = std::fabs(double(got[i]) - want[i]);
        const double bound = abs_tol + rel_tol * std::fabs(want[i]);
        const double r = std::isnan(err) ? INFINITY : err / bound;
        if (r > w.ratio) w = {r, i, double(got[i]), want[i]};
    }
    return w;
}

// CHECKs that every element is within abs_tol + rel_tol*|want|; reports the worst one.
inline void check_close(const char* what, const float* got, const std::vector<double>& want,
                        double abs_tol, double rel_tol) {
    const Worst w = worst_error(got, want, abs_tol, rel_tol);
    INFO(std::string(what) << ": worst at [" << w.index << "] got " << w.got << " want " << w.want
              << " (error/bound " << w.ratio << ")");
    CHECK(w.ratio <= 1.0);
}

inline std::vector<double> to_double(const std::vector<float>& v) { return {v.begin(), v.end()}; }

inline double max_abs(const std::vector<double>& v) {
    double m = 0;
    for (double x : v) m = std::max(m, std::fabs(x));
    return m;
}

inline bool same_bits(const std::vector<float>& a, const std::vector<float>& b) {
    return a.size() == b.size() && (a.empty() || std::memcmp(a.data(), b.data(), a.size() * sizeof(float)) == 0);
}

inline nk_batch_norm_desc make_desc(const ref::Shape& sh) {
    nk_batch_norm_desc d;
    REQUIRE(nk_batch_norm_desc_init(&d, sh.layout, sh.n, sh.c, sh.s) == NK_OK);
    return d;
}

inline std::string shape_name(const ref::Shape& sh) {
    return std::string(sh.layout == 0 ? "NCS " : "NSC ") + std::to_string(sh.n) + "x" +
           std::to_string(sh.c) + "x" + std::to_string(sh.s);
}

} // namespace test
