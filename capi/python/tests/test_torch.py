"""normkit.torch modules against torch.nn's, judged by a float64 computation.

The judge is torch.nn.BatchNormXd in float64 fed the same float32 inputs and, each step,
the parameters normkit's module holds. Tolerances (normkit computes in float32): outputs
1e-5 absolute (unit-scale outputs); input gradients 1e-5 relative to their largest value;
weight and bias gradients 1e-5 relative to the sum of the magnitudes of their terms;
running statistics 1e-5 relative.
"""

import copy

import numpy as np
import pytest
import torch

import normkit
import normkit.torch as nkt

MODULES = {1: (nkt.BatchNorm1d, torch.nn.BatchNorm1d),
           2: (nkt.BatchNorm2d, torch.nn.BatchNorm2d),
           3: (nkt.BatchNorm3d, torch.nn.BatchNorm3d)}
SHAPES = {1: [(32, 6), (8, 6, 9)], 2: [(4, 6, 5, 7)], 3: [(2, 6, 3, 4, 5)]}
MEMORY_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def max_rel(actual, expected, norm):
    return float(((actual.double() - expected).abs() / norm.clamp_min(1e-30)).max())


def grad_norms(x64, dy64, judge):
    """Sums of |terms| of the weight and bias gradients, per channel, with the statistics
    the judge normalized with."""
    dims = [0] + list(range(2, x64.dim()))
    view = (1, -1) + (1,) * (x64.dim() - 2)
    if judge.training or judge.running_mean is None:
        mean, var = x64.mean(dim=dims), x64.var(dim=dims, unbiased=False)
    else:
        mean, var = judge.running_mean, judge.running_var
    xhat = (x64 - mean.view(view)) * torch.rsqrt(var + judge.eps).view(view)
    return (dy64 * xhat).abs().sum(dim=dims), dy64.abs().sum(dim=dims)


def make_input(shape, seed, channels_last):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 2).float()
    if channels_last:
        x = x.contiguous(memory_format=MEMORY_FORMATS[len(shape)])
    return x


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"track_running_stats": False},
                                    {"momentum": None, "eps": 1e-3}])
def test_same_parameters_buffers_and_state_dict_as_torch(dims, kwargs):
    ours, theirs = MODULES[dims][0](6, **kwargs), MODULES[dims][1](6, **kwargs)
    assert isinstance(ours, MODULES[dims][1])
    shapes = lambda named: [(name, tensor.shape) for name, tensor in named]
    assert shapes(ours.named_parameters()) == shapes(theirs.named_parameters())
    assert shapes(ours.named_buffers()) == shapes(theirs.named_buffers())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert repr(ours).split("(", 1)[1] == repr(theirs).split("(", 1)[1]
    ours.load_state_dict(theirs.state_dict())


# torch has channels-last memory formats for 4 and 5 dimensions only.
@pytest.mark.parametrize("dims,channels_last", [(1, False), (2, False), (2, True), (3, False), (3, True)])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False}, {"track_running_stats": False}])
def test_training_steps_then_eval_match_float64(dims, channels_last, kwargs):
    shapes = SHAPES[dims]
    ours = MODULES[dims][0](6, **kwargs)
    judge = MODULES[dims][1](6, **kwargs).double()
    torch_f32 = MODULES[dims][1](6, **kwargs)
    if ours.affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.uniform_(-1, 1)
    torch_f32.load_state_dict(ours.state_dict())
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1) if ours.affine else None
    for step, training in enumerate([True] * 4 + [False]):
        shape = shapes[step % len(shapes)]
        ours.train(training), judge.train(training), torch_f32.train(training)
        judge.zero_grad(set_to_none=True)
        if ours.affine:
            with torch.no_grad():
                for other in (judge, torch_f32):
                    other.weight.copy_(ours.weight)
                    other.bias.copy_(ours.bias)
        x = make_input(shape, step, channels_last).requires_grad_()
        x64 = x.detach().double().requires_grad_()
        dy = torch.randn(shape, generator=torch.Generator().manual_seed(100 + step))

        y, y64 = ours(x), judge(x64)
        assert y.dtype == torch.float32 and y.shape == x.shape
        if channels_last:
            assert y.is_contiguous(memory_format=MEMORY_FORMATS[len(shape)])
        assert max_rel(y, y64, torch.ones(())) <= 1e-5, f"step {step}: output"
        # torch's own float32 module, run alongside, is as close to the judge: the bound is
        # float32's, not normkit's.
        with torch.no_grad():
            assert max_rel(torch_f32(x), y64, torch.ones(())) <= 1e-5, f"step {step}: torch float32 output"
        y.backward(dy)
        y64.backward(dy.double())
        assert max_rel(x.grad, x64.grad, x64.grad.abs().max()) <= 1e-5, f"step {step}: input grad"
        if ours.affine:
            w_norm, b_norm = grad_norms(x64.detach(), dy.double(), judge)
            assert max_rel(ours.weight.grad, judge.weight.grad, w_norm) <= 1e-5, f"step {step}: weight grad"
            assert max_rel(ours.bias.grad, judge.bias.grad, b_norm) <= 1e-5, f"step {step}: bias grad"
            optimizer.step()
            optimizer.zero_grad()
        if ours.track_running_stats:
            assert ours.num_batches_tracked.item() == judge.num_batches_tracked.item()
            assert max_rel(ours.running_mean, judge.running_mean, judge.running_mean.abs()) <= 1e-5
            assert max_rel(ours.running_var, judge.running_var, judge.running_var.abs()) <= 1e-5
        else:
            assert ours.running_mean is None and ours.running_var is None


