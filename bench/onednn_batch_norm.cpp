#include "onednn_batch_norm.hpp"

#include "onednn_common.hpp"

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <unordered_map>
#include <vector>

namespace nkbench {

struct OnednnBatchNorm::Impl {
    int threads = 1;
    dnnl::stream stream{cpu_engine()};
    dnnl::primitive primitive;
    std::unordered_map<int, dnnl::memory> args;
    std::vector<float> scratchpad; // user-managed: allocated once, not on every run
    std::vector<float> workspace;
    std::string implementation;

    void add_scratch(const dnnl::memory::desc& md, std::vector<float>& storage, int arg) {
        if (md.get_size() == 0) return;
        storage.resize(md.get_size() / sizeof(float) + 16);
        args[arg] = wrap(md, storage.data());
    }
};

OnednnBatchNorm::OnednnBatchNorm(const Case& cs, const Tensors& t) : impl_(std::make_unique<Impl>()) {
    using dnnl::memory;
    using tag = memory::format_tag;
    using flags = dnnl::normalization_flags;
    Impl& im = *impl_;
    im.threads = cs.threads;
    // Primitive creation sizes its per-thread scratch from the OpenMP thread count.
    omp_set_num_threads(cs.threads);

    const Shape& s = cs.shape;
    const memory::desc data_md =
        s.nc ? memory::desc({s.n, s.c}, memory::data_type::f32, tag::nc)
             : memory::desc({s.n, s.c, s.h, s.w}, memory::data_type::f32, cs.layout == 0 ? tag::nchw : tag::nhwc);
    const memory::desc channel_md({s.c}, memory::data_type::f32, tag::x);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const flags scale_shift = flags::use_scale | flags::use_shift;

    im.args[DNNL_ARG_SRC] = wrap(data_md, t.src);
    im.args[DNNL_ARG_SCALE] = wrap(channel_md, t.scale);
    // oneDNN 2.6 wants the shift in backward too (use_shift), though diff_src does not use it.
    im.args[DNNL_ARG_SHIFT] = wrap(channel_md, t.shift);
    if (cs.mode == Mode::bwd) {
        const dnnl::batch_normalization_forward::desc hint_desc(dnnl::prop_kind::forward_training, data_md,
                                                                kEpsilon, scale_shift);
        const dnnl::batch_normalization_forward::primitive_desc hint(hint_desc, cpu_engine());
        const dnnl::batch_normalization_backward::desc desc(dnnl::prop_kind::backward, data_md, data_md, kEpsilon,
                                                            scale_shift);
        const dnnl::batch_normalization_backward::primitive_desc pd(desc, attr, cpu_engine(), hint);
        im.primitive = dnnl::batch_normalization_backward(pd);
        im.implementation = pd.impl_info_str();
        im.args[DNNL_ARG_DIFF_DST] = wrap(data_md, t.diff_dst);
        im.args[DNNL_ARG_MEAN] = wrap(channel_md, t.mean);
        im.args[DNNL_ARG_VARIANCE] = wrap(channel_md, t.variance);
        im.args[DNNL_ARG_DIFF_SRC] = wrap(data_md, t.dst);
        im.args[DNNL_ARG_DIFF_SCALE] = wrap(channel_md, t.diff_scale);
        im.args[DNNL_ARG_DIFF_SHIFT] = wrap(channel_md, t.diff_shift);
        im.add_scratch(pd.scratchpad_desc(), im.scratchpad, DNNL_ARG_SCRATCHPAD);
        im.add_scratch(pd.workspace_desc(), im.workspace, DNNL_ARG_WORKSPACE);
    } else {
        const bool training = cs.mode == Mode::train_fwd;
        const dnnl::batch_normalization_forward::desc desc(
            training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, data_md, kEpsilon,
            training ? scale_shift : scale_shift | flags::use_global_stats);
        const dnnl::batch_normalization_forward::primitive_desc pd(desc, attr, cpu_engine());
        im.primitive = dnnl::batch_normalization_forward(pd);
        im.implementation = pd.impl_info_str();
        im.args[DNNL_ARG_DST] = wrap(data_md, t.dst);
        im.args[DNNL_ARG_MEAN] = wrap(channel_md, training ? t.mean_out : t.mean);
        im.args[DNNL_ARG_VARIANCE] = wrap(channel_md, training ? t.variance_out : t.variance);
        im.add_scratch(pd.scratchpad_desc(), im.scratchpad, DNNL_ARG_SCRATCHPAD);
        im.add_scratch(pd.workspace_desc(), im.workspace, DNNL_ARG_WORKSPACE);
    }
}

OnednnBatchNorm::~OnednnBatchNorm() = default;

void OnednnBatchNorm::run() {
    omp_set_num_threads(impl_->threads);
    impl_->primitive.execute(impl_->stream, impl_->args);
    impl_->stream.wait();
}

const std::string& OnednnBatchNorm::implementation() const { return impl_->implementation; }

std::string OnednnBatchNorm::version() {
    const dnnl_version_t* v = dnnl_version();
    return std::to_string(v->major) + "." + std::to_string(v->minor) + "." + std::to_string(v->patch) + " (" +
           (v->cpu_runtime == DNNL_RUNTIME_OMP ? "OpenMP" : v->cpu_runtime == DNNL_RUNTIME_TBB ? "TBB" : "other") +
           " runtime)";
}

} // namespace nkbench
