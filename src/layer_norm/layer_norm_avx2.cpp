// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "layer_norm/layer_norm_kernels.hpp"

namespace nk {
template struct LayerNormKernels<XsimdOps<xsimd::fma3<xsimd::avx2>>>;
const LayerNormKernelTable& layer_norm_kernels_avx2() { return LayerNormKernels<XsimdOps<xsimd::fma3<xsimd::avx2>>>::table; }
} // namespace nk
