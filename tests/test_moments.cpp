// The checks that decide whether float-term sums of a block are kept or the block is
// summed again with double terms (src/core/moments.hpp). test_numerics.cpp checks the
// end results on data that takes either way.
#include "core/moments.hpp"

#include <doctest/doctest.h>

#include <cmath>
#include <initializer_list>
#include <limits>

TEST_CASE("moments: float-term statistics sums are trusted only in range and near the mean") {
    const double inf = std::numeric_limits<double>::infinity(), nan = std::nan("");
    // 1000 values, mean 1 from the pivot, variance 4: s1 = 1000, s2 = 1000 * (4 + 1).
    CHECK(nk::stats_sums_trusted(1000, 1000, 5000));
    // An overflowed term: the sums are not finite.
    CHECK_FALSE(nk::stats_sums_trusted(1000, 1000, inf));
    CHECK_FALSE(nk::stats_sums_trusted(1000, nan, 5000));
    CHECK_FALSE(nk::stats_sums_trusted(1000, -inf, 5000));
    // Average square under 2^-100: tiny terms lost digits (or all-zero blocks).
    CHECK_FALSE(nk::stats_sums_trusted(1000, 0, 0));
    CHECK_FALSE(nk::stats_sums_trusted(1000, 0, 1000 * 0x1p-101));
    CHECK(nk::stats_sums_trusted(1000, 0, 1000 * 0x1p-99));
    // Pivot delta from the mean, variance v: s2 / M2 = 1 + delta^2 / v, at most 16.
    const double n = 1000, v = 1;
    for (double delta : {0.0, 1.0, 3.0, 3.8}) {
        CAPTURE(delta);
        CHECK(nk::stats_sums_trusted(n, n * delta, n * (v + delta * delta)));
        CHECK(nk::stats_sums_trusted(n, -n * delta, n * (v + delta * delta)));
    }
    for (double delta : {3.9, 10.0, 1e4}) {
        CAPTURE(delta);
        CHECK_FALSE(nk::stats_sums_trusted(n, n * delta, n * (v + delta * delta)));
    }
}

TEST_CASE("moments: float-term gradient sums are trusted only in range") {
    const double inf = std::numeric_limits<double>::infinity();
    CHECK(nk::grad_sums_trusted(1000, 3, 250));
    CHECK(nk::grad_sums_trusted(1000, 3, -250));
    CHECK_FALSE(nk::grad_sums_trusted(1000, inf, 250));
    CHECK_FALSE(nk::grad_sums_trusted(1000, 3, -inf));
    CHECK_FALSE(nk::grad_sums_trusted(1000, 3, std::nan("")));
    // |sum dy (x - mean)| under 1000 * 2^-100: tiny products, or cancellation, or dy = 0.
    CHECK_FALSE(nk::grad_sums_trusted(1000, 3, 0));
    CHECK_FALSE(nk::grad_sums_trusted(1000, 3, -1000 * 0x1p-101));
    CHECK(nk::grad_sums_trusted(1000, 3, -1000 * 0x1p-99));
}
