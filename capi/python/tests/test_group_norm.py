"""Group norm (and instance norm, groups == C) from NumPy: results against the float64
reference, layouts, in place, arguments, errors, contexts, batch invariance, DLPack.

Tolerances, those of test_layer_norm.py (the C suite's), the reference being fed the
same float32 inputs:
  dst                      |err| <= 2e-6 (1 + |ref|)
  save_mean, save_invstd   |err| <= 1e-6 |ref|  (the data's offset keeps the mean of every
                           group of more than one value above 1, so that relative is
                           meaningful; a group of one value has that value as its mean, exactly)
  diff_src                 |err| <= 2e-6 max over its group of
                           invstd (|g| + |mean g| + |xhat mean(g xhat)|), g = diff_dst*scale
  diff_scale, diff_shift   |err| <= 1e-6 sum over its channel of |terms|
Backward is judged with the statistics the forward saved, as the C suite does.
"""

import re

import numpy as np
import pytest
import torch

import normkit
import reference as ref

NCS, NSC = normkit.Layout.NCS, normkit.Layout.NSC
EPSILON = 1e-5

# (shape, layout, groups): both layouts with 0-3 spatial dims, instance norm
# (groups == C), one group, groups of one value (dst is shift), and groups longer than
# a piece of the library's reductions (16384 values).
CASES = [
    ((4, 6, 5, 7), NCS, 3),
    ((4, 5, 7, 6), NSC, 2),
    ((3, 8, 17), NCS, 8),
    ((3, 17, 8), NSC, 8),
    ((5, 12), NCS, 4),
    ((5, 12), NSC, 12),
    ((2, 4, 3, 4, 5), NCS, 1),
    ((2, 3, 4, 5, 4), NSC, 2),
    ((2, 4, 1), NCS, 4),
    ((2, 4, 100, 100), NCS, 2),
    ((2, 100, 100, 4), NSC, 1),
]


def channels_of(shape, layout):
    return shape[1] if layout == NCS else shape[-1]


