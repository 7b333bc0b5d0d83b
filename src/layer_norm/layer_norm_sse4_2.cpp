// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "layer_norm/layer_norm_kernels.hpp"

namespace nk {
template struct LayerNormKernels<XsimdOps<xsimd::sse4_2>>;
const LayerNormKernelTable& layer_norm_kernels_sse4_2() { return LayerNormKernels<XsimdOps<xsimd::sse4_2>>::table; }
} // namespace nk
