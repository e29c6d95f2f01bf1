"""Modules: drop-ins for ``torch.nn`` normalization layers and what ``torch.nn`` lacks."""
from .group_norm import GroupNorm

__all__ = ["GroupNorm"]