def inputs(shape, layout, groups, seed, offset=3.0):
    """src (offset, plus a different offset per sample and group so that a mix-up cannot
    pass), diff_dst, scale, shift."""
    rng = np.random.default_rng(seed)
    n, c = shape[0], channels_of(shape, layout)
    group_offset = 0.1 * (np.arange(n * groups) % 13).reshape(n, groups, 1, 1)
    ncs = offset + 1.5 * rng.standard_normal((n, groups, c // groups, int(np.prod(shape)) // (n * c)))
    src = ref.from_ncs((ncs + group_offset).reshape(n, c, -1), shape, layout).astype(np.float32)
    diff_dst = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, c).astype(np.float32)
    shift = rng.uniform(-1.0, 1.0, c).astype(np.float32)
    return np.ascontiguousarray(src), diff_dst, scale, shift


def f64(array):
    return None if array is None else np.asarray(array, np.float64)


def assert_within(actual, expected, bound, what):
    """|actual - expected| <= bound everywhere."""
    error = np.abs(np.asarray(actual, np.float64).reshape(np.shape(expected)) - expected)
    worst = np.unravel_index(np.argmax(error - bound), np.shape(expected)) if error.size else None
    assert np.all(error <= bound), (f"{what}: |err| {error[worst]:.3g} > bound {np.asarray(bound)[worst]:.3g} "
                                    f"at {worst} (got {np.asarray(actual).reshape(np.shape(expected))[worst]}, "
                                    f"expected {expected[worst]})")


@pytest.mark.parametrize("shape,layout,groups", CASES)
@pytest.mark.parametrize("offset", [3.0, 1e4])
@pytest.mark.parametrize("affine", [True, False])
def test_forward_matches_float64(shape, layout, groups, offset, affine):
    src, _, scale, shift = inputs(shape, layout, groups, 1, offset)
    scale, shift = (scale, shift) if affine else (None, None)
    result = normkit.group_norm_forward(src, groups, scale, shift, layout=layout, epsilon=EPSILON)
    assert result.dst.shape == shape and result.dst.dtype == np.float32
    assert result.save_mean.shape == result.save_invstd.shape == (shape[0], groups)
    dst, mean, invstd = ref.group_norm_forward(ref.to_ncs(src, layout), groups, f64(scale), f64(shift), EPSILON)
    assert_within(result.dst, ref.from_ncs(dst, shape, layout), 2e-6 * (1 + np.abs(ref.from_ncs(dst, shape, layout))),
                  "dst")
    assert_within(result.save_mean, mean, 1e-6 * np.abs(mean), "save_mean")
    assert_within(result.save_invstd, invstd, 1e-6 * invstd, "save_invstd")


@pytest.mark.parametrize("shape,layout,groups", CASES)
@pytest.mark.parametrize("affine", [True, False])
def test_backward_matches_float64(shape, layout, groups, affine):
    src, diff_dst, scale, shift = inputs(shape, layout, groups, 2)
    scale = scale if affine else None
    forward = normkit.group_norm_forward(src, groups, scale, shift, layout=layout)
    result = normkit.group_norm_backward(src, diff_dst, forward.save_mean, forward.save_invstd, groups, scale,
                                         layout=layout)
    c = channels_of(shape, layout)
    assert result.diff_src.shape == shape and result.diff_scale.shape == result.diff_shift.shape == (c,)
    want_src, want_scale, want_shift, bound, scale_terms, shift_terms = ref.group_norm_backward(
        ref.to_ncs(src, layout), ref.to_ncs(diff_dst, layout), f64(forward.save_mean), f64(forward.save_invstd),
        f64(scale), groups)
    assert_within(result.diff_src, ref.from_ncs(want_src, shape, layout), 2e-6 * ref.from_ncs(bound, shape, layout),
                  "diff_src")
    assert_within(result.diff_scale, want_scale, 1e-6 * scale_terms, "diff_scale")
    assert_within(result.diff_shift, want_shift, 1e-6 * shift_terms, "diff_shift")


def test_groups_of_one_value_give_shift():
    src, _, scale, shift = inputs((6, 4), NCS, 4, 3)
    result = normkit.group_norm_forward(src, 4, scale, shift)
    np.testing.assert_array_equal(result.dst, np.broadcast_to(shift, src.shape))


def test_backward_computes_only_the_outputs_asked_for():
    src, diff_dst, scale, shift = inputs((4, 6, 9), NCS, 3, 4)
    forward = normkit.group_norm_forward(src, 3, scale, shift)
    full = normkit.group_norm_backward(src, diff_dst, forward.save_mean, forward.save_invstd, 3, scale)
    part = normkit.group_norm_backward(src, diff_dst, forward.save_mean, forward.save_invstd, 3, scale,
                                       outputs=("diff_shift",))
    assert part.diff_src is None and part.diff_scale is None
    np.testing.assert_array_equal(part.diff_shift, full.diff_shift)
    with pytest.raises(ValueError, match="out gives diff_src"):
        normkit.group_norm_backward(src, diff_dst, forward.save_mean, forward.save_invstd, 3, scale,
                                    outputs=("diff_scale",), out=np.empty_like(src))


@pytest.mark.parametrize("layout", [NCS, NSC])
def test_in_place_gives_the_same_bits(layout):
    src, diff_dst, scale, shift = inputs((4, 6, 5, 6), layout, 3, 5)
    want = normkit.group_norm_forward(src, 3, scale, shift, layout=layout)
    buffer = src.copy()
    got = normkit.group_norm_forward(buffer, 3, scale, shift, layout=layout, out=buffer)
    assert got.dst is buffer
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    want = normkit.group_norm_backward(src, diff_dst, want.save_mean, want.save_invstd, 3, scale, layout=layout)
    gradient = diff_dst.copy()
    got = normkit.group_norm_backward(src, gradient, got.save_mean, got.save_invstd, 3, scale, layout=layout,
                                      out=gradient)
    assert got.diff_src is gradient
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)


