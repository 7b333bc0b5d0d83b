// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "core/run_kernels.hpp"

namespace nk {
template struct RunKernels<XsimdOps<xsimd::fma3<xsimd::avx2>>>;
const RunKernelTable& run_kernels_avx2() { return RunKernels<XsimdOps<xsimd::fma3<xsimd::avx2>>>::table; }
} // namespace nk
