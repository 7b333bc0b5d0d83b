// bf16 and f16 storage: conversions to and from float32, and the staging of a tensor
// argument through float buffers (every kernel computes in float32; a half-precision
// tensor is converted when read and rounded once when written).
//
// The scalar functions below are the definition: every ISA's table (half_<isa>.cpp)
// produces exactly their bits, with native instructions where those give the same bits
// (F16C / AVX-512 vcvtps2ph and vcvtph2ps; AVX-512 BF16 vcvtneps2bf16 except on float
// subnormals, which it flushes to zero) and integer emulation elsewhere.
//
//   float -> bf16, f16   round to nearest, ties to even; overflow gives infinity.
//                        NaN stays NaN, quiet, sign kept: bf16 = the float's top 16 bits
//                        with 0x0040 set; f16 = sign | 0x7E00 | the top 9 payload bits
//                        (as vcvtneps2bf16 and vcvtps2ph produce).
//   bf16 -> float        exact: the bits shifted up 16 (a signaling NaN stays signaling).
//   f16 -> float         exact; a NaN keeps its sign and payload and is made quiet
//                        (0x00400000 set, as vcvtph2ps does).
#pragma once

#include "core/isa.hpp"
#include "core/scratch.hpp"
#include "normkit/normkit.h"

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstring>

namespace nk {

static inline uint32_t float_bits(float f) {
    uint32_t u;
    std::memcpy(&u, &f, sizeof u);
    return u;
}
static inline float bits_float(uint32_t u) {
    float f;
    std::memcpy(&f, &u, sizeof f);
    return f;
}

static inline uint16_t bf16_from_float(float f) {
    const uint32_t u = float_bits(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return uint16_t((u >> 16) | 0x0040u);
    return uint16_t((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
}

static inline float float_from_bf16(uint16_t h) { return bits_float(uint32_t(h) << 16); }

static inline uint16_t f16_from_float(float f) {
    const uint32_t u = float_bits(f), a = u & 0x7fffffffu;
    const uint16_t sign = uint16_t((u >> 16) & 0x8000u);
    if (a > 0x7f800000u) return uint16_t(sign | 0x7e00u | ((a >> 13) & 0x3ffu)); // NaN
    if (a >= 0x477ff000u) return uint16_t(sign | 0x7c00u);                       // >= 65520: infinity
    if (a >= 0x38800000u) {                                                       // a normal f16 (>= 2^-14)
        const uint32_t r = a + 0xfffu + ((a >> 13) & 1u);
        return uint16_t(sign | ((r >> 13) - (112u << 10)));
    }
    if (a <= 0x33000000u) return sign; // <= 2^-25: zero (2^-25 is a tie, to even)
    // A subnormal f16: the significand (implicit bit included) in units of 2^-24, rounded.
    const uint32_t mant = (a & 0x7fffffu) | 0x800000u, shift = 126u - (a >> 23);
    uint32_t q = mant >> shift;
    const uint32_t rem = mant & ((1u << shift) - 1u), half = 1u << (shift - 1u);
    if (rem > half || (rem == half && (q & 1u))) ++q;
    return uint16_t(sign | q);
}

static inline float float_from_f16(uint16_t h) {
    const uint32_t sign = uint32_t(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu, m = h & 0x3ffu;
    if (e == 0x1f) return bits_float(sign | 0x7f800000u | (m << 13) | (m ? 0x400000u : 0u));
    if (e == 0) {
        const float v = float(m) * 0x1p-24f; // exact: m < 2^10
        return sign ? -v : v;
    }
    return bits_float(sign | ((e + 112u) << 23) | (m << 13));
}

// One ISA's conversions of n contiguous values.
struct HalfKernelTable {
    void (*bf16_to_f32)(const uint16_t* src, float* dst, int64_t n);
    void (*f32_to_bf16)(const float* src, uint16_t* dst, int64_t n);
    void (*f16_to_f32)(const uint16_t* src, float* dst, int64_t n);
    void (*f32_to_f16)(const float* src, uint16_t* dst, int64_t n);
};

const HalfKernelTable& half_kernels_scalar();
const HalfKernelTable& half_kernels_sse4_2();
const HalfKernelTable& half_kernels_avx2();   // F16C for f16 when the CPU has it
const HalfKernelTable& half_kernels_avx512(); // bf16 by integer emulation
// AVX-512 with vcvtneps2bf16: null when the CPU lacks AVX-512 BF16.
const HalfKernelTable* half_kernels_avx512_bf16();
const HalfKernelTable& half_kernels_avx512_bf16_table(); // only on such a CPU
// The table for a call's ISA (the AVX-512 BF16 one when the CPU has it).
const HalfKernelTable& half_kernels(Isa isa);

// A tensor argument's storage type (NK_DTYPE_*). float32 passes through untouched; bf16
// and f16 go through float buffers of the caller's: read() converts, written() rounds.
class Storage {
public:
    Storage(int32_t dtype, Isa isa) : dtype_(dtype), k_(&half_kernels(isa)) {}
    bool f32() const { return dtype_ == NK_DTYPE_F32; }
    int32_t dtype() const { return dtype_; }
    size_t element_bytes() const { return f32() ? sizeof(float) : sizeof(uint16_t); }
    // Floats a buffer needs to stage `count` elements (none for float32).
    int64_t staging(int64_t count) const { return f32() ? 0 : count; }

    // Elements [at, at + n) of p as floats: p itself for float32, else converted into buf.
    const float* read(const void* p, int64_t at, int64_t n, float* buf) const {
        if (f32()) return static_cast<const float*>(p) + at;
        const uint16_t* h = static_cast<const uint16_t*>(p) + at;
        (dtype_ == NK_DTYPE_BF16 ? k_->bf16_to_f32 : k_->f16_to_f32)(h, buf, n);
        return buf;
    }
    // Where to compute the floats of elements [at, ...) of p: p itself for float32, else buf.
    float* write_to(void* p, int64_t at, float* buf) const { return f32() ? static_cast<float*>(p) + at : buf; }
    // After computing n floats at write_to(p, at, buf): rounds them into p (float32: nothing to do).
    void written(void* p, int64_t at, int64_t n, const float* buf) const {
        if (f32()) return;
        uint16_t* h = static_cast<uint16_t*>(p) + at;
        (dtype_ == NK_DTYPE_BF16 ? k_->f32_to_bf16 : k_->f32_to_f16)(buf, h, n);
    }
    // Element i of p.
    float value(const void* p, int64_t i) const {
        if (f32()) return static_cast<const float*>(p)[i];
        const uint16_t h = static_cast<const uint16_t*>(p)[i];
        return dtype_ == NK_DTYPE_BF16 ? float_from_bf16(h) : float_from_f16(h);
    }

private:
    int32_t dtype_;
    const HalfKernelTable* k_;
};

// Two float buffers of `count` elements each, for a task's bf16 / f16 block (none for float32).
struct Staging {
    Scratch storage;
    float* a;
    float* b;
    Staging(const Storage& st, int64_t count)
        : storage(size_t(std::max<int64_t>(1, 2 * st.staging(count))) * sizeof(float)),
          a(static_cast<float*>(storage.data())), b(a + st.staging(count)) {}
};

} // namespace nk
