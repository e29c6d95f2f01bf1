"""groupnorm: Group Normalization (Wu & He, ECCV 2018) as software.

Layers (``groupnorm.nn``), functions (``groupnorm.functional``), a NumPy float64 oracle
(``groupnorm.reference``), compiled CPU kernels (``groupnorm.kernels``), model surgery and a reproduction
harness for the paper's experiments (``groupnorm.experiments``).

``import groupnorm`` is cheap: it loads neither torch nor the compiled kernels. The names below are loaded on
first use (PEP 562), so ``groupnorm.reference`` (NumPy only) works where torch is not installed, and
``groupnorm.convert_bn_to_gn`` imports torch and the layers when it is first looked up.
"""
from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

# name -> (module, attribute in it, or None for the module itself)
_LAZY: dict[str, tuple[str, str | None]] = {
    "reference": ("groupnorm.reference", None),  # NumPy only
    "functional": ("groupnorm.functional", None),
    "nn": ("groupnorm.nn", None),
    "kernels": ("groupnorm.kernels", None),
    # model surgery (torch only, no onnx)
    "convert_bn_to_gn": ("groupnorm.convert", "convert_bn_to_gn"),
    "convert_conv_to_ws": ("groupnorm.convert", "convert_conv_to_ws"),
    "convert_group_norm": ("groupnorm.convert", "convert_group_norm"),
    "convert_sync_batchnorm": ("groupnorm.convert", "convert_sync_batchnorm"),
    "freeze_batch_norm": ("groupnorm.convert", "freeze_batch_norm"),
    "unfreeze_batch_norm": ("groupnorm.convert", "unfreeze_batch_norm"),
    # population BN statistics after training
    "precise_bn": ("groupnorm.nn.precise_bn", "precise_bn"),
}

__all__ = ["__version__", *_LAZY]

if TYPE_CHECKING:  # what type checkers and IDEs see; at run time __getattr__ loads these on first use
    from . import functional, kernels, nn, reference  # noqa: F401
    from .nn.precise_bn import precise_bn  # noqa: F401
    from .convert import (  # noqa: F401
        convert_bn_to_gn, convert_conv_to_ws, convert_group_norm, convert_sync_batchnorm, freeze_batch_norm,
        unfreeze_batch_norm)


def __getattr__(name: str) -> Any:
    """Load one of ``__all__`` on first access and keep it as a module attribute (later lookups are direct)."""
    try:
        module_name, attr = _LAZY[name]
    except KeyError:
        raise AttributeError(f"module 'groupnorm' has no attribute {name!r}") from None
    module = importlib.import_module(module_name)
    value = module if attr is None else getattr(module, attr)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
