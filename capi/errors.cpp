#include "capi/errors.hpp"

#include <cstdarg>
#include <cstdio>

namespace nk {
namespace {
thread_local char t_message[512] = "";
} // namespace

const char* last_message() { return t_message; }

void clear_error() { t_message[0] = '\0'; }

nk_status fail(nk_status status, const char* format, ...) {
    va_list args;
    va_start(args, format);
    std::vsnprintf(t_message, sizeof t_message, format, args);
    va_end(args);
    return status;
}

} // namespace nk

extern "C" {

uint32_t nk_version(void) { return NK_VERSION_NUMBER; }

const char* nk_status_string(nk_status status) {
    switch (status) {
    case NK_OK: return "NK_OK";
    case NK_ERROR_NULL_POINTER: return "NK_ERROR_NULL_POINTER";
    case NK_ERROR_INVALID_SHAPE: return "NK_ERROR_INVALID_SHAPE";
    case NK_ERROR_INVALID_ARGUMENT: return "NK_ERROR_INVALID_ARGUMENT";
    case NK_ERROR_UNSUPPORTED: return "NK_ERROR_UNSUPPORTED";
    case NK_ERROR_OUT_OF_MEMORY: return "NK_ERROR_OUT_OF_MEMORY";
    case NK_ERROR_INTERNAL: return "NK_ERROR_INTERNAL";
    }
    return "NK_UNKNOWN_STATUS";
}

const char* nk_last_error_message(void) { return nk::last_message(); }

} // extern "C"
