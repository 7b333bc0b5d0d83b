/*
 * The public header from plain C99 (-std=c99 -Wall -Wextra -pedantic -Werror): every
 * function it declares is called, with its status and results checked.
 * Prints "N passed, M failed" and exits nonzero when anything failed.
 */
#include "normkit/normkit.h"

#include <math.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int g_passed = 0;
static int g_failed = 0;

static void check(int ok, const char* what, int line) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        printf("FAILED (line %d): %s [last message: \"%s\"]\n", line, what, nk_last_error_message());
    }
}
#define CHECK(expr) check((expr) != 0, #expr, __LINE__)

static int message_is_empty(void) { return nk_last_error_message()[0] == '\0'; }

static int message_names(const char* name) { return strstr(nk_last_error_message(), name) != NULL; }

static int close_to(double got, double want, double tolerance) {
    return fabs(got - want) <= tolerance * (1.0 + fabs(want));
}

enum { N = 2, C = 3, S = 4, COUNT = N * C * S };

/* Channels-first element (n, c, s). */
static int at(int n, int c, int s) { return (n * C + c) * S + s; }

static void test_version_and_status(void) {
    static const char* const names[] = {"NK_OK", "NK_ERROR_NULL_POINTER", "NK_ERROR_INVALID_SHAPE",
                                        "NK_ERROR_INVALID_ARGUMENT", "NK_ERROR_UNSUPPORTED",
                                        "NK_ERROR_OUT_OF_MEMORY", "NK_ERROR_INTERNAL"};
    nk_status s;
    CHECK(nk_version() == NK_VERSION_NUMBER);
    CHECK(NK_VERSION_NUMBER == NK_VERSION_MAJOR * 10000 + NK_VERSION_MINOR * 100 + NK_VERSION_PATCH);
    for (s = NK_OK; s <= NK_ERROR_INTERNAL; ++s) {
        const char* name = nk_status_string(s);
        CHECK(name != NULL && strcmp(name, names[s]) == 0);
    }
    CHECK(nk_status_string(-1) != NULL && nk_status_string(-1)[0] != '\0');
    CHECK(nk_status_string(1000) != NULL && strcmp(nk_status_string(1000), "NK_OK") != 0);
    CHECK(nk_last_error_message() != NULL);
}

static void test_desc_layout(void) {
    /* The descriptor is ABI: its layout may only grow at the end. */
    CHECK(sizeof(nk_batch_norm_desc) == 56);
    CHECK(offsetof(nk_batch_norm_desc, struct_size) == 0);
    CHECK(offsetof(nk_batch_norm_desc, layout) == 4);
    CHECK(offsetof(nk_batch_norm_desc, dtype) == 8);
    CHECK(offsetof(nk_batch_norm_desc, reserved0) == 12);
    CHECK(offsetof(nk_batch_norm_desc, n) == 16);
    CHECK(offsetof(nk_batch_norm_desc, c) == 24);
    CHECK(offsetof(nk_batch_norm_desc, spatial) == 32);
    CHECK(offsetof(nk_batch_norm_desc, epsilon) == 40);
    CHECK(offsetof(nk_batch_norm_desc, momentum) == 44);
    CHECK(offsetof(nk_batch_norm_desc, flags) == 48);
    CHECK(offsetof(nk_batch_norm_desc, reserved1) == 52);
}

