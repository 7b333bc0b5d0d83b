"""Batch normalization: nk_batch_norm_forward_training, _forward_inference, _backward,
the fused ReLU and residual (the _v2 calls) and nk_batch_norm_fold.

A tensor is (N, C, *spatial) in the NCS layout and (N, *spatial, C) in the NSC layout
(channels-last); per-channel arrays have C values. Every array is float32, C-contiguous
and aligned; outputs are allocated unless given in out= (an array, or a tuple with one
entry per output, None where one should be allocated).
"""

import collections
import ctypes
import enum
import math

from . import _context
from ._arrays import Call
from ._library import BatchNormDesc, call


class Layout(enum.IntEnum):
    """NK_LAYOUT_*: where the channel axis of a tensor is."""

    NCS = 0  # channels-first: (N, C, *spatial)
    NSC = 1  # channels-last: (N, *spatial, C)


KERAS_MOMENTUM = 0x1
BIASED_RUNNING_VAR = 0x2
USE_GLOBAL_STATS = 0x4
FUSE_RELU = 0x8

TrainingResult = collections.namedtuple("TrainingResult", "dst save_mean save_invstd")
BackwardResult = collections.namedtuple("BackwardResult", "diff_src diff_scale diff_shift")
ReluBackwardResult = collections.namedtuple("ReluBackwardResult", "diff_src diff_residual diff_scale diff_shift")
FoldResult = collections.namedtuple("FoldResult", "weight bias")


def split_shape(shape, layout):
    """(layout, n, c, spatial) of a tensor of this shape in this layout (group norm's too)."""
    try:
        layout = Layout(layout)
    except ValueError:
        raise ValueError(f"layout is {layout!r}: expected normkit.Layout.NCS or .NSC") from None
    if layout == Layout.NCS:
        return layout, shape[0], shape[1], math.prod(shape[2:])
    return layout, shape[0], shape[-1], math.prod(shape[1:-1])


def _desc(shape, layout, epsilon=1e-5, momentum=0.1, flags=0, dtype=0):
    """The descriptor of a tensor of this shape, from nk_batch_norm_desc_init's defaults."""
    layout, n, c, spatial = split_shape(shape, layout)
    desc = BatchNormDesc()
    call("nk_batch_norm_desc_init", ctypes.byref(desc), layout, n, c, spatial)
    desc.epsilon = epsilon
    desc.momentum = momentum
    desc.flags = flags
    desc.dtype = dtype
    return desc


def batch_norm_forward_training(src, scale=None, shift=None, running_mean=None, running_var=None, *,
                                residual=None, relu=False, layout=Layout.NCS, epsilon=1e-5, momentum=0.1,
                                keras_momentum=False, biased_running_var=False, out=None, context=None):
    """Normalizes src with its batch statistics; returns (dst, save_mean, save_invstd).

    running_mean and running_var (both or neither) are updated in place:
    running = (1 - momentum)*running + momentum*batch, or with keras_momentum
    momentum*running + (1 - momentum)*batch; the variance is the unbiased one unless
    biased_running_var. momentum = 1/k at step k gives PyTorch's cumulative average.
    residual (src's shape) is added to the normalized values and relu=True applies a ReLU
    after that, in the same pass: dst = relu(bn(src) + residual).
    """
    flags = (KERAS_MOMENTUM if keras_momentum else 0) | (BIASED_RUNNING_VAR if biased_running_var else 0)
    flags |= FUSE_RELU if relu else 0
    args = Call(out, TrainingResult._fields)
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, epsilon, momentum, flags, dtype=args.dtype)
    channels = (desc.c,)
    call("nk_batch_norm_forward_training_v2", _context.handle(context), ctypes.byref(desc),
         src_address, args.input("residual", residual, shape, optional=True, storage=True),
         args.output("dst", shape, storage=True),
         args.input("scale", scale, channels, optional=True),
         args.input("shift", shift, channels, optional=True),
         args.input("running_mean", running_mean, channels, optional=True, written=True),
         args.input("running_var", running_var, channels, optional=True, written=True),
         args.output("save_mean", channels), args.output("save_invstd", channels))
    return TrainingResult(**args.results)


def batch_norm_forward_inference(src, mean, variance, scale=None, shift=None, *, residual=None, relu=False,
                                 layout=Layout.NCS, epsilon=1e-5, out=None, context=None):
    """(src - mean) / sqrt(variance + epsilon) * scale + shift; returns dst.

    residual and relu as in batch_norm_forward_training: dst = relu(bn(src) + residual).
    """
    args = Call(out, ("dst",))
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, epsilon, flags=FUSE_RELU if relu else 0, dtype=args.dtype)
    channels = (desc.c,)
    call("nk_batch_norm_forward_inference_v2", _context.handle(context), ctypes.byref(desc),
         src_address, args.input("residual", residual, shape, optional=True, storage=True),
         args.output("dst", shape, storage=True),
         args.input("scale", scale, channels, optional=True),
         args.input("shift", shift, channels, optional=True),
         args.input("mean", mean, channels), args.input("variance", variance, channels))
    return args.results["dst"]


