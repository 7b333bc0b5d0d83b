// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "core/run_kernels.hpp"

namespace nk {
template struct RunKernels<XsimdOps<xsimd::avx512bw>>;
const RunKernelTable& run_kernels_avx512() { return RunKernels<XsimdOps<xsimd::avx512bw>>::table; }
} // namespace nk