def directional_check(module, x, seed):
    """<analytic gradient, u> against the central difference of normkit's own forward in
    each of x, weight and bias, along random directions u, for L = sum(w * module(x)).

    The step is the float32 difference actually taken (x + h u is rounded), so only the
    outputs' rounding is noise: about 6e-8 |w y| per value, over n values of random sign,
    sqrt(n) * 6e-8 * 2 ~ 3.5e-6 in L for n = 840, 1.7e-4 after dividing by 2h with
    h = 1e-2. The truncation error of the training forward's curvature is of order
    h^2 = 1e-4 (eval is linear: none). The bound is 1e-3 * (|<g, u>| + 1); the errors
    seen are under 6% of it.
    """
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(x.shape, generator=g).double()
    loss = lambda: float((module(x).double() * w).sum())
    state = copy.deepcopy(module.state_dict())
    x.grad = None
    module.zero_grad()
    (module(x).double() * w).sum().backward()
    h = 1e-2
    for tensor in [x] + list(module.parameters()):
        u = torch.randn(tensor.shape, generator=g)
        original = tensor.detach().clone()
        values, points = [], []
        for sign in (1, -1):
            with torch.no_grad():
                tensor.copy_(original + sign * h * u)
                points.append(tensor.detach().double())
                # Running statistics must not move between the evaluations.
                for name, buffer in module.named_buffers():
                    buffer.copy_(state[name])
            values.append(loss())
        with torch.no_grad():
            tensor.copy_(original)
        step = (points[0] - points[1]) / 2
        analytic = float((tensor.grad.double() * step).sum()) / h
        numeric = (values[0] - values[1]) / (2 * h)
        assert abs(numeric - analytic) <= 1e-3 * (abs(analytic) + 1), (numeric, analytic)


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("channels_last", [False, True])
def test_gradients_match_finite_differences(training, channels_last):
    module = nkt.BatchNorm2d(5)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-1, 1)
        module.running_mean.uniform_(1, 3)
        module.running_var.uniform_(5, 12)
    module.train(training)
    x = make_input((4, 5, 6, 7), 7, channels_last).requires_grad_()
    directional_check(module, x, 8)


def test_context_and_errors():
    with normkit.Context(num_threads=1, max_isa=normkit.Isa.SCALAR) as context:
        module = nkt.BatchNorm2d(3, context=context)
        reference = nkt.BatchNorm2d(3)
        x = make_input((4, 3, 5, 5), 9, False)
        assert torch.equal(module(x), reference(x))
    with pytest.raises(TypeError, match="context is a int"):
        nkt.BatchNorm1d(3, context=1)
    with pytest.raises(TypeError, match="input is torch.float64"):
        nkt.BatchNorm1d(3)(torch.randn(4, 3, dtype=torch.float64))
    with pytest.raises(normkit.Error, match="Expected more than 1 value per channel"):
        nkt.BatchNorm1d(3)(torch.randn(1, 3))


@pytest.mark.parametrize("make,layout,shared", [
    (lambda x: x, normkit.Layout.NCS, True),
    (lambda x: x.contiguous(memory_format=torch.channels_last), normkit.Layout.NSC, True),
    (lambda x: x.permute(0, 2, 3, 1).contiguous().permute(0, 3, 1, 2), normkit.Layout.NSC, True),
    (lambda x: x[:, :, :, ::2], normkit.Layout.NCS, False),  # neither: computed on a copy
])
def test_memory_is_used_in_place_when_dense(monkeypatch, make, layout, shared):
    calls = []
    original = normkit.batch_norm.batch_norm_forward_training

    def spy(src, *args, **kwargs):
        calls.append((kwargs["layout"], src.data_ptr()))
        return original(src, *args, **kwargs)

    monkeypatch.setattr(normkit.batch_norm, "batch_norm_forward_training", spy)
    module, judge = nkt.BatchNorm2d(5), torch.nn.BatchNorm2d(5).double()
    x = make(make_input((4, 5, 6, 8), 10, False)).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    y, y64 = module(x), judge(x64)
    assert len(calls) == 1 and calls[0][0] == layout
    assert (calls[0][1] == x.data_ptr()) == shared
    assert max_rel(y, y64, torch.ones(())) <= 1e-5
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(11))
    y.backward(dy)
    y64.backward(dy.double())
    assert max_rel(x.grad, x64.grad, x64.grad.abs().max()) <= 1e-5
