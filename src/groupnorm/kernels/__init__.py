"""Compiled CPU kernels for GroupNorm (placeholder until the kernels land: nothing is available)."""


def is_available() -> bool:
    return False


def can_handle(x, weight, bias, activation) -> bool:  # noqa: ARG001
    return False
