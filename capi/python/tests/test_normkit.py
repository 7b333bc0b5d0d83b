"""The NumPy API: results against the float64 reference, arguments, errors, contexts, DLPack.

Tolerances are those the C test suite enforces on the same computation (README, Numerics):
mean and invstd 1e-6 relative; dst 1e-5 absolute on unit-scale outputs; running
statistics 1e-5 relative; diff_src 1e-5 relative to its largest value; diff_scale and
diff_shift 1e-5 relative to the sum of the magnitudes of their terms.
"""

import os
import pathlib
import re

import numpy as np
import pytest
import torch

import normkit
import reference as ref

HEADER = pathlib.Path(__file__).resolve().parents[3] / "include" / "normkit" / "normkit.h"

# (shape, layout): channels-first and channels-last, 1-3 spatial dims, NC.
CASES = [
    ((4, 6, 5, 7), normkit.Layout.NCS),
    ((4, 5, 7, 6), normkit.Layout.NSC),
    ((64, 10), normkit.Layout.NCS),
    ((64, 10), normkit.Layout.NSC),
    ((3, 5, 17), normkit.Layout.NCS),
    ((2, 3, 4, 5, 6), normkit.Layout.NCS),
    ((2, 3, 4, 5, 6), normkit.Layout.NSC),
]


def channels_of(shape, layout):
    return shape[1] if layout == normkit.Layout.NCS else shape[-1]


def data(shape, seed, offset=0.0, scale=1.0):
    return (offset + scale * np.random.default_rng(seed).standard_normal(shape)).astype(np.float32)


def assert_rel(actual, expected, tol, what, norm=None):
    """max |actual - expected| / norm <= tol, norm defaulting to |expected| (at least 1e-30)."""
    norm = np.maximum(np.abs(expected) if norm is None else norm, 1e-30)
    worst = float(np.max(np.abs(np.asarray(actual, np.float64) - expected) / norm, initial=0.0))
    assert worst <= tol, f"{what}: worst relative error {worst:.3g} > {tol:g}"


def test_loaded_library_matches_header_version():
    text = HEADER.read_text()
    header = tuple(int(re.search(rf"#define NK_VERSION_{part} (\d+)", text).group(1))
                   for part in ("MAJOR", "MINOR", "PATCH"))
    assert normkit.library_version == header
    assert normkit.__version__ == "%d.%d.%d" % header
    if os.environ.get("NORMKIT_LIBRARY"):
        assert normkit.library_path == os.environ["NORMKIT_LIBRARY"]


@pytest.mark.parametrize("shape,layout", CASES)
@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_forward_training_matches_float64(shape, layout, offset):
    c = channels_of(shape, layout)
    src = data(shape, 1, offset)
    scale, shift = data((c,), 2), data((c,), 3)
    running_mean, running_var = data((c,), 4), np.abs(data((c,), 5)) + 0.5
    rm0, rv0 = running_mean.astype(np.float64), running_var.astype(np.float64)
    result = normkit.batch_norm_forward_training(src, scale, shift, running_mean, running_var,
                                                 layout=layout, epsilon=1e-3, momentum=0.25)
    x = ref.to_ncs(src, layout)
    dst, mean, var, invstd = ref.forward_training(x, scale.astype(np.float64), shift.astype(np.float64), 1e-3)
    count = x.shape[0] * x.shape[2]
    assert result.dst.shape == shape and result.save_mean.shape == (c,)
    assert_rel(result.save_mean, mean, 1e-6, "save_mean", norm=np.abs(mean) + np.sqrt(var))
    assert_rel(result.save_invstd, invstd, 1e-6, "save_invstd")
    assert_rel(result.dst, ref.from_ncs(dst, shape, layout), 1e-5, "dst", norm=1.0)
    assert_rel(running_mean, 0.75 * rm0 + 0.25 * mean, 1e-5, "running_mean", norm=np.abs(mean) + 1)
    assert_rel(running_var, 0.75 * rv0 + 0.25 * var * count / (count - 1), 1e-5, "running_var")


