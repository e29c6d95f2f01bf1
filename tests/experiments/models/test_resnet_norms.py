"""Per-worker BN (statistics of each slice, running stats of slice 0), the norm factory, the models."""
import pytest
import torch
import torch.nn.functional as F

import groupnorm.nn as gnn
from groupnorm.experiments.models import ResNet
from groupnorm.nn.factory import make_norm
from groupnorm.nn.worker_bn import WorkerBatchNorm, per_worker_batch_stats


def test_worker_bn_normalizes_each_slice_with_its_own_statistics():
    torch.manual_seed(0)
    W, b, C = 4, 3, 5
    x = torch.randn(W * b, C, 6, 7) * 3 + torch.arange(W * b).view(-1, 1, 1, 1).float()  # slices differ
    m = WorkerBatchNorm(C, workers=W)
    with torch.no_grad():
        m.weight.uniform_(0.5, 1.5)
        m.bias.uniform_(-1, 1)
    y = m(x)
    mean, var = per_worker_batch_stats(x, W)
    for k in range(W):
        xs = x[k * b:(k + 1) * b].double()
        mu = xs.mean(dim=(0, 2, 3))
        v = xs.var(dim=(0, 2, 3), unbiased=False)
        torch.testing.assert_close(mean[k].double(), mu, rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(var[k].double(), v, rtol=1e-5, atol=1e-5)
        ref = (xs - mu.view(1, -1, 1, 1)) / torch.sqrt(v.view(1, -1, 1, 1) + 1e-5)
        ref = ref * m.weight.double().view(1, -1, 1, 1) + m.bias.double().view(1, -1, 1, 1)
        torch.testing.assert_close(y[k * b:(k + 1) * b].double(), ref, rtol=1e-4, atol=1e-4)
    # running stats: EMA of worker 0's slice only (unbiased variance), as DDP's broadcast buffers give
    n = b * 6 * 7
    torch.testing.assert_close(m.running_mean, 0.1 * mean[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(m.running_var, 0.9 + 0.1 * var[0] * n / (n - 1), rtol=1e-5, atol=1e-6)
    assert int(m.num_batches_tracked) == 1


def test_worker_bn_gradients_equal_separate_plain_bns():
    torch.manual_seed(1)
    x = torch.randn(8, 3, 4, 4, requires_grad=True)
    m = WorkerBatchNorm(3, workers=2)
    y = m(x)
    (y * torch.arange(y.numel()).view_as(y).float().sin()).sum().backward()
    x2 = x.detach().clone().requires_grad_(True)
    w = m.weight.detach().clone().requires_grad_(True)
    y2 = torch.cat([F.batch_norm(x2[i * 4:(i + 1) * 4], None, None, w, None, True) for i in range(2)])
    (y2 * torch.arange(y2.numel()).view_as(y2).float().sin()).sum().backward()
    torch.testing.assert_close(x.grad, x2.grad)
    torch.testing.assert_close(m.weight.grad, w.grad)


def test_worker_bn_one_worker_is_batchnorm_and_bad_batch_is_clear():
    torch.manual_seed(2)
    x = torch.randn(6, 4, 3, 3)
    a, b = WorkerBatchNorm(4, workers=1), torch.nn.BatchNorm2d(4)
    torch.testing.assert_close(a(x), b(x))
    torch.testing.assert_close(a.running_var, b.running_var)
    with pytest.raises(ValueError, match="batch of 6 images does not split into workers=4"):
        WorkerBatchNorm(4, workers=4)(x)
    with pytest.raises(ValueError, match="workers=0"):
        WorkerBatchNorm(4, workers=0)
    a.eval()
    torch.testing.assert_close(a(x), F.batch_norm(x, a.running_mean, a.running_var, a.weight, a.bias, False))


def test_factory_builds_each_norm_by_name():
    x = torch.randn(2, 64, 5, 5)
    gn = make_norm("gn", 64, groups=32, activation="relu")
    assert isinstance(gn, gnn.GroupNorm) and gn.num_groups == 32 and gn.activation == "relu"
    torch.testing.assert_close(gn(x), F.relu(F.group_norm(x, 32, gn.weight, gn.bias)), rtol=1e-5, atol=1e-5)
    assert make_norm("ln", 64).num_groups == 1
    assert make_norm("in", 64).num_groups == 64
    assert make_norm("gn", 64, group_size=16).num_groups == 4
    assert make_norm("gn", 32, groups=64).num_groups == 32      # clamped: one channel per group
    assert make_norm("gn", 32, group_size=64).num_groups == 1   # clamped: one group
    bn = make_norm("bn", 64, workers=2, activation="relu")
    assert isinstance(bn, WorkerBatchNorm) and bn.workers == 2 and bn.activation == "relu"
    assert isinstance(make_norm("bn-frozen", 8), gnn.FrozenBatchNorm)
    assert isinstance(make_norm("none", 8), torch.nn.Identity)
    with pytest.raises(ValueError, match="groups=24 does not divide num_channels=64"):
        make_norm("gn", 64, groups=24)
    with pytest.raises(ValueError, match="unknown norm 'batchnorm'"):
        make_norm("batchnorm", 64)


@pytest.mark.parametrize("norm", ["bn", "gn", "gn+ws", "ln", "in", "bn-frozen", "none"])
def test_resnet_forward_backward_and_gamma_init(norm):
    torch.manual_seed(0)
    m = ResNet(norm, widths=(8, 16), blocks=(1, 1), groups=4, workers=2)
    out = m(torch.randn(4, 1, 28, 28))
    assert out.shape == (4, 10) and torch.isfinite(out).all()
    out.sum().backward()
    if norm != "none":
        for block in m.layers:  # the paper's init: gamma 0 for each block's last norm, 1 for the others
            assert torch.all(block.norm2.weight == 0) and torch.all(block.norm1.weight == 1)
    if norm == "gn+ws":
        assert isinstance(m.stem[0], gnn.WSConv2d)
