"""Arrays in and out of a normkit call: every argument goes through check_array."""

import ctypes
import numbers

import numpy as np

DTYPE = np.dtype(np.float32)

# Storage types of tensors (NK_DTYPE_*): src, dst, residual, sum, diff_dst, diff_src.
# NumPy has no bfloat16: a torch bfloat16 tensor goes through as its int16 bits, and a
# bf16 result this package allocates is an array of uint16 bit patterns.
F32, BF16, F16 = 0, 1, 2
_DTYPE_NAMES = {F32: "float32", BF16: "bfloat16", F16: "float16"}


def _bfloat16_bits(value):
    """A torch bfloat16 tensor as an int16 tensor of the same memory; None for anything else."""
    if str(getattr(value, "dtype", "")) != "torch.bfloat16":
        return None
    import torch  # loaded already: value is one of its tensors
    return value.view(torch.int16)


def _storage_dtype(value, array):
    """The NK_DTYPE_* of a tensor given as value (seen as array), None if it has none."""
    if _bfloat16_bits(value) is not None:
        return BF16
    return {np.dtype(np.float32): F32, np.dtype(np.float16): F16}.get(array.dtype)


def _as_ndarray(name, value):
    """A NumPy view of value (an ndarray or a DLPack producer such as a torch tensor)."""
    if isinstance(value, np.ndarray):
        return value
    if hasattr(value, "__dlpack__"):
        try:
            return np.from_dlpack(value)
        except (BufferError, RuntimeError, TypeError, ValueError) as error:
            raise TypeError(f"{name}: cannot import it through DLPack: {error}") from None
    raise TypeError(f"{name} is a {type(value).__name__}: expected a NumPy array or an object "
                    "with __dlpack__ (a torch tensor)")


def check_array(name, value, shape=None, *, output=False, dtype=F32):
    """Returns value as a C-contiguous, aligned ndarray sharing its memory, of element
    type `dtype` (NK_DTYPE_*: float32 unless the argument is a tensor of a bf16 / f16 call;
    bfloat16: a torch bfloat16 tensor, or uint16 bits).

    shape: the exact shape expected (None: any, at least 1-d). output: the library
    writes to it. Raises TypeError or ValueError naming the argument; nothing is copied.
    """
    bits = _bfloat16_bits(value)
    array = _as_ndarray(name, value if bits is None else bits)
    got = BF16 if bits is not None else _storage_dtype(value, array)
    if dtype == BF16 and array.dtype == np.dtype(np.uint16):
        got = BF16  # the bits of a bf16 result this package allocated
    if got != dtype:
        shown = "bfloat16" if bits is not None else str(array.dtype)
        raise TypeError(f"{name} has dtype {shown}: expected {_DTYPE_NAMES[dtype]}"
                        + ("" if dtype != F32 else " (normkit computes in float32)"))
    if shape is not None and array.shape != tuple(shape):
        raise ValueError(f"{name} has shape {array.shape}, expected {tuple(shape)}")
    if not array.flags.c_contiguous:
        raise ValueError(f"{name} is not C-contiguous (strides {array.strides}): normkit reads "
                         "dense row-major buffers; pass np.ascontiguousarray(...)")
    if not array.flags.aligned:
        raise ValueError(f"{name} starts at address {array.ctypes.data:#x}, not aligned for {array.dtype}")
    # NumPy marks arrays imported through DLPack read-only because the protocol cannot say
    # whether they are; the producer (a torch tensor) lent them to be written.
    if output and isinstance(value, np.ndarray) and not array.flags.writeable:
        raise ValueError(f"{name} is read-only")
    return array


def check_epsilon(epsilon):
    """epsilon, if it is a real number; its range (> 0 and finite, once rounded to
    float32) is the library's to check."""
    if not isinstance(epsilon, numbers.Real) or isinstance(epsilon, bool):
        raise TypeError(f"epsilon is a {type(epsilon).__name__}: expected a float")
    return epsilon


def fill(address, count, value):
    """Writes value to count floats at address (an output the library left unwritten)."""
    if address is not None and count:
        np.frombuffer((ctypes.c_float * count).from_address(address), np.float32)[:] = value


class Call:
    """Collects one call's buffers: checks each, allocates the outputs not given.

    Arguments are checked as they are added, so a bad one raises before the C
    function is reached. results maps each output's name to what the caller gets
    back: the object given in out= (returned as is), or a new ndarray.
    """

    def __init__(self, out, output_names):
        self.results = dict.fromkeys(output_names)
        # The storage type of the call's tensors (NK_DTYPE_*), set by tensor().
        self.dtype = F32
        self._given = self._split_out(out, output_names)
        # The arrays whose addresses were handed out, alive until the call is over.
        self._arrays = []

    @staticmethod
    def _split_out(out, names):
        if out is None:
            return dict.fromkeys(names)
        if not isinstance(out, tuple):
            out = (out,) + (None,) * (len(names) - 1)
        if len(out) != len(names):
            raise ValueError(f"out has {len(out)} entries, expected {len(names)}: ({', '.join(names)})")
        return dict(zip(names, out))

    def input(self, name, value, shape=None, *, optional=False, written=False, storage=False):
        """The address of an input (written: also updated in place, as running statistics;
        storage: a tensor in the call's storage type, as src)."""
        if value is None and optional:
            return None
        dtype = self.dtype if storage else F32
        return self._address(self._required(name, value, shape, output=written, dtype=dtype))

    def tensor(self, name, value, min_ndim=2, *, storage=True):
        """The address of the call's first tensor, whose shape sets the others, and that
        shape. storage: its type (float32, float16 or torch bfloat16) is the call's."""
        if storage and value is not None:
            array = _as_ndarray(name, value) if _bfloat16_bits(value) is None else None
            found = BF16 if array is None else _storage_dtype(value, array)
            self.dtype = found if found is not None else F32
        array = self._required(name, value, dtype=self.dtype)
        if array.ndim < min_ndim:
            plural = "s" if min_ndim > 1 else ""
            raise ValueError(f"{name} has shape {array.shape}: expected at least {min_ndim} dimension{plural}")
        return self._address(array), array.shape

    def gives(self, name):
        """Whether out= gives the output `name`."""
        return self._given[name] is not None

    def output(self, name, shape, *, wanted=True, storage=False):
        """The address of an output: the array given in out=, else a new one (storage: a
        tensor in the call's storage type, as dst)."""
        given = self._given[name]
        dtype = self.dtype if storage else F32
        if not wanted:
            if given is not None:
                raise ValueError(f"out gives {name}, which this call does not compute")
            return None
        if given is None:
            self.results[name] = np.empty(shape, {F32: DTYPE, F16: np.float16, BF16: np.uint16}[dtype])
            return self._address(self.results[name])
        self.results[name] = given
        return self._address(check_array(f"out ({name})", given, shape, output=True, dtype=dtype))

    @staticmethod
    def _required(name, value, shape=None, output=False, dtype=F32):
        if value is None:
            raise TypeError(f"{name} is required")
        return check_array(name, value, shape, output=output, dtype=dtype)

    def _address(self, array):
        self._arrays.append(array)
        return array.ctypes.data
