"""Loading libnormkit.so.0 and calling it: prototypes, statuses, normkit.Error."""

import ctypes
import enum
import os
from ctypes import POINTER, c_char_p, c_float, c_int32, c_int64, c_uint8, c_uint32, c_void_p
from pathlib import Path

LIBRARY_NAME = "libnormkit.so.0"
# The ABI major this package speaks (the SONAME's number) and the oldest minor it needs.
ABI_MAJOR = 0
MIN_VERSION = (0, 1, 0)


class Status(enum.IntEnum):
    """nk_status values, pinned by the C ABI."""

    OK = 0
    NULL_POINTER = 1
    INVALID_SHAPE = 2
    INVALID_ARGUMENT = 3
    UNSUPPORTED = 4
    OUT_OF_MEMORY = 5
    INTERNAL = 6


class Error(RuntimeError):
    """A normkit call returned a status other than NK_OK.

    ``status`` is the :class:`Status` (a plain int for a status newer than this
    package), ``status_name`` the library's name for it, ``message`` the library's
    ``nk_last_error_message()``, ``function`` the C function called.
    """

    def __init__(self, function, status, status_name, message):
        try:
            status = Status(status)
        except ValueError:
            pass
        self.function = function
        self.status = status
        self.status_name = status_name
        self.message = message
        super().__init__(f"{function}: {status_name}: {message}")


class BatchNormDesc(ctypes.Structure):
    """nk_batch_norm_desc, as published in ABI 0.1."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("layout", c_int32),
        ("dtype", c_int32),
        ("reserved0", c_int32),
        ("n", c_int64),
        ("c", c_int64),
        ("spatial", c_int64),
        ("epsilon", c_float),
        ("momentum", c_float),
        ("flags", c_uint32),
        ("reserved1", c_uint32),
        # A newer library's nk_batch_norm_desc_init may fill fields appended after
        # these (the descriptor only grows); the room keeps that write inside this object,
        # and they keep the defaults it gave them.
        ("_appended", c_uint8 * 256),
    ]


class LayerNormDesc(ctypes.Structure):
    """nk_layer_norm_desc, as published in ABI 0.1 (layer norm and RMS norm share it)."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("dtype", c_int32),
        ("rows", c_int64),
        ("features", c_int64),
        ("epsilon", c_float),
        ("flags", c_uint32),
        # Room for fields a newer library's nk_layer_norm_desc_init may append (see BatchNormDesc).
        ("_appended", c_uint8 * 256),
    ]


class GroupNormDesc(ctypes.Structure):
    """nk_group_norm_desc, as published in ABI 0.1."""

    _fields_ = [
        ("struct_size", c_uint32),
        ("layout", c_int32),
        ("dtype", c_int32),
        ("reserved0", c_int32),
        ("n", c_int64),
        ("c", c_int64),
        ("spatial", c_int64),
        ("groups", c_int64),
        ("epsilon", c_float),
        ("flags", c_uint32),
        # Room for fields a newer library's nk_group_norm_desc_init may append (see BatchNormDesc).
        ("_appended", c_uint8 * 256),
    ]


_status = c_int32
_ctx = c_void_p  # nk_context*, or None for the process default
_ptr = c_void_p  # a buffer's address, or None