def test_out_arrays_are_written_and_returned():
    src, _, scale, shift = inputs((4, 6, 5), NCS, 2, 6)
    want = normkit.group_norm_forward(src, 2, scale, shift)
    dst, invstd = np.empty_like(src), np.empty((4, 2), np.float32)
    got = normkit.group_norm_forward(src, 2, scale, shift, out=(dst, None, invstd))
    assert got.dst is dst and got.save_invstd is invstd
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"^out has 2 entries, expected 3"):
        normkit.group_norm_forward(src, 2, out=(dst, invstd))


def test_empty_tensors():
    """No samples: the parameter gradients are sums of nothing, 0. No spatial values:
    each group's statistics are those of no values, NaN. The library writes neither (it
    returns at once on an empty tensor); the package does."""
    no_samples = np.empty((0, 6, 4), np.float32)
    result = normkit.group_norm_forward(no_samples, 3)
    assert result.dst.shape == (0, 6, 4) and result.save_mean.shape == (0, 3)
    spoiled = np.full(6, 7.0, np.float32)
    grads = normkit.group_norm_backward(no_samples, no_samples, result.save_mean, result.save_invstd, 3,
                                        out=(None, spoiled, None))
    assert grads.diff_scale is spoiled
    np.testing.assert_array_equal(grads.diff_scale, np.zeros(6))
    np.testing.assert_array_equal(grads.diff_shift, np.zeros(6))
    no_values = np.empty((2, 0, 6), np.float32)
    result = normkit.group_norm_forward(no_values, 2, layout=NSC)
    assert result.dst.shape == (2, 0, 6) and result.save_invstd.shape == (2, 2)
    assert np.isnan(result.save_mean).all() and np.isnan(result.save_invstd).all()
    grads = normkit.group_norm_backward(no_values, no_values, result.save_mean, result.save_invstd, 2, layout=NSC)
    np.testing.assert_array_equal(grads.diff_scale, np.zeros(6))


def test_dlpack_torch_tensors_in_and_out_without_copies():
    src = torch.randn(6, 5, 4, 4) + 2
    want = normkit.group_norm_forward(src.numpy().copy(), 5)
    dst, mean, invstd = torch.empty_like(src), torch.empty(6, 5), torch.empty(6, 5)
    got = normkit.group_norm_forward(src, 5, out=(dst, mean, invstd))
    assert got.dst is dst and got.save_mean is mean
    np.testing.assert_array_equal(dst.numpy(), want.dst)
    np.testing.assert_array_equal(invstd.numpy(), want.save_invstd)
    with pytest.raises(TypeError, match=r"^src: cannot import it through DLPack: .*require"):
        normkit.group_norm_forward(src.requires_grad_(), 5)


def check_rejected(monkeypatch, error, pattern, op, *args, **kwargs):
    """op(*args, **kwargs) raises error matching pattern, and its C function is never
    called; the names of the C functions that were (descriptor set-up) are returned."""
    called = []

    def recording_call(name, *call_args):
        called.append(name)
        return normkit._library.call(name, *call_args)

    monkeypatch.setattr(normkit.group_norm, "call", recording_call)
    with pytest.raises(error, match=pattern):
        op(*args, **kwargs)
    monkeypatch.undo()
    assert "nk_" + op.__name__ not in called, f"{op.__name__} called the library before raising {pattern}"
    return called