def test_forward_training_keras_momentum_and_biased_running_var():
    src = data((16, 3, 8), 6)
    running_mean, running_var = np.zeros(3, np.float32), np.ones(3, np.float32)
    normkit.batch_norm_forward_training(src, running_mean=running_mean, running_var=running_var, momentum=0.9,
                                        keras_momentum=True, biased_running_var=True)
    _, mean, var, _ = ref.forward_training(ref.to_ncs(src, 0), np.ones(3), np.zeros(3), 1e-5)
    assert_rel(running_mean, 0.1 * mean, 1e-5, "running_mean", norm=np.abs(mean) + 1)
    assert_rel(running_var, 0.9 + 0.1 * var, 1e-5, "running_var")


@pytest.mark.parametrize("shape,layout", CASES)
def test_forward_inference_matches_float64(shape, layout):
    c = channels_of(shape, layout)
    src, scale, shift = data(shape, 7, 3.0), data((c,), 8), data((c,), 9)
    mean, variance = data((c,), 10) + 3.0, np.abs(data((c,), 11)) + 0.5
    dst = normkit.batch_norm_forward_inference(src, mean, variance, scale, shift, layout=layout)
    expected = ref.forward_inference(ref.to_ncs(src, layout), mean.astype(np.float64), variance.astype(np.float64),
                                     scale.astype(np.float64), shift.astype(np.float64), 1e-5)
    assert_rel(dst, ref.from_ncs(expected, shape, layout), 1e-5, "dst", norm=1.0)


@pytest.mark.parametrize("shape,layout", CASES)
@pytest.mark.parametrize("global_stats", [False, True])
def test_backward_matches_float64(shape, layout, global_stats):
    c = channels_of(shape, layout)
    src, diff_dst, scale = data(shape, 12, 2.0), data(shape, 13), data((c,), 14)
    trained = normkit.batch_norm_forward_training(src, scale, layout=layout)
    result = normkit.batch_norm_backward(src, diff_dst, trained.save_mean, trained.save_invstd, scale,
                                         layout=layout, use_global_stats=global_stats)
    x, dy = ref.to_ncs(src, layout), ref.to_ncs(diff_dst, layout)
    diff_src, diff_scale, diff_shift, scale_terms, shift_terms = ref.backward(
        x, dy, trained.save_mean.astype(np.float64), trained.save_invstd.astype(np.float64),
        scale.astype(np.float64), global_stats)
    assert_rel(result.diff_src, ref.from_ncs(diff_src, shape, layout), 1e-5, "diff_src",
               norm=np.abs(diff_src).max())
    assert_rel(result.diff_scale, diff_scale, 1e-5, "diff_scale", norm=scale_terms)
    assert_rel(result.diff_shift, diff_shift, 1e-5, "diff_shift", norm=shift_terms)


def test_backward_computes_only_the_outputs_asked_for():
    src, diff_dst = data((8, 4, 3), 15), data((8, 4, 3), 16)
    trained = normkit.batch_norm_forward_training(src)
    full = normkit.batch_norm_backward(src, diff_dst, trained.save_mean, trained.save_invstd)
    part = normkit.batch_norm_backward(src, diff_dst, trained.save_mean, trained.save_invstd,
                                       outputs=("diff_scale",))
    assert part.diff_src is None and part.diff_shift is None
    np.testing.assert_array_equal(part.diff_scale, full.diff_scale)
    with pytest.raises(ValueError, match="out gives diff_src"):
        normkit.batch_norm_backward(src, diff_dst, trained.save_mean, trained.save_invstd,
                                    outputs=("diff_scale",), out=np.empty_like(src))
    with pytest.raises(ValueError, match="diff_x"):
        normkit.batch_norm_backward(src, diff_dst, trained.save_mean, trained.save_invstd, outputs=("diff_x",))


def test_out_arrays_are_written_and_returned():
    src = data((8, 4, 3), 17)
    expected = normkit.batch_norm_forward_training(src)
    dst, save_mean = np.empty_like(src), np.empty(4, np.float32)
    result = normkit.batch_norm_forward_training(src, out=(dst, save_mean, None))
    assert result.dst is dst and result.save_mean is save_mean
    np.testing.assert_array_equal(dst, expected.dst)
    np.testing.assert_array_equal(save_mean, expected.save_mean)
    np.testing.assert_array_equal(result.save_invstd, expected.save_invstd)
    # A single array is the first output; src itself may be it (in place).
    in_place = src.copy()
    assert normkit.batch_norm_forward_training(in_place, out=in_place).dst is in_place
    np.testing.assert_array_equal(in_place, expected.dst)
    with pytest.raises(ValueError, match="out has 2 entries"):
        normkit.batch_norm_forward_training(src, out=(dst, save_mean))


