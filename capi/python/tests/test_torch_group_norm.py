"""normkit.torch.GroupNorm and InstanceNorm1d/2d/3d against torch's modules in float64.

Each step the judge (torch.nn.GroupNorm or InstanceNormXd, .double()) gets the float32
input and the parameters normkit's module holds. Tolerances, those of
test_group_norm.py (the C suite's):
  output                 |err| <= 2e-6 (1 + |ref|)
  input gradient         |err| <= 2e-6 max over its group of invstd (|g| + |mean g| +
                         |xhat mean(g xhat)|), g = grad_output * weight; with running
                         statistics (instance norm in eval), of |g| invstd
  weight, bias gradient  |err| <= 1e-6 sum over its channel of |terms|
  running mean           |err| <= 1e-6 |ref|  (as the saved mean it is made of)
  running var            |err| <= 2e-6 |ref|  (made of invstd^-2: twice invstd's 1e-6)
"""

import copy

import numpy as np
import pytest
import torch

import normkit
import normkit.torch as nkt
import reference as ref
# One finite-difference check for every normkit.torch module (its noise analysis holds
# for the ~840-value inputs used here too).
from test_torch_layer_norm import directional_check

INSTANCE = {1: (nkt.InstanceNorm1d, torch.nn.InstanceNorm1d),
            2: (nkt.InstanceNorm2d, torch.nn.InstanceNorm2d),
            3: (nkt.InstanceNorm3d, torch.nn.InstanceNorm3d)}
INSTANCE_SHAPES = {1: [(8, 6, 9), (3, 6, 20)], 2: [(4, 6, 5, 7), (2, 6, 3, 8)], 3: [(2, 6, 3, 4, 5)]}
MEMORY_FORMATS = {4: torch.channels_last, 5: torch.channels_last_3d}


def make_input(shape, seed, channels_last):
    x = (torch.randn(shape, generator=torch.Generator().manual_seed(seed)) * 3 + 2).float()
    if channels_last:
        x = x.contiguous(memory_format=MEMORY_FORMATS[len(shape)])
    return x


def ncs(tensor):
    """tensor as (N, C, S) float64 NumPy, whatever its memory format."""
    array = tensor.detach().double().contiguous().numpy()
    return array.reshape(array.shape[0], array.shape[1], -1)


def flat(tensor):
    """tensor's values in its logical (N, C, ...) order, whatever its memory format, float64."""
    return tensor.detach().double().contiguous().numpy().reshape(-1)


def assert_within(actual, expected, bound, what):
    error = np.abs(flat(actual) - flat(expected))
    bound = np.reshape(bound, -1)
    assert np.all(error <= bound), f"{what}: worst |err| / bound {np.max(error / bound):.3g}"


def judge_bounds(x64, dy, weight, eps, groups, running=None):
    """Per input element, the largest term of its group's gradient; per channel, the sums
    of |terms| of the weight and bias gradients. running: (mean, var) per channel when
    the judge normalized with them, else the float64 statistics of x64 are used."""
    x, g = ncs(x64), ncs(dy)
    w = None if weight is None else weight.detach().double().numpy()
    if running is None:
        _, mean, invstd = ref.group_norm_forward(x, groups, None, None, eps)
        _, _, _, bound, weight_terms, bias_terms = ref.group_norm_backward(x, g, mean, invstd, w, groups)
        return bound.reshape(-1), weight_terms, bias_terms
    mean, var = (t.detach().double().numpy()[None, :, None] for t in running)
    invstd = 1 / np.sqrt(var + eps)
    xhat = (x - mean) * invstd
    terms = np.abs(g * (1 if w is None else w[None, :, None]) * invstd)
    bound = np.broadcast_to(terms.max(axis=2, keepdims=True), terms.shape)
    return bound.reshape(-1), np.abs(g * xhat).sum(axis=(0, 2)), np.abs(g).sum(axis=(0, 2))


