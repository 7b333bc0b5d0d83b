#include "capi/validate.hpp"

#include <cstdarg>
#include <cstdio>

namespace nk {

bool ArgCheck::fail(nk_status s, const char* format, ...) {
    char message[400];
    va_list args;
    va_start(args, format);
    std::vsnprintf(message, sizeof message, format, args);
    va_end(args);
    status = nk::fail(s, "%s", message);
    return false;
}

bool ArgCheck::header(const void* desc, uint32_t struct_size, uint32_t known, const char* init) {
    if (desc == nullptr) return fail(NK_ERROR_NULL_POINTER, "desc is NULL");
    if (struct_size < known)
        return fail(NK_ERROR_INVALID_ARGUMENT, "desc->struct_size is %u, expected at least %u: call %s()",
                    struct_size, known, init);
    const unsigned char* bytes = static_cast<const unsigned char*>(desc);
    for (uint32_t i = known; i < struct_size; ++i)
        if (bytes[i] != 0)
            return fail(NK_ERROR_UNSUPPORTED,
                        "desc->struct_size is %u and byte %u is set: fields newer than this library (%u bytes) "
                        "are not supported",
                        struct_size, i, known);
    return true;
}

bool ArgCheck::product(int64_t a, int64_t b, int64_t c, size_t element, int64_t* count) {
    int64_t ab = 0;
    if (__builtin_mul_overflow(a, b, &ab) || __builtin_mul_overflow(ab, c, count) ||
        *count > int64_t(PTRDIFF_MAX / element))
        return false;
    return true;
}

bool ArgCheck::no_overlap(std::initializer_list<Buffer> buffers,
                          std::initializer_list<std::pair<size_t, size_t>> in_place) {
    for (const Buffer& x : buffers) {
        if (x.data == nullptr) continue;
        uintptr_t end;
        if (__builtin_add_overflow(uintptr_t(x.data), x.bytes, &end))
            return fail(NK_ERROR_INVALID_SHAPE, "%s holds %zu bytes and wraps the address space", x.name, x.bytes);
    }
    auto overlap = [](const Buffer& x, const Buffer& y) {
        if (x.data == nullptr || y.data == nullptr || x.bytes == 0 || y.bytes == 0) return false;
        const uintptr_t ax = uintptr_t(x.data), ay = uintptr_t(y.data);
        return ax < ay + y.bytes && ay < ax + x.bytes;
    };
    for (const Buffer* x = buffers.begin(); x != buffers.end(); ++x) {
        for (const Buffer* y = x + 1; y != buffers.end(); ++y) {
            if (!x->output && !y->output) continue;
            if (!overlap(*x, *y)) continue;
            const size_t ix = size_t(x - buffers.begin()), iy = size_t(y - buffers.begin());
            bool pair = false;
            for (const auto& p : in_place) pair = pair || (p.first == ix && p.second == iy) || (p.first == iy && p.second == ix);
            if (pair && x->data == y->data) continue;
            return fail(NK_ERROR_INVALID_ARGUMENT, "%s and %s overlap: buffers must be disjoint%s", x->name, y->name,
                        pair ? " (in place needs the identical pointer)" : "");
        }
    }
    return true;
}

} // namespace nk
