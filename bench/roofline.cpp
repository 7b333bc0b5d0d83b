#include "roofline.hpp"

#include "roofline_kernels.hpp"

#include <algorithm>
#include <cmath>

#include <tbb/blocked_range.h>
#include <tbb/parallel_for.h>
#include <tbb/partitioner.h>
#include <tbb/task_arena.h>

namespace nkbench {

struct Roofline::Arena {
    explicit Arena(int threads) : arena(threads) {}
    tbb::task_arena arena;
};

// One thread runs on the caller, as normkit does with a one-thread context.
Roofline::Roofline(int threads) : threads_(std::max(threads, 1)) {
    if (threads_ > 1) arena_ = std::make_unique<Arena>(threads_);
}

Roofline::~Roofline() = default;

// One contiguous chunk per thread, chunk edges on 64-byte boundaries.
template <class Body> void Roofline::split(int64_t count, const Body& body) const {
    if (!arena_) {
        body(0, count);
        return;
    }
    const int64_t per_thread = (count + threads_ - 1) / threads_;
    const int64_t chunk = (per_thread + 15) / 16 * 16;
    const int64_t chunks = (count + chunk - 1) / chunk;
    arena_->arena.execute([&] {
        tbb::parallel_for(
            tbb::blocked_range<int64_t>(0, chunks, 1),
            [&](const tbb::blocked_range<int64_t>& r) {
                for (int64_t i = r.begin(); i != r.end(); ++i) {
                    const int64_t begin = i * chunk;
                    body(begin, std::min(count, begin + chunk));
                }
            },
            tbb::static_partitioner());
    });
}

// The streaming kernels of either element type (float, or 2-byte bf16 / f16).
template <class T> void Roofline::forward_of(const T* src, T* dst, int64_t count) const {
    split(count, [&](int64_t begin, int64_t end) {
        roofline_axpb(src + begin, dst + begin, end - begin, 0.5f, 0.25f);
    });
}
template <class T> void Roofline::backward_of(const T* x, const T* y, T* z, int64_t count) const {
    split(count, [&](int64_t begin, int64_t end) {
        roofline_axpy(x + begin, y + begin, z + begin, end - begin, 0.5f);
    });
}
template <class T> void Roofline::residual_forward_of(const T* x, const T* y, T* s, T* d, int64_t count) const {
    split(count, [&](int64_t begin, int64_t end) {
        roofline_add_axpb(x + begin, y + begin, s + begin, d + begin, end - begin, 0.5f, 0.25f);
    });
}

void Roofline::forward(const float* src, float* dst, int64_t count) const { forward_of(src, dst, count); }
void Roofline::backward(const float* x, const float* y, float* z, int64_t count) const { backward_of(x, y, z, count); }
void Roofline::residual_forward(const float* x, const float* y, float* s, float* d, int64_t count) const {
    residual_forward_of(x, y, s, d, count);
}
void Roofline::forward(const uint16_t* src, uint16_t* dst, int64_t count) const { forward_of(src, dst, count); }
void Roofline::backward(const uint16_t* x, const uint16_t* y, uint16_t* z, int64_t count) const {
    backward_of(x, y, z, count);
}
void Roofline::residual_forward(const uint16_t* x, const uint16_t* y, uint16_t* s, uint16_t* d, int64_t count) const {
    residual_forward_of(x, y, s, d, count);
}

void Roofline::relu(float* y, int64_t count) const {
    split(count, [&](int64_t begin, int64_t end) { relu_pass(y + begin, end - begin); });
}

void Roofline::add_relu(const float* r, float* y, int64_t count) const {
    split(count, [&](int64_t begin, int64_t end) { add_relu_pass(r + begin, y + begin, end - begin); });
}

void Roofline::relu_grad(const float* dy, const float* dst, float* g, int64_t count) const {
    split(count, [&](int64_t begin, int64_t end) {
        relu_grad_pass(dy + begin, dst + begin, g + begin, end - begin);
    });
}

template <class Body> void Roofline::blocks(int64_t count, int inputs, bool blocked, const Body& body) const {
    constexpr int64_t kBlockFloats = (int64_t(128) << 10) / int64_t(sizeof(float));
    split(count, [&](int64_t begin, int64_t end) {
        const int64_t block = blocked ? kBlockFloats / inputs : end - begin;
        for (int64_t b = begin; b < end; b += block) body(b, std::min(end, b + block));
    });
}

void Roofline::two_pass_forward(const float* src, float* dst, int64_t count, bool blocked) const {
    blocks(count, 1, blocked, [&](int64_t begin, int64_t end) {
        float sum = 0, sum_sq = 0;
        const int64_t n = end - begin;
        two_pass_moments(src + begin, n, &sum, &sum_sq);
        const float mean = sum / float(n), a = 1.0f / std::sqrt(std::fabs(sum_sq / float(n) - mean * mean) + 1e-5f);
        roofline_axpb(src + begin, dst + begin, n, a, -mean * a);
    });
}

void Roofline::two_pass_backward(const float* x, const float* y, float* z, int64_t count, bool blocked) const {
    blocks(count, 2, blocked, [&](int64_t begin, int64_t end) {
        float sum_y = 0, sum_xy = 0;
        const int64_t n = end - begin;
        two_pass_grad_sums(x + begin, y + begin, n, &sum_y, &sum_xy);
        roofline_axpy(x + begin, y + begin, z + begin, n, -(sum_xy + sum_y) / float(n));
    });
}

} // namespace nkbench
