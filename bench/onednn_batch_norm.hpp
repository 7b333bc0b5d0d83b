// oneDNN's batch_normalization primitive on a case, the comparison point of the suite.
// Built only when oneDNN is found (NKBENCH_HAVE_ONEDNN); this header needs no oneDNN header.
#ifndef NORMKIT_BENCH_ONEDNN_BATCH_NORM_HPP
#define NORMKIT_BENCH_ONEDNN_BATCH_NORM_HPP

#include "bench_cases.hpp"

#include <memory>
#include <string>

namespace nkbench {

class OnednnBatchNorm {
public:
    // Creates the primitive for case `cs` on the buffers `t` (plain nchw / nhwc, or nc for
    // N x C shapes). Throws std::exception with oneDNN's message on failure.
    OnednnBatchNorm(const Case& cs, const Tensors& t);
    ~OnednnBatchNorm();
    OnednnBatchNorm(const OnednnBatchNorm&) = delete;
    OnednnBatchNorm& operator=(const OnednnBatchNorm&) = delete;

    // One execution, waited for. oneDNN here is the OpenMP build: every run first sets the
    // OpenMP thread count to the case's.
    void run();
    // oneDNN's name for the implementation it picked ("bnorm_jit:avx512_core", ...).
    const std::string& implementation() const;

    static std::string version();

private:
    struct Impl;
    std::unique_ptr<Impl> impl_;
};

} // namespace nkbench

#endif // NORMKIT_BENCH_ONEDNN_BATCH_NORM_HPP
