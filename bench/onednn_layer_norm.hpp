// oneDNN's layer_normalization primitive on a (rows, features) tensor, the comparison
// point of the layer-norm suite. Built only when oneDNN is found (NKBENCH_HAVE_ONEDNN);
// this header needs no oneDNN header. oneDNN 2.6 has no RMS mode.
#ifndef NORMKIT_BENCH_ONEDNN_LAYER_NORM_HPP
#define NORMKIT_BENCH_ONEDNN_LAYER_NORM_HPP

#include <cstdint>
#include <memory>
#include <string>

namespace nkbench {

struct RowBuffers {
    const float *src, *diff_dst, *scale, *shift, *mean, *variance;
    float *dst, *mean_out, *variance_out, *diff_scale, *diff_shift;
};

class OnednnLayerNorm {
public:
    enum class Kind { inference, training, backward };
    // Throws std::exception with oneDNN's message on failure.
    OnednnLayerNorm(Kind kind, int64_t rows, int64_t features, int threads, const RowBuffers& b);
    ~OnednnLayerNorm();
    OnednnLayerNorm(const OnednnLayerNorm&) = delete;
    OnednnLayerNorm& operator=(const OnednnLayerNorm&) = delete;
    void run(); // one execution, waited for, with the OpenMP thread count set first
    const std::string& implementation() const;

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace nkbench

#endif // NORMKIT_BENCH_ONEDNN_LAYER_NORM_HPP
