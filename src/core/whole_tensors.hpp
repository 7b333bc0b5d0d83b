// Whole tensors of a call in float32, for an op that stages bf16 / f16 tensors whole
// (batch norm, whose schedules walk a tensor in several orders): each input converted once
// (in parallel chunks) before the call, each output computed into a float tensor and
// rounded into place by commit(). float32 tensors pass through untouched. Identical
// pointers share one float tensor, so the in-place pairs stay in place. The price: 4 bytes
// of scratch per element of every distinct half-precision tensor, and a pass over each.
#pragma once

#include "core/context.hpp"
#include "core/half.hpp"

#include <memory>
#include <vector>

namespace nk {

class WholeTensors {
public:
    WholeTensors(const ExecConfig& config, int32_t dtype, int64_t count);
    ~WholeTensors();
    WholeTensors(const WholeTensors&) = delete;
    WholeTensors& operator=(const WholeTensors&) = delete;

    // p's elements as floats (null stays null). Call for every input before any output.
    const float* in(const void* p) { return find_or_add(p, false); }
    // Where to compute output p (null stays null): p itself for float32.
    float* out(void* p) { return find_or_add(p, true); }
    // Rounds every output into its tensor (float32: nothing to do).
    void commit();

private:
    struct Tensor {
        const void* p;
        Scratch floats;
        bool output;
    };
    float* find_or_add(const void* p, bool output);
    // body(begin, end) over the elements in parallel chunks.
    template <class Body>
    void chunks(Body body) const;

    const ExecConfig& config_;
    Storage st_;
    int64_t count_;
    std::vector<std::unique_ptr<Tensor>> tensors_;
};

} // namespace nk
