// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "batch_norm/batch_norm_kernels.hpp"

namespace nk {
template struct BatchNormKernels<XsimdOps<xsimd::fma3<xsimd::avx2>>>;
const BatchNormKernelTable& batch_norm_kernels_avx2() {
    return BatchNormKernels<XsimdOps<xsimd::fma3<xsimd::avx2>>>::table;
}
} // namespace nk
