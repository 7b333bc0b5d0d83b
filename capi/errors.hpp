// Status and the thread-local message behind nk_last_error_message().
#pragma once

#include "core/parallel.hpp"
#include "normkit/normkit.h"

namespace nk {

const char* last_message();
// Clears the calling thread's message; every entry point calls it first.
void clear_error();
// Formats the message (printf-style) and returns status, for `return fail(...)`.
nk_status fail(nk_status status, const char* format, ...) __attribute__((format(printf, 2, 3)));

// Runs body() and maps any exception to a status: nothing may cross the C ABI.
template <class Body>
nk_status guarded(Body&& body) noexcept;

} // namespace nk

#include <new>

template <class Body>
nk_status nk::guarded(Body&& body) noexcept {
    try {
        return body();
    } catch (const std::bad_alloc&) {
        return fail(NK_ERROR_OUT_OF_MEMORY, "out of memory for scratch buffers");
    } catch (const HostParallelForError& e) {
        return fail(NK_ERROR_INVALID_ARGUMENT, "%s", e.what());
    } catch (...) {
        return fail(NK_ERROR_INTERNAL, "internal error (unexpected exception)");
    }
}
