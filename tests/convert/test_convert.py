"""convert_bn_to_gn and convert_sync_batchnorm: every container, sharing, fallback + report, exact outputs."""
import logging

import pytest
import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from groupnorm import convert_bn_to_gn, convert_sync_batchnorm
from groupnorm.convert import fallback_num_groups
from groupnorm.nn import FrozenBatchNorm, GroupNorm, SyncBatchNorm


def _randomize(model, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=p.dtype))
    return model


class Net(nn.Module):
    """BN as an attribute, in Sequential, ModuleList, ModuleDict, shared twice, 1d/2d/3d."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 64, 3, padding=1)
        self.bn = nn.BatchNorm2d(64)
        self.seq = nn.Sequential(nn.Conv2d(64, 48, 1), nn.BatchNorm2d(48), nn.ReLU())
        self.shared = nn.BatchNorm2d(48)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(48, 48, 1), self.shared), self.shared])
        self.heads = nn.ModuleDict({"vol": nn.BatchNorm3d(48), "vec": nn.BatchNorm1d(24)})
        self.fc = nn.Linear(48, 24)

    def forward(self, x):
        x = self.seq(torch.relu(self.bn(self.conv(x))))
        x = self.blocks[1](self.blocks[0](x))
        x = self.heads["vol"](x.unsqueeze(2)).squeeze(2)
        return self.heads["vec"](self.fc(x.mean((2, 3))))


class HandBuiltGN(Net):
    """The same network written with GroupNorm by hand."""

    def __init__(self, groups):
        super().__init__()
        self.bn = GroupNorm(groups(64), 64)
        self.seq[1] = GroupNorm(groups(48), 48)
        self.shared = GroupNorm(groups(48), 48)
        self.blocks = nn.ModuleList([nn.Sequential(nn.Conv2d(48, 48, 1), self.shared), self.shared])
        self.heads = nn.ModuleDict({"vol": GroupNorm(groups(48), 48), "vec": GroupNorm(groups(24), 24)})


def test_every_container_sharing_fallback_report_and_exact_outputs(caplog):
    net = _randomize(Net()).double()
    net.heads.train(False)  # mixed training flags must be kept per layer
    with caplog.at_level(logging.INFO, logger="groupnorm.convert"):
        gn, report = convert_bn_to_gn(net, 16, return_report=True)
    assert not any(isinstance(m, (_BatchNorm, FrozenBatchNorm)) for m in gn.modules())
    assert all(isinstance(m, _BatchNorm) for m in (net.bn, net.shared, net.heads["vec"]))  # input untouched
    assert gn.blocks[0][1] is gn.blocks[1] is gn.shared  # a shared BN stays one shared GN

    by_name = {layer.name: layer for layer in report}
    assert set(by_name) == {"bn", "seq.1", "shared", "heads.vol", "heads.vec"}
    assert by_name["shared"].names == ("shared", "blocks.0.1", "blocks.1")
    assert (by_name["bn"].groups, by_name["bn"].fallback) == (16, False)
    assert (by_name["seq.1"].groups, by_name["seq.1"].fallback) == (16, False)
    assert (by_name["heads.vec"].groups, by_name["heads.vec"].fallback) == (12, True)  # 16 does not divide 24
    assert by_name["heads.vec"].requested == "num_groups=16" and by_name["heads.vec"].channels == 24
    assert by_name["bn"].carried == ("weight", "bias", "eps")
    assert by_name["bn"].dropped == ("running_mean", "running_var")
    assert by_name["heads.vol"].source == "BatchNorm3d" and by_name["heads.vec"].source == "BatchNorm1d"
    assert "heads.vec (C=24, num_groups=16 -> 12 groups)" in report.summary()
    assert "converted 5 layers to GroupNorm" in caplog.text and "heads.vec" in caplog.text
    assert "heads.vec" in report.table()

    assert gn.bn.training and not gn.heads["vec"].training
    assert gn.bn.weight.dtype == torch.float64 and gn.bn.weight.requires_grad
    torch.testing.assert_close(gn.heads["vec"].weight, net.heads["vec"].weight)

    hand = HandBuiltGN(lambda c: fallback_num_groups(c, 16)).double()
    missing, unexpected = hand.load_state_dict(gn.state_dict(), strict=True)
    x = torch.randn(2, 3, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(gn(x), hand(x), rtol=0, atol=0)


def test_group_size_root_module_and_all_bn_kinds():
    root = nn.BatchNorm2d(64)
    gn, report = convert_bn_to_gn(root, group_size=16, return_report=True)
    assert isinstance(gn, GroupNorm) and gn.num_groups == 4 and report.layers[0].names == ("",)
    model = nn.Sequential(nn.SyncBatchNorm(32), SyncBatchNorm(32), FrozenBatchNorm(32),
                          nn.BatchNorm2d(32, affine=False), nn.BatchNorm2d(40, bias=False))
    out, report = convert_bn_to_gn(model, group_size=16, inplace=True, return_report=True)
    assert out is model and all(isinstance(m, GroupNorm) for m in out)
    assert [m.num_groups for m in out] == [2, 2, 2, 2, 2]  # 40 channels: groups of >= 16 -> 2 groups of 20
    assert [layer.fallback for layer in report] == [False] * 4 + [True]
    assert out[3].weight is None and out[4].bias is None and out[4].weight is not None
    assert report.layers[4].carried == ("weight", "eps")


def test_fallback_rule():
    assert fallback_num_groups(64, 32) == 32
    assert fallback_num_groups(24, 32) == 24   # more groups than channels: instance norm
    assert fallback_num_groups(96, 64) == 48   # largest divisor of 96 not above 64
    assert fallback_num_groups(7, 4) == 1      # a prime channel count: layer norm
    assert fallback_num_groups(48, group_size=16) == 3
    assert fallback_num_groups(40, group_size=16) == 2


def test_bad_input():
    plain = nn.Sequential(nn.Linear(3, 3), nn.GroupNorm(1, 3))
    out, report = convert_bn_to_gn(plain, return_report=True)
    assert len(report) == 0 and report.summary().startswith("converted 0 layers")
    assert repr(out) == repr(plain)
    assert convert_bn_to_gn(plain, inplace=True) is plain
    with pytest.raises(TypeError, match="nn.Module, got str"):
        convert_bn_to_gn("resnet50")
    with pytest.raises(ValueError, match="num_groups=0"):
        convert_bn_to_gn(plain, 0)
    with pytest.raises(ValueError, match="num_groups=-2"):
        convert_bn_to_gn(plain, -2)
    with pytest.raises(ValueError, match="group_size=0"):
        convert_bn_to_gn(plain, group_size=0)
    with pytest.raises(ValueError, match="exactly one"):
        convert_bn_to_gn(plain, 8, group_size=4)
    model = nn.Sequential(nn.BatchNorm2d(64), nn.Sequential(nn.BatchNorm2d(8)))
    with pytest.raises(ValueError, match=r"group_size=16 is larger than num_channels=8 .*'1\.0'"):
        convert_bn_to_gn(model, group_size=16)
    with pytest.raises(ValueError, match="not initialized"):
        convert_bn_to_gn(nn.Sequential(nn.LazyBatchNorm2d()))


def test_convert_sync_batchnorm_carries_everything():
    bn = _randomize(nn.BatchNorm2d(6, momentum=0.3, eps=1e-3))
    bn.train()
    bn(torch.randn(4, 6, 3, 3))
    model = nn.Sequential(nn.Conv2d(3, 6, 1), bn, nn.Sequential(bn), nn.SyncBatchNorm(6), GroupNorm(2, 6))
    model.eval()
    out = convert_sync_batchnorm(model)
    assert type(out[1]) is SyncBatchNorm and out[1] is out[2][0] and type(out[3]) is SyncBatchNorm
    assert isinstance(out[4], GroupNorm) and not out[1].training
    assert (out[1].momentum, out[1].eps, int(out[1].num_batches_tracked)) == (0.3, 1e-3, 1)
    x = torch.randn(2, 6, 3, 3)
    torch.testing.assert_close(out[1](x), bn(x), rtol=0, atol=0)
    # one process, no process group: training mode is plain BN, running statistics included
    out[1].train(), bn.train()
    torch.testing.assert_close(out[1](x), bn(x), rtol=0, atol=0)
    torch.testing.assert_close(out[1].running_var, bn.running_var, rtol=0, atol=0)
    with pytest.raises(TypeError, match="Module"):
        convert_sync_batchnorm(3)
