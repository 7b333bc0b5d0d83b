/* Uses an installed normkit: prints its version and normalizes one small tensor. */
#include <normkit/normkit.h>

#include <math.h>
#include <stdio.h>

int main(void) {
    /* 2 x 2 x 3, NCS: channel 0 holds 1..6, channel 1 is constant. */
    const float src[12] = {1, 2, 3, 10, 10, 10, 4, 5, 6, 10, 10, 10};
    float dst[12], mean[2], invstd[2];
    nk_batch_norm_desc desc;
    nk_status status = nk_batch_norm_desc_init(&desc, NK_LAYOUT_NCS, 2, 2, 3);
    if (status == NK_OK)
        status = nk_batch_norm_forward_training(NULL, &desc, src, dst, NULL, NULL, NULL, NULL, mean, invstd);
    if (status != NK_OK) {
        fprintf(stderr, "%s: %s\n", nk_status_string(status), nk_last_error_message());
        return 1;
    }
    /* Channel 0: mean 3.5, biased variance 35/12; channel 1: mean 10, dst 0. */
    const double expected_invstd = 1.0 / sqrt(35.0 / 12.0 + 1e-5);
    if (fabs(mean[0] - 3.5) > 1e-6 || fabs(invstd[0] - expected_invstd) > 1e-6 * expected_invstd ||
        mean[1] != 10.0f || dst[3] != 0.0f || fabs(dst[0] - (1 - 3.5) * expected_invstd) > 1e-5) {
        fprintf(stderr, "wrong result: mean %g %g invstd %g\n", mean[0], mean[1], invstd[0]);
        return 1;
    }
    printf("normkit %u: ok\n", (unsigned)nk_version());
    return 0;
}
