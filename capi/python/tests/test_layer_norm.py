"""Layer norm and RMS norm from NumPy: results against the float64 reference, residual,
in place, arguments, errors, contexts, DLPack.

Tolerances are those the C test suite enforces on the same computation
(tests/test_layer_norm.cpp), the reference being fed the same float32 inputs (after a
residual, the float32 sum the library returns, itself checked to be src + residual
rounded once):
  dst                         |err| <= 2e-6 (1 + |ref|)
  save_mean, save_invstd/invrms  |err| <= 1e-6 |ref|
  diff_src                    |err| <= 2e-6 max over its row of
                              invstd (|g| + |mean g| + |xhat mean(g xhat)|), g = diff_dst*scale
  diff_scale, diff_shift      |err| <= 1e-6 sum over its column of |terms|
Backward is judged with the statistics the forward saved, as the C suite does.
"""

import re

import numpy as np
import pytest
import torch

import normkit
import reference as ref

EPSILON = 1e-5

# (shape, normalized_ndim): one or more leading dims, one or more normalized dims, a
# single row (statistics of shape ()), one feature (dst is shift), and rows longer than
# a piece of the library's reductions (16384 values).
CASES = [
    ((7, 17), 1),
    ((3, 4, 64), 1),
    ((2, 3, 5, 6), 2),
    ((2, 768), 1),
    ((33,), 1),
    ((4, 3, 7), 3),
    ((5, 1), 1),
    ((3, 16400), 1),
]
OPS = ["layer", "rms"]


def rows_and_features(shape, ndim):
    return shape[:len(shape) - ndim], shape[len(shape) - ndim:]


def inputs(shape, ndim, seed, offset=0.3):
    """src (a different offset per row, so that a row mix-up cannot pass), residual,
    diff_dst, scale, shift."""
    rng = np.random.default_rng(seed)
    rows, features = rows_and_features(shape, ndim)
    row_offset = 0.05 * (np.arange(int(np.prod(rows))) % 17).reshape(rows + (1,) * ndim)
    src = (offset + 1.5 * rng.standard_normal(shape) + row_offset).astype(np.float32)
    residual = (0.5 * rng.standard_normal(shape)).astype(np.float32)
    diff_dst = rng.standard_normal(shape).astype(np.float32)
    scale = rng.uniform(0.5, 1.5, features).astype(np.float32)
    shift = rng.uniform(-1.0, 1.0, features).astype(np.float32)
    return src, residual, diff_dst, scale, shift


def forward(op, src, scale, shift, **kwargs):
    """(dst, save_mean or None, save_invstd or save_invrms, sum) of either op."""
    if op == "layer":
        return tuple(normkit.layer_norm_forward(src, scale, shift, **kwargs))
    dst, invrms, total = normkit.rms_norm_forward(src, scale, **kwargs)
    return dst, None, invrms, total


def backward(op, src, diff_dst, mean, invstd, scale, **kwargs):
    """(diff_src, diff_scale, diff_shift or None) of either op."""
    if op == "layer":
        return tuple(normkit.layer_norm_backward(src, diff_dst, mean, invstd, scale, **kwargs))
    return tuple(normkit.rms_norm_backward(src, diff_dst, invstd, scale, **kwargs)) + (None,)


def as_rows(array, ndim):
    """array as (rows, features) float64."""
    array = np.asarray(array, np.float64)
    return array.reshape(int(np.prod(array.shape[:array.ndim - ndim])), -1)


def f64(array):
    return None if array is None else np.asarray(array, np.float64).reshape(-1)


def assert_within(actual, expected, bound, what):
    """|actual - expected| <= bound everywhere."""
    error = np.abs(np.asarray(actual, np.float64).reshape(np.shape(expected)) - expected)
    worst = np.unravel_index(np.argmax(error - bound), np.shape(expected)) if error.size else None
    assert np.all(error <= bound), (f"{what}: |err| {error[worst]:.3g} > bound {np.asarray(bound)[worst]:.3g} "
                                    f"at {worst} (got {np.asarray(actual).reshape(np.shape(expected))[worst]}, "
                                    f"expected {expected[worst]})")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,ndim", CASES)
