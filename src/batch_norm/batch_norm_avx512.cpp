// Compiled with this ISA's flags only (cmake/NormkitIsa.cmake).
#include "batch_norm/batch_norm_kernels.hpp"

namespace nk {
template struct BatchNormKernels<XsimdOps<xsimd::avx512bw>>;
const BatchNormKernelTable& batch_norm_kernels_avx512() {
    return BatchNormKernels<XsimdOps<xsimd::avx512bw>>::table;
}
} // namespace nk
