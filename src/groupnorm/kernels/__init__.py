"""Compiled CPU kernels for GroupNorm with a fused activation and residual (forward and backward).

``groupnorm.functional.group_norm`` asks :func:`kernel_for` (the one decision) and calls the operator it returns
(which checks the arguments) or checks them itself and takes the plain PyTorch path. The kernels (C++ in ``csrc/``, OpenMP threads, AVX-512 / AVX2 /
baseline code chosen at run time, no PyTorch headers) are PyTorch operators registered from C++
(``csrc/gn_torch_ops.cpp``: ``torch.ops.groupnorm.gn_forward`` / ``gn_backward`` with CPU, Meta and autograd
kernels; see ``ops.py``), so a call costs what a native ATen operator costs, and autograd, ``torch.compile``,
fake tensors, ``gradcheck`` and double backward work through them.

Covered: CPU tensors of rank >= 2 (N, C, *spatial), float32 / float64 / bfloat16 / float16 (half types and
float32 accumulate in float32 lanes folded into float64 sums), contiguous or channels-last (any rank; other
strides are copied to contiguous first), weight / bias of x's dtype or None, activation None / "relu" /
"silu" / "gelu" (exact, erf), a residual of x's shape and dtype. Threads: ``torch.get_num_threads()``.

Switches: the environment variable ``GROUPNORM_DISABLE_KERNELS=1`` (read at every call) forces the plain
path; :func:`set_isa` forces an instruction-set level (0 baseline, 1 AVX2, 2 AVX-512, 3 AVX-512 with AVX512_BF16 for
bfloat16 data) for testing.
"""
from __future__ import annotations

import os

import torch

from .._compat import functorch_transforms_active, in_onnx_export
from ..args import activation_code
from . import _lib

__all__ = ["is_available", "kernel_for", "can_handle", "group_norm", "disabled", "load_error", "isa", "set_isa",
           "ISA_NAMES"]

ISA_NAMES = _lib.ISA_NAMES

_available = None  # True / False once known (a loaded library stays loaded)
_ops_error = None
_gn_forward = _gn_forward_call = None  # torch.ops.groupnorm.gn_forward.default and its C++ callable


def is_available() -> bool:
    """True if the compiled kernel library loaded and registered its operators."""
    global _available, _ops_error, _gn_forward, _gn_forward_call
    if _available is None:
        ok = _lib.is_loaded()
        if ok:
            try:
                _gn_forward = torch.ops.groupnorm.gn_forward.default
                _gn_forward_call = _gn_forward._op  # what OpOverload.__call__ calls, without its Python frame
                from . import ops

                ops.register()
            except (AttributeError, RuntimeError) as exc:  # a library built without its operator unit
                _ops_error, ok = f"the kernels' PyTorch operators are not registered: {exc}", False
        _available = ok
    return _available


def load_error() -> str | None:
    """Why the kernels are not available (None if they are)."""
    is_available()
    return _lib.load_error() or _ops_error


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
_functorch_active = functorch_transforms_active
_in_onnx_export = in_onnx_export


def kernel_for(x, weight=None, bias=None, residual=None):
    """The one decision between the kernels and the plain path: the callable that runs this call through the
    kernels' operator, ``f(x, num_groups, weight, bias, eps, activation_code, residual) -> (y, mean, rstd)``, or
    None for the plain path. It looks only at what decides that (any value may come in: a non-tensor gives
    None); the operator checks the rest (rank, G dividing C, the shapes, eps) and raises the same errors the
    plain path's checks raise.

    None when: ``GROUPNORM_DISABLE_KERNELS=1``; the library did not load; x is not a dense CPU tensor of a
    kernel dtype with at least one element; weight / bias / residual are not None or dense CPU tensors of x's
    dtype; during ONNX export or TorchScript tracing / scripting (they need standard ops); under functorch
    transforms (``torch.func.vmap``, ``grad``, ...), which the plain path composes with. The callable is the
    ``OpOverload`` while dynamo traces (``torch.compile``), else its C++ entry (no Python frame).
    """
    # one function, no helpers: inside a training step every Python call costs several times what it costs in a
    # tight loop (cold caches), and this runs once per GN call
    if not _available or (_ENV_DATA is None or _ENV_DATA_KEY in _ENV_DATA) and disabled():
        return None
    if x.__class__ is not _TENSOR and not isinstance(x, _TENSOR) or not x.is_cpu or x.layout is not _STRIDED:
        return None
    if _is_scripting() or _is_tracing():
        return None
    dtype = x.dtype
    if dtype not in _DTYPES or x.numel() == 0:
        return None
    for p in (weight, bias, residual):
        if p is not None and not (isinstance(p, _TENSOR) and p.is_cpu and p.layout is _STRIDED and p.dtype is dtype):
            return None
    compiling = _is_compiling()
    if _in_onnx_export(compiling):
        return None
    if compiling:
        return _gn_forward
    # vmap / grad / jvp: the plain path composes with them (dynamo, which traces this, handles functorch itself)
    return None if _functorch_active() else _gn_forward_call


def can_handle(x, weight=None, bias=None, residual=None) -> bool:
    """Whether the kernels take this call: ``kernel_for(x, weight, bias, residual) is not None``."""
    return kernel_for(x, weight, bias, residual) is not None


def group_norm(x, num_groups: int, weight=None, bias=None, eps: float = 1e-5, activation=None, *, residual=None):
    """``act(GroupNorm(x) [+ residual])`` through the compiled kernels (differentiable); see the module docstring.

    x: (N, C, *spatial) on CPU; weight, bias: (C,) of x's dtype or None; residual: None or x's shape and dtype
    (any strides; added before the activation, as at the end of a ResNet block); returns a tensor with x's
    shape, dtype and memory format. Raises TypeError / ValueError for bad arguments (the operator's checks) and
    RuntimeError if the kernels are not available. ``groupnorm.functional.group_norm`` is the call that also
    takes the plain path where the kernels do not apply.
    """
    if not is_available():
        raise RuntimeError(f"groupnorm compiled kernels are not available: {load_error()}")
    return _gn_forward(x, num_groups, weight, bias, eps, activation_code(activation), residual)[0]


# loaded at import, not at the first call: that call may come while dynamo traces (torch.compile of a fresh
# process), which cannot trace an import
is_available()