def run_steps(ours, judge, groups, shapes, channels_last, modes):
    """Steps (training, then eval as modes say) of normkit's module and the judge, each
    judged; SGD moves normkit's parameters, the judge takes them each step."""
    affine = ours.weight is not None
    if affine:
        with torch.no_grad():
            ours.weight.uniform_(0.5, 1.5)
            ours.bias.uniform_(-1, 1)
    optimizer = torch.optim.SGD(ours.parameters(), lr=0.1) if affine else None
    for step, training in enumerate(modes):
        shape = shapes[step % len(shapes)]
        ours.train(training), judge.train(training)
        judge.zero_grad(set_to_none=True)
        if affine:
            with torch.no_grad():
                judge.weight.copy_(ours.weight)
                judge.bias.copy_(ours.bias)
        running = None
        if not training and getattr(judge, "track_running_stats", False):
            running = (judge.running_mean.clone(), judge.running_var.clone())
        x = make_input(shape, step, channels_last).requires_grad_()
        x64 = x.detach().double().requires_grad_()
        dy = torch.randn(shape, generator=torch.Generator().manual_seed(100 + step))
        y, y64 = ours(x), judge(x64)
        assert y.dtype == torch.float32 and y.shape == x.shape
        if channels_last:
            assert y.is_contiguous(memory_format=MEMORY_FORMATS[len(shape)])
        assert_within(y, y64, 2e-6 * (1 + np.abs(ncs(y64))).reshape(-1), f"step {step}: output")
        y.backward(dy)
        y64.backward(dy.double())
        bound, weight_terms, bias_terms = judge_bounds(x64, dy, judge.weight, judge.eps, groups, running)
        assert_within(x.grad, x64.grad, 2e-6 * bound, f"step {step}: input grad")
        if affine:
            assert_within(ours.weight.grad, judge.weight.grad, 1e-6 * weight_terms, f"step {step}: weight grad")
            assert_within(ours.bias.grad, judge.bias.grad, 1e-6 * bias_terms, f"step {step}: bias grad")
            optimizer.step()
            optimizer.zero_grad()
        if getattr(ours, "track_running_stats", False):
            assert ours.num_batches_tracked.item() == judge.num_batches_tracked.item()
            assert_within(ours.running_mean, judge.running_mean, 1e-6 * judge.running_mean.abs().numpy(),
                          f"step {step}: running_mean")
            assert_within(ours.running_var, judge.running_var, 2e-6 * judge.running_var.abs().numpy(),
                          f"step {step}: running_var")


# (shapes, groups, channels_last); torch has channels-last memory formats for 4 and 5 dimensions only.
GROUP_CASES = [([(4, 6, 5, 7), (2, 6, 8, 3)], 3, False), ([(4, 6, 5, 7), (2, 6, 8, 3)], 3, True),
               ([(8, 6), (16, 6)], 2, False), ([(3, 6, 10)], 6, False), ([(2, 6, 3, 4, 5)], 1, False),
               ([(2, 6, 3, 4, 5)], 2, True), ([(2, 6, 7, 5)], 6, True)]


@pytest.mark.parametrize("shapes,groups,channels_last", GROUP_CASES)
@pytest.mark.parametrize("kwargs", [{}, {"affine": False}, {"eps": 1e-3}])
def test_group_norm_training_steps_match_float64(shapes, groups, channels_last, kwargs):
    ours, judge = nkt.GroupNorm(groups, 6, **kwargs), torch.nn.GroupNorm(groups, 6, **kwargs).double()
    run_steps(ours, judge, groups, shapes, channels_last, [True] * 4 + [False])


# torch has channels-last memory formats for 4 and 5 dimensions only.
@pytest.mark.parametrize("dims,channels_last", [(1, False), (2, False), (2, True), (3, False), (3, True)])
@pytest.mark.parametrize("kwargs", [{}, {"affine": True}, {"track_running_stats": True},
                                    {"affine": True, "track_running_stats": True, "momentum": 0.3},
                                    {"affine": True, "eps": 1e-3}])
def test_instance_norm_training_steps_then_eval_match_float64(dims, channels_last, kwargs):
    ours, judge = INSTANCE[dims][0](6, **kwargs), INSTANCE[dims][1](6, **kwargs).double()
    run_steps(ours, judge, 6, INSTANCE_SHAPES[dims], channels_last, [True] * 4 + [False] * 2)


@pytest.mark.parametrize("make,shape,channels_last", [
    (lambda: nkt.GroupNorm(3, 6), (4, 6, 5, 7), False),
    (lambda: nkt.GroupNorm(2, 6), (4, 6, 5, 7), True),
    (lambda: nkt.GroupNorm(1, 6), (4, 6, 35), False),
    (lambda: nkt.InstanceNorm2d(6, affine=True), (4, 6, 5, 7), True),
    (lambda: nkt.InstanceNorm1d(6, affine=True), (4, 6, 35), False),
])
def test_gradients_match_finite_differences(make, shape, channels_last):
    module = make()
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-1, 1)
    x = make_input(shape, 7, channels_last).requires_grad_()
    directional_check(module, (x,), 8)


def test_instance_norm_eval_with_running_stats_gradients_match_finite_differences():
    module = nkt.InstanceNorm2d(5, affine=True, track_running_stats=True)
    with torch.no_grad():
        module.weight.uniform_(0.5, 1.5)
        module.bias.uniform_(-1, 1)
        module.running_mean.uniform_(1, 3)
        module.running_var.uniform_(5, 12)
    module.eval()
    directional_check(module, (make_input((4, 5, 6, 7), 9, True).requires_grad_(),), 10)


