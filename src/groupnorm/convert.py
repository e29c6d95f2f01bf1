"""Model surgery: BatchNorm to GroupNorm, torch's GroupNorm onto ours, frozen BN, SyncBN that works on CPU, WS convs.

Every function walks any ``nn.Module`` (nested ``Sequential``, ``ModuleList``, ``ModuleDict``, plain
attributes, the root module itself), replaces the matching layers, and keeps:

- sharing: a module used in several places is replaced by *one* new module used in the same places;
- ``.training`` of every replaced layer; device, dtype and ``requires_grad`` of the carried tensors;
- a norm-with-activation layer's activation and its ``forward(x, residual=None)``
  (``groupnorm.nn.norm_act``: e.g. ``BatchNormAct2d`` becomes ``SyncBatchNormAct`` or a ``GroupNorm`` with
  that activation);
- the input model, unless ``inplace=True`` (the default works on a ``copy.deepcopy``).

``convert_bn_to_gn``, ``convert_group_norm`` and ``convert_conv_to_ws`` can return a :class:`ConversionReport`
and log a one-line summary on the ``groupnorm.convert`` logger.
"""
from __future__ import annotations

import copy
import dataclasses
import logging
from dataclasses import dataclass, field
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm, _LazyNormBase

from .nn.frozen_bn import FrozenBatchNorm
from .nn.group_norm import GroupNorm
from .nn.norm_act import NormAct, norm_act_class
from .nn.sync_bn import SyncBatchNorm
from .nn.ws_conv import WS_CONV_FOR

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

log = logging.getLogger("groupnorm.convert")

DEFAULT_NUM_GROUPS = 32
"""The paper's default: 32 groups (Wu & He 2018, Table 3)."""


@dataclass(frozen=True)
class ConvertedLayer:
    """One replaced layer. ``names`` are all its qualified names (more than one if it is shared)."""

    names: tuple[str, ...]
    source: str            # class name of the replaced layer, e.g. "BatchNorm2d"
    target: str            # class name of the new layer, e.g. "GroupNorm"
    channels: int
    groups: int | None = None            # GroupNorm only: the group count used
    requested: str | None = None         # GroupNorm only: what was asked, "num_groups=32" or "group_size=16"
    fallback: bool = False               # GroupNorm only: the request did not fit C, a fallback was used
    carried: tuple[str, ...] = ()        # what was copied over (weight, bias, eps, running stats, ...)
    dropped: tuple[str, ...] = ()        # what has no counterpart in the new layer
    fused: str | None = None             # convert_group_norm(fuse_activation=True): the activation folded in

    @property
    def name(self) -> str:
        """The first qualified name ("" for the root module)."""
        return self.names[0]


@dataclass
class ConversionReport:
    """What a conversion replaced, in traversal order; ``len(report) == 0`` if nothing matched."""

    layers: list[ConvertedLayer] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    @property
    def fallbacks(self) -> list[ConvertedLayer]:
        return [layer for layer in self.layers if layer.fallback]

    def summary(self) -> str:
        """One line, e.g. ``converted 20 layers to GroupNorm; 1 used a fallback: stem.bn (C=24, num_groups=16 -> 12 groups)``."""
        if not self.layers:
            return "converted 0 layers (no matching layer found)"
        targets = sorted({layer.target for layer in self.layers})
        line = f"converted {len(self.layers)} layer{'s' if len(self.layers) != 1 else ''} to {', '.join(targets)}"
        fb = self.fallbacks
        if fb:
            items = ", ".join(
                f"{layer.name or '<root>'} (C={layer.channels}, {layer.requested} -> {layer.groups} groups)"
                for layer in fb
            )
            line += f"; {len(fb)} used a fallback: {items}"
        fused = [layer for layer in self.layers if layer.fused]
        if fused:
            line += f"; {len(fused)} with the following activation fused"
        return line

    def table(self) -> str:
        """A plain-text table, one row per layer."""
        fused = any(layer.fused for layer in self.layers)
        rows = [("name", "from", "to", "C", "groups", "carried") + (("fused",) if fused else ())]
        for layer in self.layers:
            groups = "" if layer.groups is None else str(layer.groups) + (" (fallback)" if layer.fallback else "")
            rows.append((", ".join(n or "<root>" for n in layer.names), layer.source, layer.target,
                         str(layer.channels), groups, ", ".join(layer.carried))
                        + ((layer.fused or "",) if fused else ()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)


# ----------------------------------------------------------------------------------------------- traversal
def _check_module(model, fn: str) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn} expects a torch.nn.Module, got {type(model).__name__}")


