"""FrozenBatchNorm (BN*) against the NumPy reference and torch's BatchNorm in eval mode."""
import numpy as np
import pytest
import torch
from torch import nn

from groupnorm import freeze_batch_norm, reference, unfreeze_batch_norm
from groupnorm.nn import FrozenBatchNorm


def _trained_bn(cls, c, shape, seed=0):
    """A BN with non-trivial statistics and affine (a few training steps on shifted data)."""
    g = torch.Generator().manual_seed(seed)
    bn = cls(c).double()
    bn.train()
    for _ in range(3):
        bn(torch.randn(shape, generator=g, dtype=torch.float64) * 3 + 2)
    with torch.no_grad():
        bn.weight.copy_(torch.rand(c, generator=g, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.randn(c, generator=g, dtype=torch.float64))
    return bn


@pytest.mark.parametrize("cls,shape", [
    (nn.BatchNorm1d, (5, 6)), (nn.BatchNorm1d, (5, 6, 7)), (nn.BatchNorm2d, (3, 6, 4, 5)),
    (nn.BatchNorm3d, (2, 6, 3, 4, 2)),
])
def test_equals_reference_and_bn_eval_in_any_mode(cls, shape):
    bn = _trained_bn(cls, shape[1], shape)
    frozen = FrozenBatchNorm.from_batch_norm(bn)
    x = torch.randn(shape, dtype=torch.float64) * 2 + 1
    want = reference.batch_norm_inference(x.numpy(), bn.running_mean.numpy(), bn.running_var.numpy(),
                                          bn.weight.detach().numpy(), bn.bias.detach().numpy(), bn.eps)
    for mode in (True, False):
        frozen.train(mode)
        np.testing.assert_allclose(frozen(x).detach().numpy(), want, rtol=1e-12, atol=1e-12)
    bn.eval()
    torch.testing.assert_close(frozen(x), bn(x), rtol=1e-12, atol=1e-12)


def test_train_mode_does_not_change_statistics_and_grads_only_if_trainable():
    bn = _trained_bn(nn.BatchNorm2d, 4, (4, 4, 3, 3))
    frozen = FrozenBatchNorm.from_batch_norm(bn).train()
    before = {k: v.clone() for k, v in frozen.state_dict().items()}
    x = torch.randn(4, 4, 3, 3, dtype=torch.float64, requires_grad=True)
    frozen(x).square().sum().backward()
    for k, v in frozen.state_dict().items():
        assert torch.equal(v, before[k]), k
    assert frozen.weight.grad is None and not frozen.weight.requires_grad
    # input gradient of y = x * s + t is dy * s
    s = bn.weight.detach() / torch.sqrt(bn.running_var + bn.eps)
    torch.testing.assert_close(x.grad, 2 * frozen(x).detach() * s.view(1, -1, 1, 1))

    trainable = FrozenBatchNorm.from_batch_norm(bn, trainable_affine=True)
    dy = torch.randn(4, 4, 3, 3, dtype=torch.float64)
    (trainable(x) * dy).sum().backward()
    xhat = (x.detach() - bn.running_mean.view(1, -1, 1, 1)) / torch.sqrt(bn.running_var.view(1, -1, 1, 1) + bn.eps)
    torch.testing.assert_close(trainable.weight.grad, (dy * xhat).sum((0, 2, 3)))
    torch.testing.assert_close(trainable.bias.grad, dy.sum((0, 2, 3)))
    assert torch.equal(trainable.running_mean, bn.running_mean)


def test_state_dict_round_trip_with_batch_norm():
    bn = _trained_bn(nn.BatchNorm2d, 5, (3, 5, 2, 2)).float()
    frozen = FrozenBatchNorm(5)
    frozen.load_state_dict(bn.state_dict())
    assert torch.equal(frozen.running_var, bn.running_var) and torch.equal(frozen.weight, bn.weight)
    back = nn.BatchNorm2d(5)
    back.load_state_dict(frozen.state_dict())
    assert torch.equal(back.running_mean, bn.running_mean)
    old = {k: v for k, v in bn.state_dict().items() if k != "num_batches_tracked"}  # pre-1.0 checkpoints
    FrozenBatchNorm(5).load_state_dict(old)


def test_bias_free_and_affine_free_batch_norms():
    x = torch.randn(3, 4, 5)
    bn = nn.BatchNorm1d(4, bias=False).eval()
    bn.running_mean.fill_(0.5)
    frozen = FrozenBatchNorm.from_batch_norm(bn)
    assert frozen.bias is None and "bias" not in frozen.state_dict()
    torch.testing.assert_close(frozen(x), bn(x))
    bn = nn.BatchNorm1d(4, affine=False).eval()
    bn.running_var.fill_(4.0)
    torch.testing.assert_close(FrozenBatchNorm.from_batch_norm(bn)(x), bn(x))


def test_freeze_and_unfreeze_model():
    shared = nn.BatchNorm2d(4)
    model = nn.Sequential(nn.Conv2d(3, 4, 1), shared, nn.ModuleDict({"a": shared, "b": nn.BatchNorm1d(4)}))
    model.train()
    frozen, report = freeze_batch_norm(model, return_report=True)
    assert len(report) == 2 and report.layers[0].names == ("1", "2.a")
    assert frozen[1] is frozen[2]["a"] and isinstance(frozen[1], FrozenBatchNorm) and frozen[1].training
    assert isinstance(model[1], nn.BatchNorm2d)  # not in place by default
    assert not any(isinstance(m, nn.modules.batchnorm._BatchNorm) for m in frozen.modules())
    back = unfreeze_batch_norm(frozen)
    assert type(back[1]) is nn.BatchNorm2d and type(back[2]["b"]) is nn.BatchNorm1d and back[1] is back[2]["a"]
    assert back[1].weight.requires_grad
    x = torch.randn(2, 3, 4, 4)
    model.eval(), back.eval()
    torch.testing.assert_close(back[:2](x), model[:2](x))
    # nothing to freeze: BN without running statistics stays, and a model without BN is unchanged
    untracked = nn.Sequential(nn.BatchNorm2d(4, track_running_stats=False))
    out, report = freeze_batch_norm(untracked, return_report=True)
    assert len(report) == 0 and isinstance(out[0], nn.BatchNorm2d)


def test_bad_input():
    with pytest.raises(ValueError, match="num_features"):
        FrozenBatchNorm(0)
    with pytest.raises(ValueError, match=r"\(N, 4, \*\).*\(2, 3, 5\)"):
        FrozenBatchNorm(4)(torch.randn(2, 3, 5))
    with pytest.raises(ValueError, match="shape"):
        FrozenBatchNorm(4)(torch.randn(4))
    with pytest.raises(TypeError, match="Module"):
        freeze_batch_norm("resnet")
    with pytest.raises(ValueError, match="track_running_stats"):
        FrozenBatchNorm.from_batch_norm(nn.BatchNorm2d(3, track_running_stats=False))
