// What an nk_context holds. The public handle is this struct.
#pragma once

#include "core/isa.hpp"
#include "core/parallel.hpp"

#include <mutex>

namespace nk {

// A consistent snapshot of a context, taken once at the start of a call.
struct ExecConfig {
    Isa isa = Isa::scalar;
    Threads threads;
};

} // namespace nk

struct nk_context {
    // Setters may race with calls that use the context: the snapshot is taken under the lock.
    mutable std::mutex mutex;
    nk::Isa max_isa = nk::Isa::avx512;
    nk::Threads threads;
};

namespace nk {

// The configuration a call with ctx (NULL = process default) runs with.
ExecConfig exec_config(const nk_context* ctx);

} // namespace nk
