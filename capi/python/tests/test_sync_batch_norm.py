"""The synchronized batch-norm pieces from Python: processes simulated by slices of one batch.

Judged against the float64 reference and against one whole-batch call of the C library:
  statistics and running statistics   1e-6 relative
  dst                                 2e-6 (1 + |ref|)
  diff_src                            2e-6 of the largest term of its channel
  diff_scale, diff_shift              1e-6 of the channel's sum of |terms|
With samples_per_piece = 1 every split of the batch gives the same bits.
"""

import numpy as np
import pytest

import normkit
import reference as ref

SPLITS = [(10,), (3, 7), (0, 4, 6), (2, 2, 3, 3)]


def data(shape, seed, offset=0.0):
    rng = np.random.default_rng(seed)
    return (rng.standard_normal(shape) * 1.5 + offset).astype(np.float32)


def slices(x, sizes):
    bounds = np.cumsum((0,) + tuple(sizes))
    return [x[a:b] for a, b in zip(bounds[:-1], bounds[1:])]


def step(x, dy, sizes, layout, piece, scale, shift):
    """One synchronized forward and backward over the slices; every slice's results."""
    c = x.shape[1] if layout == normkit.Layout.NCS else x.shape[-1]
    xs, dys = slices(x, sizes), slices(dy, sizes)
    merged = normkit.batch_norm_merge_partials(
        [normkit.batch_norm_stats(s, layout=layout, samples_per_piece=piece) for s in xs], c)
    fwd = [normkit.batch_norm_forward_from_partial(merged, s, scale, shift, layout=layout) for s in xs]
    mean, invstd = fwd[0].save_mean, fwd[0].save_invstd
    reduced = normkit.batch_norm_merge_partials(
        [normkit.batch_norm_backward_reduce(s, g, mean, layout=layout, samples_per_piece=piece)
         for s, g in zip(xs, dys)], c)
    bwd = [normkit.batch_norm_backward_from_reduced(reduced, s, g, mean, invstd, scale, layout=layout)
           for s, g in zip(xs, dys)]
    return fwd, bwd


@pytest.mark.parametrize("layout", [normkit.Layout.NCS, normkit.Layout.NSC])
@pytest.mark.parametrize("sizes", SPLITS)
@pytest.mark.parametrize("piece", [0, 1])
def test_slices_match_the_whole_batch(layout, sizes, piece):
    shape = (10, 6, 5, 7) if layout == normkit.Layout.NCS else (10, 5, 7, 6)
    x, dy = data(shape, 3, offset=20.0), data(shape, 4)
    c = shape[1] if layout == normkit.Layout.NCS else shape[-1]
    scale, shift = data((c,), 5) + 2.0, data((c,), 6)
    fwd, bwd = step(x, dy, sizes, layout, piece, scale, shift)
    # Every slice saw the same statistics and the same parameter gradients.
    for f in fwd[1:]:
        assert np.array_equal(f.save_mean, fwd[0].save_mean) and np.array_equal(f.save_invstd, fwd[0].save_invstd)
    for b in bwd[1:]:
        assert np.array_equal(b.diff_scale, bwd[0].diff_scale) and np.array_equal(b.diff_shift, bwd[0].diff_shift)
    xr = ref.to_ncs(x, layout)
    dst, mean, var, invstd = ref.forward_training(xr, scale.astype(np.float64), shift.astype(np.float64), 1e-5)
    got_dst = ref.to_ncs(np.concatenate([f.dst for f in fwd]), layout)
    assert np.all(np.abs(got_dst - dst) <= 2e-6 * (1 + np.abs(dst)))
    assert np.all(np.abs(fwd[0].save_mean - mean) <= 1e-6 * np.abs(mean) + 1e-7)
    assert np.all(np.abs(fwd[0].save_invstd - invstd) <= 1e-6 * invstd)
    # Backward with the saved statistics, as the C library's backward takes them.
    dyr = ref.to_ncs(dy, layout)
    m64, i64 = fwd[0].save_mean.astype(np.float64), fwd[0].save_invstd.astype(np.float64)
    want = ref.backward(xr, dyr, m64, i64, scale.astype(np.float64))
    got_src = ref.to_ncs(np.concatenate([b.diff_src for b in bwd]), layout)
    xhat = (xr - m64[None, :, None]) * i64[None, :, None]
    g = dyr * scale[None, :, None]
    terms = i64[None, :, None] * (np.abs(g) + np.abs(g.mean(axis=(0, 2)))[None, :, None]
                                  + np.abs(xhat * (g * xhat).mean(axis=(0, 2))[None, :, None]))
    bound = 2e-6 * terms.max(axis=(0, 2))[None, :, None]
    assert np.all(np.abs(got_src - want[0]) <= bound)
    assert np.all(np.abs(bwd[0].diff_scale - want[1]) <= 1e-6 * want[3] + 1e-6 * np.abs(want[1]))
    assert np.all(np.abs(bwd[0].diff_shift - want[2]) <= 1e-6 * want[4] + 1e-6 * np.abs(want[2]))


