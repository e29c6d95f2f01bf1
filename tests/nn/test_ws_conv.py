"""WSConv1d/2d/3d against the NumPy reference (weight_standardize and its backward)."""
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from groupnorm import convert_conv_to_ws, reference
from groupnorm.nn import WSConv1d, WSConv2d, WSConv3d
from groupnorm.nn.ws_conv import weight_standardize

from helpers import TOL, _np, assert_close

CONV_FN = {1: F.conv1d, 2: F.conv2d, 3: F.conv3d}


@pytest.mark.parametrize("cls,dim,kwargs", [
    (WSConv2d, 2, {"padding": 1}),
    (WSConv2d, 2, {"groups": 2, "stride": 2, "bias": False}),
    (WSConv1d, 1, {"dilation": 2}),
    (WSConv3d, 3, {"padding": 1}),
])
def test_forward_and_backward_against_reference(cls, dim, kwargs):
    torch.manual_seed(0)
    conv = cls(4, 6, 3, eps=1e-4, **kwargs).double()
    with torch.no_grad():
        conv.weight.mul_(3).add_(0.5)  # a non-zero mean per output channel
    x = torch.randn((2, 4) + (7,) * dim, dtype=torch.float64, requires_grad=True)
    y = conv(x)
    w = conv.weight.detach().numpy()
    w_hat = reference.weight_standardize(w, eps=1e-4)
    np.testing.assert_allclose(conv.standardized_weight().detach().numpy(), w_hat, rtol=1e-12, atol=1e-12)
    stride, padding, dilation = conv.stride, conv.padding, conv.dilation
    want = CONV_FN[dim](x.detach(), torch.from_numpy(w_hat), conv.bias, stride, padding, dilation, conv.groups)
    torch.testing.assert_close(y.detach(), want, rtol=1e-12, atol=1e-12)

    dy = torch.randn_like(y)
    (y * dy).sum().backward()
    # dL/dx and dL/dw_hat from a plain convolution with the reference's w_hat, then the reference chain rule
    # through WS for dL/dw
    x_t, w_hat_t = x.detach().clone().requires_grad_(), torch.from_numpy(w_hat).requires_grad_()
    (CONV_FN[dim](x_t, w_hat_t, None, stride, padding, dilation, conv.groups) * dy).sum().backward()
    dw = reference.weight_standardize_backward(w_hat_t.grad.numpy(), w, eps=1e-4)
    np.testing.assert_allclose(conv.weight.grad.numpy(), dw, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(x.grad.numpy(), x_t.grad.numpy(), rtol=1e-12, atol=1e-12)
    if conv.bias is not None:
        np.testing.assert_allclose(conv.bias.grad.numpy(), dy.sum(dim=(0, *range(2, dy.dim()))).numpy(),
                                   rtol=1e-12, atol=1e-12)


def test_standardized_weight_has_zero_mean_unit_biased_variance():
    w = torch.randn(8, 3, 3, 3) * 5 + 2
    w_hat = weight_standardize(w, eps=0.0)
    torch.testing.assert_close(w_hat.mean((1, 2, 3)), torch.zeros(8), atol=1e-6, rtol=0)
    torch.testing.assert_close(w_hat.var((1, 2, 3), unbiased=False), torch.ones(8), atol=1e-6, rtol=0)
    assert_close(w_hat, reference.weight_standardize(_np(w), eps=0.0), TOL[torch.float32], "float32")
    # half-precision weights are standardized in float32 and returned in their dtype (one rounding)
    for dtype in (torch.bfloat16, torch.float16):
        wh = w.to(dtype)
        assert weight_standardize(wh).dtype == dtype
        assert_close(weight_standardize(wh), reference.weight_standardize(_np(wh)), TOL[dtype], str(dtype))


def test_loads_conv_state_dict_and_convert():
    conv = nn.Conv2d(3, 5, 3, padding=1, padding_mode="reflect")
    ws = WSConv2d(3, 5, 3, padding=1, padding_mode="reflect")
    ws.load_state_dict(conv.state_dict())
    model = nn.Sequential(conv, nn.ReLU(), nn.Conv2d(5, 5, 1, groups=5), nn.Conv1d(2, 2, 1),
                          nn.ConvTranspose2d(5, 5, 3))
    out, report = convert_conv_to_ws(model, eps=1e-5, return_report=True)
    assert [type(m).__name__ for m in out] == ["WSConv2d", "ReLU", "Conv2d", "WSConv1d", "ConvTranspose2d"]
    assert [layer.name for layer in report] == ["0", "3"]  # the 1x1 depthwise conv (fan-in 1) is skipped
    x = torch.randn(2, 3, 6, 6)
    torch.testing.assert_close(out[0](x), ws(x))
    assert out[0].padding_mode == "reflect" and type(model[0]) is nn.Conv2d


def test_bad_input():
    with pytest.raises(ValueError, match="fan-in"):
        WSConv2d(1, 4, 1)
    with pytest.raises(ValueError, match="eps"):
        WSConv2d(3, 4, 3, eps=0)
    with pytest.raises(ValueError, match="rank >= 2"):
        weight_standardize(torch.randn(5))
    with pytest.raises(TypeError, match="Module"):
        convert_conv_to_ws(None)
