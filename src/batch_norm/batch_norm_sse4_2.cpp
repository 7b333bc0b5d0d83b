// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "batch_norm/batch_norm_kernels.hpp"

namespace nk {
template struct BatchNormKernels<XsimdOps<xsimd::sse4_2>>;
const BatchNormKernelTable& batch_norm_kernels_sse4_2() {
    return BatchNormKernels<XsimdOps<xsimd::sse4_2>>::table;
}
} // namespace nk
