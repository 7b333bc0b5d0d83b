// The scalar conversions (the definition, core/half.hpp), and the choice of table per ISA.
#include "core/half.hpp"

namespace nk {
namespace {

void bf16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_from_bf16(src[i]);
}
void f32_to_bf16(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = bf16_from_float(src[i]);
}
void f16_to_f32(const uint16_t* src, float* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = float_from_f16(src[i]);
}
void f32_to_f16(const float* src, uint16_t* dst, int64_t n) {
    for (int64_t i = 0; i < n; ++i) dst[i] = f16_from_float(src[i]);
}

const HalfKernelTable kScalar = {&bf16_to_f32, &f32_to_bf16, &f16_to_f32, &f32_to_f16};

bool has_avx512_bf16() {
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx512bf16");
}

} // namespace

const HalfKernelTable& half_kernels_scalar() { return kScalar; }

const HalfKernelTable* half_kernels_avx512_bf16() {
    static const bool native = has_avx512_bf16();
    return native ? &half_kernels_avx512_bf16_table() : nullptr;
}

const HalfKernelTable& half_kernels(Isa isa) {
    static const HalfKernelTable& (*const getters[kIsaCount])() = {half_kernels_scalar, half_kernels_sse4_2,
                                                                    half_kernels_avx2, half_kernels_avx512};
    if (isa == Isa::avx512 && half_kernels_avx512_bf16()) return *half_kernels_avx512_bf16();
    return kernels_for(isa, getters);
}

} // namespace nk