# Every C function the package calls: name -> (result type, argument types). A new op
# is a line here and a short wrapper calling it through call().
PROTOTYPES = {
    "nk_version": (c_uint32, ()),
    "nk_status_string": (c_char_p, (_status,)),
    "nk_last_error_message": (c_char_p, ()),
    "nk_context_create": (_status, (POINTER(c_void_p),)),
    "nk_context_destroy": (None, (_ctx,)),
    "nk_context_set_num_threads": (_status, (_ctx, c_int32)),
    "nk_context_set_max_isa": (_status, (_ctx, c_int32)),
    "nk_context_isa": (c_int32, (_ctx,)),
    "nk_batch_norm_desc_init": (_status, (POINTER(BatchNormDesc), c_int32, c_int64, c_int64, c_int64)),
    # ctx, desc, src, dst, scale, shift, running_mean, running_var, save_mean, save_invstd
    "nk_batch_norm_forward_training": (_status, (_ctx, POINTER(BatchNormDesc)) + (_ptr,) * 8),
    # ctx, desc, src, dst, scale, shift, mean, variance
    "nk_batch_norm_forward_inference": (_status, (_ctx, POINTER(BatchNormDesc)) + (_ptr,) * 6),
    # ctx, desc, src, diff_dst, scale, save_mean, save_invstd, diff_src, diff_scale, diff_shift
    "nk_batch_norm_backward": (_status, (_ctx, POINTER(BatchNormDesc)) + (_ptr,) * 8),
    # ctx, desc, src, residual, dst, scale, shift, running_mean, running_var, save_mean, save_invstd
    "nk_batch_norm_forward_training_v2": (_status, (_ctx, POINTER(BatchNormDesc)) + (_ptr,) * 9),
    # ctx, desc, src, residual, dst, scale, shift, mean, variance
    "nk_batch_norm_forward_inference_v2": (_status, (_ctx, POINTER(BatchNormDesc)) + (_ptr,) * 7),
    # ctx, desc, src, diff_dst, dst, scale, save_mean, save_invstd, diff_src, diff_residual,
    # diff_scale, diff_shift
    "nk_batch_norm_backward_v2": (_status, (_ctx, POINTER(BatchNormDesc)) + (_ptr,) * 10),
    # desc, mean, variance, scale, shift, weights_per_channel, weight, bias, folded_weight, folded_bias
    "nk_batch_norm_fold": (_status, (POINTER(BatchNormDesc),) + (_ptr,) * 4 + (c_int64,) + (_ptr,) * 4),
    "nk_layer_norm_desc_init": (_status, (POINTER(LayerNormDesc), c_int64, c_int64)),
    # ctx, desc, src, residual, sum, dst, scale, shift, save_mean, save_invstd
    "nk_layer_norm_forward": (_status, (_ctx, POINTER(LayerNormDesc)) + (_ptr,) * 8),
    # ctx, desc, src, diff_dst, scale, save_mean, save_invstd, diff_src, diff_scale, diff_shift
    "nk_layer_norm_backward": (_status, (_ctx, POINTER(LayerNormDesc)) + (_ptr,) * 8),
    # ctx, desc, src, residual, sum, dst, scale, save_invrms
    "nk_rms_norm_forward": (_status, (_ctx, POINTER(LayerNormDesc)) + (_ptr,) * 6),
    # ctx, desc, src, diff_dst, scale, save_invrms, diff_src, diff_scale
    "nk_rms_norm_backward": (_status, (_ctx, POINTER(LayerNormDesc)) + (_ptr,) * 6),
    "nk_group_norm_desc_init": (_status, (POINTER(GroupNormDesc), c_int32, c_int64, c_int64, c_int64, c_int64)),
    # ctx, desc, src, dst, scale, shift, save_mean, save_invstd
    "nk_group_norm_forward": (_status, (_ctx, POINTER(GroupNormDesc)) + (_ptr,) * 6),
    # ctx, desc, src, diff_dst, scale, save_mean, save_invstd, diff_src, diff_scale, diff_shift
    "nk_group_norm_backward": (_status, (_ctx, POINTER(GroupNormDesc)) + (_ptr,) * 8),
    # Synchronized batch norm. desc, samples_per_piece, bytes (out)
    "nk_batch_norm_partial_size": (_status, (POINTER(BatchNormDesc), c_int64, POINTER(c_int64))),
    # ctx, desc, samples_per_piece, src, partial, partial_bytes
    "nk_batch_norm_stats": (_status, (_ctx, POINTER(BatchNormDesc), c_int64, _ptr, _ptr, c_int64)),
    # desc, partials, partial_bytes, count, merged, merged_bytes
    "nk_batch_norm_merge_partials": (_status, (POINTER(BatchNormDesc), POINTER(c_void_p), POINTER(c_int64),
                                               c_int32, _ptr, c_int64)),
    # ctx, desc, partial, partial_bytes, src, dst, scale, shift, running_mean, running_var,
    # save_mean, save_invstd
    "nk_batch_norm_forward_from_partial": (_status, (_ctx, POINTER(BatchNormDesc), _ptr, c_int64) + (_ptr,) * 8),
    # ctx, desc, samples_per_piece, src, diff_dst, save_mean, reduced, reduced_bytes
    "nk_batch_norm_backward_reduce": (_status, (_ctx, POINTER(BatchNormDesc), c_int64) + (_ptr,) * 4 + (c_int64,)),
    # ctx, desc, reduced, reduced_bytes, src, diff_dst, scale, save_mean, save_invstd, diff_src,
    # diff_scale, diff_shift
    "nk_batch_norm_backward_from_reduced": (_status, (_ctx, POINTER(BatchNormDesc), _ptr, c_int64) + (_ptr,) * 8),
}