def _replace(model: nn.Module, match: Callable[[nn.Module], bool],
             build: Callable[[nn.Module, tuple[str, ...]], tuple[nn.Module, ConvertedLayer]],
             inplace: bool) -> tuple[nn.Module, ConversionReport]:
    """Replace every module ``m`` with ``match(m)`` by ``build(m, names)[0]``; shared modules stay shared."""
    for name, module in model.named_modules():
        if match(module):
            _check_not_lazy(module, (name,))  # before deepcopy, which fails on uninitialized lazy modules
    if not inplace:
        model = copy.deepcopy(model)
    # All qualified names of every matching module (named_modules lists a shared module once).
    names: dict[int, list[str]] = {}
    order: list[nn.Module] = []
    for name, module in model.named_modules(remove_duplicate=False):
        if match(module):
            if id(module) not in names:
                names[id(module)] = []
                order.append(module)
            names[id(module)].append(name)
    new_for: dict[int, nn.Module] = {}
    report = ConversionReport()
    for module in order:
        new, entry = build(module, tuple(names[id(module)]))
        new.train(module.training)
        new_for[id(module)] = new
        report.layers.append(entry)
    if not new_for:
        return model, report
    if id(model) in new_for:
        return new_for[id(model)], report
    seen: set[int] = set()

    def visit(parent: nn.Module) -> None:
        if id(parent) in seen:
            return
        seen.add(id(parent))
        for key, child in list(parent._modules.items()):
            if child is None:
                continue
            if id(child) in new_for:
                parent._modules[key] = new_for[id(child)]
            else:
                visit(child)

    visit(model)
    return model, report


def _copy_param(dst: torch.Tensor, src: torch.Tensor) -> None:
    with torch.no_grad():
        dst.copy_(src)
    if isinstance(dst, nn.Parameter):
        dst.requires_grad_(src.requires_grad)


def _is_batch_norm(module: nn.Module) -> bool:
    return isinstance(module, (_BatchNorm, FrozenBatchNorm))


def _check_not_lazy(module: nn.Module, names: tuple[str, ...]) -> None:
    if isinstance(module, _LazyNormBase) and module.has_uninitialized_params():
        raise ValueError(
            f"{type(module).__name__} at {names[0] or '<root>'!r} is not initialized yet: run one forward pass "
            "before converting it"
        )


def _act(module: nn.Module) -> dict:
    """``{"activation": a}`` for a norm-with-activation module (``groupnorm.nn.norm_act``), else ``{}``: what a
    replacement needs so that the activation (and the ``residual=`` call) survive the conversion."""
    return {"activation": module.activation} if isinstance(module, NormAct) else {}


def _factory(module: nn.Module) -> dict:
    for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}


# ----------------------------------------------------------------------------------------------- BN -> GN
def _check_request(num_groups, group_size) -> None:
    if (num_groups is None) == (group_size is None):
        raise ValueError(f"give exactly one of num_groups and group_size, got num_groups={num_groups}, "
                         f"group_size={group_size}")
    for label, value in (("num_groups", num_groups), ("group_size", group_size)):
        if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value <= 0):
            raise ValueError(f"{label} must be a positive integer, got {label}={value!r}")


def fallback_num_groups(num_channels: int, num_groups: int | None = None, *, group_size: int | None = None) -> int:
    """The group count used for ``num_channels`` channels when ``num_groups`` / ``group_size`` is requested.

    - ``num_groups=G``: G if it divides C, else the largest divisor of C not above G (so ``G > C`` gives C,
      i.e. InstanceNorm with a per-channel affine). Always at least 1 (LayerNorm).
    - ``group_size=S``: C // S groups if S divides C, else the largest divisor of C not above C // S (groups
      of at least S channels). ``S > C`` is an error: no group of that size fits.

    Raises ValueError for non-positive or non-integer requests, or for both or neither given.
    """
    _check_request(num_groups, group_size)
    if group_size is not None:
        if group_size > num_channels:
            raise ValueError(f"group_size={group_size} is larger than num_channels={num_channels}")
        target = num_channels // group_size
    else:
        target = num_groups
    return max(d for d in range(1, min(target, num_channels) + 1) if num_channels % d == 0)


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
    _check_module(model, "convert_bn_to_gn")
    if num_groups is None and group_size is None:
        num_groups = DEFAULT_NUM_GROUPS
    _check_request(num_groups, group_size)
    requested = f"num_groups={num_groups}" if group_size is None else f"group_size={group_size}"

    def build(bn: nn.Module, names: tuple[str, ...]):
        c = bn.num_features
        try:
            g = fallback_num_groups(c, num_groups, group_size=group_size)
        except ValueError as exc:
            raise ValueError(f"{exc} (layer {names[0] or '<root>'!r}, {type(bn).__name__})") from None
        exact = g == num_groups if group_size is None else c % group_size == 0
        gn = GroupNorm(g, c, eps=bn.eps, affine=bn.affine, **_factory(bn), **_act(bn))
        carried = ["eps"]
        if bn.affine:
            _copy_param(gn.weight, bn.weight)
            carried = ["weight", "eps"]
            if getattr(bn, "bias", None) is not None:
                _copy_param(gn.bias, bn.bias)
                carried = ["weight", "bias", "eps"]
            else:
                gn.bias = None  # a BN built with bias=False: no beta, none added
        dropped = ["running_mean", "running_var"] if getattr(bn, "running_mean", None) is not None else []
        entry = ConvertedLayer(names, type(bn).__name__, "GroupNorm", c, groups=g, requested=requested,
                               fallback=not exact, carried=tuple(carried), dropped=tuple(dropped))
        return gn, entry

    model, report = _replace(model, _is_batch_norm, build, inplace)
    log.info("convert_bn_to_gn: %s", report.summary())
    return (model, report) if return_report else model


