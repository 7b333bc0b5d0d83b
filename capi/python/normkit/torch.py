"""PyTorch modules computing with normkit: drop-in BatchNorm1d, BatchNorm2d, BatchNorm3d,
LayerNorm, RMSNorm, GroupNorm, InstanceNorm1d, InstanceNorm2d and InstanceNorm3d; the
fused BatchNormReLU1d/2d/3d (relu(bn(x) + residual) in one pass), and fold_batch_norm.

Each subclasses its torch.nn counterpart: the same constructor arguments, parameters,
buffers and state_dict keys, and isinstance(m, torch.nn.BatchNorm2d) holds; only
forward (and, through torch.autograd.Function, backward) runs normkit. Tensors are
float32 on the CPU; a channels-last tensor is computed in place of its memory
(NK_LAYOUT_NSC) and the output keeps its memory format. An optional keyword-only
context= (a normkit.Context) caps threads and ISA.

RMSNorm is torch 2.4's torch.nn.RMSNorm, which older versions lack: there it subclasses
a copy of its interface (normalized_shape, eps=None, elementwise_affine=True; parameter
weight). LayerNorm and RMSNorm take an optional residual= in forward: they then
normalize input + residual and return (output, input + residual).

InstanceNormXd with track_running_stats=True keeps its running statistics as torch
does: in training each is moved by momentum towards the batch's average of the
per-instance mean and unbiased variance (those derived from the saved statistics), and
in eval the input is normalized with them (normkit's batch norm inference).
"""

import torch

import math
import numbers

import numpy as np

from . import batch_norm as _bn
from . import group_norm as _gn
from . import layer_norm as _ln
from ._context import Context

__all__ = ["BatchNorm1d", "BatchNorm2d", "BatchNorm3d", "BatchNormReLU1d", "BatchNormReLU2d", "BatchNormReLU3d",
           "GroupNorm", "fold_batch_norm", "InstanceNorm1d", "InstanceNorm2d",
           "InstanceNorm3d", "LayerNorm", "RMSNorm"]


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
    """Batch norm of input, plus residual (or None) and through a ReLU when relu."""

    @staticmethod
    def forward(ctx, input, residual, weight, bias, running_mean, running_var, use_batch_stats, momentum, eps,
                relu, context):
        # DLPack refuses tensors that require grad; autograd is this Function's business.
        src, layout = _as_normkit_tensor(input.detach())
        res = None
        if residual is not None:
            # The residual is read in src's layout.
            res = residual.detach().movedim(1, -1) if layout == _bn.Layout.NSC else residual.detach()
            res = res.contiguous()
        scale = None if weight is None else weight.detach()
        shift = None if bias is None else bias.detach()
        dst = torch.empty_like(src)
        channels = input.shape[1]
        if use_batch_stats:
            save_mean = torch.empty(channels, dtype=torch.float32)
            save_invstd = torch.empty(channels, dtype=torch.float32)
            _bn.batch_norm_forward_training(src, scale, shift, running_mean, running_var, residual=res, relu=relu,
                                            layout=layout, epsilon=eps, momentum=momentum,
                                            out=(dst, save_mean, save_invstd), context=context)
        else:
            _bn.batch_norm_forward_inference(src, running_mean, running_var, scale, shift, residual=res, relu=relu,
                                             layout=layout, epsilon=eps, out=dst, context=context)
            # Backward of inference holds the running statistics constant.
            save_mean = running_mean.detach().clone()
            save_invstd = torch.rsqrt(running_var.detach().double() + eps).float()
        # The ReLU's backward masks by dst: kept only when there is a ReLU.
        ctx.save_for_backward(src, scale, save_mean, save_invstd, dst if relu else None)
        ctx.layout, ctx.use_batch_stats, ctx.relu, ctx.context = layout, use_batch_stats, relu, context
        return _from_normkit_tensor(dst, layout)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        src, scale, save_mean, save_invstd, dst = ctx.saved_tensors
        # The gradient comes in whatever memory format autograd chose; normkit reads it
        # in src's layout.
        grad = grad_output.movedim(1, -1) if ctx.layout == _bn.Layout.NSC else grad_output
        grad = grad.contiguous()
        need_src, need_residual, need_weight, need_bias = ctx.needs_input_grad[:4]
        diff_src = torch.empty_like(src) if need_src else None
        diff_residual = None
        diff_scale = torch.empty_like(save_mean) if need_weight else None
        diff_shift = torch.empty_like(save_mean) if need_bias else None
        if ctx.relu:
            diff_residual = torch.empty_like(src) if need_residual else None
            needed = (need_src, need_residual, need_weight, need_bias)
            outputs = [name for name, need in zip(_bn.ReluBackwardResult._fields, needed) if need]
            _bn.batch_norm_backward_relu(src, grad, dst.detach(), save_mean, save_invstd, scale, layout=ctx.layout,
                                         use_global_stats=not ctx.use_batch_stats, outputs=outputs,
                                         out=(diff_src, diff_residual, diff_scale, diff_shift), context=ctx.context)
        else:
            if need_residual:
                diff_residual = grad  # the add's gradient is the output's
            needed = (need_src, need_weight, need_bias)
            outputs = [name for name, need in zip(_bn.BackwardResult._fields, needed) if need]
            _bn.batch_norm_backward(src, grad, save_mean, save_invstd, scale, layout=ctx.layout,
                                    use_global_stats=not ctx.use_batch_stats, outputs=outputs,
                                    out=(diff_src, diff_scale, diff_shift), context=ctx.context)
        if diff_src is not None:
            diff_src = _from_normkit_tensor(diff_src, ctx.layout)
        if diff_residual is not None:
            diff_residual = _from_normkit_tensor(diff_residual, ctx.layout)
        return diff_src, diff_residual, diff_scale, diff_shift, None, None, None, None, None, None, None


