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

// An op's kernel table for `isa`: each op has one table getter per ISA (scalar, sse4.2,
// avx2, avx512), defined in its per-ISA translation units.
template <class Table>
const Table& kernels_for(Isa isa, const Table& (*const (&getters)[kIsaCount])()) {
    return getters[static_cast<int32_t>(isa)]();
}

} // namespace nk
