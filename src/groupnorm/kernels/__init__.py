"""Compiled CPU kernels for GroupNorm with a fused activation (forward and backward).

``groupnorm.functional.group_norm`` calls :func:`try_group_norm` (:func:`can_handle`, then the kernels) and
takes the plain PyTorch path when it declines. The kernels (C++ in ``csrc/``, no PyTorch headers, OpenMP threads,
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

from . import _lib

__all__ = ["is_available", "can_handle", "group_norm", "try_group_norm", "disabled", "load_error", "isa", "set_isa", "ISA_NAMES"]

ISA_NAMES = _lib.ISA_NAMES
_ACTS = (None, "relu", "silu", "gelu")

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


_TENSOR = torch.Tensor
_STRIDED = torch.strided
_DTYPES = _lib.DTYPES
# bound once: inside a training step each attribute lookup through torch's modules is a cache miss (the
# convolutions between GN layers evict the interpreter's data); dynamo recognizes these functions by identity
_is_scripting, _is_tracing = torch.jit.is_scripting, torch.jit.is_tracing
_is_compiling = torch.compiler.is_compiling
_functorch_active = torch._C._are_functorch_transforms_active


def can_handle(x, weight, bias, activation, residual=None) -> bool:
    """Whether :func:`group_norm` takes this call; False for anything the kernels do not cover.

    False when: ``GROUPNORM_DISABLE_KERNELS=1``; the library did not load; x is not a dense CPU tensor of a
    supported dtype with rank >= 2 and at least one element; weight / bias are not None or CPU tensors of x's
    dtype and shape (C,); a residual is not None or a dense CPU tensor of x's dtype and shape; the activation
    is not None / relu / silu / gelu; during ONNX export or TorchScript
    tracing / scripting (they need standard ops); under functorch transforms (``torch.func.vmap``, ``grad``, ...).
    """
    # one function, no helpers: inside a training step every Python call costs several times what it costs in a
    # tight loop (cold caches), and this runs once per GN call
    if not (_available or is_available()) or (_ENV_DATA is None or _ENV_DATA_KEY in _ENV_DATA) and disabled():
        return False
    if not isinstance(x, _TENSOR) or not x.is_cpu or x.layout is not _STRIDED:
        return False
    dtype = x.dtype
    shape = x.shape
    if dtype not in _DTYPES or len(shape) < 2 or x.numel() == 0 or activation not in _ACTS:
        return False
    c = shape[1]
    for p in (weight, bias):  # is_cpu / shape == (c,) rather than device.type / tuple(shape): ~1 us less each
        if p is not None and not (isinstance(p, _TENSOR) and p.is_cpu and p.layout is _STRIDED and p.dtype is dtype
                                  and p.shape == (c,)):
            return False
    if residual is not None and not (isinstance(residual, _TENSOR) and residual.is_cpu
                                     and residual.layout is _STRIDED and residual.dtype is dtype
                                     and residual.shape == shape):
        return False
    if _is_scripting() or _is_tracing() or _in_onnx_export():
        return False
    # vmap / grad / jvp: the plain path composes with them (dynamo, which traces this, handles functorch itself)
    return _is_compiling() or not _functorch_active()


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, activation=None, *,
               residual=None, validated: bool = False):
    """``act(GroupNorm(x) [+ residual])`` through the compiled kernels (differentiable); see the module docstring.

    x: (N, C, *spatial); weight, bias: (C,) or None; residual: None or x's shape and dtype (any strides; it is
    added before the activation, as at the end of a ResNet block); returns a tensor with x's shape, dtype and
    memory format. Raises TypeError / ValueError for bad arguments and RuntimeError if the kernels are not
    available. ``validated=True`` (for callers that have checked the arguments, num_groups dividing C
    included, and got True from :func:`can_handle`) skips the second validation in eager mode.
    """
    if not is_available():
        raise RuntimeError(f"groupnorm compiled kernels are not available: {load_error()}")
    if activation not in _ACTS:
        raise ValueError(f"activation must be None, 'relu', 'silu' or 'gelu', got {activation!r}")
    return _run(x, num_groups, weight, bias, eps, activation, residual, validated)


def _run(x, num_groups, weight, bias, eps, activation, residual, validated):
    """The kernels' forward: the custom op when dynamo traces (fake kernel + registered autograd), else the
    eager path (an ``autograd.Function`` over the same code, without the op dispatcher's Python layers)."""
    if _is_compiling():
        return _ops.gn_forward(x, num_groups, weight, bias, float(eps), activation or "none", residual)[0]
    return _ops.group_norm_eager(x, num_groups, weight, bias, float(eps), activation or "none", validated, residual)


_INF = float("inf")


def try_group_norm(x, num_groups, weight, bias, eps, activation, residual=None):
    """``act(GroupNorm(x) [+ residual])`` through the kernels if they take this call, else None (nothing was
    checked beyond that).

    Taken when :func:`can_handle` says yes, ``num_groups`` is a positive int dividing C and ``eps`` a finite
    non-negative float or int. ``groupnorm.functional.group_norm`` calls it first and, on None, checks its
    arguments (raising errors that name the bad value) and takes the plain path: for the usual call the checks
    here are the only ones, which keeps a small GN's Python overhead near ``F.group_norm``'s.
    """
    if not can_handle(x, weight, bias, activation, residual):
        return None
    if (num_groups.__class__ is not int or num_groups < 1 or x.shape[1] % num_groups
            or eps.__class__ not in (float, int) or not 0 <= eps < _INF):
        return None
    return _run(x, num_groups, weight, bias, eps, activation, residual, True)
