#include "core/isa.hpp"

#include <cstdlib>
#include <cstring>

namespace nk {
namespace {

Isa detect_cpu() {
    __builtin_cpu_init();
    // __builtin_cpu_supports also checks that the OS saves the wide registers.
    if (__builtin_cpu_supports("avx512f") && __builtin_cpu_supports("avx512dq") &&
        __builtin_cpu_supports("avx512bw") && __builtin_cpu_supports("avx512vl"))
        return Isa::avx512;
    if (__builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma")) return Isa::avx2;
    if (__builtin_cpu_supports("sse4.2")) return Isa::sse4_2;
    return Isa::scalar;
}

Isa detect() {
    Isa cpu = detect_cpu();
    Isa cap;
    const char* env = std::getenv("NK_MAX_ISA");
    if (env != nullptr && parse_isa(env, &cap) && cap < cpu) return cap;
    return cpu;
}

} // namespace

Isa best_isa() {
    static const Isa isa = detect();
    return isa;
}

bool parse_isa(const char* name, Isa* isa) {
    static const char* const names[kIsaCount] = {"scalar", "sse4.2", "avx2", "avx512"};
    for (int32_t i = 0; i < kIsaCount; ++i) {
        if (std::strcmp(name, names[i]) == 0) {
            *isa = static_cast<Isa>(i);
            return true;
        }
    }
    return false;
}

const char* isa_name(Isa isa) {
    switch (isa) {
    case Isa::scalar: return "scalar";
    case Isa::sse4_2: return "sse4.2";
    case Isa::avx2: return "avx2";
    case Isa::avx512: return "avx512";
    }
    return "unknown";
}

} // namespace nk
