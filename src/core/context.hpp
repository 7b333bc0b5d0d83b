// What an nk_context holds. The public handle is this struct.
#pragma once

#include "core/isa.hpp"
#include "core/parallel.hpp"

#include <mutex>

namespace nk {

// How a call walks its tensors. Every schedule gives the same bits; `automatic` picks by
// shape and cache sizes. The others exist for the tests (set on a context through
// nk_context::schedule, which the C ABI does not expose): each forces one schedule
// wherever the tensor allows it, and the two passes elsewhere.
enum class Schedule : int32_t { automatic, fused, split, two_passes };

// A consistent snapshot of a context, taken once at the start of a call.
struct ExecConfig {
    Isa isa = Isa::scalar;
    Threads threads;
    Schedule schedule = Schedule::automatic;
};

} // namespace nk

struct nk_context {
    // Setters may race with calls that use the context: the snapshot is taken under the lock.
    mutable std::mutex mutex;
    nk::Isa max_isa = nk::Isa::avx512;
    // oneTBB with a cap, or the host's parallel-for: whichever setter ran last.
    nk::Threads threads;
    nk::Schedule schedule = nk::Schedule::automatic; // tests only (see ExecConfig)
};

namespace nk {

// The configuration a call with ctx (NULL = process default) runs with.
ExecConfig exec_config(const nk_context* ctx);

} // namespace nk
