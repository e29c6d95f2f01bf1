"""groupnorm.nn.norm_act: every norm as norm + optional residual + activation, against the NumPy reference."""
import numpy as np
import pytest
import torch

import groupnorm.nn as gnn
from groupnorm import reference as R
from groupnorm.convert import convert_bn_to_gn, convert_sync_batchnorm, freeze_batch_norm, unfreeze_batch_norm
from groupnorm.nn.factory import make_norm
from groupnorm.nn.norm_act import is_norm_act, norm_act_class

from helpers import TOL, _np, assert_close, make_case


def _affine(m, seed=0):
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        m.weight.copy_(torch.rand(m.weight.shape, generator=g, dtype=m.weight.dtype) + 0.5)
        m.bias.copy_(torch.randn(m.bias.shape, generator=g, dtype=m.bias.dtype))
    return m


def _run(m, x, r, dz):
    """Output and gradients (dx, dgamma, dbeta, dresidual) of m(x, residual=r) for upstream gradient dz."""
    x = torch.tensor(x, requires_grad=True)
    r = None if r is None else torch.tensor(r, requires_grad=True)
    z = m(x, residual=r)
    z.backward(torch.tensor(dz))
    return (z.detach().numpy(), x.grad.numpy(), m.weight.grad.numpy(), m.bias.grad.numpy(),
            None if r is None else r.grad.numpy())


@pytest.mark.parametrize("act", [None, "relu", "silu", "gelu"])
@pytest.mark.parametrize("with_residual", [False, True])
@pytest.mark.parametrize("shape", [(4, 3, 5, 2), (6, 5), (3, 2, 7)])
def test_batch_norm_act_values_and_grads_against_reference(act, with_residual, shape):
    rng = np.random.default_rng(len(shape))
    x, dz = rng.standard_normal(shape) * 2 + 1, rng.standard_normal(shape)
    r = rng.standard_normal(shape) if with_residual else None
    m = _affine(gnn.BatchNormAct(shape[1], activation=act, dtype=torch.float64))
    z, dx, dw, db, dr = _run(m, x, r, dz)
    gamma, beta = m.weight.detach().numpy(), m.bias.detach().numpy()
    pre = R.batch_norm(x, gamma, beta) + (0 if r is None else r)
    np.testing.assert_allclose(z, R.activation(pre, act), rtol=1e-10, atol=1e-10)
    dpre = R.activation_backward(dz, pre, act)
    ref_dx, ref_dw, ref_db = R.batch_norm_backward(dpre, x, gamma)
    for got, want in ((dx, ref_dx), (dw, ref_dw), (db, ref_db)) + (((dr, dpre),) if with_residual else ()):
        np.testing.assert_allclose(got, want, rtol=1e-9, atol=1e-9)
    # running statistics updated as torch's BatchNorm updates them
    rm, rv = R.batch_norm_update_running(x, np.zeros(shape[1]), np.ones(shape[1]))
    np.testing.assert_allclose(m.running_mean.numpy(), rm, rtol=1e-12)
    np.testing.assert_allclose(m.running_var.numpy(), rv, rtol=1e-12)