@pytest.mark.parametrize("make_ours,make_theirs", [
    (lambda: nkt.GroupNorm(3, 6), lambda: torch.nn.GroupNorm(3, 6)),
    (lambda: nkt.GroupNorm(6, 6, eps=1e-3, affine=False), lambda: torch.nn.GroupNorm(6, 6, eps=1e-3, affine=False)),
] + [(lambda d=dims, k=kwargs: INSTANCE[d][0](6, **k), lambda d=dims, k=kwargs: INSTANCE[d][1](6, **k))
     for dims in (1, 2, 3)
     for kwargs in ({}, {"affine": True}, {"track_running_stats": True}, {"momentum": 0.2, "eps": 1e-4})])
def test_same_parameters_buffers_and_state_dict_as_torch(make_ours, make_theirs):
    ours, theirs = make_ours(), make_theirs()
    assert isinstance(ours, type(theirs))
    shapes = lambda named: [(name, tensor.shape) for name, tensor in named]
    assert shapes(ours.named_parameters()) == shapes(theirs.named_parameters())
    assert shapes(ours.named_buffers()) == shapes(theirs.named_buffers())
    assert ours.state_dict().keys() == theirs.state_dict().keys()
    assert repr(ours) == repr(theirs)
    for name, tensor in theirs.state_dict().items():
        if tensor.is_floating_point():
            tensor.uniform_(0.5, 1.5)
    ours.load_state_dict(theirs.state_dict())
    for name, tensor in ours.state_dict().items():
        assert torch.equal(tensor, theirs.state_dict()[name]), name


@pytest.mark.parametrize("make,path,layout,shared", [
    (lambda: nkt.GroupNorm(5, 5), "group_norm.group_norm_forward", normkit.Layout.NCS, True),
    (lambda: nkt.GroupNorm(1, 5), "group_norm.group_norm_forward", normkit.Layout.NSC, True),
    (lambda: nkt.InstanceNorm2d(5), "group_norm.group_norm_forward", normkit.Layout.NSC, True),
    (lambda: nkt.InstanceNorm2d(5, track_running_stats=True).eval(), "batch_norm.batch_norm_forward_inference",
     normkit.Layout.NSC, True),
])
def test_channels_last_memory_is_used_in_place(monkeypatch, make, path, layout, shared):
    module_name, function_name = path.split(".")
    module = getattr(normkit, module_name)
    original = getattr(module, function_name)
    calls = []

    def spy(src, *args, **kwargs):
        calls.append((kwargs["layout"], src.data_ptr()))
        return original(src, *args, **kwargs)

    monkeypatch.setattr(module, function_name, spy)
    x = make_input((4, 5, 6, 8), 11, layout == normkit.Layout.NSC)
    y = make()(x)
    assert len(calls) == 1 and calls[0] == (layout, x.data_ptr())
    if layout == normkit.Layout.NSC:
        assert y.is_contiguous(memory_format=torch.channels_last)


def test_a_permuted_input_is_computed_on_a_copy():
    module, judge = nkt.GroupNorm(2, 6), torch.nn.GroupNorm(2, 6).double()
    x = make_input((4, 5, 7, 6), 12, False).permute(0, 3, 2, 1).requires_grad_()
    x64 = x.detach().double().requires_grad_()
    y, y64 = module(x), judge(x64)
    assert_within(y, y64, 2e-6 * (1 + np.abs(ncs(y64))).reshape(-1), "output")
    dy = torch.randn(y.shape, generator=torch.Generator().manual_seed(13))
    y.backward(dy)
    y64.backward(dy.double())
    bound, _, _ = judge_bounds(x64, dy, judge.weight, judge.eps, 2)
    assert_within(x.grad, x64.grad, 2e-6 * bound, "input grad")


@pytest.mark.parametrize("dims", [1, 2, 3])
@pytest.mark.parametrize("track", [False, True])
def test_unbatched_input_is_a_batch_of_one(dims, track):
    module = INSTANCE[dims][0](6, affine=True, track_running_stats=track)
    shape = INSTANCE_SHAPES[dims][0][1:]
    x = make_input(shape, 14, False)
    for training in (True, False):
        module.train(training)
        y = module(x)
        assert y.shape == x.shape
        assert torch.equal(y, module(x[None])[0])
        judge = INSTANCE[dims][1](6, affine=True, track_running_stats=track).double()
        judge.load_state_dict(module.state_dict())
        judge.train(training)
        y64 = judge(x.double())
        assert_within(y[None], y64[None], 2e-6 * (1 + np.abs(ncs(y64[None]))).reshape(-1), "output")


