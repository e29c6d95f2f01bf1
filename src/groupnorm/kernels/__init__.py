"""Compiled CPU kernels for GroupNorm with a fused activation and residual (forward and backward), and the
plain path's operator.

``groupnorm.functional.group_norm`` asks :func:`route` and calls the C++ entry ``groupnorm::group_norm`` it
returns (which checks the arguments and decides kernels or plain in C++), or checks them itself and takes the
plain path in Python (tracing, ONNX export, functorch, no library). The kernels (C++
in ``csrc/``, OpenMP threads, AVX-512 / AVX2 / baseline code chosen at run time, no PyTorch headers) are PyTorch
operators registered from C++ (``csrc/gn_torch_ops.cpp``), so a call costs what a native ATen operator costs,
and autograd, ``torch.compile``, fake tensors, ``gradcheck`` and double backward work through them:

``groupnorm::gn_forward(x, num_groups, weight, bias, eps, activation, residual=None) -> (y, mean, rstd)``
    ``y = act((x - mean) * rstd * weight + bias [+ residual])``; x is ``(N, C, *spatial)``, y has x's shape,
    dtype and strides; ``activation`` is its code (``groupnorm.args.ACTIVATION_CODES``); mean and rstd are
    float64 ``(N, G)``. CPU, Meta and Autograd kernels; the backward node calls gn_backward, or, when the
    backward is itself recorded (``create_graph=True``), differentiates gn_plain (double backward, eager mode).
``groupnorm::gn_backward(dy, x, mean, rstd, weight, bias, num_groups, activation, need_dx, need_dw, need_db,
    residual=None) -> (dx, dweight, dbias, dv)``
    an output not needed is None; ``dv = dy * act'(pre-activation)`` is the residual's gradient when there is
    an activation (without one it is dy).
``groupnorm::gn_plain(x, num_groups, weight, bias, eps, activation, residual=None) -> y``
    the plain path on any device and dtype (CompositeImplicitAutograd over torch's GN, add and activation,
    with the large-mean shift of ``groupnorm.plain``'s docstring on CPU).
``groupnorm::group_norm(x, num_groups, weight, bias, eps, activation, residual=None) -> y``
    the one entry (CompositeImplicitAutograd): gn_forward's y where the kernels take the call, else gn_plain's.
``groupnorm::kernel_takes(x, weight, bias, residual) -> bool``
    the entry's predicate (:func:`kernel_takes`).

Covered: CPU tensors of rank >= 2 (N, C, *spatial), float32 / float64 / bfloat16 / float16 (half types and
float32 accumulate in float32 lanes folded into float64 sums), contiguous or channels-last (any rank; other
strides are copied to contiguous first), weight / bias of x's dtype or None, activation None / "relu" /
"silu" / "gelu" (exact, erf), a residual of x's shape and dtype. Threads: ``torch.get_num_threads()``.

CUDA tensors take the Triton kernels of ``groupnorm.kernels.triton`` where Triton is installed (:func:`route`
decides); this package's compiled kernels are CPU kernels.

Switches: the environment variable ``GROUPNORM_DISABLE_KERNELS=1`` (read by the C++ entry at every call; in
Python :func:`disabled`, :func:`set_disabled` and :func:`disabled_scope`) forces the plain path; :func:`set_isa`
forces an instruction-set level (0 baseline, 1 AVX2, 2 AVX-512, 3 AVX-512 with AVX512_BF16 for bfloat16 data)
for testing.
"""
from __future__ import annotations

import contextlib
import os
import warnings

import torch

from .._compat import functorch_transforms_active, in_onnx_export
from ..args import activation_code
from . import _lib
from . import triton as _triton

__all__ = ["is_available", "route", "ENTRY", "PLAIN_PY", "kernel_takes", "kernel_for", "can_handle", "group_norm",
           "DISABLE_ENV", "disabled", "set_disabled", "disabled_scope", "load_error", "isa", "set_isa", "ISA_NAMES"]

ISA_NAMES = _lib.ISA_NAMES

_available = None  # True / False once known (a loaded library stays loaded)
_ops_error = None
_gn_forward = _gn_forward_call = None  # torch.ops.groupnorm.gn_forward.default and its C++ callable
_group_norm_op = _group_norm_call = None  # torch.ops.groupnorm.group_norm.default (the one entry) and its C++ callable
_kernel_takes_call = None  # torch.ops.groupnorm.kernel_takes.default's C++ callable
_group_norm_fast = None  # the library's group_norm: the same operator called unboxed (plain tensors, eager)


