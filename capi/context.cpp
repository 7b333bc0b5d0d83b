#include "capi/errors.hpp"
#include "core/context.hpp"

#include <new>

extern "C" {

nk_status nk_context_create(nk_context** ctx) {
    nk::clear_error();
    if (ctx == nullptr) return nk::fail(NK_ERROR_NULL_POINTER, "ctx is NULL: pass the address of an nk_context*");
    return nk::guarded([&] {
        nk_context* created = new (std::nothrow) nk_context;
        if (created == nullptr) return nk::fail(NK_ERROR_OUT_OF_MEMORY, "out of memory for the context");
        *ctx = created;
        return NK_OK;
    });
}

void nk_context_destroy(nk_context* ctx) {
    nk::clear_error();
    delete ctx;
}

nk_status nk_context_set_num_threads(nk_context* ctx, int32_t n) {
    nk::clear_error();
    if (ctx == nullptr)
        return nk::fail(NK_ERROR_NULL_POINTER, "ctx is NULL: the process default context cannot be changed");
    if (n < 0) return nk::fail(NK_ERROR_INVALID_ARGUMENT, "n is %d: the thread count must be >= 0 (0 = all)", n);
    return nk::guarded([&] {
        nk::Threads threads(n); // built before the lock: may throw, ctx stays as it was
        std::lock_guard<std::mutex> lock(ctx->mutex);
        ctx->threads = threads;
        return NK_OK;
    });
}

nk_status nk_context_set_parallel_for(nk_context* ctx, nk_parallel_for_fn fn, void* user, int32_t threads) {
    nk::clear_error();
    if (ctx == nullptr)
        return nk::fail(NK_ERROR_NULL_POINTER, "ctx is NULL: the process default context cannot be changed");
    if (fn != nullptr && threads < 1)
        return nk::fail(NK_ERROR_INVALID_ARGUMENT,
                        "threads is %d: with a parallel-for fn it must be >= 1 (the threads fn runs tasks on)",
                        threads);
    // NULL fn: back to oneTBB, as a new context has it. Neither Threads constructor
    // allocates or throws.
    const nk::Threads runner = fn != nullptr ? nk::Threads(nk::HostParallelFor{fn, user, threads}) : nk::Threads();
    std::lock_guard<std::mutex> lock(ctx->mutex);
    ctx->threads = runner;
    return NK_OK;
}

nk_status nk_context_set_max_isa(nk_context* ctx, int32_t isa) {
    nk::clear_error();
    if (ctx == nullptr)
        return nk::fail(NK_ERROR_NULL_POINTER, "ctx is NULL: the process default context cannot be changed");
    if (isa < NK_ISA_SCALAR || isa > NK_ISA_AVX512)
        return nk::fail(NK_ERROR_INVALID_ARGUMENT,
                        "isa is %d: expected NK_ISA_SCALAR (0) .. NK_ISA_AVX512 (3)", isa);
    std::lock_guard<std::mutex> lock(ctx->mutex);
    ctx->max_isa = static_cast<nk::Isa>(isa);
    return NK_OK;
}

int32_t nk_context_isa(const nk_context* ctx) {
    nk::clear_error();
    return static_cast<int32_t>(nk::exec_config(ctx).isa);
}

} // extern "C"
