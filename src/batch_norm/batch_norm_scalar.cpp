#include "batch_norm/batch_norm_kernels.hpp"

namespace nk {
template struct BatchNormKernels<ScalarOps>;
const BatchNormKernelTable& batch_norm_kernels_scalar() { return BatchNormKernels<ScalarOps>::table; }
} // namespace nk
