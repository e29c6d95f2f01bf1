"""The arguments of GroupNorm, defined and checked in one place: the activation names and their codes, the
group-count rule and the eps rule. Every layer (the NumPy reference, the PyTorch function, the layers, the
compiled kernels' op) takes them from here. No torch import: ``groupnorm.reference`` uses this module too.

* activation: None (identity) or one of ``ACTIVATIONS``, applied after the affine,
  ``y = act(gamma * xhat + beta [+ residual])``; ``ACTIVATION_CODES`` maps each to the C ABI's ``GN_ACT_*``
  code (``kernels/csrc/gn_api.h``), which is what the compiled op takes, and ``ACTIVATION_NAMES`` back.
* groups: exactly one of ``num_groups`` (G) and ``group_size`` (C // G), a positive integer dividing C.
* eps: a finite non-negative number, added to the variance inside the square root.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["ACTIVATIONS", "ACTIVATION_NAMES", "ACTIVATION_CODES", "activation_code", "check_activation", "resolve_num_groups",
           "check_eps"]

# indexed by the C ABI's code: gn_api.h's GN_ACT_NONE = 0, GN_ACT_RELU = 1, GN_ACT_SILU = 2, GN_ACT_GELU = 3
ACTIVATION_NAMES = (None, "relu", "silu", "gelu")  # gelu: the exact (erf) form
ACTIVATIONS = ACTIVATION_NAMES[1:]
ACTIVATION_CODES = {name: code for code, name in enumerate(ACTIVATION_NAMES)}


def activation_code(activation) -> int:
    """The C ABI code of ``activation`` (None or one of ``ACTIVATIONS``); ValueError naming it otherwise."""
    try:
        return ACTIVATION_CODES[activation]
    except (KeyError, TypeError):  # TypeError: an unhashable value
        raise ValueError(
            f"unknown activation {activation!r}; expected None or one of {', '.join(map(repr, ACTIVATIONS))}"
        ) from None


def check_activation(activation) -> None:
    """Raise ValueError unless ``activation`` is None or one of ``ACTIVATIONS``."""
    activation_code(activation)


def _is_int(v) -> bool:
    return v.__class__ is int or (isinstance(v, numbers.Integral) and not isinstance(v, bool))


def resolve_num_groups(num_channels, num_groups=None, group_size=None) -> int:
    """The number of groups G from exactly one of ``num_groups`` (G) and ``group_size`` (channels per group,
    C // G); each must be a positive integer (Python or NumPy) dividing ``num_channels`` (C). Raises ValueError
    naming the bad value."""
    if (num_groups is None) == (group_size is None):
        raise ValueError(
            f"give exactly one of num_groups and group_size, got num_groups={num_groups}, group_size={group_size}"
        )
    if not _is_int(num_channels) or num_channels <= 0:
        raise ValueError(f"num_channels must be a positive integer, got num_channels={num_channels!r}")
    name, value = ("num_groups", num_groups) if num_groups is not None else ("group_size", group_size)
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    if num_channels % value:
        raise ValueError(f"{name}={value} does not divide num_channels={num_channels}")
    return int(value) if num_groups is not None else int(num_channels // value)


def check_eps(eps) -> float:
    """``eps`` as a float; ValueError unless it is a finite non-negative real number (not a bool)."""
    if isinstance(eps, numbers.Real) and not isinstance(eps, bool) and 0 <= eps and math.isfinite(eps):
        return float(eps)
    raise ValueError(f"eps must be a finite non-negative number, got eps={eps!r}")
