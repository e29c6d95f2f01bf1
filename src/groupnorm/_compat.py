"""The private PyTorch APIs the package uses, in one place, each with a fallback to a public API (or a safe
answer) for a torch release where it is gone or moved. Nothing else in the package reaches into ``torch._*``.

* :data:`functorch_transforms_active` -- ``torch._C._are_functorch_transforms_active``: whether a
  ``torch.func`` transform (vmap, grad, jvp, ...) is active, in ~50 ns. Fallback: False (the kernels' operator
  then meets the transform, which runs it per sample or raises; no wrong result).
* :func:`in_onnx_export` -- the two ONNX exporters' own flags (``torch.onnx.is_in_onnx_export()`` imports two
  modules per call, ~5 us). Fallback: ``torch.onnx.is_in_onnx_export()``.
* :func:`onnx_export_flags` -- those flag holders, for tests that set them.
"""
from __future__ import annotations

import torch

__all__ = ["functorch_transforms_active", "in_onnx_export", "onnx_export_flags"]

try:
    functorch_transforms_active = torch._C._are_functorch_transforms_active
except AttributeError:  # pragma: no cover - another torch release
    def functorch_transforms_active() -> bool:
        return False

_is_compiling = torch.compiler.is_compiling
_flags = None  # (TorchScript exporter's GLOBALS, dynamo exporter's _flags) once looked up; False: unavailable


def onnx_export_flags():
    """``(GLOBALS, _flags)``: the objects whose ``in_onnx_export`` / ``_is_onnx_exporting`` attributes say
    an ONNX export is running (the TorchScript and the dynamo exporter), or None on a torch release without
    them."""
    global _flags
    if _flags is None:
        try:
            from torch.onnx._internal.exporter import _flags as dynamo_flags
            from torch.onnx._internal.torchscript_exporter._globals import GLOBALS

            GLOBALS.in_onnx_export, dynamo_flags._is_onnx_exporting  # noqa: B018 - the attributes exist
            _flags = (GLOBALS, dynamo_flags)
        except (ImportError, AttributeError):  # another torch release: the public function
            _flags = False
    return _flags or None


def in_onnx_export(compiling: bool | None = None) -> bool:
    """``torch.onnx.is_in_onnx_export()``, without its two imports per call (``compiling``: what
    ``torch.compiler.is_compiling()`` says, if the caller has asked already)."""
    flags = _flags
    if not flags:
        return torch.onnx.is_in_onnx_export()
    if compiling if compiling is not None else _is_compiling():  # traced by dynamo (torch.compile, torch.export, the dynamo ONNX exporter): only that
        # exporter's flag applies, and dynamo reads a module global without a graph break (the TorchScript
        # exporter's flag is a property dynamo will not trace)
        return bool(flags[1]._is_onnx_exporting)
    return bool(flags[0].in_onnx_export or flags[1]._is_onnx_exporting)


# looked up at import, not at the first call: that call may come while dynamo traces (torch.compile in a fresh
# process), which cannot trace an import
onnx_export_flags()
