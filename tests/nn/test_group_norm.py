"""groupnorm.nn.GroupNorm as a drop-in for torch.nn.GroupNorm, plus group_size and activation."""
import io

import pytest
import torch

from groupnorm import reference as R
from groupnorm.nn import GroupNorm

from helpers import TOL, _np, assert_close, check_against_reference, make_case


def test_positional_signature_and_parameters():
    m, t = GroupNorm(32, 256), torch.nn.GroupNorm(32, 256)
    assert (m.num_groups, m.num_channels, m.eps, m.affine) == (t.num_groups, t.num_channels, t.eps, t.affine)
    assert [n for n, _ in m.named_parameters()] == [n for n, _ in t.named_parameters()] == ["weight", "bias"]
    assert m.weight.shape == t.weight.shape == (256,)
    assert torch.equal(m.weight, torch.ones(256)) and torch.equal(m.bias, torch.zeros(256))
    assert GroupNorm(4, 8, 1e-3, False).weight is None
    assert list(GroupNorm(4, 8, affine=False).state_dict()) == list(torch.nn.GroupNorm(4, 8, affine=False).state_dict())


def test_group_size_means_channels_per_group():
    m = GroupNorm(num_channels=256, group_size=16)
    assert m.num_groups == 16 and m.group_size == 16


def test_extra_repr():
    assert repr(GroupNorm(32, 256)) == repr(torch.nn.GroupNorm(32, 256))
    assert repr(GroupNorm(2, 8, affine=False, activation="silu")) == (
        repr(torch.nn.GroupNorm(2, 8, affine=False))[:-1] + ", activation='silu')")


def test_is_a_torch_group_norm():
    """Code that finds norm layers by type (weight-decay exclusion, freezing, summaries) sees ours as GN."""
    m = GroupNorm(4, 8, 1e-3, False, "cpu", torch.float64, activation="relu")
    assert isinstance(m, torch.nn.GroupNorm) and isinstance(GroupNorm(num_channels=8, group_size=2), torch.nn.GroupNorm)
    assert (m.num_groups, m.num_channels, m.eps, m.affine, m.weight) == (4, 8, 1e-3, False, None)
    assert GroupNorm(2, 8, dtype=torch.float64).weight.dtype == torch.float64
    # torch's bias=False (gamma only) is kept, and the state_dict keys follow
    nb = GroupNorm(2, 8, bias=False)
    assert nb.bias is None and list(nb.state_dict()) == ["weight"]
    x = make_case((2, 8, 3, 3), torch.float64, False, seed=2)[0]
    with torch.no_grad():
        nb.double().weight.uniform_(0.5, 1.5)
    y = R.group_norm(x.numpy(), 2, nb.weight.detach().numpy(), None, 1e-5)
    assert_close(nb(x), y, TOL[torch.float64], "bias=False")


def test_factory_kwargs():
    m = GroupNorm(2, 8, dtype=torch.float64, device="cpu")
    assert m.weight.dtype == torch.float64 and m.weight.device.type == "cpu"


@pytest.mark.parametrize("fmt", [None, torch.channels_last])
def test_state_dict_both_ways_same_output(gn_path, fmt):
    """torch's state_dict loads into ours and ours into torch's (through a file): the loaded parameters are
    torch's bit for bit and both modules give the reference's output with them."""
    t = torch.nn.GroupNorm(4, 16)
    with torch.no_grad():
        t.weight.normal_()
        t.bias.normal_()
    m = GroupNorm(4, 16)
    m.load_state_dict(t.state_dict())
    assert torch.equal(m.weight, t.weight) and torch.equal(m.bias, t.bias)
    x = make_case((3, 16, 7, 5), torch.float32, fmt is not None, seed=0)[0]
    ref = R.group_norm(_np(x), 4, _np(t.weight), _np(t.bias))
    assert_close(m(x), ref, TOL[torch.float32], "ours, torch's state_dict")
    # ...and back, through a serialized file.
    buf = io.BytesIO()
    torch.save(m.state_dict(), buf)
    buf.seek(0)
    t2 = torch.nn.GroupNorm(4, 16)
    t2.load_state_dict(torch.load(buf, weights_only=True))
    assert torch.equal(t2.weight, t.weight) and torch.equal(t2.bias, t.bias)
    assert_close(t2(x), ref, TOL[torch.float32], "torch's, our state_dict")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.bfloat16])
def test_module_against_reference_with_gradients(gn_path, dtype):
    """The module's forward and its gradients (x, weight, bias) against the reference."""
    x, w, b, dy = make_case((2, 12, 4, 3), dtype, False, seed=1)
    m = GroupNorm(num_channels=12, group_size=3, activation="silu", dtype=dtype)

    def module(x, num_groups, weight, bias, eps, activation=None, residual=None):
        assert (num_groups, eps, activation, residual) == (m.num_groups, m.eps, m.activation, None)
        return torch.func.functional_call(m, {"weight": weight, "bias": bias}, (x,))  # the check's leaves

    check_against_reference(x, w, b, dy, 4, "silu", call=module)


@pytest.mark.parametrize(
    "args,kwargs,match",
    [
        ((3, 64), {}, "num_groups=3 does not divide num_channels=64"),
        ((None, 64), {}, "exactly one of num_groups and group_size"),
        ((4, 64), {"group_size": 16}, "exactly one"),
        ((0, 64), {}, "num_groups=0"),
        ((4,), {}, "needs num_channels"),
        ((4, 64), {"activation": "swish"}, "unknown activation 'swish'"),
        ((), {"num_channels": 64, "group_size": 128}, "group_size=128 does not divide num_channels=64"),
    ],
)
def test_constructor_errors(args, kwargs, match):
    with pytest.raises(ValueError, match=match):
        GroupNorm(*args, **kwargs)


def test_forward_channel_mismatch():
    with pytest.raises(ValueError, match=r"num_channels=16 in dim 1, got input of shape \(2, 8, 3\)"):
        GroupNorm(4, 16)(torch.randn(2, 8, 3))
    with pytest.raises(TypeError, match="torch.int32"):
        GroupNorm(4, 16)(torch.ones(2, 16, 3, dtype=torch.int32))