class _NormkitModule:
    """The keyword-only context= every module takes, and the check of its tensors."""

    def __init__(self, *args, context=None, **kwargs):
        super().__init__(*args, **kwargs)
        if context is not None and not isinstance(context, Context):
            raise TypeError(f"context is a {type(context).__name__}: expected a normkit.Context or None")
        self.context = context

    def _check_float32_cpu(self, *named):
        """Parameters and statistics: float32 on the CPU."""
        for name, tensor in named:
            if tensor is not None and (tensor.dtype != torch.float32 or tensor.device.type != "cpu"):
                raise TypeError(f"{name} is {tensor.dtype} on {tensor.device}: "
                                f"normkit.torch.{type(self).__name__} computes in float32 on the CPU")

    def _check_storage_cpu(self, input, *named):
        """input, and the tensors that share its type (residual): float32, float16 or
        bfloat16 on the CPU, all of one type (computed in float32, stored in that type)."""
        for name, tensor in (("input", input),) + named:
            if tensor is None:
                continue
            if tensor.dtype not in (torch.float32, torch.float16, torch.bfloat16) or tensor.device.type != "cpu":
                raise TypeError(f"{name} is {tensor.dtype} on {tensor.device}: normkit.torch."
                                f"{type(self).__name__} takes float32, float16 or bfloat16 on the CPU")
            if tensor.dtype != input.dtype:
                raise TypeError(f"{name} is {tensor.dtype}, input {input.dtype}: expected one type")


class _NormkitBatchNorm(_NormkitModule):
    """forward() of torch's _BatchNorm, with normkit doing the arithmetic."""

    _relu = False  # the BatchNormReLU modules fuse a ReLU

    def forward(self, input, residual=None):
        self._check_input_dim(input)
        self._check_storage_cpu(input, ("residual", residual))
        self._check_float32_cpu(("weight", self.weight), ("running_mean", self.running_mean))
        if residual is not None and residual.shape != input.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)}, input {tuple(input.shape)}")
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
        return _BatchNormFunction.apply(input, residual, self.weight, self.bias, running_mean, running_var,
                                        use_batch_stats, momentum, self.eps, self._relu, self.context)


