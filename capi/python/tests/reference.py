"""Float64 batch normalization, written for obviousness: the judge of the tests."""

import numpy as np


def to_ncs(x, layout):
    """x as (N, C, S) float64, for x in layout 0 (N, C, ...) or 1 (N, ..., C)."""
    x = np.asarray(x, dtype=np.float64)
    if layout == 1:
        x = np.moveaxis(x, -1, 1)
    return x.reshape(x.shape[0], x.shape[1], -1)


def from_ncs(y, shape, layout):
    """Inverse of to_ncs for a tensor of the given shape."""
    if layout == 1:
        moved = (shape[0], shape[-1]) + tuple(shape[1:-1])
        return np.moveaxis(y.reshape(moved), 1, -1)
    return y.reshape(shape)


def forward_training(x, scale, shift, epsilon):
    """(dst, mean, biased var, invstd) of a (N, C, S) float64 tensor."""
    mean = x.mean(axis=(0, 2))
    var = ((x - mean[None, :, None]) ** 2).mean(axis=(0, 2))
    invstd = 1.0 / np.sqrt(var + epsilon)
    dst = (x - mean[None, :, None]) * (invstd * scale)[None, :, None] + shift[None, :, None]
    return dst, mean, var, invstd


def forward_inference(x, mean, var, scale, shift, epsilon):
    invstd = 1.0 / np.sqrt(var + epsilon)
    return (x - mean[None, :, None]) * (invstd * scale)[None, :, None] + shift[None, :, None]


def backward(x, dy, mean, invstd, scale, global_stats=False):
    """(diff_src, diff_scale, diff_shift, sum |dy*xhat|, sum |dy|) per the C header's formulas."""
    xhat = (x - mean[None, :, None]) * invstd[None, :, None]
    diff_scale = (dy * xhat).sum(axis=(0, 2))
    diff_shift = dy.sum(axis=(0, 2))
    if global_stats:
        diff_src = dy * (scale * invstd)[None, :, None]
    else:
        count = x.shape[0] * x.shape[2]
        diff_src = (scale * invstd)[None, :, None] * (
            dy - (diff_shift / count)[None, :, None] - xhat * (diff_scale / count)[None, :, None])
    return diff_src, diff_scale, diff_shift, np.abs(dy * xhat).sum(axis=(0, 2)), np.abs(dy).sum(axis=(0, 2))
