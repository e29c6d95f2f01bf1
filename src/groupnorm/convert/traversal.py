"""The walk every conversion shares: find the matching modules of a model, build one replacement for each
(shared modules stay shared), and put it in every place the old one was; plus the small helpers the
conversions use to carry tensors, the activation and the factory arguments across.
"""
from __future__ import annotations

import copy
import logging
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _LazyNormBase

from ..nn.norm_act import NormAct
from .report import ConversionReport, ConvertedLayer

__all__ = ["log", "check_module", "replace_modules", "copy_param", "check_not_lazy", "activation_kwargs",
           "factory_kwargs"]

log = logging.getLogger("groupnorm.convert")
"""The logger every conversion writes its one-line summary to."""


def check_module(model, fn: str) -> None:
    """TypeError naming what ``fn`` got unless ``model`` is an ``nn.Module``."""
    if not isinstance(model, nn.Module):
        raise TypeError(f"{fn} expects a torch.nn.Module, got {type(model).__name__}")


def replace_modules(model: nn.Module, match: Callable[[nn.Module], bool],
                    build: Callable[[nn.Module, tuple[str, ...]], tuple[nn.Module, ConvertedLayer]],
                    inplace: bool) -> tuple[nn.Module, ConversionReport]:
    """Replace every module ``m`` with ``match(m)`` by ``build(m, names)[0]``; shared modules stay shared."""
    for name, module in model.named_modules():
        if match(module):
            check_not_lazy(module, (name,))  # before deepcopy, which fails on uninitialized lazy modules
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


def copy_param(dst: torch.Tensor, src: torch.Tensor) -> None:
    """``dst`` (a new layer's tensor) takes ``src``'s values and, for a Parameter, its ``requires_grad``."""
    with torch.no_grad():
        dst.copy_(src)
    if isinstance(dst, nn.Parameter):
        dst.requires_grad_(src.requires_grad)


def check_not_lazy(module: nn.Module, names: tuple[str, ...]) -> None:
    """ValueError naming the layer if ``module`` is a lazy norm whose parameters are not initialized yet."""
    if isinstance(module, _LazyNormBase) and module.has_uninitialized_params():
        raise ValueError(
            f"{type(module).__name__} at {names[0] or '<root>'!r} is not initialized yet: run one forward pass "
            "before converting it"
        )


def activation_kwargs(module: nn.Module) -> dict:
    """``{"activation": a}`` for a norm-with-activation module (``groupnorm.nn.norm_act``), else ``{}``: what a
    replacement needs so that the activation (and the ``residual=`` call) survive the conversion."""
    return {"activation": module.activation} if isinstance(module, NormAct) else {}


def factory_kwargs(module: nn.Module) -> dict:
    """``{"device": ..., "dtype": ...}`` of the module's first floating-point tensor (``{}`` if it has none): a
    replacement is built where the replaced layer lives."""
    for t in list(module.parameters(recurse=False)) + list(module.buffers(recurse=False)):
        if t.is_floating_point():
            return {"device": t.device, "dtype": t.dtype}
    return {}
