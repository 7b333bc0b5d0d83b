"""The batch-norm fusions from Python: the ReLU and the residual (normkit.batch_norm_*,
normkit.torch.BatchNormReLU*d), backward through them, and the folds
(normkit.batch_norm_fold, normkit.torch.fold_batch_norm).

The judge is float64: NumPy formulas for the functions, torch's own modules in float64
for the PyTorch modules. Tolerances: outputs 1e-5 absolute (unit-scale values), input
gradients 1e-5 relative to their largest value, folded values to float32 rounding."""

import ctypes

import numpy as np
import pytest
import torch

import normkit
import normkit.torch as nkt


def reference_forward(x, r, relu):
    x64 = x.astype(np.float64)
    mean = x64.mean(axis=(0, 2), keepdims=True)
    var = x64.var(axis=(0, 2), keepdims=True)
    y = (x64 - mean) / np.sqrt(var + 1e-5)
    if r is not None:
        y = y + r
    return np.maximum(y, 0) if relu else y


@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("relu", [False, True])
def test_forward_training_and_inference(residual, relu):
    rng = np.random.default_rng(1)
    x = rng.normal(1.0, 2.0, (6, 5, 7)).astype(np.float32)
    r = rng.normal(size=x.shape).astype(np.float32) if residual else None
    y, mean, invstd = normkit.batch_norm_forward_training(x, residual=r, relu=relu)
    np.testing.assert_allclose(y, reference_forward(x, r, relu), atol=1e-5, rtol=0)
    var = 1.0 / invstd.astype(np.float64) ** 2 - 1e-5
    yi = normkit.batch_norm_forward_inference(x, mean, var.astype(np.float32), residual=r, relu=relu)
    np.testing.assert_allclose(yi, reference_forward(x, r, relu), atol=1e-5, rtol=0)


def test_backward_relu_masks_by_dst():
    rng = np.random.default_rng(2)
    x = rng.normal(size=(8, 4, 9)).astype(np.float32)
    r = rng.normal(size=x.shape).astype(np.float32)
    dy = rng.normal(size=x.shape).astype(np.float32)
    y, mean, invstd = normkit.batch_norm_forward_training(x, residual=r, relu=True)
    g = np.where(y <= 0, 0, dy).astype(np.float32)
    fused = normkit.batch_norm_backward_relu(x, dy, y, mean, invstd)
    plain = normkit.batch_norm_backward(x, g, mean, invstd)
    assert np.array_equal(fused.diff_residual, g)
    assert np.array_equal(fused.diff_src, plain.diff_src)  # the same bits as the unfused calls
    assert np.array_equal(fused.diff_scale, plain.diff_scale)
    only = normkit.batch_norm_backward_relu(x, dy, y, mean, invstd, outputs=("diff_residual",))
    assert only.diff_src is None and np.array_equal(only.diff_residual, g)
    # The v1 backward has no dst to mask with: the flag is refused, naming the v2 call.
    desc = normkit.batch_norm._desc(x.shape, normkit.Layout.NCS, flags=normkit.batch_norm.FUSE_RELU)
    with pytest.raises(normkit.Error, match="nk_batch_norm_backward_v2") as error:
        normkit._library.call("nk_batch_norm_backward", None, ctypes.byref(desc), x.ctypes.data, dy.ctypes.data,
                              None, mean.ctypes.data, invstd.ctypes.data, g.ctypes.data, None, None)
    assert error.value.status == normkit.Status.INVALID_ARGUMENT


def test_fold_matches_the_float64_formula():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(6, 3, 3, 3)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    mean, var = rng.normal(size=6).astype(np.float32), rng.uniform(0.1, 2, 6).astype(np.float32)
    scale, shift = rng.uniform(0.5, 2, 6).astype(np.float32), rng.normal(size=6).astype(np.float32)
    fw, fb = normkit.batch_norm_fold(mean, var, w, b, scale, shift, epsilon=1e-3)
    s = scale.astype(np.float64) / np.sqrt(var.astype(np.float64) + np.float64(np.float32(1e-3)))
    assert np.array_equal(fw, (w * s[:, None, None, None]).astype(np.float32))
    assert np.array_equal(fb, ((b - mean.astype(np.float64)) * s + shift).astype(np.float32))
    with pytest.raises(ValueError, match="mean"):
        normkit.batch_norm_fold(mean[:5], var, w)


@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("residual", [False, True])
@pytest.mark.parametrize("training", [True, False])
def test_batch_norm_relu_2d_against_torch_in_float64(channels_last, residual, training):
    torch.manual_seed(4)
    ours = nkt.BatchNormReLU2d(5)
    judge = torch.nn.BatchNorm2d(5).double()
    with torch.no_grad():
        for module in (ours, judge):
            module.weight.uniform_(0.5, 1.5)
            module.bias.uniform_(-0.5, 0.5)
            module.running_mean.uniform_(-0.5, 0.5)
            module.running_var.uniform_(0.5, 1.5)
        judge.load_state_dict({k: v.double() for k, v in ours.state_dict().items()})
    ours.train(training)
    judge.train(training)
    x = (torch.randn(4, 5, 6, 7) * 2 + 1).float()
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    r = torch.randn(4, 5, 6, 7) if residual else None
    x.requires_grad_(True)
    if r is not None:
        r.requires_grad_(True)
    y = ours(x, r)
    x64 = x.detach().double().requires_grad_(True)
    r64 = None if r is None else r.detach().double().requires_grad_(True)
    y64 = judge(x64)
    y64 = torch.relu(y64 + r64 if r64 is not None else y64)
    assert float((y.double() - y64).abs().max()) <= 1e-5
    dy = torch.randn(y.shape)
    y.backward(dy)
    # Judge the gradient at normkit's own mask (a value at 0 is a tie the float32 result decides).
    mask = (y.detach() > 0).double()
    pre = judge(x64) + (r64 if r64 is not None else 0)
    pre.backward(dy.double() * mask)
    norm = x64.grad.abs().max()
    assert float((x.grad.double() - x64.grad).abs().max() / norm) <= 1e-5
    if r is not None:
        assert torch.equal(r.grad, (dy * (y.detach() > 0)).float())
    assert isinstance(ours, torch.nn.BatchNorm2d)


@pytest.mark.parametrize("layer", [torch.nn.Conv2d(3, 6, 3), torch.nn.Conv2d(3, 6, 3, bias=False),
                                   torch.nn.Linear(7, 6)])
def test_fold_batch_norm_into_a_layer(layer):
    torch.manual_seed(5)
    bn = torch.nn.BatchNorm2d(6) if isinstance(layer, torch.nn.Conv2d) else torch.nn.BatchNorm1d(6)
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.uniform_(-1, 1)
        bn.running_mean.normal_()
        bn.running_var.uniform_(0.1, 3)
    bn.eval()
    x = torch.randn(2, 3, 8, 8) if isinstance(layer, torch.nn.Conv2d) else torch.randn(4, 7)
    layer64 = type(layer)(*([3, 6, 3] if isinstance(layer, torch.nn.Conv2d) else [7, 6]),
                          bias=layer.bias is not None).double()
    layer64.load_state_dict({k: v.double() for k, v in layer.state_dict().items()})
    bn64 = type(bn)(6).double().eval()
    bn64.load_state_dict({k: v.double() if v.is_floating_point() else v for k, v in bn.state_dict().items()})
    with torch.no_grad():
        want = bn64(layer64(x.double()))
        folded = nkt.fold_batch_norm(layer, bn)
        assert folded is layer and layer.bias is not None
        got = layer(x)
    assert float((got.double() - want).abs().max() / want.abs().max()) <= 1e-5