class BatchNorm1d(_NormkitBatchNorm, torch.nn.BatchNorm1d):
    """torch.nn.BatchNorm1d on normkit: input (N, C) or (N, C, L). forward(input,
    residual=None) adds residual (input's shape) to the output in the same pass."""


class BatchNorm2d(_NormkitBatchNorm, torch.nn.BatchNorm2d):
    """torch.nn.BatchNorm2d on normkit: input (N, C, H, W), contiguous or channels_last."""


class BatchNorm3d(_NormkitBatchNorm, torch.nn.BatchNorm3d):
    """torch.nn.BatchNorm3d on normkit: input (N, C, D, H, W), contiguous or channels_last_3d."""


class BatchNormReLU1d(BatchNorm1d):
    """BatchNorm1d then a ReLU, one normkit pass: forward(input, residual=None) is
    relu(bn(input) + residual), and backward one pass too (the mask from the output)."""

    _relu = True


class BatchNormReLU2d(BatchNorm2d):
    """BatchNorm2d then a ReLU in one pass; forward(input, residual=None) as BatchNormReLU1d."""

    _relu = True


class BatchNormReLU3d(BatchNorm3d):
    """BatchNorm3d then a ReLU in one pass; forward(input, residual=None) as BatchNormReLU1d."""

    _relu = True


@torch.no_grad()
def fold_batch_norm(layer, bn):
    """Folds bn's inference statistics and affine into layer (a torch.nn.Linear or ConvNd
    before it, weights output channel first), in place; returns layer, which then computes
    bn(layer(x)) in eval mode. A layer without a bias gets one."""
    if bn.running_mean is None:
        raise ValueError("bn tracks no running statistics: there is nothing to fold")
    weight = layer.weight
    if weight.shape[0] != bn.num_features:
        raise ValueError(f"layer has {weight.shape[0]} output channels, bn {bn.num_features} features")
    scale = None if bn.weight is None else bn.weight.detach().contiguous()
    shift = None if bn.bias is None else bn.bias.detach().contiguous()
    bias = layer.bias
    if bias is None:
        bias = torch.nn.Parameter(torch.zeros(weight.shape[0], dtype=weight.dtype))
    w = weight.detach().contiguous()
    b = bias.detach().contiguous()
    _bn.batch_norm_fold(bn.running_mean, bn.running_var, w, b, scale, shift, epsilon=bn.eps, out=(w, b))
    weight.copy_(w)
    bias.copy_(b)
    layer.bias = bias
    return layer


