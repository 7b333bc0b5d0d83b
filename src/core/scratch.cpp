#include "core/scratch.hpp"

#include <cstdlib>
#include <new>

namespace nk {
namespace {

// Blocks larger than this are not kept after the call (a thread keeps at most
// kSlots * kKeepBytes).
constexpr size_t kKeepBytes = size_t(16) << 20;
constexpr int kSlots = 4; // leases one call holds at once

void* allocate(size_t bytes) {
    void* p = std::aligned_alloc(64, (bytes + 63) / 64 * 64);
    if (!p) throw std::bad_alloc();
    return p;
}

// The calling thread's blocks. A slot is busy while a Scratch holds it: a call that
// runs inside another call's wait (oneTBB may run any task of the arena there) finds
// the slots busy and allocates its own.
struct ThreadCache {
    void* block[kSlots] = {};
    size_t size[kSlots] = {};
    bool busy[kSlots] = {};
    ~ThreadCache() {
        for (void* p : block) std::free(p);
    }
};
thread_local ThreadCache cache;

} // namespace

Scratch::Scratch(size_t bytes) : data_(nullptr), slot_(-1) {
    if (bytes <= kKeepBytes) {
        // The first free slot large enough, else the first free one, grown.
        int pick = -1;
        for (int s = 0; s < kSlots; ++s) {
            if (cache.busy[s]) continue;
            if (cache.size[s] >= bytes) {
                pick = s;
                break;
            }
            if (pick < 0) pick = s;
        }
        if (pick >= 0) {
            if (cache.size[pick] < bytes) {
                std::free(cache.block[pick]);
                cache.block[pick] = nullptr;
                cache.size[pick] = 0;
                cache.block[pick] = allocate(bytes);
                cache.size[pick] = bytes;
            }
            cache.busy[pick] = true;
            slot_ = pick;
            data_ = cache.block[pick];
            return;
        }
    }
    data_ = allocate(bytes);
}

Scratch::~Scratch() {
    if (slot_ >= 0)
        cache.busy[slot_] = false;
    else
        std::free(data_);
}

} // namespace nk