def is_available() -> bool:
    """True if the compiled kernel library loaded and registered its operators."""
    global _available, _ops_error, _gn_forward, _gn_forward_call, _group_norm_op, _group_norm_call, \
        _kernel_takes_call, _group_norm_fast
    if _available is None:
        ok = _lib.is_loaded()
        if ok:
            try:
                _gn_forward = torch.ops.groupnorm.gn_forward.default
                _gn_forward_call = _gn_forward._op  # what OpOverload.__call__ calls, without its Python frame
                _group_norm_op = torch.ops.groupnorm.group_norm.default
                _group_norm_call = _group_norm_op._op
                _kernel_takes_call = torch.ops.groupnorm.kernel_takes.default._op
                _group_norm_fast = getattr(_lib._load(), "group_norm", _group_norm_call)
            except (AttributeError, RuntimeError) as exc:  # a library built without its operator unit
                _ops_error, ok = f"the kernels' PyTorch operators are not registered: {exc}", False
        _available = ok
    return _available


def load_error() -> str | None:
    """Why the kernels are not available (None if they are)."""
    is_available()
    return _lib.load_error() or _ops_error


DISABLE_ENV = "GROUPNORM_DISABLE_KERNELS"
"""The switch that forces the plain path: set to 1 / true / yes / on (any case, blanks around ignored)."""
_DISABLE_VALUES = ("1", "true", "yes", "on")


def disabled() -> bool:
    """True if :data:`DISABLE_ENV` is set to 1 / true / yes / on (read now). The one Python reading of the switch;
    the C++ entry reads it itself at every call (``kernels_disabled`` in ``csrc/gn_torch_ops.cpp``, the same
    rule, which a test keeps equal to this one)."""
    return os.environ.get(DISABLE_ENV, "").strip().lower() in _DISABLE_VALUES


def set_disabled(flag: bool) -> None:
    """Set :data:`DISABLE_ENV` to ``"1"`` (``flag`` true: the plain path from the next call on) or remove it."""
    if flag:
        os.environ[DISABLE_ENV] = "1"
    else:
        os.environ.pop(DISABLE_ENV, None)


@contextlib.contextmanager
def disabled_scope(flag: bool = True):
    """Inside the block the kernels are disabled (``flag`` true) or enabled (false) through :data:`DISABLE_ENV`;
    the caller's setting of the variable is restored after."""
    saved = os.environ.get(DISABLE_ENV)
    set_disabled(flag)
    try:
        yield
    finally:
        if saved is None:
            os.environ.pop(DISABLE_ENV, None)
        else:
            os.environ[DISABLE_ENV] = saved


def isa() -> int:
    """The instruction-set level in use: 0 baseline, 1 AVX2 (x86-64-v3), 2 AVX-512 (x86-64-v4), 3 AVX-512 +
    AVX512_BF16 (bfloat16 data on level 3 code, other dtypes on level 2's)."""
    return _lib.isa()


def set_isa(level: int | None) -> int:
    """Force an instruction-set level (None: the best this CPU supports); returns the level now in use."""
    return _lib.set_isa(level)


_TENSOR = torch.Tensor
_STRIDED = torch.strided
# bound once: inside a training step each attribute lookup through torch's modules is a cache miss (the
# convolutions between GN layers evict the interpreter's data); dynamo recognizes these functions by identity
_is_scripting, _is_tracing = torch.jit.is_scripting, torch.jit.is_tracing
_is_compiling = torch.compiler.is_compiling
_functorch_active = functorch_transforms_active
_torch_function_mode = torch._C._is_torch_function_mode_enabled
_PARAMETER = torch.nn.Parameter
_in_onnx_export = in_onnx_export


ENTRY, PLAIN_PY = 0, 1
"""What :func:`route` picks: an entry (the C++ ``groupnorm::group_norm``, or the Triton path's), or the plain
path in Python."""
_PY = (PLAIN_PY, None)
_TRITON = (ENTRY, _triton.entry)
_triton_cpu = False  # groupnorm.kernels.triton.route_cpu: CPU tensors to the Triton path (its interpreter)


def _set_triton_cpu(enabled: bool) -> None:
    global _triton_cpu
    _triton_cpu = enabled