def batch_norm_backward(src, diff_dst, save_mean, save_invstd, scale=None, *, layout=Layout.NCS,
                        use_global_stats=False, outputs=BackwardResult._fields, out=None, context=None):
    """Gradients of a batch norm; returns (diff_src, diff_scale, diff_shift).

    save_mean, save_invstd: those of the training forward; with use_global_stats the
    statistics are constants (pass the running mean and 1/sqrt(running_var + epsilon)).
    outputs: the names of the gradients to compute; the others are returned as None.
    """
    unknown = set(outputs) - set(BackwardResult._fields)
    if unknown:
        raise ValueError(f"outputs names {sorted(unknown)}: expected a subset of {BackwardResult._fields}")
    args = Call(out, BackwardResult._fields)
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, flags=USE_GLOBAL_STATS if use_global_stats else 0, dtype=args.dtype)
    channels = (desc.c,)
    call("nk_batch_norm_backward", _context.handle(context), ctypes.byref(desc),
         src_address, args.input("diff_dst", diff_dst, shape, storage=True),
         args.input("scale", scale, channels, optional=True),
         args.input("save_mean", save_mean, channels), args.input("save_invstd", save_invstd, channels),
         args.output("diff_src", shape, wanted="diff_src" in outputs, storage=True),
         args.output("diff_scale", channels, wanted="diff_scale" in outputs),
         args.output("diff_shift", channels, wanted="diff_shift" in outputs))
    return BackwardResult(**args.results)


def batch_norm_backward_relu(src, diff_dst, dst, save_mean, save_invstd, scale=None, *, layout=Layout.NCS,
                             use_global_stats=False, outputs=ReluBackwardResult._fields, out=None, context=None):
    """Gradients through a forward with relu=True (dst: its output); returns
    (diff_src, diff_residual, diff_scale, diff_shift).

    diff_dst counts only where dst > 0 (g = 0 where dst <= 0, torch's ReLU backward);
    diff_src, diff_scale and diff_shift are batch_norm_backward's of g, and diff_residual
    is g itself (the residual's gradient). outputs: the names to compute.
    """
    unknown = set(outputs) - set(ReluBackwardResult._fields)
    if unknown:
        raise ValueError(f"outputs names {sorted(unknown)}: expected a subset of {ReluBackwardResult._fields}")
    args = Call(out, ReluBackwardResult._fields)
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, flags=FUSE_RELU | (USE_GLOBAL_STATS if use_global_stats else 0), dtype=args.dtype)
    channels = (desc.c,)
    call("nk_batch_norm_backward_v2", _context.handle(context), ctypes.byref(desc),
         src_address, args.input("diff_dst", diff_dst, shape, storage=True),
         args.input("dst", dst, shape, storage=True),
         args.input("scale", scale, channels, optional=True),
         args.input("save_mean", save_mean, channels), args.input("save_invstd", save_invstd, channels),
         args.output("diff_src", shape, wanted="diff_src" in outputs, storage=True),
         args.output("diff_residual", shape, wanted="diff_residual" in outputs, storage=True),
         args.output("diff_scale", channels, wanted="diff_scale" in outputs),
         args.output("diff_shift", channels, wanted="diff_shift" in outputs))
    return ReluBackwardResult(**args.results)


def batch_norm_fold(mean, variance, weight, bias=None, scale=None, shift=None, *, epsilon=1e-5, out=None):
    """Folds inference batch norm into the layer before it; returns (weight, bias).

    weight: the layer's weights, output channel first (Linear (C, in), Conv (C, in, kh, kw));
    with s = scale / sqrt(variance + epsilon): weight * s per channel and
    (bias - mean) * s + shift, each computed in double and rounded once. bias, scale and
    shift may be None (0, 1, 0). out=(weight, bias) may be the inputs (in place).
    """
    args = Call(out, FoldResult._fields)
    weight_address, shape = args.tensor("weight", weight, min_ndim=1, storage=False)
    channels = (shape[0],)
    desc = _desc((1, shape[0]), Layout.NCS, epsilon)
    call("nk_batch_norm_fold", ctypes.byref(desc), args.input("mean", mean, channels),
         args.input("variance", variance, channels), args.input("scale", scale, channels, optional=True),
         args.input("shift", shift, channels, optional=True), math.prod(shape[1:]), weight_address,
         args.input("bias", bias, channels, optional=True), args.output("weight", shape),
         args.output("bias", channels))
    return FoldResult(**args.results)
