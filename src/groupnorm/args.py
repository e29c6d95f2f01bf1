"""The arguments of GroupNorm, defined and checked in one place: the activation names and their codes, the
group-count rule and the eps rule. Every layer (the NumPy reference, the PyTorch function, the layers, the
compiled kernels' op) takes them from here. No torch import: ``groupnorm.reference`` uses this module too.

* activation: None (identity) or one of ``ACTIVATIONS``, applied after the affine,
  ``y = act(gamma * xhat + beta [+ residual])``; ``ACTIVATION_CODES`` maps each to the C ABI's ``GN_ACT_*``
  code (``kernels/csrc/gn_api.h``), which is what the compiled op takes, and ``ACTIVATION_NAMES`` back.
* groups: exactly one of ``num_groups`` (G) and ``group_size`` (C // G), a positive integer; which G a request
  gives for C channels is :func:`resolve_num_groups`'s ``policy``: ``exact`` (it must divide C: the layers and
  functions), ``clamp`` (a request above C is clamped to C, then exact: ``groupnorm.nn.make_norm``) or
  ``largest_divisor`` (the largest divisor of C not above the requested G: ``groupnorm.convert_bn_to_gn``).
* eps: a finite non-negative number, added to the variance inside the square root.
"""
from __future__ import annotations

import math
import numbers

__all__ = ["ACTIVATIONS", "ACTIVATION_NAMES", "ACTIVATION_CODES", "activation_code", "check_activation",
           "GROUP_POLICIES", "check_group_request", "resolve_num_groups", "check_eps"]

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


GROUP_POLICIES = ("exact", "clamp", "largest_divisor")
"""How :func:`resolve_num_groups` turns a request into G for C channels (see there)."""


def check_group_request(num_groups=None, group_size=None) -> tuple[str, int]:
    """``(name, value)`` of the one request given: ``("num_groups", G)`` or ``("group_size", K)``. Raises
    ValueError unless exactly one is given and it is a positive integer (Python or NumPy, not a bool)."""
    if (num_groups is None) == (group_size is None):
        raise ValueError(
            f"give exactly one of num_groups and group_size, got num_groups={num_groups}, group_size={group_size}"
        )
    name, value = ("num_groups", num_groups) if num_groups is not None else ("group_size", group_size)
    if not _is_int(value) or value <= 0:
        raise ValueError(f"{name} must be a positive integer, got {name}={value!r}")
    return name, int(value)


def resolve_num_groups(num_channels, num_groups=None, group_size=None, *, policy: str = "exact") -> int:
    """The number of groups G for ``num_channels`` (C) channels from exactly one of ``num_groups`` (G) and
    ``group_size`` (K, channels per group: G = C // K), each a positive integer (Python or NumPy).

    ``policy`` (one of ``GROUP_POLICIES``) says what a request that does not fit C gives:

    * ``"exact"`` (the layers, the functions, the reference): G, or K, must divide C; else ValueError.
    * ``"clamp"`` (``groupnorm.nn.make_norm``; the paper's Table 3): a request above C is first clamped to C
      (``num_groups > C``: C groups of one channel; ``group_size > C``: one group), then as ``"exact"``.
    * ``"largest_divisor"`` (``groupnorm.convert_bn_to_gn``): the largest divisor of C not above the requested
      group count (G, or C // K), so G itself when it divides C and C when ``G > C``; always at least 1.
      ``group_size > C`` is a ValueError (no group of that size fits).

    Raises ValueError naming the bad value.
    """
    if policy not in GROUP_POLICIES:
        raise ValueError(f"unknown policy {policy!r}; expected one of {', '.join(map(repr, GROUP_POLICIES))}")
    name, value = check_group_request(num_groups, group_size)
    if not _is_int(num_channels) or num_channels <= 0:
        raise ValueError(f"num_channels must be a positive integer, got num_channels={num_channels!r}")
    c = int(num_channels)
    if policy == "largest_divisor":
        if name == "group_size" and value > c:
            raise ValueError(f"group_size={value} is larger than num_channels={c}")
        target = min(value if name == "num_groups" else c // value, c)
        return max(d for d in range(1, target + 1) if c % d == 0)
    fit = min(value, c) if policy == "clamp" else value
    if c % fit:
        raise ValueError(f"{name}={value} does not divide num_channels={c}")
    return fit if name == "num_groups" else c // fit


def check_eps(eps) -> float:
    """``eps`` as a float; ValueError unless it is a finite non-negative real number (not a bool)."""
    if isinstance(eps, numbers.Real) and not isinstance(eps, bool) and 0 <= eps and math.isfinite(eps):
        return float(eps)
    raise ValueError(f"eps must be a finite non-negative number, got eps={eps!r}")
