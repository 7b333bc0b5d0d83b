"""PyTorch modules computing with normkit: drop-in BatchNorm1d, BatchNorm2d, BatchNorm3d.

Each subclasses its torch.nn counterpart: the same constructor arguments, parameters,
buffers and state_dict keys, and isinstance(m, torch.nn.BatchNorm2d) holds; only
forward (and, through torch.autograd.Function, backward) runs normkit. Tensors are
float32 on the CPU; a channels-last tensor is computed in place of its memory
(NK_LAYOUT_NSC) and the output keeps its memory format. An optional keyword-only
context= (a normkit.Context) caps threads and ISA.
"""

import torch

from . import batch_norm as _bn
from ._context import Context

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d"]


def _as_normkit_tensor(tensor):
    """tensor as a dense view normkit reads, and its layout: channels-last memory stays
    where it is (NSC), anything else is made contiguous (NCS)."""
    if tensor.dim() > 2 and not tensor.is_contiguous():
        channels_last = tensor.movedim(1, -1)
        if channels_last.is_contiguous():
            return channels_last, _bn.Layout.NSC
    return tensor.contiguous(), _bn.Layout.NCS


def _from_normkit_tensor(view, layout):
    """The (N, C, ...) tensor over a view given by _as_normkit_tensor."""
    return view.movedim(-1, 1) if layout == _bn.Layout.NSC else view


class _BatchNormFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, input, weight, bias, running_mean, running_var, use_batch_stats, momentum, eps,
                context):
        # DLPack refuses tensors that require grad; autograd is this Function's business.
        src, layout = _as_normkit_tensor(input.detach())
        scale = None if weight is None else weight.detach()
        shift = None if bias is None else bias.detach()
        dst = torch.empty_like(src)
        channels = input.shape[1]
        if use_batch_stats:
            save_mean = torch.empty(channels, dtype=torch.float32)
            save_invstd = torch.empty(channels, dtype=torch.float32)
            _bn.batch_norm_forward_training(src, scale, shift, running_mean, running_var, layout=layout,
                                            epsilon=eps, momentum=momentum,
                                            out=(dst, save_mean, save_invstd), context=context)
        else:
            _bn.batch_norm_forward_inference(src, running_mean, running_var, scale, shift, layout=layout,
                                             epsilon=eps, out=dst, context=context)
            # Backward of inference holds the running statistics constant.
            save_mean = running_mean.detach().clone()
            save_invstd = torch.rsqrt(running_var.detach().double() + eps).float()
        ctx.save_for_backward(src, scale, save_mean, save_invstd)
        ctx.layout, ctx.use_batch_stats, ctx.context = layout, use_batch_stats, context
        return _from_normkit_tensor(dst, layout)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        src, scale, save_mean, save_invstd = ctx.saved_tensors
        # The gradient comes in whatever memory format autograd chose; normkit reads it
        # in src's layout.
        grad = grad_output.movedim(1, -1) if ctx.layout == _bn.Layout.NSC else grad_output
        grad = grad.contiguous()
        needed = ctx.needs_input_grad[:3]
        need_src, need_weight, need_bias = needed
        outputs = [name for name, need in zip(_bn.BackwardResult._fields, needed) if need]
        diff_src = torch.empty_like(src) if need_src else None
        diff_scale = torch.empty_like(save_mean) if need_weight else None
        diff_shift = torch.empty_like(save_mean) if need_bias else None
        _bn.batch_norm_backward(src, grad, save_mean, save_invstd, scale, layout=ctx.layout,
                                use_global_stats=not ctx.use_batch_stats, outputs=outputs,
                                out=(diff_src, diff_scale, diff_shift), context=ctx.context)
        if diff_src is not None:
            diff_src = _from_normkit_tensor(diff_src, ctx.layout)
        return diff_src, diff_scale, diff_shift, None, None, None, None, None, None


class _NormkitBatchNorm:
    """forward() of torch's _BatchNorm, with normkit doing the arithmetic."""

    def __init__(self, *args, context=None, **kwargs):
        super().__init__(*args, **kwargs)
        if context is not None and not isinstance(context, Context):
            raise TypeError(f"context is a {type(context).__name__}: expected a normkit.Context or None")
        self.context = context

    def forward(self, input):
        self._check_input_dim(input)
        for name, tensor in (("input", input), ("weight", self.weight), ("running_mean", self.running_mean)):
            if tensor is not None and (tensor.dtype != torch.float32 or tensor.device.type != "cpu"):
                raise TypeError(f"{name} is {tensor.dtype} on {tensor.device}: "
                                f"normkit.torch.{type(self).__name__} computes in float32 on the CPU")
        # torch's own rules: which statistics normalize, which running statistics move, by how much.
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.add_(1)
            if self.momentum is None:
                momentum = 1.0 / float(self.num_batches_tracked)
        use_batch_stats = self.training or (self.running_mean is None and self.running_var is None)
        track = not self.training or self.track_running_stats
        running_mean = self.running_mean if track else None
        running_var = self.running_var if track else None
        return _BatchNormFunction.apply(input, self.weight, self.bias, running_mean, running_var,
                                        use_batch_stats, momentum, self.eps, self.context)


class BatchNorm1d(_NormkitBatchNorm, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d on normkit: input (N, C) or (N, C, L)."""


class BatchNorm2d(_NormkitBatchNorm, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d on normkit: input (N, C, H, W), contiguous or channels_last."""


class BatchNorm3d(_NormkitBatchNorm, torch.nn.BatchNorm3d):
    """torch.nn.BatchNorm3d on normkit: input (N, C, D, H, W), contiguous or channels_last_3d."""
