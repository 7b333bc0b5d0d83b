// The cases of the benchmark suite: the shapes of design/ANCHORS.md, the modes, and the
// benchmark names that the summary program parses back.
#ifndef NORMKIT_BENCH_BENCH_CASES_HPP
#define NORMKIT_BENCH_BENCH_CASES_HPP

#include <cstdint>
#include <string>

namespace nkbench {

enum class Mode { train_fwd, infer_fwd, bwd };

inline const char* mode_name(Mode mode) {
    switch (mode) {
    case Mode::train_fwd: return "train_fwd";
    case Mode::infer_fwd: return "infer_fwd";
    case Mode::bwd: return "bwd";
    }
    return "?";
}

// Minimum traffic per element: forward reads src and writes dst; backward reads src and
// diff_dst and writes diff_src. Per-channel arrays are negligible and not counted.
inline int64_t bytes_per_element(Mode mode) { return mode == Mode::bwd ? 12 : 8; }

struct Shape {
    const char* name;
    int64_t n, c, h, w; // h = w = 1 and nc = true for BatchNorm1d (N x C) tensors
    bool nc;
    int64_t spatial() const { return h * w; }
    int64_t elements() const { return n * c * h * w; }
};

inline constexpr Shape kShapes[] = {
    {"resnet_c64_56", 16, 64, 56, 56, false},
    {"resnet_c256_56", 16, 256, 56, 56, false},
    {"resnet_c512_28", 16, 512, 28, 28, false},
    {"resnet_c2048_7", 16, 2048, 7, 7, false},
    {"mlp_n256_c784", 256, 784, 1, 1, true},
    {"mlp_n4096_c1024", 4096, 1024, 1, 1, true},
    {"img_c3_224", 8, 3, 224, 224, false},
    {"b1_c64_112", 1, 64, 112, 112, false},
};

inline constexpr Mode kModes[] = {Mode::train_fwd, Mode::infer_fwd, Mode::bwd};

// NK_LAYOUT_NCS / NK_LAYOUT_NSC, named as the anchors name them.
inline const char* layout_name(int layout) { return layout == 0 ? "nchw" : "nhwc"; }

struct Case {
    Mode mode;
    Shape shape;
    int layout; // NK_LAYOUT_*
    int threads;
    int round = 0; // which round of the case (the "round" counter of its runs)

    int64_t bytes() const { return shape.elements() * bytes_per_element(mode); }
    // "bn/train_fwd/resnet_c64_56/nchw/t:2"; the implementation is appended as "/normkit",
    // "/roofline" or "/onednn".
    std::string name() const {
        return std::string("bn/") + mode_name(mode) + "/" + shape.name + "/" + layout_name(layout) +
               "/t:" + std::to_string(threads);
    }
};

// The buffers every implementation of a case runs on. The inputs (src, diff_dst and the
// per-channel inputs) are never written; outputs go to dst and the *_out arrays.
struct Tensors {
    const float* src;
    const float* diff_dst;
    float* dst; // dst of the forward passes, diff_src of the backward pass
    const float* scale;
    const float* shift;
    const float* mean;     // statistics given to inference and backward
    const float* variance; // oneDNN takes the variance ...
    const float* invstd;   // ... normkit takes 1/sqrt(variance + epsilon)
    float* mean_out;       // training forward: batch statistics
    float* variance_out;   // (oneDNN: variance, normkit: invstd)
    float* running_mean;   // normkit training forward updates them, as PyTorch does
    float* running_var;
    float* diff_scale;
    float* diff_shift;
};

inline constexpr float kEpsilon = 1e-5f;

} // namespace nkbench

#endif // NORMKIT_BENCH_BENCH_CASES_HPP
