"""Loading the compiled kernel library (csrc/, built by setup.py as the Python module ``_gn_kernels``) and
calling it on tensors.

The library has a plain C API (``csrc/gn_api.h``) and no PyTorch headers, so it does not tie the package to one
torch release; ``csrc/gn_python.cpp`` makes it a Python module whose ``forward`` / ``backward`` take the API's
arguments as ints (data pointers) and floats. This module knows the API's codes and turns tensors into (pointer,
sizes, layout) arguments; it does not check user input beyond what the C side needs (the operators of
``csrc/gn_torch_ops.cpp`` do that).
"""
from __future__ import annotations

import importlib

import torch

from ..layout import LAYOUT_NCS, LAYOUT_NSC, layout_of, to_layout  # noqa: F401 (the API's layout codes)

EXT_NAME = "groupnorm.kernels._gn_kernels"
# GN_ABI_VERSION of csrc/gn_api.h (its one definition; tests/kernels/test_kernels.py checks the two agree): the library
# must have been built from the sources this Python code belongs to
ABI_VERSION = 3

DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
ISA_NAMES = {0: "baseline x86-64 / generic", 1: "AVX2+FMA (x86-64-v3)", 2: "AVX-512 (x86-64-v4)",
             3: "AVX-512 + AVX512_BF16 (bfloat16 data; other dtypes: AVX-512)"}
_ERRORS = {1: "invalid argument", 2: "out of memory"}

_lib = None
_load_error: str | None = None
_fwd_call = None  # the module's forward / backward, bound once loaded
_bwd_call = None


def _load():
    global _lib, _load_error, _fwd_call, _bwd_call
    if _lib is not None or _load_error is not None:
        return _lib
    try:
        mod = importlib.import_module(EXT_NAME)
        got = mod.abi_version()
        if got != ABI_VERSION:
            raise ImportError(f"kernel library ABI version {got} != {ABI_VERSION}; re-install the package")
        _fwd_call, _bwd_call = mod.forward, mod.backward
        _lib = mod
    except ImportError as exc:  # not built (no C++ compiler at install time?), or a stale library
        _load_error = f"the compiled kernels did not load: {exc}"
    except AttributeError as exc:  # a library from before the module entry points
        _load_error = f"the compiled kernel library is stale ({exc}); re-install the package"
    return _lib


def load_error() -> str | None:
    """Why the library did not load (None if it loaded)."""
    _load()
    return _load_error


def is_loaded() -> bool:
    return _load() is not None


def isa() -> int:
    """Instruction-set level in use: 0 baseline, 1 AVX2, 2 AVX-512, 3 AVX-512 + AVX512_BF16."""
    return _require().get_isa()


def set_isa(level: int | None) -> int:
    """Force an instruction-set level (None: the best this CPU runs). Raises ValueError if the CPU lacks it."""
    lib = _require()
    got = lib.set_isa(-1 if level is None else int(level))
    if got < 0:
        raise ValueError(f"instruction-set level {level} is not supported on this CPU "
                         f"(best: {lib.set_isa(-1)}: {ISA_NAMES[lib.get_isa()]})")
    return got


def max_compiled_isa() -> int:
    return _require().max_compiled_isa()


def cache_sizes() -> tuple[int, int, int]:
    """(L1 data, L2, last-level) cache sizes in bytes that the kernels' blocking is chosen from."""
    return tuple(_require().cache_sizes())


def set_cache_sizes(l1: int = 0, l2: int = 0, l3: int = 0) -> None:
    """Override the cache sizes the blocking uses (0: the detected size), e.g. to test the tiled paths."""
    _require().set_cache_sizes(int(l1), int(l2), int(l3))


def _require():
    lib = _load()
    if lib is None:
        raise RuntimeError(f"groupnorm compiled kernels are not available: {_load_error}")
    return lib


def _check(rc: int, what: str) -> None:
    if rc != 0:
        msg = _ERRORS.get(rc, f"error code {rc}")
        if rc == 2:
            raise MemoryError(f"groupnorm kernel {what}: {msg}")
        raise RuntimeError(f"groupnorm kernel {what}: {msg}")


def forward(x, num_groups, weight, bias, eps, act, y, mean, rstd, layout, nthreads, residual=None) -> None:
    """Raw call (act: the activation's code): all tensors on CPU, x / y / residual in ``layout``; mean / rstd float64 contiguous (N * G)
    tensors or raw pointers (int) to N * G doubles, or both None (statistics not returned); residual (x's
    shape and dtype) or None: ``y = act(GN(x) + residual)``."""
    shape = x.shape
    n, c = shape[0], shape[1]
    s = x.numel() // (n * c)
    if _fwd_call is None:
        _require()
    # pointers written out (no helper call per pointer): this runs once per GN call
    rc = _fwd_call(DTYPES[x.dtype], layout, n, c, s, num_groups, x.data_ptr(),
                   None if weight is None else weight.data_ptr(), None if bias is None else bias.data_ptr(),
                   None if residual is None else residual.data_ptr(), eps, act, y.data_ptr(),
                   mean if mean is None or mean.__class__ is int else mean.data_ptr(),
                   rstd if rstd is None or rstd.__class__ is int else rstd.data_ptr(), nthreads)
    if rc:
        _check(rc, "forward")


def backward(dy, x, mean, rstd, num_groups, weight, bias, act, dx, dw, db, layout, nthreads, residual=None,
             dresidual=None) -> None:
    """Raw call: dy / x / dx / residual / dresidual in ``layout``; dx, dw, db may be None (not computed); mean /
    rstd as in forward (tensors or raw pointers, not None). With a residual and an activation, ``dresidual``
    (required then) receives dv = dy * act'(v), the residual's gradient; with no activation both are ignored
    (the residual's gradient is dy)."""
    n, c = x.shape[0], x.shape[1]
    s = x.numel() // (n * c)
    if _bwd_call is None:
        _require()
    # pointers written out (no helper call per pointer): this runs once per GN call
    rc = _bwd_call(DTYPES[x.dtype], layout, n, c, s, num_groups, dy.data_ptr(), x.data_ptr(),
                   None if residual is None else residual.data_ptr(),
                   None if dresidual is None else dresidual.data_ptr(),
                   mean if mean.__class__ is int else mean.data_ptr(), rstd if rstd.__class__ is int else rstd.data_ptr(),
                   None if weight is None else weight.data_ptr(), None if bias is None else bias.data_ptr(),
                   act, None if dx is None else dx.data_ptr(), None if dw is None else dw.data_ptr(),
                   None if db is None else db.data_ptr(), nthreads)
    if rc:
        _check(rc, "backward")
