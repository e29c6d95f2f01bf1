"""groupnorm.convert_group_norm: torch.nn.GroupNorm (and subclasses with its semantics) onto ours."""
import numpy as np
import pytest
import torch
from torch import nn

from groupnorm import reference as R
from groupnorm.convert import convert_group_norm
from groupnorm.nn import GroupNorm


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in model.named_parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype) * 0.3 + (1.0 if name.endswith("weight") else 0))
    return model


class PlainSubclass(nn.GroupNorm):
    """A subclass that only adds a constructor: torch's forward, so GN semantics."""

    def __init__(self, num_channels):
        super().__init__(2, num_channels)


class FramewiseGroupNorm(nn.GroupNorm):
    """Overrides forward with other math (statistics per frame, as a video VAE does): must be left alone."""

    def forward(self, x):
        n, c, t, h, w = x.shape
        y = super().forward(x.transpose(1, 2).reshape(n * t, c, h, w))
        return y.reshape(n, t, c, h, w).transpose(1, 2)


def _timm_like():
    """A class named as timm's GroupNorm: overrides forward, same math, converted by its known name."""
    class TimmGroupNorm(nn.GroupNorm):
        def __init__(self, num_channels, num_groups=32, eps=1e-5, affine=True):
            super().__init__(num_groups, num_channels, eps=eps, affine=affine)
            self.fast_norm = False

        def forward(self, x):
            return torch.nn.functional.group_norm(x, self.num_groups, self.weight, self.bias, self.eps)

    TimmGroupNorm.__module__, TimmGroupNorm.__qualname__ = "timm.layers.norm", "GroupNorm"
    return TimmGroupNorm


@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
def test_values_and_grads_against_reference_with_fused_activation(act, gn_path):
    acts = {None: nn.Identity, "relu": nn.ReLU, "silu": nn.SiLU, "gelu": nn.GELU}
    model = _randomize(nn.Sequential(nn.GroupNorm(3, 12, eps=1e-4), acts[act]()).double())
    conv, report = convert_group_norm(model, fuse_activation=True, return_report=True)
    assert type(conv[0]) is GroupNorm and conv[0].activation == act and report.layers[0].fused == act
    assert isinstance(conv[1], nn.Identity) and type(model[0]) is nn.GroupNorm  # the input model is untouched
    rng = np.random.default_rng(0)
    x_np, dy = rng.standard_normal((2, 12, 5, 3)) * 3 + 1, rng.standard_normal((2, 12, 5, 3))
    x = torch.tensor(x_np, requires_grad=True)
    y = conv(x)
    y.backward(torch.tensor(dy))
    gamma, beta = model[0].weight.detach().numpy(), model[0].bias.detach().numpy()
    np.testing.assert_allclose(y.detach().numpy(), R.group_norm(x_np, 3, gamma, beta, 1e-4, activation=act),
                               rtol=1e-9, atol=1e-9)
    dx, dg, db = R.group_norm_backward(dy, x_np, 3, gamma, beta, 1e-4, activation=act)
    for got, want in ((x.grad, dx), (conv[0].weight.grad, dg), (conv[0].bias.grad, db)):
        np.testing.assert_allclose(got.numpy(), want, rtol=1e-8, atol=1e-8)


def test_state_dict_both_ways_sharing_modes_and_flags():
    shared = nn.GroupNorm(2, 4)
    nobias = nn.GroupNorm(2, 4, bias=False)
    model = _randomize(nn.Sequential(nn.Conv2d(1, 4, 1), shared, nn.Sequential(shared, nn.GroupNorm(4, 4, affine=False)),
                                     nobias, PlainSubclass(4)))
    model[3].weight.requires_grad_(False)
    model[4].eval()
    conv, report = convert_group_norm(model, return_report=True)
    assert conv[1] is conv[2][0] and report.layers[0].names == ("1", "2.0")
    assert all(type(conv[i]) is GroupNorm for i in (1, 3, 4)) and type(conv[2][1]) is GroupNorm
    assert conv[2][1].weight is None and conv[3].bias is None and not conv[3].weight.requires_grad
    assert not conv[4].training and conv[1].training and report.layers[-1].source == "PlainSubclass"
    assert report.summary() == "converted 4 layers to GroupNorm"
    conv.load_state_dict(model.state_dict())
    model.load_state_dict(conv.state_dict())
    x = torch.randn(2, 1, 3, 3)
    torch.testing.assert_close(conv(x), model(x), rtol=1e-5, atol=1e-5)


def test_which_subclasses_are_converted_and_extra_tensors():
    timm_gn = _timm_like()(8, num_groups=4)
    framewise = FramewiseGroupNorm(2, 8)
    ours = GroupNorm(2, 8)
    plain = nn.GroupNorm(2, 8)
    plain.register_buffer("step", torch.tensor(3))
    plain.register_buffer("scratch", torch.zeros(2), persistent=False)
    model = nn.ModuleDict({"timm": timm_gn, "framewise": framewise, "ours": ours, "plain": plain})
    conv, report = convert_group_norm(model, return_report=True)
    assert type(conv["timm"]) is GroupNorm and conv["timm"].num_groups == 4
    assert conv["framewise"] is not framewise and type(conv["framewise"]) is FramewiseGroupNorm  # a copy, untouched
    assert type(conv["ours"]) is GroupNorm and [layer.name for layer in report] == ["timm", "plain"]
    assert int(conv["plain"].step) == 3 and "plain.scratch" not in conv.state_dict()
    assert report.layers[1].carried == ("weight", "bias", "step", "scratch", "eps")
    conv.load_state_dict(model.state_dict())
    # the root itself, and inplace
    root = nn.GroupNorm(1, 3)
    assert type(convert_group_norm(root)) is GroupNorm and type(root) is nn.GroupNorm
    seq = nn.Sequential(nn.GroupNorm(1, 3))
    assert convert_group_norm(seq, inplace=True) is seq and type(seq[0]) is GroupNorm


def test_fuse_activation_only_where_it_is_safe():
    shared = nn.GroupNorm(2, 4)
    model = nn.Sequential(
        nn.GroupNorm(2, 4), nn.GELU(approximate="tanh"),   # not our GELU: kept separate
        shared, nn.ReLU(),                                 # shared GN: its other use has no ReLU after it
        nn.Sequential(shared, nn.Tanh()),
        nn.GroupNorm(2, 4), nn.SiLU(inplace=True),
    )
    conv, report = convert_group_norm(model, fuse_activation=True, return_report=True)
    assert isinstance(conv[1], nn.GELU) and conv[0].activation is None
    assert isinstance(conv[3], nn.ReLU) and conv[2].activation is None
    assert conv[5].activation == "silu" and isinstance(conv[6], nn.Identity)
    assert [layer.fused for layer in report] == [None, None, "silu"]
    assert report.summary() == "converted 3 layers to GroupNorm; 1 with the following activation fused"
    assert report.table().splitlines()[0].split() == ["name", "from", "to", "C", "groups", "carried", "fused"]
    x = torch.randn(2, 4, 3, 3)
    torch.testing.assert_close(conv(x), model(x), rtol=1e-5, atol=1e-5)
    conv.load_state_dict(model.state_dict())
    # without fuse_activation nothing is fused
    assert convert_group_norm(model)[5].activation is None


def test_bad_input():
    with pytest.raises(TypeError, match="convert_group_norm expects a torch.nn.Module, got str"):
        convert_group_norm("model")
    assert len(convert_group_norm(nn.Linear(2, 2), return_report=True)[1]) == 0
