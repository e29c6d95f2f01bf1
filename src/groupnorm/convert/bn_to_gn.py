"""BatchNorm to GroupNorm: :func:`convert_bn_to_gn`, with the group-count fallback of
:func:`fallback_num_groups` for layers whose channel count the request does not divide."""
from __future__ import annotations

from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from ..args import check_group_request, resolve_num_groups
from ..nn.frozen_bn import FrozenBatchNorm
from ..nn.group_norm import GroupNorm
from .report import ConvertedLayer
from .traversal import activation_kwargs, check_module, copy_param, factory_kwargs, log, replace_modules

__all__ = ["DEFAULT_NUM_GROUPS", "fallback_num_groups", "convert_bn_to_gn"]

DEFAULT_NUM_GROUPS = 32
"""The paper's default: 32 groups (Wu & He 2018, Table 3)."""


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, FrozenBatchNorm))


def fallback_num_groups(num_channels: int, num_groups: int | None = None, *, group_size: int | None = None) -> int:
    """The group count used for ``num_channels`` channels when ``num_groups`` / ``group_size`` is requested.

    - ``num_groups=G``: G if it divides C, else the largest divisor of C not above G (so ``G > C`` gives C,
      i.e. InstanceNorm with a per-channel affine). Always at least 1 (LayerNorm).
    - ``group_size=S``: C // S groups if S divides C, else the largest divisor of C not above C // S (groups
      of at least S channels). ``S > C`` is an error: no group of that size fits.

    Raises ValueError for non-positive or non-integer requests, or for both or neither given.
    ``groupnorm.args.resolve_num_groups`` with ``policy="largest_divisor"`` (the one home of the rule).
    """
    return resolve_num_groups(num_channels, num_groups, group_size, policy="largest_divisor")


def convert_bn_to_gn(model: nn.Module, num_groups: int | None = None, *, group_size: int | None = None,
                     inplace: bool = False, return_report: bool = False):
    """Replace every BatchNorm layer of ``model`` by a ``groupnorm.nn.GroupNorm`` over the same channels.

    Matches ``torch.nn.BatchNorm1d/2d/3d``, ``torch.nn.SyncBatchNorm``, ``groupnorm.nn.SyncBatchNorm``,
    ``groupnorm.nn.FrozenBatchNorm`` and any other subclass of torch's ``_BatchNorm``, anywhere in the module
    tree (including ``model`` itself). Each becomes ``GroupNorm(G, C, eps=bn.eps, affine=bn.affine)`` on the
    device and in the dtype of the BN's tensors, with ``weight`` (gamma) and ``bias`` (beta) copied, and the
    BN's ``.training`` flag.

    Running statistics have no GroupNorm counterpart (GN normalizes each sample by its own statistics): they
    are dropped, and so the converted model computes a *different* function than the BN model in eval mode.
    Conversion is a starting point for training or fine-tuning with GN, not a numerical equivalence.

    Args:
        model: any ``nn.Module``.
        num_groups: groups per layer (the paper's default, 32, if neither this nor ``group_size`` is given).
        group_size: channels per group instead of a group count (keyword only).
        inplace: modify ``model`` itself instead of a deep copy.
        return_report: return ``(model, ConversionReport)`` instead of the model.

    Where the request does not divide a layer's channel count C, the fallback of :func:`fallback_num_groups`
    is used (the largest divisor of C not above the requested group count) and the layer is marked
    ``fallback=True`` in the report and named in the logged summary.

    Raises:
        TypeError: ``model`` is not an ``nn.Module``.
        ValueError: ``num_groups`` / ``group_size`` not positive, both given, a ``group_size`` larger than
            some layer's channels (the error names the layer), or an uninitialized lazy BatchNorm.

    Example::

        >>> gn_model = convert_bn_to_gn(torchvision_like_resnet, 32)
        >>> gn_model, report = convert_bn_to_gn(model, group_size=16, return_report=True)
        >>> print(report.table())
    """
    check_module(model, "convert_bn_to_gn")
    if num_groups is None and group_size is None:
        num_groups = DEFAULT_NUM_GROUPS
    check_group_request(num_groups, group_size)
    requested = f"num_groups={num_groups}" if group_size is None else f"group_size={group_size}"

    def build(bn: nn.Module, names: tuple[str, ...]):
        c = bn.num_features
        try:
            g = fallback_num_groups(c, num_groups, group_size=group_size)
        except ValueError as exc:
            raise ValueError(f"{exc} (layer {names[0] or '<root>'!r}, {type(bn).__name__})") from None
        exact = g == num_groups if group_size is None else c % group_size == 0
        gn = GroupNorm(g, c, eps=bn.eps, affine=bn.affine, **factory_kwargs(bn), **activation_kwargs(bn))
        carried = ["eps"]
        if bn.affine:
            copy_param(gn.weight, bn.weight)
            carried = ["weight", "eps"]
            if getattr(bn, "bias", None) is not None:
                copy_param(gn.bias, bn.bias)
                carried = ["weight", "bias", "eps"]
            else:
                gn.bias = None  # a BN built with bias=False: no beta, none added
        dropped = ["running_mean", "running_var"] if getattr(bn, "running_mean", None) is not None else []
        entry = ConvertedLayer(names, type(bn).__name__, "GroupNorm", c, groups=g, requested=requested,
                               fallback=not exact, carried=tuple(carried), dropped=tuple(dropped))
        return gn, entry

    model, report = replace_modules(model, _is_batch_norm, build, inplace)
    log.info("convert_bn_to_gn: %s", report.summary())
    return (model, report) if return_report else model
