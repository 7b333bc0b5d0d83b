/* The public header as C11 (-std=c11 -pedantic -Werror): layout pinned at compile time. */
#include "normkit/normkit.h"

#include <stddef.h>
#include <stdio.h>

_Static_assert(sizeof(nk_status) == 4, "nk_status is int32_t");
_Static_assert(sizeof(nk_batch_norm_desc) == 56, "nk_batch_norm_desc v1 is 56 bytes");
_Static_assert(offsetof(nk_batch_norm_desc, struct_size) == 0, "struct_size comes first");
_Static_assert(offsetof(nk_batch_norm_desc, n) == 16, "int64 fields are 8-byte aligned");
_Static_assert(offsetof(nk_batch_norm_desc, reserved1) == 52, "reserved1 is the last v1 field");
_Static_assert(_Alignof(nk_batch_norm_desc) == 8, "8-byte aligned everywhere");

int main(void) {
    nk_batch_norm_desc desc;
    const nk_status status = nk_batch_norm_desc_init(&desc, NK_LAYOUT_NSC, 1, 2, 3);
    printf("C11: %s, version %u\n", nk_status_string(status), (unsigned)nk_version());
    return status != NK_OK || nk_version() != NK_VERSION_NUMBER;
}