@pytest.mark.parametrize("layout", [normkit.Layout.NCS, normkit.Layout.NSC])
def test_one_piece_per_sample_gives_the_same_bits_for_every_split(layout):
    shape = (10, 6, 5, 7) if layout == normkit.Layout.NCS else (10, 5, 7, 6)
    x, dy = data(shape, 7, offset=1e4), data(shape, 8)
    c = shape[1] if layout == normkit.Layout.NCS else shape[-1]
    scale, shift = data((c,), 9), data((c,), 10)
    first = None
    for sizes in SPLITS:
        fwd, bwd = step(x, dy, sizes, layout, 1, scale, shift)
        got = (np.concatenate([f.dst for f in fwd]), fwd[0].save_mean, fwd[0].save_invstd,
               np.concatenate([b.diff_src for b in bwd]), bwd[0].diff_scale, bwd[0].diff_shift)
        if first is None:
            first = got
        for a, b in zip(got, first):
            assert np.array_equal(a.view(np.uint32), b.view(np.uint32)), sizes


def test_running_statistics_use_the_global_count():
    x = data((9, 3, 4), 11)
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    want_rm, want_rv = rm.copy(), rv.copy()
    normkit.batch_norm_forward_training(x, running_mean=want_rm, running_var=want_rv)
    merged = normkit.batch_norm_merge_partials([normkit.batch_norm_stats(s) for s in slices(x, (4, 5))], 3)
    for s in slices(x, (4, 5)):
        a, b = np.zeros(3, np.float32), np.ones(3, np.float32)
        normkit.batch_norm_forward_from_partial(merged, s, running_mean=a, running_var=b)
        assert np.allclose(a, want_rm, rtol=1e-6, atol=1e-7) and np.allclose(b, want_rv, rtol=1e-6)


def test_bytes_objects_and_torch_tensors_are_accepted():
    torch = pytest.importorskip("torch")
    x = torch.randn(6, 4, 3)
    partials = [bytes(normkit.batch_norm_stats(x[:2])), bytearray(normkit.batch_norm_stats(x[2:]))]
    merged = normkit.batch_norm_merge_partials(partials, 4)
    out = torch.empty_like(x[:2])
    normkit.batch_norm_forward_from_partial(merged, x[:2], out=out)
    want = normkit.batch_norm_forward_training(x.numpy()).dst[:2]
    assert np.allclose(out.numpy(), want, atol=2e-6)


def test_bad_partials_raise_normkit_error_and_bad_arguments_raise_before_the_call():
    x = data((4, 3, 5), 12)
    good = normkit.batch_norm_stats(x)
    corrupt = good.copy()
    corrupt[0] ^= 0xFF  # the magic
    with pytest.raises(normkit.Error) as error:
        normkit.batch_norm_merge_partials([good, corrupt], 3)
    assert error.value.status == normkit.Status.INVALID_ARGUMENT and "partials[1]" in str(error.value)
    with pytest.raises(normkit.Error):  # 3 channels given as 5
        normkit.batch_norm_merge_partials([good], 5)
    with pytest.raises(TypeError, match="partials"):
        normkit.batch_norm_merge_partials(good, 3)
    with pytest.raises(ValueError, match="partials"):
        normkit.batch_norm_merge_partials([], 3)
    with pytest.raises(TypeError, match="samples_per_piece"):
        normkit.batch_norm_stats(x, samples_per_piece=1.5)
    with pytest.raises(TypeError, match="partial"):
        normkit.batch_norm_forward_from_partial([1, 2, 3], x)
    with pytest.raises(ValueError, match="diff_dst"):
        normkit.batch_norm_backward_reduce(x, x[:2], np.zeros(3, np.float32))
