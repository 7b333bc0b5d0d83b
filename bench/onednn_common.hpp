// What the oneDNN comparison wrappers share: the CPU engine and wrapping caller buffers.
// Built only with oneDNN (NKBENCH_HAVE_ONEDNN).
#ifndef NORMKIT_BENCH_ONEDNN_COMMON_HPP
#define NORMKIT_BENCH_ONEDNN_COMMON_HPP

#include <oneapi/dnnl/dnnl.hpp>

namespace nkbench {

inline dnnl::engine& cpu_engine() {
    static dnnl::engine engine(dnnl::engine::kind::cpu, 0);
    return engine;
}

// oneDNN wraps the caller's buffers; it never writes an input, so the casts are safe.
inline dnnl::memory wrap(const dnnl::memory::desc& md, const float* data) {
    return dnnl::memory(md, cpu_engine(), const_cast<float*>(data));
}

} // namespace nkbench

#endif // NORMKIT_BENCH_ONEDNN_COMMON_HPP
