"""normkit.torch.LayerNorm and RMSNorm against float64 judges.

LayerNorm's judge is torch.nn.LayerNorm in float64; RMSNorm's (torch 1.13 has none) is
torch 2.4's arithmetic, x * rsqrt(mean(x^2) + eps) * weight, in float64 under autograd.
Each step the judge gets the float32 input (after a residual, the float32 sum, checked
to be torch's own input + residual) and the parameters normkit's module holds.
Tolerances, those of test_layer_norm.py (the C suite's):
  output                 |err| <= 2e-6 (1 + |ref|)
  input gradient         |err| <= 2e-6 max over its row of invstd (|g| + |mean g| +
                         |xhat mean(g xhat)|), g = grad_output * weight; plus 2^-24 |ref|
                         with a residual whose sum is used (one float32 addition of the
                         sum's own gradient)
  weight, bias gradient  |err| <= 1e-6 sum over its column of |terms|
"""

import copy

import numpy as np
import pytest
import torch

import normkit
import normkit.torch as nkt
import reference as ref

FLOAT32_EPS = torch.finfo(torch.float32).eps


class Float64RMSNorm(torch.nn.Module):
    """torch 2.4's RMSNorm arithmetic (its composite rms_norm), in float64."""

    def __init__(self, normalized_shape, eps, elementwise_affine):
        super().__init__()
        self.normalized_shape, self.eps = tuple(normalized_shape), eps
        self.weight = torch.nn.Parameter(torch.ones(self.normalized_shape, dtype=torch.float64)) \
            if elementwise_affine else None

    def forward(self, x):
        dims = tuple(range(-len(self.normalized_shape), 0))
        y = x * torch.rsqrt(x.pow(2).mean(dims, keepdim=True) + self.eps)
        return y if self.weight is None else y * self.weight


def make_pair(kind, normalized_shape, kwargs):
    """normkit's module and its float64 judge."""
    if kind == "layer":
        return nkt.LayerNorm(normalized_shape, **kwargs), torch.nn.LayerNorm(normalized_shape, **kwargs).double()
    ours = nkt.RMSNorm(normalized_shape, **kwargs)
    eps = FLOAT32_EPS if ours.eps is None else ours.eps
    return ours, Float64RMSNorm(ours.normalized_shape, eps, ours.elementwise_affine)


def randn(shape, seed, scale=1.0, offset=0.0):
    return (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * scale + offset).float()


def as_rows(tensor, ndim):
    array = tensor.detach().double().numpy()
    return array.reshape(int(np.prod(array.shape[:array.ndim - ndim])), -1)


def assert_within(actual, expected, bound, what):
    error = (actual.detach().double() - expected.detach()).abs().numpy().reshape(np.shape(bound))
    assert np.all(error <= bound), f"{what}: worst |err| / bound {np.max(error / bound):.3g}"


def gradient_bounds(kind, x64, dy, weight, eps, ndim):
    """Per input element, the largest term of its row's gradient; per weight and bias
    element, the sum of |terms| of its column (float64 statistics of x64)."""
    rows = as_rows(x64, ndim)
    mean = rows.mean(axis=1)
    centered = rows if kind == "rms" else rows - mean[:, None]
    invstd = 1 / np.sqrt((centered ** 2).mean(axis=1) + eps)
    weight = None if weight is None else weight.detach().double().numpy().reshape(-1)
    _, _, _, bound, weight_terms, bias_terms = ref.row_norm_backward(
        rows, as_rows(dy, ndim), mean, invstd, weight, kind == "rms")
    return bound, weight_terms, bias_terms


CASES = [((16, 32), (32,)), ((4, 6, 24), (24,)), ((3, 4, 5, 6), (5, 6))]