static void test_context(void) {
    nk_context* ctx = NULL;
    const int32_t best = nk_context_isa(NULL);
    const char* expect_isa = getenv("NK_EXPECT_ISA"); /* set by the NK_MAX_ISA ctests */
    int32_t isa;
    CHECK(best >= NK_ISA_SCALAR && best <= NK_ISA_AVX512);
    if (expect_isa != NULL) CHECK(best == atoi(expect_isa)); /* NK_MAX_ISA caps the default */
    CHECK(nk_context_create(&ctx) == NK_OK && ctx != NULL);
    CHECK(message_is_empty());
    CHECK(nk_context_isa(ctx) == best);
    for (isa = NK_ISA_SCALAR; isa <= NK_ISA_AVX512; ++isa) {
        CHECK(nk_context_set_max_isa(ctx, isa) == NK_OK);
        CHECK(nk_context_isa(ctx) == (isa < best ? isa : best));
    }
    CHECK(nk_context_set_num_threads(ctx, 0) == NK_OK);
    CHECK(nk_context_set_num_threads(ctx, 1) == NK_OK);
    CHECK(nk_context_set_num_threads(ctx, 2) == NK_OK);

    CHECK(nk_context_create(NULL) == NK_ERROR_NULL_POINTER && message_names("ctx"));
    CHECK(nk_context_set_num_threads(NULL, 1) == NK_ERROR_NULL_POINTER && message_names("ctx"));
    CHECK(nk_context_set_num_threads(ctx, -1) == NK_ERROR_INVALID_ARGUMENT);
    CHECK(nk_context_set_max_isa(NULL, NK_ISA_SCALAR) == NK_ERROR_NULL_POINTER && message_names("ctx"));
    CHECK(nk_context_set_max_isa(ctx, 4) == NK_ERROR_INVALID_ARGUMENT && message_names("isa"));
    CHECK(nk_context_set_max_isa(ctx, -1) == NK_ERROR_INVALID_ARGUMENT && message_names("isa"));

    nk_context_destroy(ctx);
    nk_context_destroy(NULL);
}

/* A host's parallel-for that runs the tasks last first and counts its calls. */
static void reverse_parallel_for(void* user, int64_t tasks, nk_task_fn task, void* arg) {
    int64_t i;
    ++*(int*)user;
    for (i = tasks - 1; i >= 0; --i) task(arg, i);
}

static void test_parallel_for(void) {
    enum { PN = 4, PC = 3, PS = 20000, PCOUNT = PN * PC * PS }; /* rows longer than a piece: several tasks */
    float* src = (float*)malloc(PCOUNT * sizeof(float));
    float* want = (float*)malloc(PCOUNT * sizeof(float));
    float* got = (float*)malloc(PCOUNT * sizeof(float));
    float mean[PC], variance[PC];
    nk_batch_norm_desc desc;
    nk_context *ctx = NULL, *serial = NULL;
    int calls = 0, i;
    CHECK(src != NULL && want != NULL && got != NULL);
    if (src == NULL || want == NULL || got == NULL) return;
    for (i = 0; i < PCOUNT; ++i) src[i] = (float)sin(0.01 * i) + 0.5f;
    for (i = 0; i < PC; ++i) {
        mean[i] = 0.5f;
        variance[i] = 0.5f + (float)i;
    }
    CHECK(nk_batch_norm_desc_init(&desc, NK_LAYOUT_NCS, PN, PC, PS) == NK_OK);
    CHECK(nk_context_create(&serial) == NK_OK);
    CHECK(nk_context_set_num_threads(serial, 1) == NK_OK);
    CHECK(nk_context_create(&ctx) == NK_OK);
    CHECK(nk_context_set_parallel_for(ctx, reverse_parallel_for, &calls, 2) == NK_OK);
    CHECK(message_is_empty());
    CHECK(nk_batch_norm_forward_inference(serial, &desc, src, want, NULL, NULL, mean, variance) == NK_OK);
    CHECK(nk_batch_norm_forward_inference(ctx, &desc, src, got, NULL, NULL, mean, variance) == NK_OK);
    CHECK(calls > 0);
    CHECK(memcmp(want, got, PCOUNT * sizeof(float)) == 0);

    /* Errors, and NULL fn back to oneTBB. */
    CHECK(nk_context_set_parallel_for(NULL, reverse_parallel_for, &calls, 2) == NK_ERROR_NULL_POINTER &&
          message_names("ctx"));
    CHECK(nk_context_set_parallel_for(ctx, reverse_parallel_for, &calls, 0) == NK_ERROR_INVALID_ARGUMENT &&
          message_names("threads"));
    CHECK(nk_context_set_parallel_for(ctx, NULL, NULL, 0) == NK_OK);
    calls = 0;
    CHECK(nk_batch_norm_forward_inference(ctx, &desc, src, got, NULL, NULL, mean, variance) == NK_OK);
    CHECK(calls == 0);
    CHECK(memcmp(want, got, PCOUNT * sizeof(float)) == 0);

    nk_context_destroy(ctx);
    nk_context_destroy(serial);
    free(src);
    free(want);
    free(got);
}

