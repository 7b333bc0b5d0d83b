"""Group normalization, instance normalization being groups == C: nk_group_norm_forward,
_backward.

A tensor is (N, C, *spatial) in the NCS layout and (N, *spatial, C) in the NSC layout
(channels-last), as for batch norm; its C channels fall in `groups` groups of
C / groups consecutive channels. scale / shift have C values; the saved statistics are
(N, groups), one per sample and group. Every array is float32, C-contiguous and
aligned; outputs are allocated unless given in out= (an array, or a tuple with one
entry per output, None where one should be allocated).
"""

import collections
import ctypes
import operator

import numpy as np

from . import _context
from ._arrays import Call, check_epsilon, fill
from ._library import GroupNormDesc, call
from .batch_norm import Layout, split_shape

GroupNormResult = collections.namedtuple("GroupNormResult", "dst save_mean save_invstd")
GroupNormBackwardResult = collections.namedtuple("GroupNormBackwardResult", "diff_src diff_scale diff_shift")


def _groups(value, channels):
    # Checked here, not left to nk_group_norm_desc_init, so that the message names the
    # argument as the caller spelled it and the channel count it was held against.
    try:
        groups = operator.index(value)
    except TypeError:
        raise TypeError(f"groups is a {type(value).__name__}: expected an int >= 1 dividing the "
                        f"{channels} channels") from None
    if groups < 1 or channels % groups:
        raise ValueError(f"groups is {groups}: expected an int >= 1 dividing the {channels} channels")
    return groups


class _Shapes:
    """The channels and statistics of a tensor of this shape, and the descriptor for it."""

    def __init__(self, shape, layout, groups, epsilon=1e-5, dtype=0):
        layout, n, c, spatial = split_shape(shape, layout)
        groups = _groups(groups, c)
        self.channels = (c,)
        self.statistics = (n, groups)
        self.empty = n * c * spatial == 0
        self.desc = GroupNormDesc()
        call("nk_group_norm_desc_init", ctypes.byref(self.desc), layout, n, c, spatial, groups)
        self.desc.epsilon = check_epsilon(epsilon)
        self.desc.dtype = dtype


def group_norm_forward(src, groups, scale=None, shift=None, *, layout=Layout.NCS, epsilon=1e-5, out=None,
                       context=None):
    """(src - mean) * invstd * scale + shift, with the mean and biased variance of each
    sample's group of C / groups channels; returns (dst, save_mean, save_invstd).

    groups == C is instance norm, groups == 1 normalizes each sample over all its values.
    save_mean and save_invstd are (N, groups). dst may be src (out=src).
    """
    args = Call(out, GroupNormResult._fields)
    src_address, shape = args.tensor("src", src)
    shapes = _Shapes(shape, layout, groups, epsilon, args.dtype)
    dst_address = args.output("dst", shape, storage=True)
    scale_address = args.input("scale", scale, shapes.channels, optional=True)
    shift_address = args.input("shift", shift, shapes.channels, optional=True)
    saved = [args.output(name, shapes.statistics) for name in ("save_mean", "save_invstd")]
    call("nk_group_norm_forward", _context.handle(context), ctypes.byref(shapes.desc), src_address, dst_address,
         scale_address, shift_address, *saved)
    if shapes.empty:
        # Groups of no values have undefined statistics; the library writes nothing for
        # an empty tensor.
        for address in saved:
            fill(address, shapes.desc.n * shapes.desc.groups, np.nan)
    return GroupNormResult(**args.results)


def group_norm_backward(src, diff_dst, save_mean, save_invstd, groups, scale=None, *, layout=Layout.NCS,
                        outputs=GroupNormBackwardResult._fields, out=None, context=None):
    """Gradients of a group norm; returns (diff_src, diff_scale, diff_shift).

    save_mean, save_invstd: those of the forward, (N, groups). groups: that of the
    forward. outputs: the names of the gradients to compute; the others are returned as
    None. diff_src may be diff_dst (out=diff_dst).
    """
    fields = GroupNormBackwardResult._fields
    unknown = set(outputs) - set(fields)
    if unknown:
        raise ValueError(f"outputs names {sorted(unknown)}: expected a subset of {fields}")
    args = Call(out, fields)
    src_address, shape = args.tensor("src", src)
    shapes = _Shapes(shape, layout, groups, dtype=args.dtype)
    diff_dst_address = args.input("diff_dst", diff_dst, shape, storage=True)
    scale_address = args.input("scale", scale, shapes.channels, optional=True)
    saved = [args.input(name, value, shapes.statistics)
             for name, value in (("save_mean", save_mean), ("save_invstd", save_invstd))]
    diff_src = args.output("diff_src", shape, wanted="diff_src" in outputs, storage=True)
    sums = [args.output(name, shapes.channels, wanted=name in outputs) for name in fields[1:]]
    call("nk_group_norm_backward", _context.handle(context), ctypes.byref(shapes.desc), src_address,
         diff_dst_address, scale_address, *saved, diff_src, *sums)
    if shapes.empty:
        # Sums over no values are 0; the library writes nothing for an empty tensor.
        for address in sums:
            fill(address, shapes.desc.c, 0.0)
    return GroupNormBackwardResult(**args.results)
