"""Modules: drop-ins for ``torch.nn`` normalization layers and what ``torch.nn`` lacks."""
from .group_norm import GroupNorm

__all__ = ["GroupNorm"]
from .frozen_bn import FrozenBatchNorm  # noqa: E402
from .sync_bn import SyncBatchNorm  # noqa: E402
from .ws_conv import WSConv1d, WSConv2d, WSConv3d  # noqa: E402
__all__ += ["FrozenBatchNorm", "SyncBatchNorm", "WSConv1d", "WSConv2d", "WSConv3d"]
from .factory import make_norm  # noqa: E402,F401  (norm layers by name; see factory.NORM_NAMES)