static void test_batch_norm(void) {
    float src[COUNT], dst[COUNT], dy[COUNT], diff_src[COUNT], inference_dst[COUNT];
    float scale[C], shift[C], running_mean[C], running_var[C], save_mean[C], save_invstd[C];
    float diff_scale[C], diff_shift[C];
    double mean[C], var[C];
    nk_batch_norm_desc desc;
    nk_context* ctx = NULL;
    int i, n, c, s, all_close;
    const double m = (double)(N * S);

    for (i = 0; i < COUNT; ++i) {
        src[i] = (float)(sin(0.7 * i) * 2.0 + 0.25 * (i % 5));
        dy[i] = (float)cos(1.3 * i);
    }
    for (c = 0; c < C; ++c) {
        scale[c] = 0.5f + 0.25f * (float)c;
        shift[c] = -0.5f + 0.5f * (float)c;
        running_mean[c] = 0.1f * (float)c;
        running_var[c] = 1.0f + 0.5f * (float)c;
    }
    /* float64 reference statistics. */
    for (c = 0; c < C; ++c) {
        double sum = 0, sq = 0;
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) sum += src[at(n, c, s)];
        mean[c] = sum / m;
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) sq += (src[at(n, c, s)] - mean[c]) * (src[at(n, c, s)] - mean[c]);
        var[c] = sq / m;
    }

    CHECK(nk_context_create(&ctx) == NK_OK);
    CHECK(nk_context_set_num_threads(ctx, 2) == NK_OK);
    CHECK(nk_batch_norm_desc_init(&desc, NK_LAYOUT_NCS, N, C, S) == NK_OK);
    CHECK(message_is_empty());
    CHECK(desc.struct_size == sizeof desc && desc.n == N && desc.c == C && desc.spatial == S);
    CHECK(desc.epsilon == 1e-5f && desc.momentum == 0.1f && desc.flags == 0 && desc.dtype == NK_DTYPE_F32);

    /* Training. */
    CHECK(nk_batch_norm_forward_training(ctx, &desc, src, dst, scale, shift, running_mean, running_var, save_mean,
                                         save_invstd) == NK_OK);
    CHECK(message_is_empty());
    all_close = 1;
    for (c = 0; c < C; ++c) {
        const double invstd = 1.0 / sqrt(var[c] + 1e-5);
        all_close &= close_to(save_mean[c], mean[c], 1e-5);
        all_close &= close_to(save_invstd[c], invstd, 1e-5);
        all_close &= close_to(running_mean[c], 0.9 * (0.1 * c) + 0.1 * mean[c], 1e-5);
        all_close &= close_to(running_var[c], 0.9 * (1.0 + 0.5 * c) + 0.1 * var[c] * m / (m - 1), 1e-5);
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) {
                i = at(n, c, s);
                all_close &= close_to(dst[i], (src[i] - mean[c]) * invstd * scale[c] + shift[c], 1e-5);
            }
    }
    CHECK(all_close);

    /* Inference with the statistics just saved, so it reproduces the training output. */
    {
        float variance[C];
        for (c = 0; c < C; ++c) variance[c] = (float)var[c];
        CHECK(nk_batch_norm_forward_inference(NULL, &desc, src, inference_dst, scale, shift, save_mean, variance) ==
              NK_OK);
        all_close = 1;
        for (i = 0; i < COUNT; ++i) all_close &= close_to(inference_dst[i], dst[i], 1e-5);
        CHECK(all_close);
    }

    /* Backward: diff_shift = sum(dy), diff_scale = sum(dy * xhat). */
    CHECK(nk_batch_norm_backward(ctx, &desc, src, dy, scale, save_mean, save_invstd, diff_src, diff_scale,
                                 diff_shift) == NK_OK);
    all_close = 1;
    for (c = 0; c < C; ++c) {
        double sum_dy = 0, sum_dy_xhat = 0;
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) {
                i = at(n, c, s);
                sum_dy += dy[i];
                sum_dy_xhat += dy[i] * (src[i] - save_mean[c]) * save_invstd[c];
            }
        all_close &= close_to(diff_shift[c], sum_dy, 1e-5);
        all_close &= close_to(diff_scale[c], sum_dy_xhat, 1e-5);
        for (n = 0; n < N; ++n)
            for (s = 0; s < S; ++s) {
                const double xhat = (src[at(n, c, s)] - save_mean[c]) * save_invstd[c];
                const double want =
                    scale[c] * save_invstd[c] * (dy[at(n, c, s)] - sum_dy / m - xhat * sum_dy_xhat / m);
                all_close &= close_to(diff_src[at(n, c, s)], want, 1e-4);
            }
    }
    CHECK(all_close);

    /* Errors from C: status, message, nothing written. */
    {
        nk_batch_norm_desc bad = desc;
        float untouched[COUNT], untouched_dy[COUNT];
        memcpy(untouched, dst, sizeof dst);
        memcpy(untouched_dy, dy, sizeof dy);
        CHECK(nk_batch_norm_forward_training(ctx, NULL, src, dst, NULL, NULL, NULL, NULL, NULL, NULL) ==
              NK_ERROR_NULL_POINTER);
        CHECK(message_names("desc"));
        bad.epsilon = 0.0f;
        CHECK(nk_batch_norm_forward_training(ctx, &bad, src, dst, NULL, NULL, NULL, NULL, NULL, NULL) ==
              NK_ERROR_INVALID_ARGUMENT);
        CHECK(message_names("epsilon"));
        CHECK(nk_batch_norm_forward_inference(ctx, &desc, src, dst, NULL, NULL, NULL, running_var) ==
              NK_ERROR_NULL_POINTER);
        CHECK(message_names("mean"));
        /* diff_src one element after diff_dst: a partial overlap (rejected before any write). */
        CHECK(nk_batch_norm_backward(ctx, &desc, src, dy, NULL, save_mean, save_invstd, dy + 1, NULL, NULL) ==
              NK_ERROR_INVALID_ARGUMENT);
        CHECK(message_names("diff_src") && message_names("diff_dst"));
        CHECK(memcmp(untouched, dst, sizeof dst) == 0);
        CHECK(memcmp(untouched_dy, dy, sizeof dy) == 0);
        CHECK(nk_batch_norm_desc_init(NULL, NK_LAYOUT_NCS, 1, 1, 1) == NK_ERROR_NULL_POINTER);
        CHECK(nk_batch_norm_desc_init(&bad, NK_LAYOUT_NSC, -1, 1, 1) == NK_ERROR_INVALID_SHAPE);
        CHECK(nk_batch_norm_desc_init(&bad, 7, 1, 1, 1) == NK_ERROR_INVALID_ARGUMENT);
    }

    nk_context_destroy(ctx);
}