# ----------------------------------------------------------------------------------------------- GN -> ours
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
    _check_module(model, "convert_group_norm")

    def build(gn: nn.Module, names: tuple[str, ...]):
        has_bias = gn.affine and gn.bias is not None
        new = GroupNorm(gn.num_groups, gn.num_channels, gn.eps, gn.affine, bias=has_bias, **_factory(gn))
        carried = []
        for pname, p in gn._parameters.items():
            if p is None:
                continue
            if pname in new._parameters and new._parameters[pname] is not None:
                _copy_param(new._parameters[pname], p)
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

    model, report = _replace(model, _keeps_group_norm_semantics, build, inplace)
    if fuse_activation:
        fused = _fuse_activations(model)  # on the copy (_replace deep-copies unless inplace)
        for i, layer in enumerate(report.layers):
            m = model.get_submodule(layer.name)
            if id(m) in fused:
                report.layers[i] = dataclasses.replace(layer, fused=fused[id(m)])
    log.info("convert_group_norm: %s", report.summary())
    return (model, report) if return_report else model


# ----------------------------------------------------------------------------------------------- frozen BN
def freeze_batch_norm(model: nn.Module, *, trainable_affine: bool = False, inplace: bool = False,
                      return_report: bool = False):
    """Replace every BatchNorm (``_BatchNorm`` subclass, SyncBN included) by a ``FrozenBatchNorm`` (BN*).

    The frozen layer keeps the BN's running statistics, eps and affine; in any mode it computes what the BN
    computes in eval mode. ``trainable_affine`` chooses whether gamma and beta stay trainable (default: no).
    BNs without running statistics (``track_running_stats=False``) are left as they are (nothing to freeze)
    and logged. Returns the model, or ``(model, ConversionReport)`` with ``return_report=True``.
    """
    _check_module(model, "freeze_batch_norm")
    skipped = [name for name, m in model.named_modules()
               if isinstance(m, _BatchNorm) and m.running_mean is None]
    if skipped:
        log.warning("freeze_batch_norm: left %d BatchNorm without running statistics as is: %s",
                    len(skipped), ", ".join(n or "<root>" for n in skipped))

    def match(m: nn.Module) -> bool:
        return isinstance(m, _BatchNorm) and m.running_mean is not None

    def build(bn: nn.Module, names: tuple[str, ...]):
        act = _act(bn)
        cls = norm_act_class(FrozenBatchNorm) if act else FrozenBatchNorm
        frozen = cls.from_batch_norm(bn, trainable_affine=trainable_affine)
        if act:
            frozen.activation = act["activation"]
        carried = tuple(n for n in ("weight", "bias", "running_mean", "running_var")
                        if getattr(bn, n, None) is not None) + ("eps",)
        return frozen, ConvertedLayer(names, type(bn).__name__, type(frozen).__name__, bn.num_features,
                                      carried=carried, dropped=("momentum",))

    model, report = _replace(model, match, build, inplace)
    log.info("freeze_batch_norm: %s", report.summary())
    return (model, report) if return_report else model