@pytest.mark.parametrize("act", [None, "relu", "gelu"])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_frozen_batch_norm_act_against_reference(act, mode):
    rng = np.random.default_rng(3)
    x, r, dz = rng.standard_normal((3, 4, 5, 5)), rng.standard_normal((3, 4, 5, 5)), rng.standard_normal((3, 4, 5, 5))
    m = _affine(gnn.FrozenBatchNormAct(4, trainable_affine=True, activation=act, dtype=torch.float64))
    with torch.no_grad():
        m.running_mean.copy_(torch.tensor(rng.standard_normal(4)))
        m.running_var.copy_(torch.tensor(rng.random(4) + 0.5))
    m.train(mode == "train")
    z, dx, dw, db, dr = _run(m, x, r, dz)
    rm, rv = m.running_mean.numpy(), m.running_var.numpy()
    gamma, beta = m.weight.detach().numpy(), m.bias.detach().numpy()
    pre = R.batch_norm_inference(x, rm, rv, gamma, beta) + r
    np.testing.assert_allclose(z, R.activation(pre, act), rtol=1e-10, atol=1e-10)
    dpre = R.activation_backward(dz, pre, act)
    scale = gamma / np.sqrt(rv + 1e-5)
    np.testing.assert_allclose(dx, dpre * scale[None, :, None, None], rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(db, dpre.sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)
    xhat = R.batch_norm_inference(x, rm, rv)
    np.testing.assert_allclose(dw, (dpre * xhat).sum(axis=(0, 2, 3)), rtol=1e-10, atol=1e-10)
    np.testing.assert_allclose(dr, dpre, rtol=1e-10, atol=1e-10)
    assert torch.equal(m.running_mean, torch.tensor(rm))  # frozen: no update in either mode


def test_sync_batch_norm_act_single_process_is_batch_norm_act():
    torch.manual_seed(0)
    x, r = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    a, b = gnn.SyncBatchNormAct(3, activation="silu"), gnn.BatchNormAct(3, activation="silu")
    b.load_state_dict(a.state_dict())
    torch.testing.assert_close(a(x, residual=r), b(x, residual=r))
    torch.testing.assert_close(a.running_var, b.running_var)


def test_identity_act_and_input_untouched():
    x, r = torch.randn(2, 3, 4), torch.randn(2, 3, 4)
    x0 = x.clone()
    m = gnn.IdentityAct(activation="relu")
    assert torch.equal(m(x), torch.relu(x0)) and torch.equal(m(x, residual=r), torch.relu(x0 + r))
    assert torch.equal(x, x0) and torch.equal(gnn.IdentityAct()(x), x)  # never in place on the caller's tensor
    assert list(m.state_dict()) == [] and getattr(m, "weight", None) is None


def test_isinstance_state_dict_and_repr():
    bn, t = gnn.BatchNormAct(8, activation="relu"), torch.nn.BatchNorm2d(8)
    assert isinstance(bn, torch.nn.BatchNorm2d) and isinstance(gnn.SyncBatchNormAct(8), gnn.SyncBatchNorm)
    assert isinstance(gnn.FrozenBatchNormAct(8), gnn.FrozenBatchNorm)
    assert isinstance(gnn.IdentityAct(), torch.nn.Identity)
    assert list(bn.state_dict()) == list(t.state_dict())
    _affine(t)
    bn.load_state_dict(t.state_dict())
    t.load_state_dict(bn.state_dict())
    assert torch.equal(bn.weight, t.weight)
    assert repr(bn) == repr(t).replace("BatchNorm2d", "BatchNormAct")[:-1] + ", workers=1, activation='relu')"
    assert repr(gnn.IdentityAct(activation="gelu")) == "IdentityAct(activation='gelu')"


def test_loads_checkpoints_of_the_former_sequential_norm_activation():
    """Models saved when make_norm returned nn.Sequential(norm, act) (keys 'norm.0.weight') still load."""
    old = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), torch.nn.Sequential(torch.nn.BatchNorm2d(4), torch.nn.ReLU()))
    _affine(old[1][0])
    new = torch.nn.Sequential(torch.nn.Conv2d(1, 4, 3), gnn.BatchNormAct(4, activation="relu"))
    new.load_state_dict(old.state_dict())  # strict: every key used, none missing
    assert torch.equal(new[1].weight, old[1][0].weight) and torch.equal(new[1].running_var, old[1][0].running_var)


def test_bad_activation_and_residual():
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        gnn.BatchNormAct(4, activation="tanh")
    with pytest.raises(ValueError, match=r"residual must have the output's shape \(2, 4, 3\), got \(2, 4, 1\)"):
        gnn.BatchNormAct(4)(torch.randn(2, 4, 3), residual=torch.randn(2, 4, 1))


@pytest.mark.parametrize("name", ["bn", "gn", "gn+ws", "ln", "in", "bn-frozen", "none"])
def test_make_norm_returns_one_kind_of_module(name):
    torch.manual_seed(0)
    m = make_norm(name, 8, groups=4, activation="relu")
    assert is_norm_act(m) and m.activation == "relu"
    x, r = torch.randn(2, 8, 3, 3), torch.randn(2, 8, 3, 3)
    out = m(x, residual=r)
    plain = make_norm(name, 8, groups=4)
    plain.load_state_dict(m.state_dict())
    torch.testing.assert_close(out, torch.relu(plain(x) + r), rtol=1e-5, atol=1e-5)