/* Layer norm and RMS norm on 3 rows of 5 features, with a residual, against sums in double. */
static void test_layer_norm(void) {
    enum { M = 3, K = 5 };
    nk_layer_norm_desc desc;
    float src[M * K], res[M * K], sum[M * K], dst[M * K], dy[M * K], diff_src[M * K];
    float scale[K], shift[K], diff_scale[K], diff_shift[K], mean[M], invstd[M], invrms[M];
    int r, i, all_close = 1;
    for (i = 0; i < M * K; ++i) {
        src[i] = (float)((i * 7) % 11) * 0.25f - 1.0f;
        res[i] = (float)(i % 3) * 0.5f;
        dy[i] = (float)((i * 5) % 7) * 0.125f - 0.3f;
    }
    for (i = 0; i < K; ++i) {
        scale[i] = 0.5f + 0.25f * (float)i;
        shift[i] = 0.1f * (float)i - 0.2f;
    }
    CHECK(offsetof(nk_layer_norm_desc, rows) == 8 && offsetof(nk_layer_norm_desc, flags) == 28);
    CHECK(sizeof(nk_layer_norm_desc) == 32);
    CHECK(nk_layer_norm_desc_init(&desc, M, K) == NK_OK && desc.epsilon == 1e-5f && desc.flags == 0);
    CHECK(nk_layer_norm_forward(NULL, &desc, src, res, sum, dst, scale, shift, mean, invstd) == NK_OK);
    CHECK(message_is_empty());
    for (r = 0; r < M; ++r) {
        double m = 0, v = 0;
        for (i = 0; i < K; ++i) m += (double)(src[r * K + i] + res[r * K + i]);
        m /= K;
        for (i = 0; i < K; ++i) v += ((double)sum[r * K + i] - m) * ((double)sum[r * K + i] - m);
        v /= K;
        all_close &= close_to(mean[r], m, 1e-6) && close_to(invstd[r], 1 / sqrt(v + 1e-5), 1e-6);
        for (i = 0; i < K; ++i) {
            all_close &= sum[r * K + i] == src[r * K + i] + res[r * K + i];
            all_close &= close_to(dst[r * K + i], (sum[r * K + i] - m) / sqrt(v + 1e-5) * scale[i] + shift[i], 1e-5);
        }
    }
    CHECK(all_close);
    /* Backward takes sum as its src; diff_shift is the column sum of dy. */
    CHECK(nk_layer_norm_backward(NULL, &desc, sum, dy, scale, mean, invstd, diff_src, diff_scale, diff_shift) == NK_OK);
    all_close = 1;
    for (i = 0; i < K; ++i) {
        double want = 0;
        for (r = 0; r < M; ++r) want += dy[r * K + i];
        all_close &= close_to(diff_shift[i], want, 1e-6);
    }
    for (r = 0; r < M; ++r) {
        double row = 0;
        for (i = 0; i < K; ++i) row += diff_src[r * K + i]; /* the gradient of a centered output sums to 0 */
        all_close &= fabs(row) < 1e-5;
    }
    CHECK(all_close);
    CHECK(nk_rms_norm_forward(NULL, &desc, src, NULL, NULL, dst, scale, invrms) == NK_OK);
    all_close = 1;
    for (r = 0; r < M; ++r) {
        double q = 0;
        for (i = 0; i < K; ++i) q += (double)src[r * K + i] * src[r * K + i];
        all_close &= close_to(invrms[r], 1 / sqrt(q / K + 1e-5), 1e-6);
        for (i = 0; i < K; ++i) all_close &= close_to(dst[r * K + i], src[r * K + i] * invrms[r] * scale[i], 1e-5);
    }
    CHECK(all_close);
    CHECK(nk_rms_norm_backward(NULL, &desc, src, dy, scale, invrms, diff_src, diff_scale) == NK_OK);
    /* Errors: sum without a residual, a bad epsilon. */
    CHECK(nk_layer_norm_forward(NULL, &desc, src, NULL, sum, dst, NULL, NULL, NULL, NULL) == NK_ERROR_INVALID_ARGUMENT);
    CHECK(message_names("sum") && message_names("residual"));
    desc.epsilon = -1.0f;
    CHECK(nk_rms_norm_forward(NULL, &desc, src, NULL, NULL, dst, NULL, NULL) == NK_ERROR_INVALID_ARGUMENT);
    CHECK(message_names("epsilon"));
}

