"""Modules: drop-ins for ``torch.nn`` normalization layers and what ``torch.nn`` lacks.

Names: a class that takes inputs of any rank >= 2 has no rank suffix (``GroupNorm``, ``FrozenBatchNorm``,
``SyncBatchNorm``, ``WorkerBatchNorm``, ``BatchNormAct``); one per rank has it (``WSConv1d/2d/3d``). A
norm-with-activation class is its norm's name plus ``Act``. The former names ``BatchNormAct2d`` and
``WorkerBatchNorm2d`` still work (the same classes) with a DeprecationWarning.
"""
from .._deprecated import deprecated_alias
from .factory import NORM_NAMES, make_norm
from .frozen_bn import FrozenBatchNorm
from .group_norm import GroupNorm
from .norm_act import BatchNormAct, FrozenBatchNormAct, IdentityAct, SyncBatchNormAct
from .sync_bn import SyncBatchNorm
from .worker_bn import WorkerBatchNorm
from .ws_conv import WSConv1d, WSConv2d, WSConv3d

__all__ = [
    "GroupNorm",
    "FrozenBatchNorm",
    "SyncBatchNorm",
    "WorkerBatchNorm",
    "WSConv1d",
    "WSConv2d",
    "WSConv3d",
    "BatchNormAct",
    "FrozenBatchNormAct",
    "SyncBatchNormAct",
    "IdentityAct",
    "make_norm",
    "NORM_NAMES",
]

_DEPRECATED = {"BatchNormAct2d": "BatchNormAct", "WorkerBatchNorm2d": "WorkerBatchNorm"}


def __getattr__(name: str):
    """The former names of ``_DEPRECATED``: the same classes, with a DeprecationWarning."""
    return deprecated_alias(__name__, name, _DEPRECATED, globals())