def _candidates():
    """Where to look for the library, in order, with why each place is tried."""
    explicit = os.environ.get("NORMKIT_LIBRARY")
    if explicit:
        # An explicit choice is never silently replaced by another copy.
        return [(explicit, "NORMKIT_LIBRARY")]
    package = Path(__file__).resolve().parent
    places = [(package / LIBRARY_NAME, "next to the package")]
    try:
        from ._installed import LIBRARY_DIR  # installed by `cmake --install`
    except ImportError:
        pass
    else:
        places.append((Path(os.path.normpath(package / LIBRARY_DIR / LIBRARY_NAME)), "the install prefix"))
    source = package.parents[2]
    if (source / "include" / "normkit" / "normkit.h").is_file():
        # A source checkout used with PYTHONPATH=capi/python: the release preset's build.
        places.append((source / "build" / "release" / LIBRARY_NAME, "the release build tree"))
    places = [(str(path), why) for path, why in places if path.is_file()]
    places.append((LIBRARY_NAME, "the dynamic loader's search path"))
    return places


def _load():
    tried = []
    for path, why in _candidates():
        try:
            return ctypes.CDLL(path), path
        except OSError as error:
            tried.append(f"{path} ({why}): {error}")
    raise ImportError("normkit: cannot load " + LIBRARY_NAME + "; tried\n  " + "\n  ".join(tried))


def _bind(lib, path, names):
    for name in names:
        restype, argtypes = PROTOTYPES[name]
        try:
            function = getattr(lib, name)
        except AttributeError:
            raise ImportError(f"normkit: {path} does not export {name}: the library is older "
                              "than this package") from None
        function.restype = restype
        function.argtypes = argtypes


def _check_version(lib, path):
    number = lib.nk_version()
    version = (number // 10000, number // 100 % 100, number % 100)
    if version[0] != ABI_MAJOR or version < MIN_VERSION:
        wanted = ".".join(map(str, MIN_VERSION))
        raise ImportError(f"normkit: {path} is version {'.'.join(map(str, version))}; this package "
                          f"needs {ABI_MAJOR}.x, at least {wanted}")
    return version


lib, path = _load()
# The version first: a library of another major is named as such, not as missing a function.
_bind(lib, path, ["nk_version"])
version = _check_version(lib, path)
_bind(lib, path, PROTOTYPES)


def call(name, *args):
    """Calls the C function `name`; a status other than NK_OK raises Error."""
    status = getattr(lib, name)(*args)
    if status != Status.OK:
        # ctypes let other threads run during the call, but the message is kept per OS
        # thread: this thread's last normkit call is the one just made.
        raise Error(name, status, lib.nk_status_string(status).decode(),
                    lib.nk_last_error_message().decode(errors="replace"))