/* Group norm on 2 samples x 4 channels x 3 values, channels-last, 2 groups. */
static void test_group_norm(void) {
    enum { GN = 2, GC = 4, GS = 3, G = 2, GCOUNT = GN * GC * GS };
    nk_group_norm_desc desc;
    float src[GCOUNT], dst[GCOUNT], dy[GCOUNT], diff_src[GCOUNT], mean[GN * G], invstd[GN * G];
    float diff_scale[GC], diff_shift[GC];
    int n, g, c, s, all_close = 1;
    for (n = 0; n < GCOUNT; ++n) {
        src[n] = (float)((n * 5) % 9) * 0.5f - 1.0f;
        dy[n] = (float)((n * 3) % 7) * 0.25f - 0.7f;
    }
    CHECK(sizeof(nk_group_norm_desc) == 56 && offsetof(nk_group_norm_desc, groups) == 40);
    CHECK(nk_group_norm_desc_init(&desc, NK_LAYOUT_NSC, GN, GC, GS, G) == NK_OK && desc.epsilon == 1e-5f);
    CHECK(nk_group_norm_forward(NULL, &desc, src, dst, NULL, NULL, mean, invstd) == NK_OK);
    for (n = 0; n < GN; ++n)
        for (g = 0; g < G; ++g) {
            double m = 0, v = 0;
            for (c = g * 2; c < g * 2 + 2; ++c)
                for (s = 0; s < GS; ++s) m += src[(n * GS + s) * GC + c];
            m /= 2 * GS;
            for (c = g * 2; c < g * 2 + 2; ++c)
                for (s = 0; s < GS; ++s) v += (src[(n * GS + s) * GC + c] - m) * (src[(n * GS + s) * GC + c] - m);
            v /= 2 * GS;
            all_close &= close_to(mean[n * G + g], m, 1e-6) && close_to(invstd[n * G + g], 1 / sqrt(v + 1e-5), 1e-6);
            for (c = g * 2; c < g * 2 + 2; ++c)
                for (s = 0; s < GS; ++s)
                    all_close &= close_to(dst[(n * GS + s) * GC + c], (src[(n * GS + s) * GC + c] - m) / sqrt(v + 1e-5), 1e-5);
        }
    CHECK(all_close);
    CHECK(nk_group_norm_backward(NULL, &desc, src, dy, NULL, mean, invstd, diff_src, diff_scale, diff_shift) == NK_OK);
    CHECK(message_is_empty());
    desc.groups = 3;
    CHECK(nk_group_norm_forward(NULL, &desc, src, dst, NULL, NULL, NULL, NULL) == NK_ERROR_INVALID_ARGUMENT);
    CHECK(message_names("groups"));
}