def test_conversions_keep_the_activation_and_the_residual_call():
    model = torch.nn.Sequential(_affine(make_norm("bn", 4, activation="relu")), make_norm("bn", 4))
    with torch.no_grad():
        model[0].running_mean.uniform_(-1, 1)
        model[0].running_var.uniform_(0.5, 2)
    sync = convert_sync_batchnorm(model)
    assert type(sync[0]) is gnn.SyncBatchNormAct and sync[0].activation == "relu" and sync[1].activation is None
    frozen = freeze_batch_norm(model)
    assert type(frozen[0]) is gnn.FrozenBatchNormAct and frozen[0].activation == "relu"
    back = unfreeze_batch_norm(frozen)
    assert type(back[0]) is gnn.BatchNormAct and back[0].activation == "relu"
    gn = convert_bn_to_gn(model, 2)
    assert type(gn[0]) is gnn.GroupNorm and gn[0].activation == "relu" and gn[1].activation is None
    # each converted layer computes relu(its norm(x) + residual), its norm the reference's
    x = make_case((2, 4, 3, 3), torch.float32, False, seed=5)[0]
    xn, tol = _np(x), TOL[torch.float32]
    w, b = _np(model[0].weight), _np(model[0].bias)
    rm, rv = _np(frozen[0].running_mean), _np(frozen[0].running_var)
    assert np.all(rv != 1) and np.all(rm != 0)  # the statistics set above, not a fresh layer's
    for m, norm in ((frozen, R.batch_norm_inference(xn, rm, rv, w, b)), (gn, R.group_norm(xn, 2, w, b)),
                    (sync, R.batch_norm(xn, w, b)), (back, R.batch_norm(xn, w, b))):  # the last two: train mode
        assert_close(m[0](x, residual=x), R.activation(norm + xn, "relu"), tol, type(m[0]).__name__)
    # plain torch layers convert to plain layers, as before
    assert type(convert_sync_batchnorm(torch.nn.BatchNorm2d(4))) is gnn.SyncBatchNorm
    assert norm_act_class(torch.nn.BatchNorm3d) is gnn.BatchNormAct
    with pytest.raises(TypeError, match="no norm-with-activation class stands for Linear"):
        norm_act_class(torch.nn.Linear)


def test_stand_ins_declare_what_they_stand_for():
    assert isinstance(gnn.WSConv2d(4, 4, 3), torch.nn.Conv2d) and isinstance(gnn.WSConv1d(4, 4, 3), torch.nn.Conv1d)
    assert isinstance(gnn.SyncBatchNorm(4), torch.nn.modules.batchnorm._BatchNorm)
    assert isinstance(gnn.WorkerBatchNorm(4), torch.nn.BatchNorm2d)
    # not torch.nn.SyncBatchNorm (DDP refuses those on CPU), not _BatchNorm for the frozen one (see docstrings)
    assert not isinstance(gnn.SyncBatchNorm(4), torch.nn.SyncBatchNorm)
    assert not isinstance(gnn.FrozenBatchNorm(4), torch.nn.modules.batchnorm._BatchNorm)


def test_cpu_ddp_over_gloo_accepts_our_sync_batch_norm(tmp_path):
    """Why SyncBatchNorm is not a torch.nn.SyncBatchNorm: DDP on CPU refuses those, and accepts ours."""
    import subprocess
    import sys

    code = f"""
import torch, torch.distributed as dist, groupnorm.nn as gnn
dist.init_process_group("gloo", init_method="file://{tmp_path / 'rendezvous'}", rank=0, world_size=1)
try:
    torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(torch.nn.SyncBatchNorm(4)))
    print("torch-accepted")
except ValueError as e:
    print("torch-refused" if "only work with GPU modules" in str(e) else repr(e))
ddp = torch.nn.parallel.DistributedDataParallel(torch.nn.Sequential(gnn.SyncBatchNormAct(4, activation="relu")))
ddp(torch.randn(3, 4, 2, 2)).sum().backward()
print("ours-accepted")
dist.destroy_process_group()
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.split() == ["torch-refused", "ours-accepted"]