def unfreeze_batch_norm(model: nn.Module, *, bn_class: type | None = None, inplace: bool = False):
    """Turn every ``FrozenBatchNorm`` back into a trainable BatchNorm with the same statistics and affine.

    The class is the one the layer was frozen from (``FrozenBatchNorm.source_class``), else ``bn_class``,
    else ``torch.nn.BatchNorm2d``; momentum is the source's (0.1 if unknown). ``bn_class`` given explicitly
    overrides the recorded class. Parameters become trainable again.
    """
    _check_module(model, "unfreeze_batch_norm")

    def build(frozen: FrozenBatchNorm, names: tuple[str, ...]):
        cls = bn_class or frozen.source_class or nn.BatchNorm2d
        extra = {"bias": False} if frozen.affine and frozen.bias is None else {}
        if isinstance(frozen, NormAct):
            cls = norm_act_class(cls)
            extra.update(_act(frozen))
        bn = cls(frozen.num_features, eps=frozen.eps, momentum=frozen.source_momentum, affine=frozen.affine,
                 **_factory(frozen), **extra)
        with torch.no_grad():
            bn.running_mean.copy_(frozen.running_mean)
            bn.running_var.copy_(frozen.running_var)
            bn.num_batches_tracked.copy_(frozen.num_batches_tracked)
            if frozen.affine:
                bn.weight.copy_(frozen.weight)
                if frozen.bias is not None:
                    bn.bias.copy_(frozen.bias)
        return bn, ConvertedLayer(names, type(frozen).__name__, cls.__name__, frozen.num_features)

    model, _ = _replace(model, lambda m: isinstance(m, FrozenBatchNorm), build, inplace)
    return model


# ----------------------------------------------------------------------------------------------- SyncBN
def convert_sync_batchnorm(model: nn.Module, process_group=None, *, inplace: bool = False):
    """Replace every BatchNorm (``_BatchNorm`` subclass, torch's SyncBatchNorm included) by
    ``groupnorm.nn.SyncBatchNorm``, which also works on CPU with gloo.

    Parameters, running statistics, ``num_batches_tracked``, eps, momentum, affine, track_running_stats and
    ``.training`` are carried over; ``FrozenBatchNorm`` and GroupNorm layers are left alone (they need no
    synchronization). ``process_group`` is the group whose workers share statistics (None: the world).
    """
    _check_module(model, "convert_sync_batchnorm")

    def match(m: nn.Module) -> bool:
        return isinstance(m, _BatchNorm) and not isinstance(m, SyncBatchNorm)

    def build(bn: nn.Module, names: tuple[str, ...]):
        has_bias = getattr(bn, "bias", None) is not None
        cls = norm_act_class(SyncBatchNorm) if isinstance(bn, NormAct) else SyncBatchNorm
        sync = cls(bn.num_features, bn.eps, bn.momentum, bn.affine, bn.track_running_stats,
                             process_group=process_group, bias=has_bias or not bn.affine, **_factory(bn), **_act(bn))
        with torch.no_grad():
            if bn.affine:
                _copy_param(sync.weight, bn.weight)
                if has_bias:
                    _copy_param(sync.bias, bn.bias)
            if bn.track_running_stats:
                sync.running_mean.copy_(bn.running_mean)
                sync.running_var.copy_(bn.running_var)
                sync.num_batches_tracked.copy_(bn.num_batches_tracked)
        return sync, ConvertedLayer(names, type(bn).__name__, cls.__name__, bn.num_features)

    model, _ = _replace(model, match, build, inplace)
    return model


# ----------------------------------------------------------------------------------------------- WS conv
def convert_conv_to_ws(model: nn.Module, eps: float = 1e-5, *, inplace: bool = False, return_report: bool = False):
    """Replace every plain ``nn.Conv1d/2d/3d`` by ``WSConv1d/2d/3d`` (weight standardization), same weights.

    Only exact ``torch.nn`` conv classes are replaced (not subclasses, not transposed convs). Convs whose
    fan-in per output channel is 1 (``in_channels/groups * prod(kernel_size) == 1``, e.g. a 1x1 depthwise
    conv) are left as they are: standardizing a single weight gives zero. Standardization changes the
    function the model computes; it is meant for training (GN + WS), not as an exact rewrite.
    Returns the model, or ``(model, ConversionReport)`` with ``return_report=True``.
    """
    _check_module(model, "convert_conv_to_ws")
    if not eps > 0:
        raise ValueError(f"convert_conv_to_ws needs eps > 0, got eps={eps!r}")

    def match(m: nn.Module) -> bool:
        return type(m) in WS_CONV_FOR and m.weight[0].numel() > 1

    def build(conv: nn.Module, names: tuple[str, ...]):
        cls = WS_CONV_FOR[type(conv)]
        ws = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                 dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                 padding_mode=conv.padding_mode, eps=eps, **_factory(conv))
        _copy_param(ws.weight, conv.weight)
        if conv.bias is not None:
            _copy_param(ws.bias, conv.bias)
        return ws, ConvertedLayer(names, type(conv).__name__, cls.__name__, conv.out_channels,
                                  carried=("weight", "bias") if conv.bias is not None else ("weight",))

    model, report = _replace(model, match, build, inplace)
    log.info("convert_conv_to_ws: %s", report.summary())
    return (model, report) if return_report else model
