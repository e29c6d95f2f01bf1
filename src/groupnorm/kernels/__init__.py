"""Compiled CPU kernels for GroupNorm with a fused activation (forward and backward).

``groupnorm.functional.group_norm`` checks the arguments, asks :func:`can_handle` (the one decision) and calls
:func:`forward` or the plain PyTorch path. The kernels (C++ in ``csrc/``, no PyTorch headers, OpenMP threads,
AVX-512 / AVX2 / baseline code chosen at run time) are registered as the custom ops
``torch.ops.groupnorm.gn_forward`` / ``gn_backward`` (see ``ops.py``), so autograd, ``torch.compile`` and
``gradcheck`` work through them. In eager mode :func:`group_norm` calls the same code through a
``torch.autograd.Function`` (the op dispatcher's Python layers cost more than a small GN).

Covered: CPU tensors of rank >= 2 (N, C, *spatial), float32 / float64 / bfloat16 / float16 (half types and
float32 accumulate in float32 lanes folded into float64 sums), contiguous or channels-last (any rank; other
strides are copied to contiguous first), weight / bias of x's dtype or None, activation None / "relu" /
"silu" / "gelu" (exact, erf). Threads: ``torch.get_num_threads()``.

Switches: the environment variable ``GROUPNORM_DISABLE_KERNELS=1`` (read at every call) forces the plain
path; :func:`set_isa` forces an instruction-set level (0 baseline, 1 AVX2, 2 AVX-512, 3 AVX-512 with AVX512_BF16 for
bfloat16 data) for testing.
"""
from __future__ import annotations

import os

import torch

from ..args import activation_code
from . import _lib

__all__ = ["is_available", "can_handle", "forward", "group_norm", "disabled", "load_error", "isa", "set_isa",
           "ISA_NAMES"]

ISA_NAMES = _lib.ISA_NAMES

try:  # registering the ops needs torch.library.custom_op (torch >= 2.4)
    from . import ops as _ops
except (ImportError, AttributeError) as exc:  # pragma: no cover - old torch
    _ops = None
    _ops_error = f"torch {torch.__version__} lacks torch.library.custom_op: {exc}"
else:
    _ops_error = None


_available = None  # True / False once known (a loaded library stays loaded)


def is_available() -> bool:
    """True if the compiled kernel library loaded and its custom ops are registered."""
    global _available
    if _available is None:
        _available = _ops is not None and _lib.is_loaded()
    return _available


def load_error() -> str | None:
    """Why the kernels are not available (None if they are)."""
    return _ops_error or _lib.load_error()


_ENV_KEY = "GROUPNORM_DISABLE_KERNELS"
try:  # os.environ's own store (what os.environ.get reads, without its ~2 us of key encoding per call)
    _ENV_DATA, _ENV_DATA_KEY = os.environ._data, os.environ.encodekey(_ENV_KEY)
except AttributeError:  # pragma: no cover - another Python implementation
    _ENV_DATA = None


def disabled() -> bool:
    """True if ``GROUPNORM_DISABLE_KERNELS`` is set to 1 / true / yes (read now, at every call)."""
    if _ENV_DATA is not None and _ENV_DATA_KEY not in _ENV_DATA:  # the usual case, in ~50 ns
        return False
    return os.environ.get(_ENV_KEY, "").strip().lower() in ("1", "true", "yes", "on")


_onnx_flags = None


def _in_onnx_export() -> bool:
    """``torch.onnx.is_in_onnx_export()`` without its two imports per call (~5 us); falls back to it."""
    global _onnx_flags
    if _onnx_flags is None:
        try:
            from torch.onnx._internal.exporter import _flags
            from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

            _onnx_flags = (GLOBALS, _flags)
            _onnx_flags[0].in_onnx_export, _onnx_flags[1]._is_onnx_exporting  # noqa: B018 - attributes exist
        except (ImportError, AttributeError):  # another torch release: the public function
            _onnx_flags = False
    if _onnx_flags is False:
        return torch.onnx.is_in_onnx_export()
    if _is_compiling():  # traced by dynamo (torch.compile, torch.export, the dynamo ONNX exporter):
        # only that exporter's flag applies, and dynamo reads a module global without a graph break (the
        # TorchScript exporter's flag is a property dynamo will not trace)
        return bool(_onnx_flags[1]._is_onnx_exporting)
    return bool(_onnx_flags[0].in_onnx_export or _onnx_flags[1]._is_onnx_exporting)


