"""Plain convolutions to weight-standardized ones: :func:`convert_conv_to_ws`."""
from __future__ import annotations

from torch import nn

from ..nn.ws_conv import WS_CONV_FOR
from .report import ConvertedLayer
from .traversal import check_module, copy_param, factory_kwargs, log, replace_modules

__all__ = ["convert_conv_to_ws"]


def convert_conv_to_ws(model: nn.Module, eps: float = 1e-5, *, inplace: bool = False, return_report: bool = False):
    """Replace every plain ``nn.Conv1d/2d/3d`` by ``WSConv1d/2d/3d`` (weight standardization), same weights.

    Only exact ``torch.nn`` conv classes are replaced (not subclasses, not transposed convs). Convs whose
    fan-in per output channel is 1 (``in_channels/groups * prod(kernel_size) == 1``, e.g. a 1x1 depthwise
    conv) are left as they are: standardizing a single weight gives zero. Standardization changes the
    function the model computes; it is meant for training (GN + WS), not as an exact rewrite.
    Returns the model, or ``(model, ConversionReport)`` with ``return_report=True``.
    """
    check_module(model, "convert_conv_to_ws")
    if not eps > 0:
        raise ValueError(f"convert_conv_to_ws needs eps > 0, got eps={eps!r}")

    def match(m: nn.Module) -> bool:
        return type(m) in WS_CONV_FOR and m.weight[0].numel() > 1

    def build(conv: nn.Module, names: tuple[str, ...]):
        cls = WS_CONV_FOR[type(conv)]
        ws = cls(conv.in_channels, conv.out_channels, conv.kernel_size, stride=conv.stride, padding=conv.padding,
                 dilation=conv.dilation, groups=conv.groups, bias=conv.bias is not None,
                 padding_mode=conv.padding_mode, eps=eps, **factory_kwargs(conv))
        copy_param(ws.weight, conv.weight)
        if conv.bias is not None:
            copy_param(ws.bias, conv.bias)
        return ws, ConvertedLayer(names, type(conv).__name__, cls.__name__, conv.out_channels,
                                  carried=("weight", "bias") if conv.bias is not None else ("weight",))

    model, report = replace_modules(model, match, build, inplace)
    log.info("convert_conv_to_ws: %s", report.summary())
    return (model, report) if return_report else model
