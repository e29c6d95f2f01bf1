"""Old public names kept working after a rename: the module-level ``__getattr__`` (PEP 562) of a module that
renamed something calls :func:`deprecated_alias`, which warns once per call site and returns the new object."""
from __future__ import annotations

import warnings

__all__ = ["deprecated_alias"]


def deprecated_alias(module: str, name: str, renamed: dict[str, str], namespace: dict):
    """``namespace[renamed[name]]`` with a DeprecationWarning naming the new name (the caller of the module's
    ``__getattr__`` is the warning's location); AttributeError, as Python words it, for any other ``name``."""
    try:
        new = renamed[name]
    except KeyError:
        raise AttributeError(f"module {module!r} has no attribute {name!r}") from None
    warnings.warn(f"{module}.{name} is deprecated; use {module}.{new} (the same object)", DeprecationWarning,
                  stacklevel=3)
    return namespace[new]
