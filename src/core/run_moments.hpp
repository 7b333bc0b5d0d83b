// Moments of contiguous runs, shared by the ops whose statistic covers one run of values
// (a layer-norm row, a channels-first group): the run is cut into fixed pieces of
// kRunPiece values; each piece sums its terms in float into 16 double lanes (the seg
// reductions of core/run_kernels.hpp), folded in a fixed order and checked
// (core/moments.hpp), redone with double terms when float could not hold them; pieces
// merge in order (Chan). The result depends on the run's values and length alone.
#pragma once

#include "core/run_kernel_table.hpp"

#include <cstdint>

namespace nk {

// Values per piece: fixes the bits of the statistics (as batch norm's channel pieces).
constexpr int64_t kRunPiece = 16384;

// The pivot of a run of len values: the mean of 4 values spread over it, summed in double
// from 0, rounded to float (near the mean, so that the float terms cancel little).
float run_pivot(const float* x, int64_t len);

// Sums of one piece from its 16 float-term lanes (acc1, acc2), or, when the checks do not
// trust them, from a redo with double terms.
struct PieceSums {
    double s1, s2;
};
// The statistics' sums (squares: about 0, for RMS norm, where only the range matters).
PieceSums checked_stats(const RunKernelTable& k, const float* x, int64_t len, float pivot, bool squares,
                        const double* acc1, const double* acc2);
PieceSums checked_grads(const RunKernelTable& k, const float* x, const float* dy, const float* w, int64_t len,
                        float mean, const double* acc1, const double* acc2);

// A whole run: mean and M2 (sum of squared deviations), or with `squares` (pivot 0) the
// sum of squares in m2 and mean 0.
struct RunMoments {
    double mean, m2;
};
RunMoments run_moments(const RunKernelTable& k, const float* x, int64_t len, bool squares);

// sum(g) and sum(g * (x - mean)) over a run, g = dy * w[i] (dy when w is null).
PieceSums run_grads(const RunKernelTable& k, const float* x, const float* dy, const float* w, int64_t len,
                    float mean);

} // namespace nk