def isa() -> int:
    """The instruction-set level in use: 0 baseline, 1 AVX2 (x86-64-v3), 2 AVX-512 (x86-64-v4), 3 AVX-512 +
    AVX512_BF16 (bfloat16 data on level 3 code, other dtypes on level 2's)."""
    return _lib.isa()


def set_isa(level: int | None) -> int:
    """Force an instruction-set level (None: the best this CPU supports); returns the level now in use."""
    return _lib.set_isa(level)


_STRIDED = torch.strided
_DTYPES = _lib.DTYPES
# bound once: inside a training step each attribute lookup through torch's modules is a cache miss (the
# convolutions between GN layers evict the interpreter's data); dynamo recognizes these functions by identity
_is_scripting, _is_tracing = torch.jit.is_scripting, torch.jit.is_tracing
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active


def can_handle(x, weight=None, bias=None, residual=None) -> bool:
    """The one decision between the kernels and the plain path, for arguments that
    ``groupnorm.functional.group_norm`` has checked (x a floating-point tensor of rank >= 2; weight / bias None
    or floating-point of shape (C,); residual None or of x's shape, dtype and device; any valid G, eps and
    activation: the kernels take them all).

    False when: ``GROUPNORM_DISABLE_KERNELS=1``; the library did not load; x is not a dense CPU tensor of a
    kernel dtype with at least one element; weight / bias are not dense CPU tensors of x's dtype; a residual is
    not dense; during ONNX export or TorchScript tracing / scripting (they need standard ops); under functorch
    transforms (``torch.func.vmap``, ``grad``, ...), which the plain path composes with.
    """
    # one function, no helpers: inside a training step every Python call costs several times what it costs in a
    # tight loop (cold caches), and this runs once per GN call
    if not (_available or is_available()) or (_ENV_DATA is None or _ENV_DATA_KEY in _ENV_DATA) and disabled():
        return False
    if not x.is_cpu or x.layout is not _STRIDED:
        return False
    dtype = x.dtype
    if dtype not in _DTYPES or x.numel() == 0:
        return False
    for p in (weight, bias):
        if p is not None and not (p.is_cpu and p.layout is _STRIDED and p.dtype is dtype):
            return False
    if residual is not None and residual.layout is not _STRIDED:
        return False
    if _is_scripting() or _is_tracing() or _in_onnx_export():
        return False
    # vmap / grad / jvp: the plain path composes with them (dynamo, which traces this, handles functorch itself)
    return _is_compiling() or not _functorch_active()


def forward(x, num_groups: int, weight, bias, eps: float, activation: int, residual=None):
    """``act(GroupNorm(x) [+ residual])`` through the kernels' op, differentiable, for checked arguments that
    :func:`can_handle` took (``activation`` as its code, ``groupnorm.args.ACTIVATION_CODES``)."""
    if _is_compiling():  # the custom op: fake kernel and registered autograd for dynamo
        return _ops.gn_forward(x, num_groups, weight, bias, eps, activation, residual)[0]
    return _ops.group_norm_eager(x, num_groups, weight, bias, eps, activation, residual)


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, activation=None, *, residual=None):
    """``act(GroupNorm(x) [+ residual])`` through the compiled kernels (differentiable); see the module docstring.

    x: (N, C, *spatial) on CPU; weight, bias: (C,) of x's dtype or None; residual: None or x's shape and dtype
    (any strides; added before the activation, as at the end of a ResNet block); returns a tensor with x's
    shape, dtype and memory format. Raises TypeError / ValueError for bad arguments (the op's checks) and
    RuntimeError if the kernels are not available. ``groupnorm.functional.group_norm`` is the call that also
    takes the plain path where the kernels do not apply.
    """
    if not is_available():
        raise RuntimeError(f"groupnorm compiled kernels are not available: {load_error()}")
    code = activation_code(activation)
    if _is_compiling():
        return _ops.gn_forward(x, num_groups, weight, bias, eps, code, residual)[0]
    _ops.check_args(x, num_groups, weight, bias, eps, code, residual)
    return _ops.group_norm_eager(x, num_groups, weight, bias, eps, code, residual)