/* Two "ranks" (samples 0 and 1 of an N = 2 batch) synchronize through plain bytes and
 * match one training step and one backward over the whole batch. */
static void test_batch_norm_sync(void) {
    nk_batch_norm_desc whole, rank;
    float src[COUNT], dy[COUNT], dst[COUNT], want_dst[COUNT], diff_src[COUNT], want_diff_src[COUNT];
    float mean[C], invstd[C], want_mean[C], want_invstd[C], rm[C], rv[C], want_rm[C], want_rv[C];
    float dscale[C], dshift[C], want_dscale[C], want_dshift[C];
    unsigned char partial[2][128], merged[128], bad[128];
    const void* parts[2];
    int64_t sizes[2], bytes = 0, merged_bytes = 0;
    int i, r, all_close = 1;
    for (i = 0; i < COUNT; ++i) {
        src[i] = (float)((i * 7) % 11) * 0.3f - 1.0f;
        dy[i] = (float)((i * 5) % 9) * 0.2f - 0.8f;
    }
    for (i = 0; i < C; ++i) rm[i] = want_rm[i] = 0.25f, rv[i] = want_rv[i] = 2.0f;
    CHECK(nk_batch_norm_desc_init(&whole, NK_LAYOUT_NCS, N, C, S) == NK_OK);
    CHECK(nk_batch_norm_forward_training(NULL, &whole, src, want_dst, NULL, NULL, want_rm, want_rv, want_mean,
                                         want_invstd) == NK_OK);
    CHECK(nk_batch_norm_backward(NULL, &whole, src, dy, NULL, want_mean, want_invstd, want_diff_src, want_dscale,
                                 want_dshift) == NK_OK);

    CHECK(nk_batch_norm_desc_init(&rank, NK_LAYOUT_NCS, 1, C, S) == NK_OK);
    CHECK(nk_batch_norm_partial_size(&rank, 0, &bytes) == NK_OK && bytes == 32 + 8 + 16 * C);
    CHECK(nk_batch_norm_partial_size(&whole, 1, &merged_bytes) == NK_OK && merged_bytes == 32 + 2 * (8 + 16 * C));
    merged_bytes = bytes; /* one piece */
    for (r = 0; r < 2; ++r) {
        CHECK(nk_batch_norm_stats(NULL, &rank, 0, src + r * C * S, partial[r], bytes) == NK_OK);
        parts[r] = partial[r];
        sizes[r] = bytes;
    }
    CHECK(nk_batch_norm_merge_partials(&rank, parts, sizes, 2, merged, merged_bytes) == NK_OK);
    for (r = 0; r < 2; ++r)
        CHECK(nk_batch_norm_forward_from_partial(NULL, &rank, merged, merged_bytes, src + r * C * S, dst + r * C * S,
                                                 NULL, NULL, r == 0 ? rm : NULL, r == 0 ? rv : NULL, mean, invstd) == NK_OK);
    for (i = 0; i < COUNT; ++i) all_close &= close_to(dst[i], want_dst[i], 1e-6);
    for (i = 0; i < C; ++i)
        all_close &= close_to(mean[i], want_mean[i], 1e-6) && close_to(invstd[i], want_invstd[i], 1e-6) &&
                     close_to(rm[i], want_rm[i], 1e-6) && close_to(rv[i], want_rv[i], 1e-6);
    CHECK(all_close);

    for (r = 0; r < 2; ++r)
        CHECK(nk_batch_norm_backward_reduce(NULL, &rank, 0, src + r * C * S, dy + r * C * S, mean, partial[r], bytes) ==
              NK_OK);
    CHECK(nk_batch_norm_merge_partials(&rank, parts, sizes, 2, merged, merged_bytes) == NK_OK);
    for (r = 0; r < 2; ++r)
        CHECK(nk_batch_norm_backward_from_reduced(NULL, &rank, merged, merged_bytes, src + r * C * S, dy + r * C * S, NULL,
                                                  mean, invstd, diff_src + r * C * S, dscale, dshift) == NK_OK);
    all_close = 1;
    for (i = 0; i < COUNT; ++i) all_close &= close_to(diff_src[i], want_diff_src[i], 1e-5);
    for (i = 0; i < C; ++i) all_close &= close_to(dscale[i], want_dscale[i], 1e-5) && close_to(dshift[i], want_dshift[i], 1e-5);
    CHECK(all_close);
    CHECK(message_is_empty());

    /* A partial of another channel count is refused, and nothing is written. */
    memset(bad, 0x5a, sizeof bad);
    rank.c = C + 1;
    CHECK(nk_batch_norm_merge_partials(&rank, parts, sizes, 2, bad, 32 + 8 + 16 * (C + 1)) == NK_ERROR_INVALID_SHAPE);
    CHECK(message_names("partials[0]"));
    for (i = 0; i < (int)sizeof bad; ++i) all_close &= bad[i] == 0x5a;
    CHECK(all_close);
}

