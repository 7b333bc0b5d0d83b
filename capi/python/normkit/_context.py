"""Contexts: a thread cap and an ISA cap for the calls made with them."""

import ctypes
import enum

from . import _library
from ._library import call, lib


class Isa(enum.IntEnum):
    """Instruction-set paths (NK_ISA_*), best last."""

    SCALAR = 0
    SSE4_2 = 1
    AVX2 = 2
    AVX512 = 3


def default_isa():
    """The path calls without a context take (capped by NK_MAX_ISA if it was set)."""
    return Isa(lib.nk_context_isa(None))


class Context:
    """An nk_context. Pass it as context= to any op; None means the process default.

    num_threads: 0 for all threads of the caller's oneTBB arena, n >= 1 for at most n.
    max_isa: an Isa cap, None for none; the best path available under it is used (see .isa).
    Usable as a context manager; close() frees it (also done when it is collected).
    """

    def __init__(self, num_threads=0, max_isa=None):
        handle = ctypes.c_void_p()
        call("nk_context_create", ctypes.byref(handle))
        self._handle = handle.value
        self._max_isa = None
        self.num_threads = num_threads
        if max_isa is not None:
            self.max_isa = max_isa

    @property
    def num_threads(self):
        return self._num_threads

    @num_threads.setter
    def num_threads(self, n):
        call("nk_context_set_num_threads", self.handle, n)
        self._num_threads = n

    @property
    def max_isa(self):
        return self._max_isa

    @max_isa.setter
    def max_isa(self, isa):
        call("nk_context_set_max_isa", self.handle, isa)
        self._max_isa = Isa(isa)

    @property
    def isa(self):
        """The path calls made with this context take."""
        return Isa(lib.nk_context_isa(self.handle))

    @property
    def handle(self):
        if self._handle is None:
            raise ValueError("the context is closed")
        return self._handle

    def close(self):
        if getattr(self, "_handle", None) is not None:
            lib.nk_context_destroy(self._handle)
            self._handle = None

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        # At interpreter exit the module's globals may be gone already.
        if _library is not None and getattr(_library, "lib", None) is not None:
            self.close()

    def __repr__(self):
        state = "closed" if self._handle is None else f"isa={self.isa.name}"
        return f"normkit.Context(num_threads={self._num_threads}, max_isa={self._max_isa!r}, {state})"


def handle(context):
    """The nk_context* to pass for context= (None: the process default)."""
    if context is None:
        return None
    if not isinstance(context, Context):
        raise TypeError(f"context is a {type(context).__name__}: expected a normkit.Context or None")
    return context.handle
