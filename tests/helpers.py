"""Shared test helpers: test cases, the reference check of GN (values, saved statistics, gradients; with or
without a residual; through the kernels' operator or the public call), a reference second derivative, the
tolerance table, the grid of shapes and the kernels' skip mark. Test files import from here, never from each
other.
"""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import pytest
import torch

from groupnorm import functional as GF
from groupnorm import kernels, reference
from groupnorm.args import activation_code

ROOT = Path(__file__).resolve().parents[1]  # the repository (scripts/, src/, docs/)

needs_kernels = pytest.mark.skipif(not kernels.is_available(), reason=f"kernels not built: {kernels.load_error()}")

# L2 size the streaming_stores fixture (conftest.py) sets: outputs over 2 * 256 KiB stream at 2 threads
STREAM_L2 = 256 << 10

ACTS = [None, "relu", "silu", "gelu"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]

# The one tolerance table. TOL: relative to scale (assert_close), values and gradients, every path (kernels: fp32
# math in lanes, outputs rounded to the dtype; the plain path: torch's GN below its shift threshold).
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2.5e-3}
# float32 at a mean of 1e6 standard deviations: the plain path's promise there (groupnorm.plain.ERROR_BUDGET,
# 1e-4), which the kernels meet with room to spare; what makes it larger than TOL is the rounding of x - mean
TOL_LARGE_MEAN = 1e-4
# float64 second derivatives: a finite difference (step DIFF_STEP) of the reference's exact first derivative,
# whose truncation and rounding errors are ~1e-10 of the values
TOL_SECOND = 1e-7
DIFF_STEP = 1e-5
# relu: where the reference's pre-activation is this close (relative to scale) to 0, the path's own rounding may
# put it on either side of the kink; the checks give such elements a zero upstream gradient (see relu_safe_dy)
RELU_KINK = 1e-3


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Same values, strides of (N, *spatial, C): channels_last / channels_last_3d for rank 4 / 5, the same
    order for rank 3; a rank-2 tensor (no spatial dims) and a spatial size of 1 have one layout only."""
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def make_case(shape, dtype, cl, affine=True, seed=0, loc=0.5, scale=2.0):
    """Seeded (x, weight, bias, dy); x ~ loc + scale * N(0, 1), weight ~ 1 + N(0, 1/4), bias ~ N(0, 1/4), all
    rounded to ``dtype``; cl: x and dy channels-last (:func:`channels_last`). affine: True (both), False (no
    weight, no bias), "weight" or "bias" (that one only)."""
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + loc).to(dtype)
    c = shape[1]
    w = (torch.randn(c, generator=g, dtype=torch.float64) * 0.5 + 1).to(dtype)
    b = (torch.randn(c, generator=g, dtype=torch.float64) * 0.5).to(dtype)
    w = w if affine in (True, "weight") else None
    b = b if affine in (True, "bias") else None
    dy = torch.randn(shape, generator=g, dtype=torch.float64).to(dtype)
    if cl:
        x, dy = channels_last(x), channels_last(dy)
    return x, w, b, dy


def _np(t):
    return None if t is None else t.detach().double().numpy()


def assert_close(got, ref, tol, what, scale=1.0):
    """max |got - ref| <= tol * max(scale, max |ref|, 1)."""
    got = got.detach().double().numpy()
    scale = max(scale, 1.0, float(np.max(np.abs(ref)))) if ref.size else 1.0
    err = float(np.max(np.abs(got - ref))) if ref.size else 0.0
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    assert np.all(np.isfinite(got)), f"{what}: non-finite values"
    assert err <= tol * scale, f"{what}: max abs error {err:.3e} > {tol:.1e} * {scale:.3g}"


def relu_safe_dy(dy, x, G, w, b, eps=1e-5, residual=None):
    """dy with zeros where relu's input (the reference's GN(x) [+ residual], float64) lies within RELU_KINK of
    0: there relu' is 0 or 1 depending on the last bit of the path's own pre-activation, and a zero upstream
    gradient makes every gradient the same either way, so the whole result is compared, at every element."""
    pre = reference.group_norm(_np(x), G, _np(w), _np(b), eps, residual=_np(residual))
    near = np.abs(pre) <= RELU_KINK * max(1.0, float(np.abs(pre).max()))
    keep = torch.from_numpy(~near)
    return torch.where(keep, dy, torch.zeros((), dtype=dy.dtype))


def check_against_reference(x, w, b, dy, G, act, eps=1e-5, tol=None, residual=None, call="op"):
    """y and the gradients (dx, dweight, dbias[, dresidual]) of ``act(GN(x) [+ residual])`` against the reference.

    call: "op", through ``torch.ops.groupnorm.gn_forward`` (the kernels; y and dx keep x's strides, and the
    saved mean and rstd are checked too); "functional", through ``groupnorm.functional.group_norm`` (whatever
    path it routes to); or a callable with functional's signature ``(x, num_groups, weight, bias, eps,
    activation=, residual=)``. weight / bias may be None, or of another dtype than x (mixed precision).
    Returns y."""
    tol = TOL[x.dtype] if tol is None else tol
    if act == "relu":
        dy = relu_safe_dy(dy, x, G, w, b, eps, residual)
    leaves = {name: t.detach().clone().requires_grad_(True)
              for name, t in (("x", x), ("weight", w), ("bias", b), ("residual", residual)) if t is not None}
    xr, wr, br, rr = (leaves.get(n) for n in ("x", "weight", "bias", "residual"))
    op = call == "op"
    if op:
        y, mean, rstd = torch.ops.groupnorm.gn_forward(xr, G, wr, br, eps, activation_code(act), rr)
        assert y.stride() == x.stride(), (y.stride(), x.stride())
    else:
        fn = GF.group_norm if call == "functional" else call
        y = fn(xr, G, wr, br, eps, activation=act, residual=rr)
    assert y.dtype == x.dtype and y.shape == x.shape
    what = f"{x.dtype} {act}{' residual' if residual is not None else ''}"
    ref_y = reference.group_norm(_np(x), G, _np(w), _np(b), eps, activation=act, residual=_np(residual))
    assert_close(y, ref_y, tol, f"y {what}")
    ref_mean, ref_rstd = reference.group_norm_stats(_np(x), G, eps)
    if op:
        # fp32 lanes round x - K to float: statistics are exact to ~1e-7 of the data's magnitude (1e-12 for fp64)
        stol = 1e-12 if x.dtype == torch.float64 else 1e-6
        xmax = float(np.max(np.abs(_np(x))))
        np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=stol, atol=stol * max(1.0, xmax))
        np.testing.assert_allclose(rstd.numpy(), ref_rstd, rtol=stol * 10)
    grads = dict(zip(leaves, torch.autograd.grad(y, list(leaves.values()), dy)))
    refs = reference.group_norm_backward(_np(dy), _np(x), G, _np(w), _np(b), eps, activation=act,
                                         residual=_np(residual))
    refs = dict(zip(("x", "weight", "bias", "residual"), refs))
    if op:
        assert grads["x"].stride() == x.stride()
    # dx = rstd * (w dy' - ...) is a difference of terms of size rstd * |w dy|: errors scale with those terms
    # (they matter when a group is nearly constant, e.g. one element per group, where rstd = 1 / sqrt(eps))
    term = float(ref_rstd.max() * np.abs(_np(dy)).max() * (np.abs(_np(w)).max() if w is not None else 1.0))
    for name, got in grads.items():
        assert got.shape == leaves[name].shape and got.dtype == leaves[name].dtype, name
        assert_close(got, refs[name], tol, f"d{name} {what}", scale=term if name == "x" else 1.0)
    return y


def check_residual(x, w, b, dy, r, G, act, eps=1e-5, call="op"):
    """:func:`check_against_reference` with the residual ``r``."""
    return check_against_reference(x, w, b, dy, G, act, eps, residual=r, call=call)


def numerical_gradient(f, arrays, h=DIFF_STEP):
    """Central differences of the scalar float64 function ``f(*arrays)`` with respect to each array."""
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    grads = []
    for a in arrays:
        g = np.zeros_like(a)
        for i in np.ndindex(a.shape):
            old = a[i]
            a[i] = old + h
            up = f(*arrays)
            a[i] = old - h
            down = f(*arrays)
            a[i] = old
            g[i] = (up - down) / (2 * h)
        grads.append(g)
    return grads


# (shape, G): C/G in {1, 2, 3, 16, 64}; odd spatial sizes; N=1; spatial size 1; ranks 2..5. With cl=True every
# case with a spatial size > 1 is channels-last in fact (rank 2 and spatial size 1 have one layout only).
GRID = [
    ((2, 6), 3),                 # rank 2, C/G = 2
    ((3, 12, 1), 4),             # spatial size 1, C/G = 3
    ((1, 64, 33), 1),            # N = 1, C/G = 64, odd length
    ((2, 12, 7), 4),             # rank 3, C/G = 3 (channels-last: strides (84, 1, 12))
    ((2, 32, 7, 5), 2),          # C/G = 16, odd spatial
    ((2, 5, 9, 11), 5),          # C/G = 1 (instance norm), odd spatial
    ((1, 48, 3, 17), 16),        # C/G = 3
    ((2, 6, 3, 5, 7), 3),        # rank 5, C/G = 2
    ((1, 64, 2, 3, 5), 4),       # rank 5, C/G = 16
]


def make_residual(x, seed, layout="same"):
    """A seeded residual of x's shape and dtype: "same" in x's layout, "other" in the other one (contiguous for
    a channels-last x and the reverse)."""
    g = torch.Generator().manual_seed(1000 + seed)
    r = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)
    if layout == "same" and not x.is_contiguous() and x.dim() >= 3:
        r = channels_last(r)
    elif layout == "other" and x.dim() >= 3 and x.is_contiguous():
        r = channels_last(r)
    return r


# --- the experiment harness's tests (tests/experiments/) ---

# the Fashion-MNIST sample (IDX files) that the harness's tests train and read
SAMPLE_DATA = str(ROOT / "tests" / "data" / "fashion-mnist-sample")


def results_lines(out) -> list[dict]:
    """Every line of ``OUT/results.jsonl`` as a dict, in file order, duplicates included ([] without the file;
    ``store.read_results`` instead keeps the first row of each run and skips torn lines)."""
    path = os.path.join(out, "results.jsonl")
    if not os.path.exists(path):
        return []
    with open(path) as f:
        return [json.loads(line) for line in f]


def smoke_args(out, *extra: str, experiment: str | None = None, data_dir: str = SAMPLE_DATA) -> list[str]:
    """``groupnorm reproduce`` arguments: the smoke preset on ``data_dir``, one job, no progress bars, into
    ``out``, for ``experiment`` (default: the preset's ``all``), then ``extra``."""
    args = ["reproduce", "--preset", "smoke", "--data-dir", str(data_dir), "--jobs", "1", "--no-progress",
            "--out", str(out)]
    return args + (["--experiment", experiment] if experiment else []) + list(extra)


def write_cifar(root, kind: str = "cifar10", n: int = 16, label: int | None = None) -> str:
    """A CIFAR-10 (5 training batches of ``n`` images and a test batch of ``n``) or CIFAR-100 (a training file
    of 5n, a test file of n) directory in the official pickled layout; labels seeded-random, or all ``label``."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(1)
    nc = 10 if kind == "cifar10" else 100

    def dump(name, obj):
        with open(os.path.join(root, name), "wb") as f:
            pickle.dump(obj, f)

    if kind == "cifar10":
        dump("batches.meta", {b"label_names": [f"c{i}".encode() for i in range(10)]})
        files, key = [(f"data_batch_{i}", n) for i in range(1, 6)] + [("test_batch", n)], b"labels"
    else:
        dump("meta", {b"fine_label_names": [f"f{i}".encode() for i in range(100)]})
        files, key = [("train", 5 * n), ("test", n)], b"fine_labels"
    for name, m in files:
        labels = [int(v) for v in rng.integers(0, nc, m)] if label is None else [label] * m
        dump(name, {b"data": rng.integers(0, 256, (m, 3072), dtype=np.uint8), key: labels})
    return str(root)
