#include "onednn_layer_norm.hpp"

#include "onednn_common.hpp"

#include <oneapi/dnnl/dnnl.hpp>
#include <omp.h>

#include <unordered_map>
#include <vector>

namespace nkbench {

struct OnednnLayerNorm::Impl {
    int threads = 1;
    dnnl::stream stream{cpu_engine()};
    dnnl::primitive primitive;
    std::unordered_map<int, dnnl::memory> args;
    std::vector<float> scratchpad;
    std::string implementation;
};

OnednnLayerNorm::OnednnLayerNorm(Kind kind, int64_t rows, int64_t features, int threads, const RowBuffers& b)
    : impl_(std::make_unique<Impl>()) {
    using dnnl::memory;
    using flags = dnnl::normalization_flags;
    Impl& im = *impl_;
    im.threads = threads;
    omp_set_num_threads(threads);
    const memory::desc data_md({rows, features}, memory::data_type::f32, memory::format_tag::ab);
    const memory::desc stat_md({rows}, memory::data_type::f32, memory::format_tag::a);
    const memory::desc feature_md({features}, memory::data_type::f32, memory::format_tag::a);
    dnnl::primitive_attr attr;
    attr.set_scratchpad_mode(dnnl::scratchpad_mode::user);
    const flags scale_shift = flags::use_scale | flags::use_shift;
    im.args[DNNL_ARG_SRC] = wrap(data_md, b.src);
    im.args[DNNL_ARG_SCALE] = wrap(feature_md, b.scale);
    im.args[DNNL_ARG_SHIFT] = wrap(feature_md, b.shift);
    dnnl::memory::desc scratch_md;
    if (kind == Kind::backward) {
        const dnnl::layer_normalization_forward::primitive_desc hint(
            {dnnl::prop_kind::forward_training, data_md, stat_md, 1e-5f, scale_shift}, cpu_engine());
        const dnnl::layer_normalization_backward::primitive_desc pd(
            {dnnl::prop_kind::backward, data_md, data_md, stat_md, 1e-5f, scale_shift}, attr, cpu_engine(), hint);
        im.primitive = dnnl::layer_normalization_backward(pd);
        im.implementation = pd.impl_info_str();
        im.args[DNNL_ARG_DIFF_DST] = wrap(data_md, b.diff_dst);
        im.args[DNNL_ARG_MEAN] = wrap(stat_md, b.mean);
        im.args[DNNL_ARG_VARIANCE] = wrap(stat_md, b.variance);
        im.args[DNNL_ARG_DIFF_SRC] = wrap(data_md, b.dst);
        im.args[DNNL_ARG_DIFF_SCALE] = wrap(feature_md, b.diff_scale);
        im.args[DNNL_ARG_DIFF_SHIFT] = wrap(feature_md, b.diff_shift);
        scratch_md = pd.scratchpad_desc();
    } else {
        const bool training = kind == Kind::training;
        const dnnl::layer_normalization_forward::primitive_desc pd(
            {training ? dnnl::prop_kind::forward_training : dnnl::prop_kind::forward_inference, data_md, stat_md,
             1e-5f, scale_shift},
            attr, cpu_engine());
        im.primitive = dnnl::layer_normalization_forward(pd);
        im.implementation = pd.impl_info_str();
        im.args[DNNL_ARG_DST] = wrap(data_md, b.dst);
        if (training) {
            im.args[DNNL_ARG_MEAN] = wrap(stat_md, b.mean_out);
            im.args[DNNL_ARG_VARIANCE] = wrap(stat_md, b.variance_out);
        }
        scratch_md = pd.scratchpad_desc();
    }
    if (scratch_md.get_size() > 0) {
        im.scratchpad.resize(scratch_md.get_size() / sizeof(float) + 16);
        im.args[DNNL_ARG_SCRATCHPAD] = wrap(scratch_md, im.scratchpad.data());
    }
}

OnednnLayerNorm::~OnednnLayerNorm() = default;

void OnednnLayerNorm::run() {
    omp_set_num_threads(impl_->threads);
    impl_->primitive.execute(impl_->stream, impl_->args);
    impl_->stream.wait();
}

const std::string& OnednnLayerNorm::implementation() const { return impl_->implementation; }

} // namespace nkbench
