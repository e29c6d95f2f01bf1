"""The one dispatch: ``groupnorm.kernels.route`` sends the calls the Triton path accepts (CUDA tensors; here
CPU tensors under the interpreter with ``route_cpu``) to it, and everything else elsewhere; bad arguments raise
the errors of every path; the package imports without Triton."""
import subprocess
import sys
import types

import pytest
import torch

from groupnorm import functional as GF
from groupnorm import kernels
from groupnorm.kernels import triton as gt
from groupnorm.nn import GroupNorm
from helpers import make_case

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # interpreter's exp


@pytest.fixture
def calls(monkeypatch):
    """Counts the Triton forward operator's calls."""
    ops = gt._state["ops"]
    count = []

    def gn_forward(*args):
        count.append(args[0].shape)
        return ops.gn_forward(*args)

    monkeypatch.setitem(gt._state, "ops", types.SimpleNamespace(gn_forward=gn_forward))
    return count


def _case(device, dtype=torch.float32, shape=(2, 6, 3, 4)):
    x, w, b, _ = make_case(shape, dtype, False, seed=47)
    return x.to(device), w.to(device), b.to(device)


def test_functional_and_modules_take_the_triton_path(device, triton_route, calls):
    x, w, b = _case(device)
    assert gt.takes(x, w, b) and gt.takes(x, w, b, x)
    y = GF.group_norm(x, 3, w, b, activation="silu", residual=x)
    assert len(calls) == 1
    assert torch.equal(y, gt.group_norm(x, 3, w, b, activation="silu", residual=x))
    m = GroupNorm(3, 6, activation="relu").to(device)
    m(x)
    assert len(calls) == 3


@pytest.mark.parametrize("what", ["disabled", "float64", "weight float64", "residual other dtype", "no route",
                                  "empty"])
def test_other_cases_take_another_path(what, device, triton_route, calls, monkeypatch):
    x, w, b = _case(device)
    r = None
    if what == "disabled":
        monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    elif what == "float64":
        x, w, b = x.double(), w.double(), b.double()
    elif what == "weight float64":
        w = w.double()
    elif what == "residual other dtype":
        r = x.half()
    elif what == "no route":
        gt.route_cpu(False)
        if device == "cuda":
            pytest.skip("CUDA tensors always route to Triton")
    elif what == "empty":
        x = x[:0]
    assert not gt.takes(x, w, b, r)
    try:
        GF.group_norm(x, 3, w, b, residual=r)
    except (TypeError, RuntimeError):  # the plain path's own complaint about mixed dtypes
        pass
    assert calls == []


def test_functorch_transforms_take_the_plain_path(device, triton_route, calls):
    x, w, b = _case(device)
    y = torch.func.vmap(lambda xi: GF.group_norm(xi[None], 3, w, b)[0])(x)
    assert calls == []
    torch.testing.assert_close(y, gt.group_norm(x, 3, w, b), rtol=1e-5, atol=1e-5)


def test_bad_arguments_raise_the_usual_errors(device, triton_route):
    x, w, b = _case(device)
    with pytest.raises(ValueError, match="num_groups=4 does not divide num_channels=6"):
        GF.group_norm(x, 4, w, b)
    with pytest.raises(ValueError, match="num_groups=4 does not divide num_channels=6"):
        gt.group_norm(x, 4, w, b)
    with pytest.raises(ValueError, match=r"weight must have shape \(6,\)"):
        GF.group_norm(x, 3, w[:5], b)
    with pytest.raises(ValueError, match="residual has shape"):
        gt.group_norm(x, 3, w, b, residual=x[:1])
    with pytest.raises(ValueError, match="unknown activation 'tanh'"):
        gt.group_norm(x, 3, activation="tanh")
    with pytest.raises(ValueError, match="eps must be a finite non-negative number, got eps=-1"):
        gt.group_norm(x, 3, eps=-1)
    with pytest.raises(TypeError, match="got x of dtype torch.float64"):
        gt.group_norm(x.double(), 3)
    assert gt.group_norm(x, group_size=2).shape == x.shape


def test_c_plus_plus_predicate_declines_triton_calls(device, triton_route):
    """kernels.kernel_takes is about the compiled CPU kernels: false for a call the Triton path takes."""
    x, w, b = _case(device)
    assert gt.takes(x, w, b) and not kernels.kernel_takes(x, w, b)


def test_triton_is_the_real_package():
    """``import triton`` inside groupnorm.kernels.triton is Triton itself, not the subpackage."""
    from groupnorm.kernels.triton import _kernels

    assert _kernels.triton.__name__ == "triton" and hasattr(_kernels.triton, "jit")


def test_imports_without_triton():
    """With Triton unimportable the package imports, the Triton path reports why, and CPU calls still work."""
    code = ("import sys; sys.modules['triton'] = None\n"
            "import torch, groupnorm.functional as F\n"
            "from groupnorm.kernels import triton as t\n"
            "assert not t.is_available() and 'triton' in t.load_error(), t.load_error()\n"
            "assert not t.takes(torch.ones(2, 4, 3))\n"
            "print(F.group_norm(torch.arange(8.).view(1, 4, 2), 2)[0, 0].tolist())\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[-1.3416354656219482, -0.4472118020057678]"
