#include "core/whole_tensors.hpp"

#include <algorithm>

namespace nk {

namespace {
constexpr int64_t kChunk = int64_t(1) << 16; // elements per conversion task (schedule only)
}

WholeTensors::WholeTensors(const ExecConfig& config, int32_t dtype, int64_t count)
    : config_(config), st_(dtype, config.isa), count_(count) {}

WholeTensors::~WholeTensors() = default;

template <class Body>
void WholeTensors::chunks(Body body) const {
    config_.threads.parallel_for((count_ + kChunk - 1) / kChunk, [&](int64_t begin, int64_t end) {
        for (int64_t q = begin; q < end; ++q) body(q * kChunk, std::min(count_, (q + 1) * kChunk));
    });
}

float* WholeTensors::find_or_add(const void* p, bool output) {
    if (p == nullptr) return nullptr;
    if (st_.f32()) return static_cast<float*>(const_cast<void*>(p));
    for (const auto& t : tensors_)
        if (t->p == p) {
            t->output = t->output || output;
            return static_cast<float*>(t->floats.data());
        }
    tensors_.push_back(std::unique_ptr<Tensor>(new Tensor{p, Scratch(size_t(count_) * sizeof(float)), output}));
    float* f = static_cast<float*>(tensors_.back()->floats.data());
    if (!output) chunks([&](int64_t b, int64_t e) { st_.read(p, b, e - b, f + b); });
    return f;
}

void WholeTensors::commit() {
    for (const auto& t : tensors_) {
        if (!t->output) continue;
        const float* f = static_cast<const float*>(t->floats.data());
        void* p = const_cast<void*>(t->p);
        chunks([&](int64_t b, int64_t e) { st_.written(p, b, e - b, f + b); });
    }
}

} // namespace nk
