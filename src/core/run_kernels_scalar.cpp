#include "core/isa.hpp"
#include "core/run_kernels.hpp"

namespace nk {
template struct RunKernels<ScalarOps>;
const RunKernelTable& run_kernels_scalar() { return RunKernels<ScalarOps>::table; }

const RunKernelTable& run_kernels(Isa isa) {
    static const RunKernelTable& (*const getters[kIsaCount])() = {run_kernels_scalar, run_kernels_sse4_2,
                                                                  run_kernels_avx2, run_kernels_avx512};
    return kernels_for(isa, getters);
}
} // namespace nk
