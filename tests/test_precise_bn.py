"""groupnorm.precise_bn against a direct float64 computation of the population statistics."""
import pytest
import torch
from torch import nn

import groupnorm
from groupnorm.nn import SyncBatchNorm, WorkerBatchNorm


def _model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.BatchNorm2d(6, momentum=None), nn.ReLU(),
                         nn.Conv2d(6, 4, 3), WorkerBatchNorm(4, workers=2), nn.ReLU(),
                         nn.Conv2d(4, 5, 1), SyncBatchNorm(5), nn.Flatten(), nn.Linear(5 * 6 * 6, 3),
                         nn.BatchNorm1d(3))


def _batches(sizes, seed=1):
    g = torch.Generator().manual_seed(seed)
    return [(torch.randn(n, 3, 8, 8, generator=g) * 3 + 1.5, torch.zeros(n)) for n in sizes]


def test_matches_float64_statistics_of_all_inputs_with_uneven_batches():
    model = _model()
    bns = [m for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    model.eval()  # precise_bn must switch the BN layers to batch statistics itself, and back
    batches = _batches([4, 10, 2, 6, 8])  # 30 images; element counts differ per batch
    # Direct: the inputs each layer sees with BN in training mode (batch statistics), concatenated, in float64.
    ref = _model()
    for m in ref.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.train()
    seen = {i: [] for i in range(len(bns))}
    ref_bns = [m for m in ref.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)]
    hooks = [m.register_forward_pre_hook(lambda mod, inp, i=i: seen[i].append(inp[0].detach().double()))
             for i, m in enumerate(ref_bns)]
    with torch.no_grad():
        for x, _ in batches[:4]:  # 22 >= 20 images: the fifth batch is not needed
            ref(x)
    for h in hooks:
        h.remove()
    momenta = [m.momentum for m in bns]
    nbt = [int(m.num_batches_tracked) for m in bns]
    used = groupnorm.precise_bn(model, iter(batches), num_images=20)
    assert used == 22
    for i, m in enumerate(bns):
        x = torch.cat(seen[i])
        dims = [0] + list(range(2, x.ndim))
        var, mean = torch.var_mean(x, dim=dims, unbiased=True)
        torch.testing.assert_close(m.running_mean.double(), mean, rtol=1e-6, atol=1e-6)
        torch.testing.assert_close(m.running_var.double(), var, rtol=1e-6, atol=1e-6)
        assert not m.training and m.momentum == momenta[i] and int(m.num_batches_tracked) == nbt[i]
    assert not model.training


def test_restores_training_mode_and_takes_plain_tensors():
    model = _model().train()
    groupnorm.precise_bn(model, [x for x, _ in _batches([8, 8])], num_images=16)
    assert all(m.training for m in model.modules())


def test_errors_name_the_value():
    with pytest.raises(ValueError, match="no BatchNorm layer"):
        groupnorm.precise_bn(nn.Sequential(nn.Conv2d(3, 3, 1), nn.GroupNorm(1, 3)), _batches([4]), 4)
    model = _model()
    before = [m.running_mean.clone() for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    with pytest.raises(ValueError, match="num_images=100 requested but the batches held only 12 images"):
        groupnorm.precise_bn(model, _batches([6, 6]), num_images=100)
    after = [m.running_mean for m in model.modules() if isinstance(m, nn.BatchNorm2d)]
    assert all(torch.equal(a, b) for a, b in zip(before, after))  # left as they were
    for bad in (0, -5, 2.5, True):
        with pytest.raises(ValueError, match=f"num_images={bad!r}"):
            groupnorm.precise_bn(model, _batches([6]), num_images=bad)