/* The fusions: relu(bn(x) + residual) in one call, backward masked by its dst, and the
 * fold of inference batch norm into a linear layer's weights. */
static void test_half_storage(void) {
    /* A bf16 RMS norm from C: uint16_t bit patterns in and out, float32 parameters. Rows of
     * 4 values 1, 2, 3, 4 (exact in bf16 and f16): invrms = 1/sqrt(7.5 + eps). */
    static const uint16_t bf16_row[4] = {0x3f80, 0x4000, 0x4040, 0x4080};
    static const uint16_t f16_row[4] = {0x3c00, 0x4000, 0x4200, 0x4400};
    uint16_t dst[4];
    float invrms = 0.0f;
    nk_layer_norm_desc d;
    int i;
    CHECK(NK_DTYPE_F32 == 0 && NK_DTYPE_BF16 == 1 && NK_DTYPE_F16 == 2);
    CHECK(nk_layer_norm_desc_init(&d, 1, 4) == NK_OK);
    d.dtype = NK_DTYPE_BF16;
    CHECK(nk_rms_norm_forward(NULL, &d, bf16_row, NULL, NULL, dst, NULL, &invrms) == NK_OK);
    CHECK(close_to(invrms, 1 / sqrt(7.5 + 1e-5), 1e-6));
    /* 4 * invrms = 1.46059...: bf16 0x3fbb (1.4609375) is the nearest. */
    CHECK(dst[3] == 0x3fbb);
    d.dtype = NK_DTYPE_F16;
    CHECK(nk_rms_norm_forward(NULL, &d, f16_row, NULL, NULL, dst, NULL, &invrms) == NK_OK);
    CHECK(dst[3] == 0x3dd8); /* f16 nearest to 1.46059: 1.4609375 */
    for (i = 0; i < 4; ++i) dst[i] = 0x1234;
    d.dtype = 3;
    CHECK(nk_rms_norm_forward(NULL, &d, f16_row, NULL, NULL, dst, NULL, &invrms) == NK_ERROR_INVALID_ARGUMENT);
    CHECK(message_names("dtype") && dst[0] == 0x1234);
}

