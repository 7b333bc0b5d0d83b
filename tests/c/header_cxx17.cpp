// The public header as C++17 (-pedantic -Werror): extern "C" linkage, standard layout.
#include "normkit/normkit.h"

#include <cstddef>
#include <cstdio>
#include <type_traits>

static_assert(std::is_standard_layout<nk_batch_norm_desc>::value, "C layout");
static_assert(std::is_trivially_copyable<nk_batch_norm_desc>::value, "C layout");
static_assert(sizeof(nk_batch_norm_desc) == 56, "nk_batch_norm_desc v1 is 56 bytes");
static_assert(offsetof(nk_batch_norm_desc, epsilon) == 40, "layout pinned");
static_assert(std::is_same<nk_status, int32_t>::value, "nk_status is int32_t");
static_assert(std::is_same<decltype(&nk_batch_norm_backward),
                           nk_status (*)(nk_context*, const nk_batch_norm_desc*, const void*, const void*,
                                         const float*, const float*, const float*, void*, float*, float*)>::value,
              "nk_batch_norm_backward signature");

int main() {
    nk_context* ctx = nullptr;
    if (nk_context_create(&ctx) != NK_OK) return 1;
    const int32_t isa = nk_context_isa(ctx);
    nk_context_destroy(ctx);
    std::printf("C++17: isa %d, version %u\n", isa, unsigned(nk_version()));
    return nk_version() == NK_VERSION_NUMBER ? 0 : 1;
}
