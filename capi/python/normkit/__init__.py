"""normkit: SIMD CPU normalization kernels, from Python.

ctypes over the C ABI of libnormkit.so.0, found in this order: the file named by
NORMKIT_LIBRARY; next to this package; the install prefix this package was installed
with; a source checkout's build/release; the dynamic loader's search path.
NumPy arrays (or DLPack producers, such as torch tensors) in, NumPy arrays out,
without copies: batch norm (and its synchronized, data-parallel pieces), layer norm, RMS
norm, group norm and instance norm. normkit.torch holds PyTorch modules.
"""

from ._context import Context, Isa, default_isa
from ._library import Error, Status
from ._library import path as library_path
from ._library import version as library_version
from .batch_norm import (BackwardResult, FoldResult, Layout, ReluBackwardResult, TrainingResult,
                         batch_norm_backward, batch_norm_backward_relu, batch_norm_fold,
                         batch_norm_forward_inference, batch_norm_forward_training)
from .group_norm import GroupNormBackwardResult, GroupNormResult, group_norm_backward, group_norm_forward
from .sync_batch_norm import (batch_norm_backward_from_reduced, batch_norm_backward_reduce,
                              batch_norm_forward_from_partial, batch_norm_merge_partials, batch_norm_stats)
from .layer_norm import (LayerNormBackwardResult, LayerNormResult, RmsNormBackwardResult, RmsNormResult,
                         layer_norm_backward, layer_norm_forward, rms_norm_backward, rms_norm_forward)

__version__ = "0.1.0"

__all__ = [
    "BackwardResult", "Context", "Error", "FoldResult", "ReluBackwardResult", "GroupNormBackwardResult", "GroupNormResult", "Isa",
    "LayerNormBackwardResult", "LayerNormResult", "Layout", "RmsNormBackwardResult", "RmsNormResult", "Status",
    "TrainingResult", "batch_norm_backward", "batch_norm_backward_relu", "batch_norm_fold", "batch_norm_backward_from_reduced", "batch_norm_backward_reduce",
    "batch_norm_forward_from_partial", "batch_norm_forward_inference", "batch_norm_forward_training",
    "batch_norm_merge_partials", "batch_norm_stats",
    "default_isa", "group_norm_backward", "group_norm_forward", "layer_norm_backward", "layer_norm_forward",
    "library_path", "library_version", "rms_norm_backward", "rms_norm_forward",
]