def route(x, weight=None, bias=None, residual=None):
    """The one Python decision, ``(how, op)``: ``(ENTRY, f)`` with ``f(x, num_groups, weight, bias, eps,
    activation_code, residual) -> y`` the Triton path's entry (``groupnorm.kernels.triton.entry``) for a CUDA
    tensor it accepts (``groupnorm.kernels.triton.accepts``; not while TorchScript traces, during ONNX export or
    under functorch transforms), else the C++ entry ``groupnorm::group_norm``, which decides kernels or plain
    (``kernel_takes`` in ``csrc/gn_torch_ops.cpp``, the one predicate; :func:`kernel_takes` asks it) and checks
    the arguments with the errors the Python checks raise; or ``(PLAIN_PY, None)``, the plain path in Python
    (:func:`groupnorm.plain.group_norm_plain`, after ``groupnorm.functional``'s checks).

    PLAIN_PY when: the library did not load; x, weight, bias or residual is not None or a dense (strided)
    tensor (a non-tensor goes to Python, whose checks name it); during ONNX export or TorchScript tracing /
    scripting (they need standard ops); under functorch transforms (``torch.func.vmap``, ``grad``, ...), which
    the Python path composes with. Else ENTRY: the ``OpOverload`` while dynamo traces (``torch.compile``; AOT
    autograd decomposes it into gn_forward or torch's ops at trace time); for plain tensors and parameters with no
    TorchFunctionMode active, the library's ``group_norm`` (the same operator called unboxed, as torch's own
    bindings call theirs); else its C++ entry (``OpOverload._op``: no Python frame, arguments boxed).
    """
    # one function, no helpers: inside a training step every Python call costs several times what it costs in a
    # tight loop (cold caches), and this runs once per GN call
    plain = x.__class__ is _TENSOR  # no subclass (its __torch_function__ needs the OpOverload's Python path)
    if not plain and not isinstance(x, _TENSOR) or x.layout is not _STRIDED:
        return _PY
    if (x.is_cuda or _triton_cpu) and _triton.accepts(x, weight, bias, residual):
        if _is_scripting() or _is_tracing() or _in_onnx_export(None):
            return _PY
        if not _is_compiling() and _functorch_active():
            return _PY
        return _TRITON
    if not _available:
        return _PY
    for p in (weight, bias, residual):
        if p is not None:
            if not isinstance(p, _TENSOR) or p.layout is not _STRIDED:
                return _PY
            if p.__class__ is not _TENSOR and p.__class__ is not _PARAMETER:
                plain = False
    if _is_scripting() or _is_tracing():
        return _PY
    compiling = _is_compiling()
    if _in_onnx_export(compiling):
        return _PY
    if compiling:
        return (ENTRY, _group_norm_op)
    # vmap / grad / jvp: the Python path composes with them (dynamo, which traces this, handles functorch itself)
    if _functorch_active():
        return _PY
    if plain and not _torch_function_mode():  # the operator called unboxed: no boxing of the arguments
        return (ENTRY, _group_norm_fast)
    return (ENTRY, _group_norm_call)


def kernel_takes(x, weight=None, bias=None, residual=None) -> bool:
    """Whether a ``groupnorm.functional.group_norm`` call with these tensors runs the compiled kernels now:
    :func:`route` picks the C++ entry and the entry's predicate (x a non-empty dense CPU tensor of a kernel dtype,
    weight / bias / residual None or CPU tensors of x's dtype, ``GROUPNORM_DISABLE_KERNELS`` not set) holds."""
    how, op = route(x, weight, bias, residual)
    if how != ENTRY or op is _triton.entry or _is_compiling():
        return False
    return _kernel_takes_call(x, weight, bias, residual)


def kernel_for(x, weight=None, bias=None, residual=None):
    """The kernels' operator (``gn_forward``'s C++ entry, returning ``(y, mean, rstd)``) if the call runs the
    kernels (:func:`kernel_takes`), else None."""
    return _gn_forward_call if kernel_takes(x, weight, bias, residual) else None


def can_handle(x, weight=None, bias=None, residual=None) -> bool:
    """Deprecated alias of :func:`kernel_takes` (same arguments, same answer); warns with DeprecationWarning."""
    warnings.warn("groupnorm.kernels.can_handle is deprecated; use groupnorm.kernels.kernel_takes",
                  DeprecationWarning, stacklevel=2)
    return kernel_takes(x, weight, bias, residual)


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
# process), which cannot trace an import (Triton only where CUDA is: elsewhere it is loaded when first asked for)
is_available()
if torch.cuda.is_available():
    _triton.is_available()
