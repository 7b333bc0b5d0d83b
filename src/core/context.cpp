#include "core/context.hpp"

#include <algorithm>

namespace nk {

ExecConfig exec_config(const nk_context* ctx) {
    ExecConfig config;
    if (ctx == nullptr) {
        config.isa = best_isa();
        return config;
    }
    std::lock_guard<std::mutex> lock(ctx->mutex);
    config.isa = std::min(ctx->max_isa, best_isa());
    config.threads = ctx->threads;
    config.schedule = ctx->schedule;
    return config;
}

} // namespace nk
