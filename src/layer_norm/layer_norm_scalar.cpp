#include "layer_norm/layer_norm_kernels.hpp"

namespace nk {
template struct LayerNormKernels<ScalarOps>;
const LayerNormKernelTable& layer_norm_kernels_scalar() { return LayerNormKernels<ScalarOps>::table; }
} // namespace nk