def test_empty_tensor_is_a_no_op():
    result = normkit.batch_norm_forward_training(np.empty((0, 3, 4), np.float32))
    assert result.dst.shape == (0, 3, 4) and result.save_mean.shape == (3,)


def test_dlpack_torch_tensors_in_and_out_without_copies():
    src = torch.randn(6, 5, 4, 3)
    expected = normkit.batch_norm_forward_training(src.numpy().copy())
    dst, save_mean, save_invstd = torch.empty_like(src), torch.empty(5), torch.empty(5)
    result = normkit.batch_norm_forward_training(src, out=(dst, save_mean, save_invstd))
    assert result.dst is dst
    np.testing.assert_array_equal(dst.numpy(), expected.dst)
    np.testing.assert_array_equal(save_invstd.numpy(), expected.save_invstd)
    # Running statistics given as tensors are updated in their own memory.
    running_mean, running_var = torch.zeros(5), torch.ones(5)
    normkit.batch_norm_forward_training(src, running_mean=running_mean, running_var=running_var)
    assert torch.all(running_mean != 0)
    with pytest.raises(TypeError, match=r"^src: cannot import it through DLPack: .*require"):
        normkit.batch_norm_forward_training(src.requires_grad_())


def check_rejected(monkeypatch, error, pattern, op, *args, **kwargs):
    """op(*args, **kwargs) raises error matching pattern, and its C function is never called."""
    called = []

    def recording_call(name, *call_args):
        called.append(name)
        return normkit._library.call(name, *call_args)

    monkeypatch.setattr(normkit.batch_norm, "call", recording_call)
    with pytest.raises(error, match=pattern):
        op(*args, **kwargs)
    assert "nk_" + op.__name__ not in called


def test_arguments_are_checked_before_the_library_is_called(monkeypatch):
    src = data((8, 4, 6), 18)
    ok = np.ones(4, np.float32)
    misaligned = np.zeros(4 * 4 + 1, np.uint8)[1:].view(np.float32)
    read_only = np.empty_like(src)
    read_only.flags.writeable = False
    train = normkit.batch_norm_forward_training
    rejected = [
        (TypeError, r"^src has dtype float64", train, (src.astype(np.float64),), {}),
        (ValueError, r"^src is not C-contiguous", train, (src.transpose(0, 2, 1),), {}),
        (ValueError, r"^src has shape \(8,\): expected at least 2", train, (src[:, 0, 0].copy(),), {}),
        (TypeError, r"^src is a list", train, ([[1.0, 2.0]],), {}),
        (TypeError, r"^src is required", train, (None,), {}),
        (TypeError, r"^scale has dtype float16", train, (src, ok.astype(np.float16)), {}),
        (ValueError, r"^shift has shape \(5,\), expected \(4,\)", train, (src, ok, np.ones(5, np.float32)), {}),
        (ValueError, r"^scale starts at address .* not aligned", train, (src, misaligned), {}),
        (ValueError, r"^running_var is not C-contiguous", train,
         (src, ok, ok, ok.copy(), np.ones(8, np.float32)[::2]), {}),
        (ValueError, r"^out \(dst\) has shape", train, (src,), {"out": np.empty((8, 4, 5), np.float32)}),
        (ValueError, r"^out \(dst\) is read-only", train, (src,), {"out": read_only}),
        (ValueError, r"^layout is 7", train, (src,), {"layout": 7}),
        (TypeError, r"^context is a str", train, (src,), {"context": "fast"}),
        (ValueError, r"^diff_dst has shape", normkit.batch_norm_backward, (src, src[:4].copy(), ok, ok), {}),
        (TypeError, r"^save_invstd is required", normkit.batch_norm_backward, (src, src, ok, None), {}),
        (TypeError, r"^variance has dtype int32", normkit.batch_norm_forward_inference,
         (src, ok, ok.astype(np.int32)), {}),
    ]
    for error, pattern, op, args, kwargs in rejected:
        check_rejected(monkeypatch, error, pattern, op, *args, **kwargs)


