// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "core/run_kernels.hpp"

namespace nk {
template struct RunKernels<XsimdOps<xsimd::sse4_2>>;
const RunKernelTable& run_kernels_sse4_2() { return RunKernels<XsimdOps<xsimd::sse4_2>>::table; }
} // namespace nk
