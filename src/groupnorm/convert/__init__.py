"""Model surgery: BatchNorm to GroupNorm, torch's GroupNorm onto ours, frozen BN, SyncBN that works on CPU, WS convs.

Every function walks any ``nn.Module`` (nested ``Sequential``, ``ModuleList``, ``ModuleDict``, plain
attributes, the root module itself), replaces the matching layers, and keeps:

- sharing: a module used in several places is replaced by *one* new module used in the same places;
- ``.training`` of every replaced layer; device, dtype and ``requires_grad`` of the carried tensors;
- a norm-with-activation layer's activation and its ``forward(x, residual=None)``
  (``groupnorm.nn.norm_act``: e.g. ``BatchNormAct`` becomes ``SyncBatchNormAct`` or a ``GroupNorm`` with
  that activation);
- the input model, unless ``inplace=True`` (the default works on a ``copy.deepcopy``).

``convert_bn_to_gn``, ``convert_group_norm`` and ``convert_conv_to_ws`` can return a :class:`ConversionReport`
and log a one-line summary on the ``groupnorm.convert`` logger.

One module per conversion, all re-exported here (``groupnorm.convert.NAME``; the functions also as
``groupnorm.NAME``):

========================= ==================================================================================
``convert.bn_to_gn``      :func:`convert_bn_to_gn` (BatchNorm to GroupNorm), :func:`fallback_num_groups`
``convert.group_norm``    :func:`convert_group_norm` (torch's GroupNorm onto ours, activations fused)
``convert.frozen_bn``     :func:`freeze_batch_norm`, :func:`unfreeze_batch_norm` (BN*)
``convert.sync_bn``       :func:`convert_sync_batchnorm`
``convert.ws_conv``       :func:`convert_conv_to_ws` (weight standardization)
``convert.report``        :class:`ConversionReport`, :class:`ConvertedLayer`
``convert.traversal``     the module walk they share (sharing, ``.training``, the activation kept)
========================= ==================================================================================
"""
from .bn_to_gn import DEFAULT_NUM_GROUPS, convert_bn_to_gn, fallback_num_groups  # noqa: F401 (also public)
from .frozen_bn import freeze_batch_norm, unfreeze_batch_norm
from .group_norm import GROUP_NORM_SUBCLASSES, convert_group_norm  # noqa: F401 (also public)
from .report import ConversionReport, ConvertedLayer
from .sync_bn import convert_sync_batchnorm
from .traversal import log  # noqa: F401 (the "groupnorm.convert" logger)
from .ws_conv import convert_conv_to_ws

__all__ = [
    "ConvertedLayer",
    "ConversionReport",
    "convert_bn_to_gn",
    "convert_group_norm",
    "fallback_num_groups",
    "freeze_batch_norm",
    "unfreeze_batch_norm",
    "convert_sync_batchnorm",
    "convert_conv_to_ws",
]
