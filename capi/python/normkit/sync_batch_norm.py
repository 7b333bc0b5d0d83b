"""Synchronized batch normalization: the pieces of a data-parallel training step.

Each process holds a slice of the global batch along N. It computes its slice's
statistics as bytes (batch_norm_stats), exchanges them with the others over any
transport (mpi4py's comm.allgather, sockets, files: normkit does no I/O), merges every
process's bytes in the same order (batch_norm_merge_partials, rank order = the global
batch order), and normalizes its slice with the merged statistics
(batch_norm_forward_from_partial). Backward: batch_norm_backward_reduce, the same
exchange and merge, batch_norm_backward_from_reduced. The bytes are NumPy uint8 arrays;
their layout is described in normkit.h. samples_per_piece = g > 0 makes the results
bitwise identical for every split of the batch whose slices start at multiples of g.
"""

import ctypes

import numpy as np

from . import _context
from ._arrays import Call
from ._library import call
from .batch_norm import (BIASED_RUNNING_VAR, KERAS_MOMENTUM, BackwardResult, Layout, TrainingResult, _desc)


def _check_piece(samples_per_piece):
    if not isinstance(samples_per_piece, (int, np.integer)) or isinstance(samples_per_piece, bool):
        raise TypeError(f"samples_per_piece is a {type(samples_per_piece).__name__}: expected an int")
    return int(samples_per_piece)


def _partial_size(desc, samples_per_piece):
    size = ctypes.c_int64()
    call("nk_batch_norm_partial_size", ctypes.byref(desc), samples_per_piece, ctypes.byref(size))
    return size.value


def _as_bytes(name, value):
    """A C-contiguous uint8 view of a partial (bytes, bytearray, an array): no copy of an
    array, one of immutable bytes (the library only reads it)."""
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = np.frombuffer(value, np.uint8)
    if not isinstance(value, np.ndarray):
        raise TypeError(f"{name} is a {type(value).__name__}: expected bytes or a uint8 array")
    if not value.flags.c_contiguous:
        raise ValueError(f"{name} is not contiguous")
    return value.view(np.uint8).reshape(-1)


def batch_norm_stats(src, *, layout=Layout.NCS, samples_per_piece=0, context=None):
    """The statistics of this slice (src: (n, C, *spatial), or channels-last) as bytes."""
    samples_per_piece = _check_piece(samples_per_piece)
    args = Call(None, ())
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, dtype=args.dtype)
    partial = np.empty(_partial_size(desc, samples_per_piece), np.uint8)
    call("nk_batch_norm_stats", _context.handle(context), ctypes.byref(desc), samples_per_piece, src_address,
         partial.ctypes.data, partial.size)
    return partial


def batch_norm_merge_partials(partials, channels):
    """Every process's partials (of one kind), folded in the order given, as one partial."""
    if isinstance(partials, (bytes, bytearray, np.ndarray)):
        raise TypeError("partials is one buffer: expected a sequence of partials (one per process)")
    views = [_as_bytes(f"partials[{i}]", p) for i, p in enumerate(partials)]
    if not views:
        raise ValueError("partials is empty: expected at least one partial")
    # The partials record the dtype of the tensors they came from (header bytes 8-11);
    # the library checks that they agree.
    dtype = int(views[0][8:12].view(np.int32)[0]) if views[0].size >= 12 else 0
    desc = _desc((0, channels), Layout.NCS, dtype=dtype)
    merged = np.empty(_partial_size(desc, 0), np.uint8)
    addresses = (ctypes.c_void_p * len(views))(*[v.ctypes.data for v in views])
    sizes = (ctypes.c_int64 * len(views))(*[v.size for v in views])
    call("nk_batch_norm_merge_partials", ctypes.byref(desc), addresses, sizes, len(views), merged.ctypes.data,
         merged.size)
    return merged


def batch_norm_forward_from_partial(partial, src, scale=None, shift=None, running_mean=None, running_var=None, *,
                                    layout=Layout.NCS, epsilon=1e-5, momentum=0.1, keras_momentum=False,
                                    biased_running_var=False, out=None, context=None):
    """batch_norm_forward_training of this slice with the (merged) statistics of `partial`:
    returns (dst, save_mean, save_invstd); running statistics are updated in place with the
    global count."""
    flags = (KERAS_MOMENTUM if keras_momentum else 0) | (BIASED_RUNNING_VAR if biased_running_var else 0)
    partial = _as_bytes("partial", partial)
    args = Call(out, TrainingResult._fields)
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, epsilon, momentum, flags, dtype=args.dtype)
    channels = (desc.c,)
    call("nk_batch_norm_forward_from_partial", _context.handle(context), ctypes.byref(desc), partial.ctypes.data,
         partial.size, src_address, args.output("dst", shape, storage=True),
         args.input("scale", scale, channels, optional=True),
         args.input("shift", shift, channels, optional=True),
         args.input("running_mean", running_mean, channels, optional=True, written=True),
         args.input("running_var", running_var, channels, optional=True, written=True),
         args.output("save_mean", channels), args.output("save_invstd", channels))
    return TrainingResult(**args.results)


def batch_norm_backward_reduce(src, diff_dst, save_mean, *, layout=Layout.NCS, samples_per_piece=0, context=None):
    """This slice's per-channel sum(diff_dst) and sum(diff_dst * (src - save_mean)) as bytes."""
    samples_per_piece = _check_piece(samples_per_piece)
    args = Call(None, ())
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, dtype=args.dtype)
    reduced = np.empty(_partial_size(desc, samples_per_piece), np.uint8)
    call("nk_batch_norm_backward_reduce", _context.handle(context), ctypes.byref(desc), samples_per_piece,
         src_address, args.input("diff_dst", diff_dst, shape, storage=True), args.input("save_mean", save_mean, (desc.c,)),
         reduced.ctypes.data, reduced.size)
    return reduced


def batch_norm_backward_from_reduced(reduced, src, diff_dst, save_mean, save_invstd, scale=None, *,
                                     layout=Layout.NCS, outputs=BackwardResult._fields, out=None, context=None):
    """Gradients of this slice with the (merged) gradient sums of `reduced`: returns
    (diff_src, diff_scale, diff_shift); diff_scale and diff_shift are the whole batch's."""
    unknown = set(outputs) - set(BackwardResult._fields)
    if unknown:
        raise ValueError(f"outputs names {sorted(unknown)}: expected a subset of {BackwardResult._fields}")
    reduced = _as_bytes("reduced", reduced)
    args = Call(out, BackwardResult._fields)
    src_address, shape = args.tensor("src", src)
    desc = _desc(shape, layout, dtype=args.dtype)
    channels = (desc.c,)
    call("nk_batch_norm_backward_from_reduced", _context.handle(context), ctypes.byref(desc), reduced.ctypes.data,
         reduced.size, src_address, args.input("diff_dst", diff_dst, shape, storage=True),
         args.input("scale", scale, channels, optional=True),
         args.input("save_mean", save_mean, channels), args.input("save_invstd", save_invstd, channels),
         args.output("diff_src", shape, wanted="diff_src" in outputs, storage=True),
         args.output("diff_scale", channels, wanted="diff_scale" in outputs),
         args.output("diff_shift", channels, wanted="diff_shift" in outputs))
    return BackwardResult(**args.results)
