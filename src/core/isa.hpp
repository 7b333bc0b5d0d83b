// Instruction-set paths and CPU detection.
#pragma once

#include <cstdint>

namespace nk {

// Values equal the public NK_ISA_* numbers.
enum class Isa : int32_t { scalar = 0, sse4_2 = 1, avx2 = 2, avx512 = 3 };

constexpr int32_t kIsaCount = 4;

// The best path this CPU (and OS) can run, capped by NK_MAX_ISA when set.
// Computed once per process.
Isa best_isa();

// Parses "scalar", "sse4.2", "avx2", "avx512"; returns false on anything else.
bool parse_isa(const char* name, Isa* isa);

const char* isa_name(Isa isa);

} // namespace nk