@pytest.mark.parametrize("offset", [0.3, 1e4])
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("with_residual", [False, True])
def test_forward_matches_float64(op, shape, ndim, offset, affine, with_residual):
    src, residual, _, scale, shift = inputs(shape, ndim, 1, offset)
    scale, shift = (scale, shift) if affine else (None, None)
    dst, mean, invstd, total = forward(op, src, scale, shift, residual=residual if with_residual else None,
                                       normalized_ndim=ndim, epsilon=EPSILON)
    rows, _ = rows_and_features(shape, ndim)
    assert dst.shape == shape and invstd.shape == rows and dst.dtype == np.float32
    if with_residual:
        # One rounding of the exact sum, as NumPy's float32 addition.
        np.testing.assert_array_equal(total, src + residual)
        x = total
    else:
        assert total is None
        x = src
    want_dst, want_mean, want_invstd = ref.row_norm_forward(as_rows(x, ndim), f64(scale), f64(shift), EPSILON,
                                                            op == "rms")
    assert_within(dst, want_dst, 2e-6 * (1 + np.abs(want_dst)), "dst")
    assert_within(invstd, want_invstd, 1e-6 * want_invstd, "save_invstd")
    if op == "layer":
        assert mean.shape == rows
        assert_within(mean, want_mean, 1e-6 * np.abs(want_mean), "save_mean")


@pytest.mark.parametrize("op", OPS)
@pytest.mark.parametrize("shape,ndim", CASES)
@pytest.mark.parametrize("affine", [True, False])
@pytest.mark.parametrize("with_residual", [False, True])
def test_backward_matches_float64(op, shape, ndim, affine, with_residual):
    src, residual, diff_dst, scale, shift = inputs(shape, ndim, 2, 2.0)
    scale = scale if affine else None
    _, mean, invstd, total = forward(op, src, scale, shift, residual=residual if with_residual else None,
                                     normalized_ndim=ndim)
    # After a residual forward the normalized tensor, and backward's src, is the sum.
    x = total if with_residual else src
    diff_src, diff_scale, diff_shift = backward(op, x, diff_dst, mean, invstd, scale, normalized_ndim=ndim)
    _, features = rows_and_features(shape, ndim)
    assert diff_src.shape == shape and diff_scale.shape == features
    want_src, want_scale, want_shift, bound, scale_terms, shift_terms = ref.row_norm_backward(
        as_rows(x, ndim), as_rows(diff_dst, ndim), f64(mean), f64(invstd), f64(scale), op == "rms")
    assert_within(diff_src, want_src, 2e-6 * bound, "diff_src")
    assert_within(diff_scale, want_scale, 1e-6 * scale_terms, "diff_scale")
    if op == "layer":
        assert diff_shift.shape == features
        assert_within(diff_shift, want_shift, 1e-6 * shift_terms, "diff_shift")
    else:
        assert diff_shift is None


