"""The Triton kernels' tests run on ``cuda`` where a GPU is, else on CPU tensors in Triton's interpreter
(``TRITON_INTERPRET=1``, set here before any kernel is defined). Without Triton they are skipped."""
import os

import numpy as np
import pytest
import torch

if not torch.cuda.is_available():
    os.environ["TRITON_INTERPRET"] = "1"

from groupnorm import reference  # noqa: E402
from groupnorm.kernels import triton as gt  # noqa: E402
from helpers import TOL, assert_close  # noqa: E402

DEVICE = "cuda" if torch.cuda.is_available() else "cpu"


def pytest_collection_modifyitems(config, items):
    if gt.is_available():
        return
    skip = pytest.mark.skip(reason=f"Triton not available: {gt.load_error()}")
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.fspath).startswith(here):
            item.add_marker(skip)


@pytest.fixture
def device():
    """Where the kernels run: ``cuda``, or ``cpu`` under Triton's interpreter."""
    return DEVICE


@pytest.fixture
def triton_route():
    """``groupnorm.kernels.route`` sends CPU tensors to the Triton path for the test (no-op on a GPU)."""
    gt.route_cpu(DEVICE == "cpu")
    yield
    gt.route_cpu(False)


def _np(t):
    return None if t is None else t.detach().double().cpu().numpy()


def check_triton(x, G, w=None, b=None, act=None, r=None, dy=None, eps=1e-5, tol=None, fn=None):
    """y, the saved statistics and every gradient of the Triton path against the float64 reference; returns
    (y, grads). ``fn``: the function under test (default ``groupnorm.kernels.triton.group_norm``)."""
    fn = fn or gt.group_norm
    tol = TOL[x.dtype] if tol is None else tol
    leaves = [t.detach().clone().requires_grad_(True) if t is not None else None for t in (x, w, b, r)]
    xr, wr, br, rr = leaves
    y = fn(xr, G, wr, br, eps, activation=act, residual=rr)
    assert y.dtype == x.dtype and y.shape == x.shape and y.stride() == x.stride() and y.device == x.device
    ref = reference.group_norm(_np(x), G, _np(w), _np(b), eps, activation=act, residual=_np(r))
    assert_close(y.cpu(), ref, tol, f"y {x.dtype} {act}")
    if dy is None:
        gen = torch.Generator().manual_seed(7)
        dy = torch.randn(x.shape, generator=gen, dtype=torch.float64).to(x.dtype).to(x.device)
    params = [t for t in leaves if t is not None]
    grads = torch.autograd.grad(y, params, dy)
    refs = reference.group_norm_backward(_np(dy), _np(x), G, _np(w), _np(b), eps, activation=act, residual=_np(r))
    _, ref_rstd = reference.group_norm_stats(_np(x), G, eps)
    term = float(ref_rstd.max() * np.abs(_np(dy)).max() * (np.abs(_np(w)).max() if w is not None else 1.0))
    names = ("dx", "dweight", "dbias", "dresidual")
    it = iter(grads)
    for leaf, ref_g, name in zip(leaves, refs, names):
        if leaf is None:
            continue
        got = next(it)
        assert got.shape == leaf.shape and got.dtype == leaf.dtype, name
        if name in ("dx", "dresidual"):
            assert got.stride() == leaf.stride() or name == "dresidual", name
        assert_close(got.cpu(), ref_g, tol, f"{name} {x.dtype} {act}", scale=term if name == "dx" else 1.0)
    return y, grads


@pytest.fixture
def check():
    """:func:`check_triton`."""
    return check_triton
