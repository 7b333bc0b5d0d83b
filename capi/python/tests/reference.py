"""Float64 batch, layer, RMS and group normalization, written for obviousness: the judge of the tests."""

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


def row_norm_forward(x, scale, shift, epsilon, rms):
    """(dst, mean, invstd) of a (rows, K) float64 array; RMS norm's invstd is invrms.

    scale / shift: K values or None (1 / 0).
    """
    mean = x.mean(axis=1)
    centered = x if rms else x - mean[:, None]
    invstd = 1.0 / np.sqrt((centered ** 2).mean(axis=1) + epsilon)
    dst = centered * invstd[:, None]
    if scale is not None:
        dst = dst * scale[None, :]
    if shift is not None and not rms:
        dst = dst + shift[None, :]
    return dst, mean, invstd


def row_norm_backward(x, dy, mean, invstd, scale, rms):
    """Gradients of a (rows, K) row norm per the C header's formulas, with the statistics
    as given (mean unused by RMS norm): (diff_src, diff_scale, diff_shift, diff_src_bound,
    diff_scale_terms, diff_shift_terms).

    diff_src_bound: per element, the largest over its row of
    invstd * (|g| + |mean(g)| + |xhat * mean(g * xhat)|); *_terms: per column, the sum of
    the magnitudes of the terms summed.
    """
    xhat = (x if rms else x - mean[:, None]) * invstd[:, None]
    g = dy if scale is None else dy * scale[None, :]
    mean_g = np.zeros(len(x)) if rms else g.mean(axis=1)
    mean_gx = (g * xhat).mean(axis=1)
    diff_src = invstd[:, None] * (g - mean_g[:, None] - xhat * mean_gx[:, None])
    terms = invstd[:, None] * (np.abs(g) + np.abs(mean_g)[:, None] + np.abs(xhat * mean_gx[:, None]))
    bound = np.broadcast_to(terms.max(axis=1, initial=0.0)[:, None], x.shape)
    return (diff_src, (dy * xhat).sum(axis=0), dy.sum(axis=0), bound,
            np.abs(dy * xhat).sum(axis=0), np.abs(dy).sum(axis=0))


def _per_channel(values, shape, groups):
    """C per-channel values (None: None) spread over (N, groups, C/groups * S), the
    shape of a group-norm tensor seen group by group."""
    if values is None:
        return None
    n, c, s = shape
    return np.broadcast_to(np.asarray(values, np.float64).reshape(1, groups, c // groups, 1),
                           (n, groups, c // groups, s)).reshape(n, groups, -1)


def group_norm_forward(x, groups, scale, shift, epsilon):
    """(dst, mean, invstd) of a (N, C, S) float64 tensor, statistics (N, groups).

    scale / shift: C values or None (1 / 0).
    """
    n, c, s = x.shape
    groups_view = x.reshape(n, groups, -1)
    mean = groups_view.mean(axis=2)
    invstd = 1.0 / np.sqrt(((groups_view - mean[:, :, None]) ** 2).mean(axis=2) + epsilon)
    dst = (groups_view - mean[:, :, None]) * invstd[:, :, None]
    if scale is not None:
        dst = dst * _per_channel(scale, x.shape, groups)
    if shift is not None:
        dst = dst + _per_channel(shift, x.shape, groups)
    return dst.reshape(x.shape), mean, invstd


def group_norm_backward(x, dy, mean, invstd, scale, groups):
    """Gradients of a (N, C, S) group norm per the C header's formulas, with the
    statistics as given: (diff_src, diff_scale, diff_shift, diff_src_bound,
    diff_scale_terms, diff_shift_terms).

    diff_src_bound: per element, the largest over its group of
    invstd * (|g| + |mean(g)| + |xhat * mean(g * xhat)|); *_terms: per channel, the sum
    of the magnitudes of the terms summed.
    """
    n, c, s = x.shape
    xhat = (x.reshape(n, groups, -1) - mean[:, :, None]) * invstd[:, :, None]
    dy_groups = dy.reshape(n, groups, -1)
    g = dy_groups if scale is None else dy_groups * _per_channel(scale, x.shape, groups)
    mean_g = g.mean(axis=2)
    mean_gx = (g * xhat).mean(axis=2)
    diff_src = invstd[:, :, None] * (g - mean_g[:, :, None] - xhat * mean_gx[:, :, None])
    terms = invstd[:, :, None] * (np.abs(g) + np.abs(mean_g)[:, :, None] + np.abs(xhat * mean_gx[:, :, None]))
    bound = np.broadcast_to(terms.max(axis=2, initial=0.0)[:, :, None], terms.shape)
    per_channel = lambda t: t.reshape(n, c, s).sum(axis=(0, 2))
    dy_xhat = dy_groups * xhat
    return (diff_src.reshape(x.shape), per_channel(dy_xhat), per_channel(dy_groups), bound.reshape(x.shape),
            per_channel(np.abs(dy_xhat)), per_channel(np.abs(dy_groups)))