@pytest.mark.parametrize("kind", ["layer", "rms"])
@pytest.mark.parametrize("shape,normalized_shape", CASES)
@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"eps": 1e-3}])
@pytest.mark.parametrize("with_residual", [False, True])
def test_training_steps_match_float64(kind, shape, normalized_shape, kwargs, with_residual):
    ours, judge = make_pair(kind, normalized_shape, kwargs)
    ndim = len(normalized_shape)
    if ours.elementwise_affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 1.5)
            if getattr(ours, "bias", None) is not None:
                ours.bias.uniform_(-1, 1)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1) if ours.elementwise_affine else None
    for step in range(4):
        judge.load_state_dict(ours.state_dict())
        judge.zero_grad(set_to_none=True)
        x = randn(shape, step, 3.0, 2.0).requires_grad_()
        residual = randn(shape, 50 + step, 0.5).requires_grad_() if with_residual else None
        dy = randn(shape, 100 + step)
        ds = randn(shape, 150 + step) if with_residual else None
        if with_residual:
            y, total = ours(x, residual)
            assert torch.equal(total, x.detach() + residual.detach()), f"step {step}: sum"
            (y * dy).sum().add((total * ds).sum()).backward()
            normalized = total.detach()
        else:
            y = ours(x)
            y.backward(dy)
            normalized = x.detach()
        x64 = normalized.double().requires_grad_()
        y64 = judge(x64)
        y64.backward(dy.double())
        assert y.dtype == torch.float32 and y.shape == x.shape
        assert_within(y, y64, 2e-6 * (1 + y64.detach().abs().numpy()), f"step {step}: output")

        bound, weight_terms, bias_terms = gradient_bounds(kind, x64, dy, judge.weight, judge.eps, ndim)
        input_grad, input_bound = x64.grad, 2e-6 * bound.reshape(-1)
        if with_residual:
            input_grad = input_grad + ds.double()
            input_bound = input_bound + 2.0 ** -24 * input_grad.abs().numpy().reshape(-1)
            assert torch.equal(x.grad, residual.grad)
        assert_within(x.grad, input_grad, input_bound, f"step {step}: input grad")
        if ours.elementwise_affine:
            assert_within(ours.weight.grad, judge.weight.grad, 1e-6 * weight_terms, f"step {step}: weight grad")
            if kind == "layer":
                assert_within(ours.bias.grad, judge.bias.grad, 1e-6 * bias_terms, f"step {step}: bias grad")
            optimizer.step()
            optimizer.zero_grad()


def directional_check(module, inputs, seed):
    """<analytic gradient, u> against the central difference of normkit's own forward in
    each input and parameter, along random directions u, for L = sum(w * output) (plus
    sum(w2 * sum) with a residual).

    The step is the float32 difference actually taken. Noise: about 6e-8 |w y| per output
    value, over n ~ 840 values of random sign, ~3.5e-6 in L, 1.7e-4 after dividing by 2h
    with h = 1e-2; the truncation error of the normalization's curvature is of order
    h^2 = 1e-4. The bound is 1e-3 * (|<g, u>| + 1), as for batch norm.
    """
    g = torch.Generator().manual_seed(seed)
    outputs = module(*inputs)
    outputs = outputs if isinstance(outputs, tuple) else (outputs,)
    weights = [torch.randn(out.shape, generator=g).double() for out in outputs]

    def loss():
        outs = module(*inputs)
        outs = outs if isinstance(outs, tuple) else (outs,)
        return sum((out.double() * w).sum() for out, w in zip(outs, weights))

    for tensor in inputs:
        tensor.grad = None
    module.zero_grad()
    loss().backward()
    h = 1e-2
    for tensor in list(inputs) + list(module.parameters()):
        u = torch.randn(tensor.shape, generator=g)
        original = tensor.detach().clone()
        values, points = [], []
        for sign in (1, -1):
            with torch.no_grad():
                tensor.copy_(original + sign * h * u)
                points.append(tensor.detach().double())
                values.append(float(loss()))
        with torch.no_grad():
            tensor.copy_(original)
        step = (points[0] - points[1]) / 2
        analytic = float((tensor.grad.double() * step).sum()) / h
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(numeric - analytic) <= 1e-3 * (abs(analytic) + 1), (tensor.shape, numeric, analytic)


@pytest.mark.parametrize("make", [lambda: nkt.LayerNorm(35), lambda: nkt.LayerNorm((6, 35)),
                                  lambda: nkt.RMSNorm(35), lambda: nkt.RMSNorm((6, 35), eps=1e-4)])
@pytest.mark.parametrize("with_residual", [False, True])
def test_gradients_match_finite_differences(make, with_residual):
    module = make()
    with torch.no_grad():
        for parameter in module.parameters():
            parameter.uniform_(0.5, 1.5)
    x = randn((4, 6, 35), 7, 3.0, 2.0).requires_grad_()
    inputs = (x, randn((4, 6, 35), 8, 0.5).requires_grad_()) if with_residual else (x,)
    directional_check(module, inputs, 9)


@pytest.mark.parametrize("kwargs", [{}, {"elementwise_affine": False}, {"eps": 1e-3}])
@pytest.mark.parametrize("normalized_shape", [8, (3, 8), [2, 3, 8]])
def test_layer_norm_is_torch_layer_norm(kwargs, normalized_shape):
    ours, theirs = nkt.LayerNorm(normalized_shape, **kwargs), torch.nn.LayerNorm(normalized_shape, **kwargs)
    assert isinstance(ours, torch.nn.LayerNorm)
    shapes = lambda named: [(name, tensor.shape) for name, tensor in named]
    assert shapes(ours.named_parameters()) == shapes(theirs.named_parameters())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert repr(ours) == repr(theirs)
    assert ours.normalized_shape == theirs.normalized_shape and ours.eps == theirs.eps
    ours.load_state_dict(theirs.state_dict())