def test_read_only_running_statistics_are_rejected(monkeypatch):
    src, ok = data((8, 4, 6), 19), np.ones(4, np.float32)
    frozen = np.zeros(4, np.float32)
    frozen.flags.writeable = False
    check_rejected(monkeypatch, ValueError, r"^running_mean is read-only",
                   normkit.batch_norm_forward_training, src, None, None, frozen, ok.copy())


_running = np.zeros(4, np.float32), np.ones(4, np.float32)


def shared_and_other(c):
    """Running statistics, the first of which a test also passes as an output."""
    return _running


@pytest.mark.parametrize("call,status,pattern", [
    (lambda src, c: normkit.batch_norm_forward_training(src, epsilon=-1.0),
     normkit.Status.INVALID_ARGUMENT, r"desc->epsilon is -1"),
    (lambda src, c: normkit.batch_norm_forward_training(src, momentum=2.0),
     normkit.Status.INVALID_ARGUMENT, r"desc->momentum is 2"),
    (lambda src, c: normkit.batch_norm_forward_training(src[:1, :, :1].copy()),
     normkit.Status.INVALID_SHAPE, r"Expected more than 1 value per channel"),
    (lambda src, c: normkit.batch_norm_forward_training(src, running_mean=np.zeros(c, np.float32)),
     normkit.Status.NULL_POINTER, r"running_var is NULL"),
    (lambda src, c: normkit.batch_norm_forward_training(src, None, None, *shared_and_other(c),
                                                        out=(None, shared_and_other(c)[0], None)),
     normkit.Status.INVALID_ARGUMENT, r"running_mean and save_mean overlap"),
])
def test_library_errors_raise_normkit_error(call, status, pattern):
    src = data((8, 4, 6), 20)
    with pytest.raises(normkit.Error, match=pattern) as caught:
        call(src, 4)
    assert caught.value.status == status
    assert caught.value.status_name == "NK_ERROR_" + status.name
    assert re.search(pattern, caught.value.message)


def test_contexts_cap_threads_and_isa_without_changing_bits():
    src, diff_dst = data((16, 8, 33), 21, 5.0), data((16, 8, 33), 22)
    default = normkit.batch_norm_forward_training(src)
    grads = normkit.batch_norm_backward(src, diff_dst, default.save_mean, default.save_invstd)
    for isa in normkit.Isa:
        for threads in (1, 2):
            with normkit.Context(num_threads=threads, max_isa=isa) as context:
                assert context.isa <= isa and context.isa <= normkit.default_isa()
                assert context.num_threads == threads and context.max_isa == isa
                result = normkit.batch_norm_forward_training(src, context=context)
                np.testing.assert_array_equal(result.dst, default.dst)
                np.testing.assert_array_equal(result.save_invstd, default.save_invstd)
                result = normkit.batch_norm_backward(src, diff_dst, default.save_mean, default.save_invstd,
                                                     context=context)
                for got, expected in zip(result, grads):
                    np.testing.assert_array_equal(got, expected)
    with normkit.Context(max_isa=normkit.Isa.SCALAR) as context:
        assert context.isa == normkit.Isa.SCALAR


def test_context_errors():
    context = normkit.Context()
    with pytest.raises(normkit.Error, match="thread count must be >= 0") as caught:
        context.num_threads = -1
    assert caught.value.status == normkit.Status.INVALID_ARGUMENT
    with pytest.raises(normkit.Error, match="isa is 9"):
        context.max_isa = 9
    context.close()
    with pytest.raises(ValueError, match="closed"):
        normkit.batch_norm_forward_training(data((4, 2), 23), context=context)


def test_threads_get_their_own_results_and_messages():
    """ctypes lets threads call normkit at once; each must read its own error message."""
    import concurrent.futures

    src = data((32, 8, 40), 24, 1.0)
    expected = normkit.batch_norm_forward_training(src)

    def work(index):
        for step in range(20):
            if (index + step) % 2:
                momentum = 2.0 + index
                with pytest.raises(normkit.Error) as caught:
                    normkit.batch_norm_forward_training(src, momentum=momentum)
                assert caught.value.message == f"desc->momentum is {momentum:g}: must be in [0, 1]"
            else:
                np.testing.assert_array_equal(normkit.batch_norm_forward_training(src).dst, expected.dst)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(work, range(4)))
