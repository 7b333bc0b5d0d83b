/*
 * An OpenMP program that runs normkit on its own OpenMP threads: the example of
 * nk_context_set_parallel_for in the README ("Running on your own thread pool").
 *
 * Without the hook, normkit's oneTBB workers and the program's OpenMP workers (which spin
 * for a while after each parallel region, OMP_WAIT_POLICY's default) compete for the
 * same cores; with it, normkit's tasks run as an OpenMP loop on the threads already there.
 *
 * As a test (C99 -pedantic, OMP_NUM_THREADS=2 under ctest): every op in both layouts gives
 * the bits of a serial context, the tasks run on more than one OpenMP thread, and no
 * thread is created (entries of /proc/self/task). Prints "N passed, M failed".
 */
#include "normkit/normkit.h"

#include <dirent.h>
#include <omp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* The hook: one OpenMP loop per pass. schedule(static) gives task i to the same thread in
 * every pass, so a chunk read in one pass is still in that core's cache in the next. */
static void omp_parallel_for(void* user, int64_t tasks, nk_task_fn task, void* arg) {
    int64_t i;
    (void)user;
#pragma omp parallel for schedule(static)
    for (i = 0; i < tasks; ++i) task(arg, i);
}

/* ---- the test ----------------------------------------------------------------------- */

static int g_passed = 0, g_failed = 0;
static void check(int ok, const char* what, int line) {
    if (ok) {
        ++g_passed;
    } else {
        ++g_failed;
        printf("FAILED (line %d): %s [last message: \"%s\"]\n", line, what, nk_last_error_message());
    }
}
#define CHECK(expr) check((expr) != 0, #expr, __LINE__)

static int thread_count(void) {
    DIR* dir = opendir("/proc/self/task");
    struct dirent* e;
    int n = 0;
    if (dir == NULL) return -1;
    while ((e = readdir(dir)) != NULL)
        if (e->d_name[0] != '.') ++n;
    closedir(dir);
    return n;
}

/* The hook above, also noting which OpenMP threads ran tasks (user: an int per thread). */
static void omp_parallel_for_noting(void* user, int64_t tasks, nk_task_fn task, void* arg) {
    int* ran_on = (int*)user;
    int64_t i;
#pragma omp parallel for schedule(static)
    for (i = 0; i < tasks; ++i) {
        ran_on[omp_get_thread_num()] = 1;
        task(arg, i);
    }
}

enum { N = 4, C = 16, S = 7000, COUNT = N * C * S };

/* Every op on ctx; every output appended to out (9 arrays). */
static void run_all(nk_context* ctx, int32_t layout, const float* src, const float* dy, float* out) {
    float scale[C], shift[C], rm[C], rv[C], mean[C], invstd[C], diff_scale[C], diff_shift[C];
    nk_batch_norm_desc d;
    int c;
    for (c = 0; c < C; ++c) {
        scale[c] = 1.0f + 0.125f * (float)c;
        shift[c] = -0.25f * (float)c;
        rm[c] = 0.0f;
        rv[c] = 1.0f;
    }
    CHECK(nk_batch_norm_desc_init(&d, layout, N, C, S) == NK_OK);
    CHECK(nk_batch_norm_forward_training(ctx, &d, src, out, scale, shift, rm, rv, mean, invstd) == NK_OK);
    CHECK(nk_batch_norm_forward_inference(ctx, &d, src, out + COUNT, scale, shift, rm, rv) == NK_OK);
    CHECK(nk_batch_norm_backward(ctx, &d, src, dy, scale, mean, invstd, out + 2 * COUNT, diff_scale, diff_shift) ==
          NK_OK);
    memcpy(out + 3 * COUNT, mean, sizeof mean);
    memcpy(out + 3 * COUNT + C, invstd, sizeof invstd);
    memcpy(out + 3 * COUNT + 2 * C, rm, sizeof rm);
    memcpy(out + 3 * COUNT + 3 * C, rv, sizeof rv);
    memcpy(out + 3 * COUNT + 4 * C, diff_scale, sizeof diff_scale);
    memcpy(out + 3 * COUNT + 5 * C, diff_shift, sizeof diff_shift);
}

int main(void) {
    const size_t outputs = 3 * (size_t)COUNT + 6 * C;
    float* src = malloc(COUNT * sizeof(float));
    float* dy = malloc(COUNT * sizeof(float));
    float* want = malloc(outputs * sizeof(float));
    float* got = malloc(outputs * sizeof(float));
    int* ran_on = calloc((size_t)omp_get_max_threads(), sizeof(int));
    nk_context *serial = NULL, *ctx = NULL;
    int32_t layout;
    int i, before, threads_used = 0;
    unsigned x = 12345u;
    if (!src || !dy || !want || !got || !ran_on) return 1;
    for (i = 0; i < COUNT; ++i) {
        x = x * 1664525u + 1013904223u;
        src[i] = (float)(x >> 8) / 16777216.0f * 4.0f - 1.5f;
        dy[i] = (float)((x >> 4) & 1023) / 512.0f - 1.0f;
    }

    CHECK(nk_context_create(&serial) == NK_OK);
    CHECK(nk_context_set_num_threads(serial, 1) == NK_OK);
    CHECK(nk_context_create(&ctx) == NK_OK);
    /* The example: normkit's work as tasks of the program's OpenMP loops. */
    CHECK(nk_context_set_parallel_for(ctx, omp_parallel_for, NULL, omp_get_max_threads()) == NK_OK);

    /* The OpenMP team exists before counting: the program's own threads. */
#pragma omp parallel
    {
        if (omp_get_thread_num() == 0) before = thread_count();
    }
    for (layout = NK_LAYOUT_NCS; layout <= NK_LAYOUT_NSC; ++layout) {
        run_all(serial, layout, src, dy, want);
        run_all(ctx, layout, src, dy, got);
        CHECK(memcmp(want, got, outputs * sizeof(float)) == 0);
    }
    CHECK(thread_count() == before);

    CHECK(nk_context_set_parallel_for(ctx, omp_parallel_for_noting, ran_on, omp_get_max_threads()) == NK_OK);
    for (layout = NK_LAYOUT_NCS; layout <= NK_LAYOUT_NSC; ++layout) {
        run_all(serial, layout, src, dy, want);
        run_all(ctx, layout, src, dy, got);
        CHECK(memcmp(want, got, outputs * sizeof(float)) == 0);
    }
    CHECK(thread_count() == before);
    for (i = 0; i < omp_get_max_threads(); ++i) threads_used += ran_on[i];
    if (omp_get_max_threads() > 1) CHECK(threads_used > 1);

    printf("OpenMP host (%d threads, tasks ran on %d): %d passed, %d failed\n", omp_get_max_threads(), threads_used,
           g_passed, g_failed);
    nk_context_destroy(ctx);
    nk_context_destroy(serial);
    free(src);
    free(dy);
    free(want);
    free(got);
    free(ran_on);
    return g_failed != 0;
}
