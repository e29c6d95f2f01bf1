"""Modules: drop-ins for ``torch.nn`` normalization layers and what ``torch.nn`` lacks."""
from .factory import NORM_NAMES, make_norm
from .frozen_bn import FrozenBatchNorm
from .group_norm import GroupNorm
from .norm_act import BatchNormAct2d, FrozenBatchNormAct, IdentityAct, SyncBatchNormAct
from .sync_bn import SyncBatchNorm
from .worker_bn import WorkerBatchNorm2d
from .ws_conv import WSConv1d, WSConv2d, WSConv3d

__all__ = [
    "GroupNorm",
    "FrozenBatchNorm",
    "SyncBatchNorm",
    "WorkerBatchNorm2d",
    "WSConv1d",
    "WSConv2d",
    "WSConv3d",
    "BatchNormAct2d",
    "FrozenBatchNormAct",
    "SyncBatchNormAct",
    "IdentityAct",
    "make_norm",
    "NORM_NAMES",
]