class _RowNormFunction(torch.autograd.Function):
    """Layer norm, or RMS norm (rms), over the last normalized_ndim dims of input, or of
    input + residual; outputs dst, or (dst, sum)."""

    @staticmethod
    def forward(ctx, input, residual, weight, bias, normalized_ndim, eps, rms, context):
        # An unused output's gradient stays None rather than a tensor of zeros to add.
        ctx.set_materialize_grads(False)
        src = input.detach().contiguous()
        res = None if residual is None else residual.detach().contiguous()
        scale = None if weight is None else weight.detach().contiguous()
        shift = None if bias is None else bias.detach().contiguous()
        rows = src.shape[:src.dim() - normalized_ndim]
        dst = torch.empty_like(src)
        total = None if res is None else torch.empty_like(src)
        invstd = torch.empty(rows, dtype=torch.float32)
        if rms:
            mean = None
            _ln.rms_norm_forward(src, scale, residual=res, normalized_ndim=normalized_ndim, epsilon=eps,
                                 out=(dst, invstd, total), context=context)
        else:
            mean = torch.empty(rows, dtype=torch.float32)
            _ln.layer_norm_forward(src, scale, shift, residual=res, normalized_ndim=normalized_ndim, epsilon=eps,
                                   out=(dst, mean, invstd, total), context=context)
        # After a residual the normalized tensor is the sum: backward reads it, not input.
        ctx.save_for_backward(src if total is None else total, scale, mean, invstd)
        ctx.normalized_ndim, ctx.rms, ctx.context = normalized_ndim, rms, context
        return dst if total is None else (dst, total)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_dst, grad_sum=None):
        # The sum was saved as an output, so it comes back requiring grad, which DLPack refuses.
        src, scale, mean, invstd = (None if t is None else t.detach() for t in ctx.saved_tensors)
        need_input, need_residual, need_weight, need_bias = ctx.needs_input_grad[:4]
        need_x = need_input or need_residual
        features = src.shape[src.dim() - ctx.normalized_ndim:]
        diff_x = diff_scale = diff_shift = None
        if grad_dst is not None and (need_x or need_weight or need_bias):
            diff_x = torch.empty_like(src) if need_x else None
            diff_scale = torch.empty(features, dtype=torch.float32) if need_weight else None
            diff_shift = torch.empty(features, dtype=torch.float32) if need_bias else None
            grad = grad_dst.contiguous()
            if ctx.rms:
                outputs = [name for name, need in zip(_ln.RmsNormBackwardResult._fields, (need_x, need_weight))
                           if need]
                _ln.rms_norm_backward(src, grad, invstd, scale, normalized_ndim=ctx.normalized_ndim,
                                      outputs=outputs, out=(diff_x, diff_scale), context=ctx.context)
            else:
                outputs = [name for name, need in
                           zip(_ln.LayerNormBackwardResult._fields, (need_x, need_weight, need_bias)) if need]
                _ln.layer_norm_backward(src, grad, mean, invstd, scale, normalized_ndim=ctx.normalized_ndim,
                                        outputs=outputs, out=(diff_x, diff_scale, diff_shift), context=ctx.context)
        if grad_sum is not None and need_x:
            # sum = input + residual also flows on by itself (the residual stream).
            diff_x = grad_sum.clone() if diff_x is None else diff_x.add_(grad_sum)
        return (diff_x if need_input else None, diff_x if need_residual else None, diff_scale, diff_shift,
                None, None, None, None)


class _NormkitRowNorm(_NormkitModule):
    """forward() of torch's LayerNorm / RMSNorm, with normkit doing the arithmetic."""

    def _normalize(self, input, residual, bias, eps, rms):
        self._check_storage_cpu(input, ("residual", residual))
        self._check_float32_cpu(("weight", self.weight))
        ndim = len(self.normalized_shape)
        if input.dim() < ndim or tuple(input.shape[input.dim() - ndim:]) != tuple(self.normalized_shape):
            raise ValueError(f"input has shape {tuple(input.shape)}: expected (*, "
                             f"{', '.join(map(str, self.normalized_shape))}) for normalized_shape "
                             f"{tuple(self.normalized_shape)}")
        if residual is not None and residual.shape != input.shape:
            raise ValueError(f"residual has shape {tuple(residual.shape)}, expected the input's {tuple(input.shape)}")
        return _RowNormFunction.apply(input, residual, self.weight, bias, ndim, eps, rms, self.context)


class LayerNorm(_NormkitRowNorm, torch.nn.LayerNorm):
    """torch.nn.LayerNorm on normkit: input (*, *normalized_shape)."""

    def forward(self, input, residual=None):
        """The layer norm of input, or, with residual, (that of input + residual, input + residual)."""
        return self._normalize(input, residual, self.bias, self.eps, rms=False)