def test_context_and_errors():
    x = make_input((4, 6, 5, 5), 15, False)
    with normkit.Context(num_threads=1, max_isa=normkit.Isa.SCALAR) as context:
        assert torch.equal(nkt.GroupNorm(3, 6, context=context)(x), nkt.GroupNorm(3, 6)(x))
        assert torch.equal(nkt.InstanceNorm2d(6, context=context)(x), nkt.InstanceNorm2d(6)(x))
    with pytest.raises(TypeError, match="^context is a int"):
        nkt.GroupNorm(3, 6, context=1)
    with pytest.raises(TypeError, match="^context is a int"):
        nkt.InstanceNorm1d(3, context=1)
    with pytest.raises(ValueError, match="num_channels must be divisible by num_groups"):
        nkt.GroupNorm(4, 6)
    with pytest.raises(TypeError, match=r"^input is torch.float64"):
        nkt.GroupNorm(3, 6)(x.double())
    with pytest.raises(TypeError, match=r"^input is torch.float64"):
        nkt.InstanceNorm2d(6)(x.double())
    with pytest.raises(ValueError, match=r"^input has shape \(4, 6, 5, 5\): expected \(N, 4, \*\) for num_channels 4"):
        nkt.GroupNorm(2, 4)(x)
    with pytest.raises(ValueError, match=r"^input has shape \(4, 6, 5, 5\): expected \(N, 5, \*\) for num_features 5"):
        nkt.InstanceNorm2d(5, affine=True)(x)
    with pytest.raises(ValueError, match=r"expected 3D or 4D input \(got 2D input\)"):
        nkt.InstanceNorm2d(6)(x[:, :, 0, 0])
    # Where torch refuses, so do the drop-ins, with torch's message.
    for ours, theirs, bad in [(nkt.GroupNorm(6, 6), torch.nn.GroupNorm(6, 6), torch.ones(1, 6)),
                              (nkt.InstanceNorm2d(6), torch.nn.InstanceNorm2d(6), torch.ones(2, 6, 1, 1))]:
        with pytest.raises(ValueError) as theirs_error:
            theirs(bad)
        with pytest.raises(ValueError) as ours_error:
            ours(bad)
        assert str(ours_error.value) == str(theirs_error.value)
    with pytest.raises(TypeError, match="^momentum is None"):
        nkt.InstanceNorm2d(6, track_running_stats=True, momentum=None)(x)
    with pytest.raises(TypeError):
        torch.nn.InstanceNorm2d(6, track_running_stats=True, momentum=None)(x)
    # torch accepts eps=0; normkit needs eps > 0 and says so.
    with pytest.raises(normkit.Error, match="desc->epsilon is 0") as caught:
        nkt.GroupNorm(3, 6, eps=0.0)(x)
    assert caught.value.status == normkit.Status.INVALID_ARGUMENT


def test_state_dict_round_trip_with_torch():
    """A torch checkpoint loads into normkit's module and back, and gives the same
    results (to float32), running statistics included."""
    theirs = torch.nn.InstanceNorm2d(6, affine=True, track_running_stats=True)
    with torch.no_grad():
        theirs.weight.uniform_(0.5, 1.5)
        theirs.bias.uniform_(-1, 1)
        theirs.running_mean.uniform_(1, 3)
        theirs.running_var.uniform_(5, 12)
    ours = nkt.InstanceNorm2d(6, affine=True, track_running_stats=True)
    ours.load_state_dict(copy.deepcopy(theirs.state_dict()))
    ours.eval()
    judge = copy.deepcopy(theirs).double().eval()
    x = make_input((3, 6, 4, 5), 16, False)
    y64 = judge(x.double())
    assert_within(ours(x), y64, 2e-6 * (1 + np.abs(ncs(y64))).reshape(-1), "output")
    theirs.load_state_dict(ours.state_dict())


@pytest.mark.parametrize("make", [lambda: nkt.GroupNorm(2, 4), lambda: nkt.InstanceNorm2d(4, affine=True),
                                  lambda: nkt.InstanceNorm2d(4, affine=True, track_running_stats=True)])
def test_an_empty_batch(make):
    """No samples: an empty output, parameter gradients of 0 (sums of nothing), and
    running statistics left as they were (there is no instance to average)."""
    module = make()
    before = copy.deepcopy(module.state_dict())
    x = torch.empty(0, 4, 3, 3, requires_grad=True)
    y = module(x)
    assert y.shape == x.shape
    y.sum().backward()
    assert torch.equal(module.weight.grad, torch.zeros(4)) and torch.equal(module.bias.grad, torch.zeros(4))
    for name, tensor in module.state_dict().items():
        assert torch.equal(tensor, before[name]), name
