"""float16 NumPy arrays, and torch float16 / bfloat16 tensors, through every op.

The library computes in float32 and rounds each result once (to nearest even), and its
statistics are the float32 path's: so a float16 / bfloat16 call must give, bit for bit,
the float32 call on the same (converted) values with its tensor results rounded by
NumPy's or torch's own float32 -> float16 / bfloat16 conversion (also to nearest even).
The C suites judge the float32 arithmetic against float64 (tests/test_*_half.cpp).
"""

import numpy as np
import pytest
import torch

import normkit
import normkit.torch as nkt

rng = np.random.default_rng(26)


def half(shape):
    return rng.standard_normal(shape).astype(np.float16)


def same(a, b):
    """Bitwise equality of two arrays of one dtype (NaN-safe)."""
    a, b = np.asarray(a), np.asarray(b)
    return a.dtype == b.dtype and a.shape == b.shape and a.tobytes() == b.tobytes()


def test_layer_and_rms_norm_float16_are_the_float32_path_rounded():
    x, r, dy = half((7, 96)), half((7, 96)), half((7, 96))
    scale = rng.uniform(0.5, 1.5, 96).astype(np.float32)
    shift = rng.uniform(-1, 1, 96).astype(np.float32)
    got = normkit.layer_norm_forward(x, scale, shift, residual=r)
    want = normkit.layer_norm_forward(x.astype(np.float32), scale, shift, residual=r.astype(np.float32))
    assert got.dst.dtype == np.float16 and got.save_mean.dtype == np.float32
    assert same(got.dst, want.dst.astype(np.float16)) and same(got.sum, want.sum.astype(np.float16))
    assert same(got.save_mean, want.save_mean) and same(got.save_invstd, want.save_invstd)
    back = normkit.rms_norm_backward(x, dy, normkit.rms_norm_forward(x, scale).save_invrms, scale)
    back32 = normkit.rms_norm_backward(x.astype(np.float32), dy.astype(np.float32),
                                       normkit.rms_norm_forward(x.astype(np.float32), scale).save_invrms, scale)
    assert same(back.diff_src, back32.diff_src.astype(np.float16)) and same(back.diff_scale, back32.diff_scale)


@pytest.mark.parametrize("layout", [normkit.Layout.NCS, normkit.Layout.NSC])
def test_group_and_batch_norm_float16_are_the_float32_path_rounded(layout):
    x, dy = half((3, 8, 5, 8)), half((3, 8, 5, 8))  # 8 channels in either layout
    x32, dy32 = x.astype(np.float32), dy.astype(np.float32)
    g = normkit.group_norm_forward(x, 4, layout=layout)
    g32 = normkit.group_norm_forward(x32, 4, layout=layout)
    assert same(g.dst, g32.dst.astype(np.float16)) and same(g.save_invstd, g32.save_invstd)
    gb = normkit.group_norm_backward(x, dy, g.save_mean, g.save_invstd, 4, layout=layout)
    gb32 = normkit.group_norm_backward(x32, dy32, g.save_mean, g.save_invstd, 4, layout=layout)
    assert same(gb.diff_src, gb32.diff_src.astype(np.float16)) and same(gb.diff_scale, gb32.diff_scale)
    b = normkit.batch_norm_forward_training(x, layout=layout)
    b32 = normkit.batch_norm_forward_training(x32, layout=layout)
    assert same(b.dst, b32.dst.astype(np.float16)) and same(b.save_mean, b32.save_mean)
    bb = normkit.batch_norm_backward(x, dy, b.save_mean, b.save_invstd, layout=layout)
    bb32 = normkit.batch_norm_backward(x32, dy32, b.save_mean, b.save_invstd, layout=layout)
    assert same(bb.diff_src, bb32.diff_src.astype(np.float16)) and same(bb.diff_shift, bb32.diff_shift)
    # One rank of the synchronized step: the partial carries the dtype through the merge.
    merged = normkit.batch_norm_merge_partials([normkit.batch_norm_stats(x, layout=layout)], 8)
    s = normkit.batch_norm_forward_from_partial(merged, x, layout=layout)
    assert same(s.dst, b.dst)


def test_mixed_or_unsupported_dtypes_are_refused():
    x = half((4, 8))
    with pytest.raises(TypeError, match=r"^residual has dtype float32: expected float16"):
        normkit.layer_norm_forward(x, residual=x.astype(np.float32))
    with pytest.raises(TypeError, match=r"^scale has dtype float16: expected float32"):
        normkit.layer_norm_forward(x, x[0])
    with pytest.raises(TypeError, match=r"^out \(dst\) has dtype float32: expected float16"):
        normkit.group_norm_forward(x, 2, out=(np.empty((4, 8), np.float32), None, None))
    with pytest.raises(TypeError, match=r"^src has dtype float64"):
        normkit.layer_norm_forward(x.astype(np.float64))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16])
def test_torch_modules_in_half_precision_are_the_float32_modules_rounded(dtype):
    torch.manual_seed(26)
    cases = [
        (nkt.LayerNorm(48), (6, 48)),
        (nkt.RMSNorm(48), (6, 48)),
        (nkt.GroupNorm(4, 8), (3, 8, 5, 5)),
        (nkt.BatchNorm2d(8), (3, 8, 5, 5)),
    ]
    for module, shape in cases:
        x = torch.randn(shape).to(dtype).requires_grad_()
        x32 = x.detach().float().requires_grad_()
        grad = torch.randn(shape).to(dtype)
        y = module(x)
        module.zero_grad()
        if hasattr(module, "running_mean") and module.running_mean is not None:
            module.running_mean.zero_()
            module.running_var.fill_(1)
        y.backward(grad)
        weight_grad = None if module.weight is None else module.weight.grad.clone()
        module.zero_grad()
        if hasattr(module, "running_mean") and module.running_mean is not None:
            module.running_mean.zero_()
            module.running_var.fill_(1)
        y32 = module(x32)
        y32.backward(grad.float())
        name = type(module).__name__
        assert y.dtype == dtype and x.grad.dtype == dtype, name
        assert torch.equal(y.view(torch.int16), y32.detach().to(dtype).view(torch.int16)), name
        assert torch.equal(x.grad.view(torch.int16), x32.grad.to(dtype).view(torch.int16)), name
        if weight_grad is not None:
            assert torch.equal(weight_grad, module.weight.grad), name
