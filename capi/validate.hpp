// Argument checks shared by every op's entry points: descriptor headers, epsilon, flags,
// required pointers and buffer overlap. Each check returns false after recording the
// status and the message (naming the argument and its value); an entry point returns
// `status` at the first failure, before any output is touched.
#pragma once

#include "capi/errors.hpp"

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <utility>

namespace nk {

// One buffer of a call: outputs may not overlap any other buffer, except an allowed
// in-place pair given by identical pointers.
struct Buffer {
    const char* name;
    const void* data;
    size_t bytes;
    bool output;
};

class ArgCheck {
public:
    nk_status status = NK_OK;

    bool fail(nk_status s, const char* format, ...) __attribute__((format(printf, 3, 4)));

    // A descriptor's header: not NULL, struct_size at least this library's `known`, and
    // any bytes past it zero (a newer caller not using newer fields). `init` names the
    // function that fills it.
    bool header(const void* desc, uint32_t struct_size, uint32_t known, const char* init);

    bool epsilon(float epsilon) {
        if (epsilon > 0.0f && std::isfinite(epsilon)) return true;
        return fail(NK_ERROR_INVALID_ARGUMENT, "desc->epsilon is %g: must be > 0 and finite", double(epsilon));
    }

    // A tensor storage type this library computes in (NK_DTYPE_F32, _BF16, _F16).
    bool dtype(int32_t dtype) {
        if (dtype == NK_DTYPE_F32 || dtype == NK_DTYPE_BF16 || dtype == NK_DTYPE_F16) return true;
        return fail(NK_ERROR_INVALID_ARGUMENT,
                    "desc->dtype is %d: expected NK_DTYPE_F32 (0), NK_DTYPE_BF16 (1) or NK_DTYPE_F16 (2)", dtype);
    }
    // Bytes of one tensor element of a valid dtype.
    static size_t element_bytes(int32_t dtype) { return dtype == NK_DTYPE_F32 ? sizeof(float) : sizeof(uint16_t); }

    bool flags(uint32_t flags, uint32_t known) {
        if (!(flags & ~known)) return true;
        return fail(NK_ERROR_INVALID_ARGUMENT, "desc->flags is 0x%x: unknown bits 0x%x", flags, flags & ~known);
    }

    // count = a * b * c; false when the product overflows or its elements of `element`
    // bytes exceed addressable memory (the caller reports it, naming the sizes).
    static bool product(int64_t a, int64_t b, int64_t c, size_t element, int64_t* count);

    // A required pointer: NULL is an error unless the buffer it names is empty.
    bool required(const char* name, const void* p, size_t bytes) {
        if (p == nullptr && bytes > 0) return fail(NK_ERROR_NULL_POINTER, "%s is NULL", name);
        return true;
    }

    // No buffer may wrap the address space, and no output may overlap another buffer
    // except the pairs (indices into `buffers`) listed in `in_place`, when identical.
    bool no_overlap(std::initializer_list<Buffer> buffers, std::initializer_list<std::pair<size_t, size_t>> in_place);
};

} // namespace nk
