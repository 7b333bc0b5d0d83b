// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "layer_norm/layer_norm_kernels.hpp"

namespace nk {
template struct LayerNormKernels<XsimdOps<xsimd::avx512bw>>;
const LayerNormKernelTable& layer_norm_kernels_avx512() { return LayerNormKernels<XsimdOps<xsimd::avx512bw>>::table; }
} // namespace nk
