"""Shared test helpers: test cases, the reference check of the kernels (values, saved statistics, gradients) and
of GN with a residual, tolerances and the grid of shapes. Test files import from here, never from each other.
"""
import json
import os
import pickle
from pathlib import Path

import numpy as np
import torch

from groupnorm import functional as GF
from groupnorm import reference
from groupnorm.args import activation_code

# L2 size the streaming_stores fixture (conftest.py) sets: outputs over 2 * 256 KiB stream at 2 threads
STREAM_L2 = 256 << 10

ACTS = [None, "relu", "silu", "gelu"]
DTYPES = [torch.float32, torch.float64, torch.bfloat16, torch.float16]
# relative-to-scale tolerance of values and gradients: fp32 math in lanes, outputs rounded to the dtype
TOL = {torch.float64: 1e-10, torch.float32: 2e-5, torch.bfloat16: 1.6e-2, torch.float16: 2.5e-3}


def channels_last(x: torch.Tensor) -> torch.Tensor:
    """Same values, strides of (N, *spatial, C) (channels_last / channels_last_3d for rank 4 / 5)."""
    return x.movedim(1, -1).contiguous().movedim(-1, 1)


def make_case(shape, dtype, cl, affine=True, seed=0, loc=0.5, scale=2.0):
    g = torch.Generator().manual_seed(seed)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * scale + loc).to(dtype)
    c = shape[1]
    w = (torch.randn(c, generator=g, dtype=torch.float64) * 0.5 + 1).to(dtype) if affine else None
    b = (torch.randn(c, generator=g, dtype=torch.float64) * 0.5).to(dtype) if affine else None
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


def check_against_reference(x, w, b, dy, G, act, eps=1e-5, tol=None):
    """Forward values, saved statistics and (dx, dw, db) of the kernels against the reference."""
    tol = TOL[x.dtype] if tol is None else tol
    xr = x.detach().clone().requires_grad_(True)
    wr = w.detach().clone().requires_grad_(True) if w is not None else None
    br = b.detach().clone().requires_grad_(True) if b is not None else None
    y, mean, rstd = torch.ops.groupnorm.gn_forward(xr, G, wr, br, eps, activation_code(act))
    assert y.dtype == x.dtype and y.shape == x.shape and y.stride() == x.stride()
    ref_y = reference.group_norm(_np(x), G, _np(w), _np(b), eps, activation=act)
    assert_close(y, ref_y, tol, f"y {x.dtype} {act}")
    ref_mean, ref_rstd = reference.group_norm_stats(_np(x), G, eps)
    # fp32 lanes round x - K to float: statistics are exact to ~1e-7 of the data's magnitude (1e-12 for fp64)
    stol = 1e-12 if x.dtype == torch.float64 else 1e-6
    xmax = float(np.max(np.abs(_np(x))))
    np.testing.assert_allclose(mean.numpy(), ref_mean, rtol=stol, atol=stol * max(1.0, xmax))
    np.testing.assert_allclose(rstd.numpy(), ref_rstd, rtol=stol * 10)
    params = [p for p in (xr, wr, br) if p is not None]
    grads = torch.autograd.grad(y, params, dy)
    ref_dx, ref_dw, ref_db = reference.group_norm_backward(_np(dy), _np(x), G, _np(w), _np(b), eps, activation=act)
    assert grads[0].stride() == x.stride()
    # dx = rstd * (w dy' - ...) is a difference of terms of size rstd * |w dy|: errors scale with those terms
    # (they matter when a group is nearly constant, e.g. one element per group, where rstd = 1 / sqrt(eps))
    term = float(ref_rstd.max() * np.abs(_np(dy)).max() * (np.abs(_np(w)).max() if w is not None else 1.0))
    assert_close(grads[0], ref_dx, tol, f"dx {x.dtype} {act}", scale=term)
    if w is not None:
        assert_close(grads[1], ref_dw, tol, f"dweight {x.dtype} {act}")
    if b is not None:
        assert_close(grads[-1], ref_db, tol, f"dbias {x.dtype} {act}")


# (shape, G): C/G in {1, 2, 3, 16, 64}; odd spatial sizes; N=1; spatial size 1; ranks 2..5
GRID = [
    ((2, 6), 3),                 # rank 2, C/G = 2
    ((3, 12, 1), 4),             # spatial size 1, C/G = 3
    ((1, 64, 33), 1),            # N = 1, C/G = 64, odd length
    ((2, 32, 7, 5), 2),          # C/G = 16, odd spatial
    ((2, 5, 9, 11), 5),          # C/G = 1 (instance norm), odd spatial
    ((1, 48, 3, 17), 16),        # C/G = 3
    ((2, 6, 3, 5, 7), 3),        # rank 5, C/G = 2
    ((1, 64, 2, 3, 5), 4),       # rank 5, C/G = 16
]


def make_residual(x, seed, layout="same"):
    g = torch.Generator().manual_seed(1000 + seed)
    r = torch.randn(x.shape, generator=g, dtype=torch.float64).to(x.dtype)
    if layout == "same" and not x.is_contiguous() and x.dim() >= 3:
        r = channels_last(r)
    elif layout == "other" and x.dim() >= 3 and x.is_contiguous():
        r = channels_last(r)
    return r  # "other": contiguous residual for a channels-last x (and the reverse)


def check_residual(x, w, b, dy, r, G, act, eps=1e-5, op=True):
    """y and (dx, dw, db, dr) against the reference; op: through torch.ops.groupnorm (else GF.group_norm)."""
    tol = TOL[x.dtype]
    xr, rr = x.detach().clone().requires_grad_(True), r.detach().clone().requires_grad_(True)
    wr = w.detach().clone().requires_grad_(True) if w is not None else None
    br = b.detach().clone().requires_grad_(True) if b is not None else None
    if op:
        y = torch.ops.groupnorm.gn_forward(xr, G, wr, br, eps, activation_code(act), rr)[0]
    else:
        y = GF.group_norm(xr, G, wr, br, eps, activation=act, residual=rr)
    assert y.dtype == x.dtype and y.shape == x.shape and y.stride() == x.stride()
    ref_y = reference.group_norm(_np(x), G, _np(w), _np(b), eps, activation=act, residual=_np(r))
    # the residual's magnitude adds to y's: the tolerance scales with it
    assert_close(y, ref_y, tol, f"y {x.dtype} {act}")
    params = [p for p in (xr, wr, br, rr) if p is not None]
    grads = torch.autograd.grad(y, params, dy)
    ref_dx, ref_dw, ref_db, ref_dr = reference.group_norm_backward(_np(dy), _np(x), G, _np(w), _np(b), eps,
                                                                   activation=act, residual=_np(r))
    _, ref_rstd = reference.group_norm_stats(_np(x), G, eps)
    term = float(ref_rstd.max() * np.abs(_np(dy)).max() * (np.abs(_np(w)).max() if w is not None else 1.0))
    assert_close(grads[0], ref_dx, tol, f"dx {x.dtype} {act}", scale=term)
    if w is not None:
        assert_close(grads[1], ref_dw, tol, f"dweight {x.dtype} {act}")
    if b is not None:
        assert_close(grads[2 if w is not None else 1], ref_db, tol, f"dbias {x.dtype} {act}")
    assert_close(grads[-1], ref_dr, tol, f"dresidual {x.dtype} {act}")
    assert grads[-1].shape == r.shape


# --- the experiment harness's tests (tests/experiments/) ---

# the Fashion-MNIST sample (IDX files) that the harness's tests train and read
SAMPLE_DATA = str(Path(__file__).resolve().parent / "data" / "fashion-mnist-sample")


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
