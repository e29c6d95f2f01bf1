"""torch's GroupNorm onto ours: :func:`convert_group_norm`, optionally folding a following activation module
into the GroupNorm."""
from __future__ import annotations

import dataclasses

from torch import nn

from ..nn.group_norm import GroupNorm
from .report import ConvertedLayer
from .traversal import check_module, copy_param, factory_kwargs, log, replace_modules

__all__ = ["GROUP_NORM_SUBCLASSES", "convert_group_norm"]

GROUP_NORM_SUBCLASSES = (
    "timm.layers.norm.GroupNorm", "timm.layers.norm.GroupNorm1",
    "timm.models.layers.norm.GroupNorm", "timm.models.layers.norm.GroupNorm1",
)
"""``torch.nn.GroupNorm`` subclasses (qualified class names) whose own ``forward`` computes exactly
``F.group_norm(x, num_groups, weight, bias, eps)``: timm's (a "fast norm" switch in front of the same math)."""

_FUSABLE = {nn.ReLU: "relu", nn.SiLU: "silu", nn.GELU: "gelu"}


def _keeps_group_norm_semantics(module: nn.Module) -> bool:
    """A ``torch.nn.GroupNorm`` (not already ours) whose forward is torch's, or one of GROUP_NORM_SUBCLASSES.

    Subclasses that override ``forward`` with other math (e.g. a video GN folding frames into the batch) are
    left alone."""
    if not isinstance(module, nn.GroupNorm) or isinstance(module, GroupNorm):
        return False
    cls = type(module)
    return cls.forward is nn.GroupNorm.forward or f"{cls.__module__}.{cls.__qualname__}" in GROUP_NORM_SUBCLASSES


def _fusable_activation(module: nn.Module) -> str | None:
    """Our activation name for a module computing it (exact GELU only: ours is erf-based), else None."""
    for cls, name in _FUSABLE.items():
        if type(module) is cls and (name != "gelu" or module.approximate == "none"):
            return name
    return None


def _fuse_activations(model: nn.Module) -> dict[int, str]:
    """Fold each ReLU/SiLU/GELU module that directly follows one of our GroupNorms (without activation) in an
    ``nn.Sequential`` into that GroupNorm, putting ``nn.Identity()`` in the activation's slot. A GroupNorm used
    in more than one place is left unfused (its other uses are not followed by the activation).
    Returns ``{id(groupnorm): activation}`` for the fused ones."""
    uses: dict[int, int] = {}
    for _, m in model.named_modules(remove_duplicate=False):
        uses[id(m)] = uses.get(id(m), 0) + 1
    fused: dict[int, str] = {}
    for seq in {id(m): m for m in model.modules() if isinstance(m, nn.Sequential)}.values():
        keys = list(seq._modules)
        for a, b in zip(keys, keys[1:]):
            norm, act = seq._modules[a], seq._modules[b]
            if not (isinstance(norm, GroupNorm) and norm.activation is None and uses[id(norm)] == 1):
                continue
            name = _fusable_activation(act)
            if name is not None:
                norm.activation = name
                seq._modules[b] = nn.Identity()
                fused[id(norm)] = name
    return fused


def convert_group_norm(model: nn.Module, *, fuse_activation: bool = False, inplace: bool = False,
                       return_report: bool = False):
    """Replace every ``torch.nn.GroupNorm`` of ``model`` by ``groupnorm.nn.GroupNorm``: the same function,
    through this package's kernels.

    Matches ``torch.nn.GroupNorm`` itself and its subclasses that keep its semantics: those that do not override
    ``forward``, and the known ones of :data:`GROUP_NORM_SUBCLASSES` (timm's); others, and our own GroupNorm,
    are left alone. Each becomes ``GroupNorm(G, C, eps, affine)`` with the same ``bias`` presence, device, dtype
    and ``.training``; ``weight`` and ``bias`` are carried (values and ``requires_grad``), as is any other
    parameter or buffer the layer has, so the converted model loads the original's state_dict and computes
    the same outputs (within float rounding).

    With ``fuse_activation=True``, an ``nn.ReLU``, ``nn.SiLU`` or exact ``nn.GELU`` module that directly follows
    a (converted or already ours) GroupNorm in an ``nn.Sequential`` is folded into it (``activation=``) and its
    slot becomes ``nn.Identity()``, so norm and activation run as one pass. Activations called in a ``forward``
    (as diffusers' ResNet blocks do: ``self.nonlinearity(self.norm1(x))``) are not seen by module surgery and
    stay as they are. A GroupNorm used in several places is not fused.

    Args:
        model: any ``nn.Module`` (the root may itself be a GroupNorm).
        fuse_activation: fold following activation modules into the GroupNorm (keyword only).
        inplace: modify ``model`` itself instead of a deep copy.
        return_report: return ``(model, ConversionReport)``; a layer's ``fused`` names its folded activation.

    Example::

        >>> from diffusers import UNet2DModel
        >>> unet, report = convert_group_norm(UNet2DModel(...), return_report=True)
        >>> print(report.summary())   # converted 22 layers to GroupNorm
    """
    check_module(model, "convert_group_norm")

    def build(gn: nn.Module, names: tuple[str, ...]):
        has_bias = gn.affine and gn.bias is not None
        new = GroupNorm(gn.num_groups, gn.num_channels, gn.eps, gn.affine, bias=has_bias, **factory_kwargs(gn))
        carried = []
        for pname, p in gn._parameters.items():
            if p is None:
                continue
            if pname in new._parameters and new._parameters[pname] is not None:
                copy_param(new._parameters[pname], p)
            else:
                new.register_parameter(pname, nn.Parameter(p.detach().clone(), requires_grad=p.requires_grad))
            carried.append(pname)
        for bname, b in gn._buffers.items():
            new.register_buffer(bname, None if b is None else b.detach().clone(),
                                persistent=bname not in gn._non_persistent_buffers_set)
            carried.append(bname)
        entry = ConvertedLayer(names, type(gn).__name__, "GroupNorm", gn.num_channels, groups=gn.num_groups,
                               requested=f"num_groups={gn.num_groups}", carried=tuple(carried) + ("eps",))
        return new, entry

    model, report = replace_modules(model, _keeps_group_norm_semantics, build, inplace)
    if fuse_activation:
        fused = _fuse_activations(model)  # on the copy (_replace deep-copies unless inplace)
        for i, layer in enumerate(report.layers):
            m = model.get_submodule(layer.name)
            if id(m) in fused:
                report.layers[i] = dataclasses.replace(layer, fused=fused[id(m)])
    log.info("convert_group_norm: %s", report.summary())
    return (model, report) if return_report else model