def test_rms_norm_is_torch_2_4_rms_norm():
    module = nkt.RMSNorm(8)
    assert module.normalized_shape == (8,) and module.eps is None and module.elementwise_affine
    assert repr(module) == "RMSNorm((8,), eps=None, elementwise_affine=True)"
    assert [name for name, _ in module.named_parameters()] == ["weight"]
    assert list(module.state_dict().keys()) == ["weight"]
    assert torch.equal(module.weight, torch.ones(8))
    frozen = nkt.RMSNorm([3, 8], eps=1e-6, elementwise_affine=False)
    assert frozen.weight is None and list(frozen.parameters()) == [] and not frozen.state_dict()
    assert repr(frozen) == "RMSNorm((3, 8), eps=1e-06, elementwise_affine=False)"
    if hasattr(torch.nn, "RMSNorm"):
        assert isinstance(module, torch.nn.RMSNorm)
    # eps=None: float32's machine epsilon, what torch 2.4 adds for a float32 input.
    x = randn((5, 8), 10)
    assert torch.equal(module(x), nkt.RMSNorm(8, eps=FLOAT32_EPS)(x))
    assert not torch.equal(module(x * 1e-3), nkt.RMSNorm(8, eps=1e-5)(x * 1e-3))


def test_residual_stream_gradient_alone():
    """Only the sum used: its gradient goes to input and residual as is, and the
    normalization's parameters get none."""
    module = nkt.LayerNorm(16)
    x, residual = randn((3, 16), 11).requires_grad_(), randn((3, 16), 12).requires_grad_()
    _, total = module(x, residual)
    ds = randn((3, 16), 13)
    total.backward(ds)
    assert torch.equal(x.grad, ds) and torch.equal(residual.grad, ds)
    assert module.weight.grad is None and module.bias.grad is None


def test_any_layout_and_rank():
    """A non-contiguous input is computed on a contiguous copy; a single row and no rows work."""
    module, judge = nkt.LayerNorm(12), torch.nn.LayerNorm(12).double()
    x = randn((12, 5, 4), 14).permute(1, 2, 0).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    y, y64 = module(x), judge(x64)
    assert_within(y, y64, 2e-6 * (1 + y64.detach().abs().numpy()), "output")
    dy = randn(y.shape, 15)
    y.backward(dy)
    y64.backward(dy.double())
    assert x.grad.shape == x.shape
    bound, _, _ = gradient_bounds("layer", x64.detach().reshape(-1, 12), dy.reshape(-1, 12), judge.weight, judge.eps, 1)
    assert_within(x.grad.reshape(-1, 12), x64.grad.reshape(-1, 12), 2e-6 * bound, "input grad")
    one = randn((12,), 16)
    assert torch.equal(module(one), module(one[None])[0])
    module.zero_grad()
    module(torch.empty(0, 12, requires_grad=True)).sum().backward()
    assert torch.equal(module.weight.grad, torch.zeros(12)) and torch.equal(module.bias.grad, torch.zeros(12))


def test_context_and_errors():
    x = randn((4, 3, 8), 17)
    with normkit.Context(num_threads=1, max_isa=normkit.Isa.SCALAR) as context:
        for kind in (nkt.LayerNorm, nkt.RMSNorm):
            assert torch.equal(kind(8, context=context)(x), kind(8)(x))
    with pytest.raises(TypeError, match="^context is a int"):
        nkt.LayerNorm(8, context=1)
    with pytest.raises(TypeError, match=r"^input is torch.float64"):
        nkt.LayerNorm(8)(x.double())
    with pytest.raises(TypeError, match=r"^residual is torch.float64"):
        nkt.RMSNorm(8)(x, x.double())
    with pytest.raises(ValueError, match=r"^input has shape \(4, 3, 8\): expected \(\*, 3, 4\)"):
        nkt.RMSNorm((3, 4))(x)
    with pytest.raises(ValueError, match=r"^residual has shape \(3, 8\), expected the input's \(4, 3, 8\)"):
        nkt.LayerNorm(8)(x, x[0])
    # torch accepts eps=0; normkit needs eps > 0 and says so.
    with pytest.raises(normkit.Error, match="desc->epsilon is 0") as caught:
        nkt.LayerNorm(8, eps=0.0)(x)
    assert caught.value.status == normkit.Status.INVALID_ARGUMENT


def test_state_dict_round_trip_with_torch():
    """A torch.nn.LayerNorm checkpoint loads into normkit's and back, and gives the same
    results (to float32)."""
    theirs = torch.nn.LayerNorm(10)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-1, 1)
    ours = nkt.LayerNorm(10)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    x = randn((6, 10), 18, 2.0)
    y64 = torch.nn.functional.layer_norm(x.double(), (10,), theirs.weight.double(), theirs.bias.double())
    assert_within(ours(x), y64.detach(), 2e-6 * (1 + y64.detach().abs().numpy()), "output")
    theirs.load_state_dict(ours.state_dict())