@pytest.mark.parametrize("op", OPS)
def test_normalized_dims_are_flattened_into_features(op):
    """normalized_ndim only says where rows end: the same memory read as (rows, K)
    gives the same bits."""
    src, residual, diff_dst, _, _ = inputs((2, 3, 5, 6), 2, 3)
    for ndim in (1, 2, 3, 4):
        rows = int(np.prod(src.shape[:4 - ndim]))
        flat = (rows, src.size // rows)
        scale = np.linspace(0.5, 1.5, flat[1], dtype=np.float32)
        got = forward(op, src, scale.reshape(src.shape[4 - ndim:]), None, residual=residual, normalized_ndim=ndim)
        want = forward(op, src.reshape(flat), scale, None, residual=residual.reshape(flat))
        for a, b in zip(got, want):
            if b is not None:
                np.testing.assert_array_equal(np.reshape(a, -1), np.reshape(b, -1))
        grads = backward(op, got[3], diff_dst, got[1], got[2], scale.reshape(src.shape[4 - ndim:]),
                         normalized_ndim=ndim)
        want_grads = backward(op, want[3], diff_dst.reshape(flat), want[1], want[2], scale)
        for a, b in zip(grads, want_grads):
            if b is not None:
                np.testing.assert_array_equal(np.reshape(a, -1), np.reshape(b, -1))


def test_one_feature_gives_shift():
    src, _, _, scale, shift = inputs((6, 1), 1, 4)
    result = normkit.layer_norm_forward(src, scale, shift)
    np.testing.assert_array_equal(result.dst, np.broadcast_to(shift, src.shape))


@pytest.mark.parametrize("op", OPS)
def test_backward_computes_only_the_outputs_asked_for(op):
    src, _, diff_dst, scale, shift = inputs((8, 12), 1, 5)
    _, mean, invstd, _ = forward(op, src, scale, shift)
    full = backward(op, src, diff_dst, mean, invstd, scale)
    if op == "layer":
        part = normkit.layer_norm_backward(src, diff_dst, mean, invstd, scale, outputs=("diff_shift",))
        assert part.diff_src is None and part.diff_scale is None
        np.testing.assert_array_equal(part.diff_shift, full[2])
    else:
        part = normkit.rms_norm_backward(src, diff_dst, invstd, scale, outputs=("diff_scale",))
        assert part.diff_src is None
        np.testing.assert_array_equal(part.diff_scale, full[1])
        with pytest.raises(ValueError, match=r"^outputs names \['diff_shift'\]"):
            normkit.rms_norm_backward(src, diff_dst, invstd, scale, outputs=("diff_shift",))
    with pytest.raises(ValueError, match="out gives diff_src"):
        backward(op, src, diff_dst, mean, invstd, scale, outputs=("diff_scale",), out=np.empty_like(src))


@pytest.mark.parametrize("op", OPS)
def test_in_place(op):
    """dst over src or residual, sum over src or residual, diff_src over diff_dst: the
    same bits as out of place."""
    src, residual, diff_dst, scale, shift = inputs((16, 40), 1, 6)
    plain = forward(op, src, scale, shift)
    fused = forward(op, src, scale, shift, residual=residual)
    fields = 4 if op == "layer" else 3

    def out(dst=None, total=None):
        return (dst,) + (None,) * (fields - 2) + (total,)

    a = src.copy()
    got = forward(op, a, scale, shift, out=a)
    assert got[0] is a
    np.testing.assert_array_equal(a, plain[0])
    for dst_over, sum_over in [("src", "residual"), ("residual", "src"), ("src", None), ("residual", None),
                               (None, "src"), (None, "residual")]:
        buffers = {"src": src.copy(), "residual": residual.copy()}
        got = forward(op, buffers["src"], scale, shift, residual=buffers["residual"],
                      out=out(buffers.get(dst_over), buffers.get(sum_over)))
        np.testing.assert_array_equal(got[0], fused[0], err_msg=f"dst over {dst_over}, sum over {sum_over}")
        np.testing.assert_array_equal(got[3], fused[3], err_msg=f"dst over {dst_over}, sum over {sum_over}")
        np.testing.assert_array_equal(got[2], fused[2])
    want = backward(op, fused[3], diff_dst, fused[1], fused[2], scale)
    gradient = diff_dst.copy()
    got = backward(op, fused[3], gradient, fused[1], fused[2], scale, out=gradient)
    assert got[0] is gradient
    for a, b in zip(got, want):
        if b is not None:
            np.testing.assert_array_equal(a, b)


def test_out_arrays_are_written_and_returned():
    src, residual, _, scale, shift = inputs((8, 24), 1, 7)
    want = normkit.layer_norm_forward(src, scale, shift, residual=residual)
    dst, invstd, total = np.empty_like(src), np.empty(8, np.float32), np.empty_like(src)
    got = normkit.layer_norm_forward(src, scale, shift, residual=residual, out=(dst, None, invstd, total))
    assert got.dst is dst and got.save_invstd is invstd and got.sum is total
    for a, b in zip(got, want):
        np.testing.assert_array_equal(a, b)
    with pytest.raises(ValueError, match=r"^out has 3 entries, expected 4"):
        normkit.layer_norm_forward(src, out=(dst, None, invstd))


def test_empty_tensors():
    """No rows: the parameter gradients are sums of nothing, 0. No features: each row's
    statistics are those of no values, NaN. The library writes neither (it returns at
    once on an empty tensor); the package does."""
    empty_rows = np.empty((0, 5), np.float32)
    result = normkit.layer_norm_forward(empty_rows)
    assert result.dst.shape == (0, 5) and result.save_mean.shape == (0,)
    spoiled = np.full(5, 7.0, np.float32)
    grads = normkit.layer_norm_backward(empty_rows, empty_rows, result.save_mean, result.save_invstd,
                                        out=(None, spoiled, None))
    assert grads.diff_scale is spoiled
    np.testing.assert_array_equal(grads.diff_scale, np.zeros(5))
    np.testing.assert_array_equal(grads.diff_shift, np.zeros(5))
    assert normkit.rms_norm_backward(empty_rows, empty_rows, result.save_invstd).diff_scale.tolist() == [0.0] * 5
    no_features = np.empty((3, 0), np.float32)
    result = normkit.layer_norm_forward(no_features, residual=no_features)
    assert result.dst.shape == (3, 0) and result.sum.shape == (3, 0)
    assert np.isnan(result.save_mean).all() and np.isnan(result.save_invstd).all()
    assert np.isnan(normkit.rms_norm_forward(no_features).save_invrms).all()


def test_dlpack_torch_tensors_in_and_out_without_copies():
    src, residual = torch.randn(6, 5, 32), torch.randn(6, 5, 32)
    want = normkit.layer_norm_forward(src.numpy().copy(), residual=residual.numpy().copy())
    dst, mean, invstd, total = torch.empty_like(src), torch.empty(6, 5), torch.empty(6, 5), torch.empty_like(src)
    got = normkit.layer_norm_forward(src, residual=residual, out=(dst, mean, invstd, total))
    assert got.dst is dst and got.sum is total
    np.testing.assert_array_equal(dst.numpy(), want.dst)
    np.testing.assert_array_equal(total.numpy(), want.sum)
    np.testing.assert_array_equal(invstd.numpy(), want.save_invstd)
    # In place on a tensor's own memory.
    want = normkit.rms_norm_forward(src.numpy().copy()).dst
    assert normkit.rms_norm_forward(src, out=src).dst is src
    np.testing.assert_array_equal(src.numpy(), want)
    with pytest.raises(TypeError, match=r"^residual: cannot import it through DLPack: .*require"):
        normkit.layer_norm_forward(src, residual=residual.requires_grad_())


def check_rejected(monkeypatch, error, pattern, op, *args, **kwargs):
    """op(*args, **kwargs) raises error matching pattern, and its C function is never called."""
    called = []

    def recording_call(name, *call_args):
        called.append(name)
        return normkit._library.call(name, *call_args)

    monkeypatch.setattr(normkit.layer_norm, "call", recording_call)
    with pytest.raises(error, match=pattern):
        op(*args, **kwargs)
    assert "nk_" + op.__name__ not in called, f"{op.__name__} called the library before raising {pattern}"
    monkeypatch.undo()


def test_arguments_are_checked_before_the_library_is_called(monkeypatch):
    src = inputs((8, 6), 1, 8)[0]
    ok, rows = np.ones(6, np.float32), np.ones(8, np.float32)
    misaligned = np.zeros(src.nbytes + 1, np.uint8)[1:].view(np.float32).reshape(src.shape)
    read_only = np.empty_like(src)
    read_only.flags.writeable = False
    layer, rms = normkit.layer_norm_forward, normkit.rms_norm_forward
    layer_back, rms_back = normkit.layer_norm_backward, normkit.rms_norm_backward
    rejected = [
        (TypeError, r"^src has dtype float64", layer, (src.astype(np.float64),), {}),
        (ValueError, r"^src is not C-contiguous", rms, (src.T,), {}),
        (TypeError, r"^src is a list", layer, ([[1.0, 2.0]],), {}),
        (TypeError, r"^src is required", rms, (None,), {}),
        (ValueError, r"^src has shape \(8, 6\): expected at least 3 dimensions", layer, (src,),
         {"normalized_ndim": 3}),
        (ValueError, r"^normalized_ndim is 0: expected an int >= 1", rms, (src,), {"normalized_ndim": 0}),
        (TypeError, r"^normalized_ndim is a float", layer, (src,), {"normalized_ndim": 1.0}),
        (ValueError, r"^scale has shape \(8, 6\), expected \(6,\)", layer, (src, src), {}),
        (ValueError, r"^scale has shape \(6,\), expected \(8, 6\)", rms, (src, ok), {"normalized_ndim": 2}),
        (TypeError, r"^shift has dtype float16", layer, (src, ok, ok.astype(np.float16)), {}),
        (ValueError, r"^residual has shape \(8, 5\), expected \(8, 6\)", rms, (src,),
         {"residual": src[:, :5].copy()}),
        (ValueError, r"^residual starts at address .* not aligned", layer, (src,), {"residual": misaligned}),
        (ValueError, r"^out \(dst\) is read-only", rms, (src,), {"out": read_only}),
        (ValueError, r"^out \(save_mean\) has shape \(6,\), expected \(8,\)", layer, (src,),
         {"out": (None, ok, None, None)}),
        (ValueError, r"^out \(sum\) has shape", layer, (src,), {"residual": src, "out": (None, None, None, ok)}),
        (ValueError, r"^out has 4 entries, expected 3", rms, (src,), {"out": (None,) * 4}),
        (TypeError, r"^context is a str", layer, (src,), {"context": "fast"}),
        (TypeError, r"^epsilon is a NoneType", rms, (src,), {"epsilon": None}),
        (ValueError, r"^diff_dst has shape \(4, 6\), expected \(8, 6\)", layer_back,
         (src, src[:4].copy(), rows, rows), {}),
        (TypeError, r"^save_invstd is required", layer_back, (src, src, rows, None), {}),
        (ValueError, r"^save_mean has shape \(6,\), expected \(8,\)", layer_back, (src, src, ok, rows), {}),
        (TypeError, r"^save_invrms has dtype int32", rms_back, (src, src, rows.astype(np.int32)), {}),
        (ValueError, r"^save_invrms has shape \(8,\), expected \(2, 4\)", rms_back,
         (src.reshape(2, 4, 6), src.reshape(2, 4, 6), rows), {}),
        (ValueError, r"^outputs names \['diff_x'\]", layer_back, (src, src, rows, rows), {"outputs": ("diff_x",)}),
        (ValueError, r"^out \(diff_scale\) has shape \(8,\), expected \(6,\)", rms_back, (src, src, rows),
         {"out": (None, rows)}),
    ]
    for error, pattern, op, args, kwargs in rejected:
        check_rejected(monkeypatch, error, pattern, op, *args, **kwargs)


_shared = np.zeros(8, np.float32)


@pytest.mark.parametrize("call,status,pattern", [
    # The sum holds src + residual: without a residual there is nothing to put there.
    (lambda src: normkit.layer_norm_forward(src, out=(None, None, None, np.empty_like(src))),
     normkit.Status.INVALID_ARGUMENT, r"^sum is given but residual is NULL"),
    (lambda src: normkit.rms_norm_forward(src, out=(None, None, np.empty_like(src))),
     normkit.Status.INVALID_ARGUMENT, r"^sum is given but residual is NULL"),
    (lambda src: normkit.layer_norm_forward(src, epsilon=-1.0),
     normkit.Status.INVALID_ARGUMENT, r"^desc->epsilon is -1"),
    (lambda src: normkit.rms_norm_forward(src, epsilon=0.0),
     normkit.Status.INVALID_ARGUMENT, r"^desc->epsilon is 0"),
    (lambda src: normkit.layer_norm_forward(src, out=(None, _shared, _shared, None)),
     normkit.Status.INVALID_ARGUMENT, r"^save_mean and save_invstd overlap"),
    # dst and sum may each be src, not both.
    (lambda src: normkit.layer_norm_forward(src, residual=src.copy(), out=(src, None, None, src)),
     normkit.Status.INVALID_ARGUMENT, r"^sum and dst overlap"),
    (lambda src: normkit.rms_norm_backward(src, src.copy(), np.ones(8, np.float32), out=src),
     normkit.Status.INVALID_ARGUMENT, r"^src and diff_src overlap"),
])
def test_library_errors_raise_normkit_error(call, status, pattern):
    src = inputs((8, 6), 1, 9)[0]
    with pytest.raises(normkit.Error) as caught:
        call(src)
    assert caught.value.status == status
    assert caught.value.status_name == "NK_ERROR_" + status.name
    assert re.search(pattern, caught.value.message), caught.value.message
    assert caught.value.function in ("nk_layer_norm_forward", "nk_rms_norm_forward", "nk_rms_norm_backward")


def everything(op, src, residual, diff_dst, scale, shift, context=None):
    """Every output of one configuration: plain forward, residual forward, backward."""
    plain = forward(op, src, scale, shift, context=context)
    fused = forward(op, src, scale, shift, residual=residual, context=context)
    grads = backward(op, fused[3], diff_dst, fused[1], fused[2], scale, context=context)
    return [a for a in plain + fused + grads if a is not None]


@pytest.mark.parametrize("op", OPS)
def test_every_isa_and_thread_count_gives_the_same_bits(op):
    src, residual, diff_dst, scale, shift = inputs((96, 1000), 1, 10, 5.0)
    default = everything(op, src, residual, diff_dst, scale, shift)
    for isa in normkit.Isa:
        for threads in (1, 2):
            with normkit.Context(num_threads=threads, max_isa=isa) as context:
                assert context.isa <= isa
                got = everything(op, src, residual, diff_dst, scale, shift, context)
                for index, (a, b) in enumerate(zip(got, default)):
                    np.testing.assert_array_equal(a, b, err_msg=f"{isa.name}, {threads} threads, output {index}")


@pytest.mark.parametrize("op", OPS)
def test_a_row_does_not_depend_on_the_others(op):
    """The header's promise: a row's results depend on that row and the parameters only."""
    src, residual, _, scale, shift = inputs((96, 300), 1, 11)
    full = forward(op, src, scale, shift, residual=residual)
    part = forward(op, src[40:43].copy(), scale, shift, residual=residual[40:43].copy())
    for a, b in zip(part, full):
        if b is not None:
            np.testing.assert_array_equal(a, b[40:43])
