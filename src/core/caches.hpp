// Cache sizes of this machine, for scheduling decisions only (never for results).
#pragma once

#include <cstdint>

namespace nk {

// Bytes of one core's view of cache `level` (2: its L2; 3: the L3 slice it shares),
// from Linux sysfs; `fallback` when the machine does not say. Read once per process.
int64_t cache_bytes(int level, int64_t fallback);

} // namespace nk