def test_arguments_are_checked_before_the_library_is_called(monkeypatch):
    src = inputs((8, 6, 5), NCS, 3, 7)[0]
    ok, stats = np.ones(6, np.float32), np.ones((8, 3), np.float32)
    misaligned = np.zeros(src.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(src.shape)
    read_only = np.empty_like(src)
    read_only.flags.writeable = False
    forward, backward = normkit.group_norm_forward, normkit.group_norm_backward
    rejected = [
        (TypeError, r"^src has dtype float64", forward, (src.astype(np.float64), 3), {}),
        (ValueError, r"^src is not C-contiguous", forward, (src.transpose(0, 2, 1), 3), {}),
        (ValueError, r"^src has shape \(8,\): expected at least 2 dimensions", forward, (src[:, 0, 0].copy(), 1), {}),
        (TypeError, r"^src is a list", forward, ([[1.0, 2.0]], 1), {}),
        (TypeError, r"^src is required", forward, (None, 1), {}),
        (ValueError, r"^src starts at address .* not aligned", forward, (misaligned, 3), {}),
        (ValueError, r"^layout is 7", forward, (src, 3), {"layout": 7}),
        (ValueError, r"^scale has shape \(5,\), expected \(6,\)", forward, (src, 3, ok[:5].copy()), {}),
        # Channels-last: the last dim holds the channels, 5 of them here.
        (ValueError, r"^scale has shape \(6,\), expected \(5,\)", forward, (src, 5, ok), {"layout": NSC}),
        (TypeError, r"^shift has dtype float16", forward, (src, 3, ok, ok.astype(np.float16)), {}),
        (ValueError, r"^out \(dst\) is read-only", forward, (src, 3), {"out": read_only}),
        (ValueError, r"^out \(save_mean\) has shape \(8,\), expected \(8, 3\)", forward, (src, 3),
         {"out": (None, stats[:, 0].copy(), None)}),
        (TypeError, r"^context is a str", forward, (src, 3), {"context": "fast"}),
        (TypeError, r"^epsilon is a NoneType", forward, (src, 3), {"epsilon": None}),
        (ValueError, r"^diff_dst has shape \(4, 6, 5\), expected \(8, 6, 5\)", backward,
         (src, src[:4].copy(), stats, stats, 3), {}),
        (TypeError, r"^save_invstd is required", backward, (src, src, stats, None, 3), {}),
        (ValueError, r"^save_mean has shape \(8, 2\), expected \(8, 3\)", backward,
         (src, src, stats[:, :2].copy(), stats, 3), {}),
        (ValueError, r"^outputs names \['diff_x'\]", backward, (src, src, stats, stats, 3), {"outputs": ("diff_x",)}),
        (ValueError, r"^out \(diff_shift\) has shape \(8,\), expected \(6,\)", backward, (src, src, stats, stats, 3),
         {"out": (None, None, stats[:, 0].copy())}),
    ]
    for error, pattern, op, args, kwargs in rejected:
        check_rejected(monkeypatch, error, pattern, op, *args, **kwargs)


@pytest.mark.parametrize("groups,error,pattern", [
    (4, ValueError, r"^groups is 4: expected an int >= 1 dividing the 6 channels"),
    (0, ValueError, r"^groups is 0: expected an int >= 1 dividing the 6 channels"),
    (-3, ValueError, r"^groups is -3: expected an int >= 1 dividing the 6 channels"),
    (12, ValueError, r"^groups is 12: expected an int >= 1 dividing the 6 channels"),
    (3.0, TypeError, r"^groups is a float: expected an int >= 1 dividing the 6 channels"),
    (None, TypeError, r"^groups is a NoneType"),
])
def test_groups_are_checked_before_any_library_call(monkeypatch, groups, error, pattern):
    src, diff_dst, _, _ = inputs((4, 6, 5), NCS, 3, 8)
    stats = np.ones((4, 3), np.float32)
    assert check_rejected(monkeypatch, error, pattern, normkit.group_norm_forward, src, groups) == []
    assert check_rejected(monkeypatch, error, pattern, normkit.group_norm_backward, src, diff_dst, stats, stats,
                          groups) == []
    # Channels-last: the channels are the last dim.
    channels_last = np.ascontiguousarray(np.moveaxis(src, 1, -1))
    assert check_rejected(monkeypatch, error, pattern, normkit.group_norm_forward, channels_last, groups,
                          layout=NSC) == []


_shared = np.zeros((8, 3), np.float32)


@pytest.mark.parametrize("call,pattern", [
    (lambda src: normkit.group_norm_forward(src, 3, epsilon=-1.0), r"^desc->epsilon is -1"),
    (lambda src: normkit.group_norm_forward(src, 3, epsilon=float("inf")), r"^desc->epsilon is inf"),
    (lambda src: normkit.group_norm_forward(src, 3, out=(None, _shared, _shared)),
     r"^save_mean and save_invstd overlap"),
    (lambda src: normkit.group_norm_forward(src, 3, scale=_shared.reshape(-1)[:6], out=(None, _shared, None)),
     r"^scale and save_mean overlap"),
    (lambda src: normkit.group_norm_backward(src, src.copy(), _shared, _shared.copy(), 3, out=src),
     r"^src and diff_src overlap"),
])
def test_library_errors_raise_normkit_error(call, pattern):
    src = inputs((8, 6, 5), NCS, 3, 9)[0]
    with pytest.raises(normkit.Error) as caught:
        call(src)
    assert caught.value.status == normkit.Status.INVALID_ARGUMENT
    assert caught.value.status_name == "NK_ERROR_INVALID_ARGUMENT"
    assert re.search(pattern, caught.value.message), caught.value.message
    assert caught.value.function in ("nk_group_norm_forward", "nk_group_norm_backward")


def everything(src, diff_dst, scale, shift, layout, groups, context=None):
    forward = normkit.group_norm_forward(src, groups, scale, shift, layout=layout, context=context)
    grads = normkit.group_norm_backward(src, diff_dst, forward.save_mean, forward.save_invstd, groups, scale,
                                        layout=layout, context=context)
    return list(forward) + list(grads)


@pytest.mark.parametrize("shape,layout,groups", [((16, 32, 24, 20), NCS, 8), ((16, 24, 20, 32), NSC, 8),
                                                 ((8, 64, 200), NCS, 64), ((8, 200, 64), NSC, 1)])
def test_every_isa_and_thread_count_gives_the_same_bits(shape, layout, groups):
    src, diff_dst, scale, shift = inputs(shape, layout, groups, 10, 5.0)
    default = everything(src, diff_dst, scale, shift, layout, groups)
    for isa in normkit.Isa:
        for threads in (1, 2):
            with normkit.Context(num_threads=threads, max_isa=isa) as context:
                assert context.isa <= isa
                got = everything(src, diff_dst, scale, shift, layout, groups, context)
                for index, (a, b) in enumerate(zip(got, default)):
                    np.testing.assert_array_equal(a, b, err_msg=f"{isa.name}, {threads} threads, output {index}")


@pytest.mark.parametrize("shape,layout,groups", [((24, 12, 7, 9), NCS, 4), ((24, 7, 9, 12), NSC, 12),
                                                 ((24, 12, 9), NSC, 3)])
def test_a_sample_does_not_depend_on_the_others(shape, layout, groups):
    """The header's promise: a group's results depend on its values and the parameters
    only. A sample alone gives the bits it gets in a batch (diff_scale and diff_shift,
    sums over the batch, excepted)."""
    src, diff_dst, scale, shift = inputs(shape, layout, groups, 11)
    full = everything(src, diff_dst, scale, shift, layout, groups)
    for first, last in [(10, 11), (5, 8)]:
        part = everything(src[first:last].copy(), diff_dst[first:last].copy(), scale, shift, layout, groups)
        for index in range(4):  # dst, save_mean, save_invstd, diff_src
            np.testing.assert_array_equal(part[index], full[index][first:last], err_msg=f"output {index}")
