"""Layer normalization and RMS normalization: nk_layer_norm_forward, _backward,
nk_rms_norm_forward, _backward.

src is an array of any rank whose last `normalized_ndim` dims are the normalized ones
(the features, as torch's normalized_shape), the leading dims the rows: (*rows, *features).
scale / shift have the shape of the features; the saved statistics have the shape of
the rows (() for a single row). Every array is C-contiguous and aligned; the tensors
(src, residual, sum, dst, diff_dst, diff_src) are float32, float16 or torch bfloat16
(all of one type, computed in float32; a bf16 result allocated here is uint16 bits), the
others float32;
outputs are allocated unless given in out= (an array, or a tuple with one entry per
output, None where one should be allocated).

With residual=, the op normalizes x = src + residual and returns that sum too (a
pre-norm transformer's residual stream): its backward then takes the sum as src.
"""

import collections
import ctypes
import math
import operator

import numpy as np

from . import _context
from ._arrays import Call, check_epsilon, fill
from ._library import LayerNormDesc, call

LayerNormResult = collections.namedtuple("LayerNormResult", "dst save_mean save_invstd sum")
LayerNormBackwardResult = collections.namedtuple("LayerNormBackwardResult", "diff_src diff_scale diff_shift")
RmsNormResult = collections.namedtuple("RmsNormResult", "dst save_invrms sum")
RmsNormBackwardResult = collections.namedtuple("RmsNormBackwardResult", "diff_src diff_scale")


def _normalized_ndim(value):
    try:
        ndim = operator.index(value)
    except TypeError:
        raise TypeError(f"normalized_ndim is a {type(value).__name__}: expected an int >= 1") from None
    if ndim < 1:
        raise ValueError(f"normalized_ndim is {ndim}: expected an int >= 1")
    return ndim


class _Shapes:
    """The rows and features of a tensor of this shape, and the descriptor for it."""

    def __init__(self, shape, normalized_ndim, epsilon=1e-5, dtype=0):
        self.rows = shape[:len(shape) - normalized_ndim]
        self.features = shape[len(shape) - normalized_ndim:]
        self.desc = LayerNormDesc()
        call("nk_layer_norm_desc_init", ctypes.byref(self.desc), math.prod(self.rows), math.prod(self.features))
        self.desc.epsilon = check_epsilon(epsilon)
        self.desc.dtype = dtype


def _src(args, src, normalized_ndim):
    ndim = _normalized_ndim(normalized_ndim)
    address, shape = args.tensor("src", src, min_ndim=ndim)
    return address, shape, ndim


def _forward(op, src, scale, shift, residual, normalized_ndim, epsilon, out, context, fields):
    args = Call(out, fields)
    src_address, shape, ndim = _src(args, src, normalized_ndim)
    shapes = _Shapes(shape, ndim, epsilon, args.dtype)
    residual_address = args.input("residual", residual, shape, optional=True, storage=True)
    # A sum given in out= without a residual goes to the library, which rejects it.
    sum_address = args.output("sum", shape, wanted=residual is not None or args.gives("sum"), storage=True)
    dst_address = args.output("dst", shape, storage=True)
    parameters = [args.input("scale", scale, shapes.features, optional=True)]
    if op == "nk_layer_norm_forward":
        parameters.append(args.input("shift", shift, shapes.features, optional=True))
    saved = [args.output(name, shapes.rows) for name in fields if name.startswith("save_")]
    call(op, _context.handle(context), ctypes.byref(shapes.desc), src_address, residual_address, sum_address,
         dst_address, *parameters, *saved)
    if shapes.desc.features == 0:
        # Rows of no values: their statistics are undefined, and the library (which
        # reads and writes nothing for an empty tensor) leaves them as they were.
        for address in saved:
            fill(address, shapes.desc.rows, np.nan)
    return args.results


def layer_norm_forward(src, scale=None, shift=None, *, residual=None, normalized_ndim=1, epsilon=1e-5,
                       out=None, context=None):
    """(x - mean) * invstd * scale + shift over the last normalized_ndim dims of x, x being
    src, or src + residual; returns (dst, save_mean, save_invstd, sum).

    sum is src + residual, None without a residual. In place: dst may be src or residual,
    sum may be src or residual (out=src normalizes src where it is).
    """
    results = _forward("nk_layer_norm_forward", src, scale, shift, residual, normalized_ndim, epsilon, out,
                       context, LayerNormResult._fields)
    return LayerNormResult(**results)


def rms_norm_forward(src, scale=None, *, residual=None, normalized_ndim=1, epsilon=1e-5, out=None, context=None):
    """x * invrms * scale, invrms = 1 / sqrt(mean(x^2) + epsilon) over the last
    normalized_ndim dims of x (src, or src + residual); returns (dst, save_invrms, sum).

    sum and in place as in layer_norm_forward.
    """
    results = _forward("nk_rms_norm_forward", src, scale, None, residual, normalized_ndim, epsilon, out,
                       context, RmsNormResult._fields)
    return RmsNormResult(**results)


def _backward(op, src, diff_dst, statistics, scale, normalized_ndim, outputs, out, context, fields):
    unknown = set(outputs) - set(fields)
    if unknown:
        raise ValueError(f"outputs names {sorted(unknown)}: expected a subset of {fields}")
    args = Call(out, fields)
    src_address, shape, ndim = _src(args, src, normalized_ndim)
    shapes = _Shapes(shape, ndim, dtype=args.dtype)
    diff_dst_address = args.input("diff_dst", diff_dst, shape, storage=True)
    scale_address = args.input("scale", scale, shapes.features, optional=True)
    saved = [args.input(name, value, shapes.rows) for name, value in statistics]
    diff_src = args.output("diff_src", shape, wanted="diff_src" in outputs, storage=True)
    sums = [args.output(name, shapes.features, wanted=name in outputs) for name in fields[1:]]
    call(op, _context.handle(context), ctypes.byref(shapes.desc), src_address, diff_dst_address, scale_address,
         *saved, diff_src, *sums)
    if shapes.desc.rows == 0:
        # Sums over no rows are 0; the library writes nothing for an empty tensor.
        for address in sums:
            fill(address, shapes.desc.features, 0.0)
    return args.results


def layer_norm_backward(src, diff_dst, save_mean, save_invstd, scale=None, *, normalized_ndim=1,
                        outputs=LayerNormBackwardResult._fields, out=None, context=None):
    """Gradients of a layer norm; returns (diff_src, diff_scale, diff_shift).

    src: that of the forward, or its sum after a forward with a residual (diff_src is
    then the gradient of both src and residual, before the sum's own gradient is added).
    save_mean, save_invstd: those of the forward. outputs: the names of the gradients to
    compute; the others are returned as None. diff_src may be diff_dst (out=diff_dst).
    """
    results = _backward("nk_layer_norm_backward", src, diff_dst,
                        [("save_mean", save_mean), ("save_invstd", save_invstd)], scale, normalized_ndim,
                        outputs, out, context, LayerNormBackwardResult._fields)
    return LayerNormBackwardResult(**results)


def rms_norm_backward(src, diff_dst, save_invrms, scale=None, *, normalized_ndim=1,
                      outputs=RmsNormBackwardResult._fields, out=None, context=None):
    """Gradients of an RMS norm; returns (diff_src, diff_scale). Arguments as in
    layer_norm_backward."""
    results = _backward("nk_rms_norm_backward", src, diff_dst, [("save_invrms", save_invrms)], scale,
                        normalized_ndim, outputs, out, context, RmsNormBackwardResult._fields)
    return RmsNormBackwardResult(**results)