class _RMSNormInterface(torch.nn.Module):
    """torch.nn.RMSNorm's constructor, parameter and repr as of torch 2.4, for older versions."""

    __constants__ = ["normalized_shape", "eps", "elementwise_affine"]

    def __init__(self, normalized_shape, eps=None, elementwise_affine=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, numbers.Integral):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = torch.nn.Parameter(torch.empty(self.normalized_shape, device=device, dtype=dtype))
        else:
            self.register_parameter("weight", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.elementwise_affine:
            torch.nn.init.ones_(self.weight)

    def extra_repr(self):
        return "{normalized_shape}, eps={eps}, elementwise_affine={elementwise_affine}".format(**self.__dict__)


class RMSNorm(_NormkitRowNorm, getattr(torch.nn, "RMSNorm", _RMSNormInterface)):
    """torch.nn.RMSNorm (torch 2.4) on normkit: input (*, *normalized_shape).

    eps=None is torch.finfo(torch.float32).eps, as torch 2.4 takes for a float32 input
    (torch uses the epsilon of the input's dtype; normkit computes in float32 only).
    """

    def forward(self, input, residual=None):
        """The RMS norm of input, or, with residual, (that of input + residual, input + residual)."""
        eps = torch.finfo(torch.float32).eps if self.eps is None else self.eps
        return self._normalize(input, residual, None, eps, rms=True)


class _GroupNormFunction(torch.autograd.Function):
    """Group norm of an (N, C, *) input; with running_mean and running_var (instance
    norm in training), those move towards the batch's statistics as torch's do."""

    @staticmethod
    def forward(ctx, input, weight, bias, groups, eps, context, running_mean, running_var, momentum):
        src, layout = _as_normkit_tensor(input.detach())
        scale = None if weight is None else weight.detach()
        shift = None if bias is None else bias.detach()
        dst = torch.empty_like(src)
        save_mean = torch.empty(input.shape[0], groups, dtype=torch.float32)
        save_invstd = torch.empty(input.shape[0], groups, dtype=torch.float32)
        _gn.group_norm_forward(src, groups, scale, shift, layout=layout, epsilon=eps,
                               out=(dst, save_mean, save_invstd), context=context)
        if running_mean is not None:
            _update_running_stats(running_mean, running_var, save_mean, save_invstd, math.prod(input.shape[2:]),
                                  eps, momentum)
        ctx.save_for_backward(src, scale, save_mean, save_invstd)
        ctx.layout, ctx.groups, ctx.channels, ctx.context = layout, groups, input.shape[1], context
        return _from_normkit_tensor(dst, layout)

    @staticmethod
    @torch.autograd.function.once_differentiable
    def backward(ctx, grad_output):
        src, scale, save_mean, save_invstd = ctx.saved_tensors
        grad = grad_output.movedim(1, -1) if ctx.layout == _bn.Layout.NSC else grad_output
        grad = grad.contiguous()
        needed = ctx.needs_input_grad[:3]
        need_src, need_weight, need_bias = needed
        outputs = [name for name, need in zip(_gn.GroupNormBackwardResult._fields, needed) if need]
        diff_src = torch.empty_like(src) if need_src else None
        diff_scale = torch.empty(ctx.channels, dtype=torch.float32) if need_weight else None
        diff_shift = torch.empty(ctx.channels, dtype=torch.float32) if need_bias else None
        _gn.group_norm_backward(src, grad, save_mean, save_invstd, ctx.groups, scale, layout=ctx.layout,
                                outputs=outputs, out=(diff_src, diff_scale, diff_shift), context=ctx.context)
        if diff_src is not None:
            diff_src = _from_normkit_tensor(diff_src, ctx.layout)
        return diff_src, diff_scale, diff_shift, None, None, None, None, None, None


def _update_running_stats(running_mean, running_var, save_mean, save_invstd, count, eps, momentum):
    """torch's instance norm update: running = (1 - momentum) running + momentum * the
    batch's average of each instance's mean and unbiased variance (count values each)."""
    if save_mean.shape[0] == 0:
        # No instances to average (torch fails here with an IndexError): the running
        # statistics stay as they are rather than turning NaN.
        return
    # The variance the library normalized with, invstd^-2 - eps, with eps as the library
    # had it (float32); in float64, so that only invstd's own rounding remains.
    variance = save_invstd.double().pow(-2) - float(np.float32(eps))
    unbiased = variance * (count / (count - 1))
    running_mean.copy_((1 - momentum) * running_mean.double() + momentum * save_mean.double().mean(0))
    running_var.copy_((1 - momentum) * running_var.double() + momentum * unbiased.mean(0))


def _verify_more_than_one(size, values, message):
    # torch's group_norm and instance_norm refuse these inputs; so do their drop-ins, in
    # torch's words (size: what torch names as the input's size).
    if values == 1:
        raise ValueError(f"{message}, got input size {size}")


class GroupNorm(_NormkitModule, torch.nn.GroupNorm):
    """torch.nn.GroupNorm on normkit: input (N, C, *), contiguous or channels_last(_3d)."""

    def forward(self, input):
        self._check_storage_cpu(input)
        self._check_float32_cpu(("weight", self.weight))
        if input.dim() < 2 or input.shape[1] != self.num_channels:
            raise ValueError(f"input has shape {tuple(input.shape)}: expected (N, {self.num_channels}, *) for "
                             f"num_channels {self.num_channels}")
        size = [input.shape[0] * self.num_channels // self.num_groups, self.num_groups] + list(input.shape[2:])
        _verify_more_than_one(size, size[0] * math.prod(size[2:]),
                              "Expected more than 1 value per channel when training")
        return _GroupNormFunction.apply(input, self.weight, self.bias, self.num_groups, self.eps, self.context,
                                        None, None, 0.0)


class _NormkitInstanceNorm(_NormkitModule):
    """forward() of torch's _InstanceNorm, with normkit doing the arithmetic: group norm
    of groups == C with the input's statistics, batch norm inference with the running ones."""

    def forward(self, input):
        self._check_input_dim(input)
        if input.dim() == self._get_no_batch_dim():
            return self._instance_norm(input.unsqueeze(0)).squeeze(0)
        return self._instance_norm(input)

    def _instance_norm(self, input):
        self._check_storage_cpu(input)
        self._check_float32_cpu(("weight", self.weight), ("running_mean", self.running_mean))
        channels = input.shape[1]
        if (self.affine or self.track_running_stats) and channels != self.num_features:
            raise ValueError(f"input has shape {tuple(input.shape)}: expected (N, {self.num_features}, *) for "
                             f"num_features {self.num_features}")
        if self.track_running_stats and not self.training:
            # Every instance normalized with the same per-channel statistics: batch norm's inference.
            return _BatchNormFunction.apply(input, None, self.weight, self.bias, self.running_mean, self.running_var,
                                            False, 0.0, self.eps, False, self.context)
        _verify_more_than_one(input.size(), math.prod(input.shape[2:]),
                              "Expected more than 1 spatial element when training")
        track = self.training and self.track_running_stats
        if track and self.momentum is None:
            raise TypeError("momentum is None: torch's instance norm needs a float to move its running statistics")
        return _GroupNormFunction.apply(input, self.weight, self.bias, channels, self.eps, self.context,
                                        self.running_mean if track else None, self.running_var if track else None,
                                        self.momentum if track else 0.0)


class InstanceNorm1d(_NormkitInstanceNorm, torch.nn.InstanceNorm1d):
    """torch.nn.InstanceNorm1d on normkit: input (N, C, L) or (C, L)."""


class InstanceNorm2d(_NormkitInstanceNorm, torch.nn.InstanceNorm2d):
    """torch.nn.InstanceNorm2d on normkit: input (N, C, H, W), contiguous or channels_last, or (C, H, W)."""


class InstanceNorm3d(_NormkitInstanceNorm, torch.nn.InstanceNorm3d):
    """torch.nn.InstanceNorm3d on normkit: input (N, C, D, H, W), contiguous or channels_last_3d, or (C, D, H, W)."""