static void test_batch_norm_fused(void) {
    enum { FC = 2, FN = 6 };
    float src[FN * FC], residual[FN * FC], dst[FN * FC], dy[FN * FC], dx[FN * FC], dres[FN * FC];
    float mean[FC] = {0.5f, -1.0f}, variance[FC] = {4.0f, 0.25f}, save_mean[FC], save_invstd[FC];
    float weight[FC * 3] = {1, 2, 3, -1, 0.5f, 4}, bias[FC] = {0.25f, -2}, fw[FC * 3], fb[FC];
    nk_batch_norm_desc desc;
    int i, c, ok = 1;
    for (i = 0; i < FN * FC; ++i) {
        src[i] = (float)(i % 5) - 2.0f;
        residual[i] = 0.5f * (float)(i % 3) - 0.5f;
        dy[i] = (float)(i % 4) - 1.5f;
    }
    CHECK(nk_batch_norm_desc_init(&desc, NK_LAYOUT_NSC, FN, FC, 1) == NK_OK);
    desc.flags = NK_BN_FUSE_RELU;
    CHECK(nk_batch_norm_forward_inference_v2(NULL, &desc, src, residual, dst, NULL, NULL, mean, variance) == NK_OK);
    for (i = 0; i < FN * FC; ++i) {
        const double v = (src[i] - mean[i % FC]) / sqrt(variance[i % FC] + 1e-5) + residual[i];
        ok &= close_to(dst[i], v < 0 ? 0 : v, 1e-5);
    }
    CHECK(ok);
    CHECK(nk_batch_norm_forward_training_v2(NULL, &desc, src, residual, dst, NULL, NULL, NULL, NULL, save_mean,
                                            save_invstd) == NK_OK);
    CHECK(nk_batch_norm_backward_v2(NULL, &desc, src, dy, dst, NULL, save_mean, save_invstd, dx, dres, NULL, NULL) ==
          NK_OK);
    for (i = 0; i < FN * FC; ++i) ok &= dres[i] == (dst[i] <= 0 ? 0.0f : dy[i]);
    CHECK(ok);
    /* The v1 backward has no dst to mask with. */
    CHECK(nk_batch_norm_backward(NULL, &desc, src, dy, NULL, save_mean, save_invstd, dx, NULL, NULL) ==
          NK_ERROR_INVALID_ARGUMENT);
    CHECK(message_names("nk_batch_norm_backward_v2"));

    CHECK(nk_batch_norm_fold(&desc, mean, variance, NULL, NULL, 3, weight, bias, fw, fb) == NK_OK);
    for (c = 0; c < FC; ++c) {
        const double s = 1.0 / sqrt(variance[c] + 1e-5);
        ok &= close_to(fb[c], (bias[c] - mean[c]) * s, 1e-6);
        for (i = 0; i < 3; ++i) ok &= close_to(fw[c * 3 + i], weight[c * 3 + i] * s, 1e-6);
    }
    CHECK(ok);
}

int main(void) {
    test_version_and_status();
    test_desc_layout();
    test_context();
    test_batch_norm();
    test_layer_norm();
    test_group_norm();
    test_parallel_for();
    test_batch_norm_sync();
    test_batch_norm_fused();
    test_half_storage();
    printf("normkit %u from C99: %d passed, %d failed\n", (unsigned)nk_version(), g_passed, g_failed);
    return g_failed != 0;
}
