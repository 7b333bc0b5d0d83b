#include "core/caches.hpp"

#include <unistd.h>

#include <cstdio>
#include <string>

namespace nk {
namespace {

// /sys/devices/system/cpu/cpu0/cache/index<i>/{level,type,size}: size is "1024K" or
// similar. Preferred to sysconf, which reports a whole socket's L3 on some virtual
// machines (384 MiB where a core sees a 32 MiB slice).
int64_t sysfs_cache_bytes(int level) {
    for (int index = 0; index < 8; ++index) {
        const std::string dir = "/sys/devices/system/cpu/cpu0/cache/index" + std::to_string(index) + "/";
        int lvl = 0;
        char type[32] = {};
        long long size = 0;
        char unit = 0;
        FILE* f = std::fopen((dir + "level").c_str(), "r");
        if (!f) break;
        const bool have_level = std::fscanf(f, "%d", &lvl) == 1;
        std::fclose(f);
        if (!have_level || lvl != level) continue;
        if ((f = std::fopen((dir + "type").c_str(), "r"))) {
            if (std::fscanf(f, "%31s", type) != 1) type[0] = 0;
            std::fclose(f);
        }
        if (std::string(type) == "Instruction") continue;
        if (!(f = std::fopen((dir + "size").c_str(), "r"))) continue;
        const int got = std::fscanf(f, "%lld%c", &size, &unit);
        std::fclose(f);
        if (got < 1 || size <= 0) continue;
        if (got == 2 && (unit == 'K' || unit == 'k')) size <<= 10;
        if (got == 2 && (unit == 'M' || unit == 'm')) size <<= 20;
        return int64_t(size);
    }
    return 0;
}

int64_t detect(int level) {
    if (const int64_t bytes = sysfs_cache_bytes(level)) return bytes;
    const long conf = sysconf(level == 2 ? _SC_LEVEL2_CACHE_SIZE : _SC_LEVEL3_CACHE_SIZE);
    return conf > 0 ? int64_t(conf) : 0;
}

} // namespace

int64_t cache_bytes(int level, int64_t fallback) {
    static const int64_t l2 = detect(2), l3 = detect(3);
    const int64_t bytes = level == 2 ? l2 : level == 3 ? l3 : 0;
    return bytes > 0 ? bytes : fallback;
}

} // namespace nk
