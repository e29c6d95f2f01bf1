"""groupnorm.nn.SyncBatchNorm under torchrun with 2 gloo workers vs single-process BN over the whole batch.

One torchrun launch (module-scoped fixture) runs every case; this file is also the worker script
(``python -m torch.distributed.run --nproc-per-node 2 tests/nn/test_sync_bn.py OUTDIR``).
"""
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

# name: (per-rank batch sizes, C, spatial shape, dtype, affine, momentum, input offset); "even_2d" runs on
# channels-last inputs and "uneven_1d" with an explicit process group
CASES = {
    "even_2d": ((3, 3), 4, (5, 5), torch.float64, True, 0.1, 0.0),
    "uneven_1d": ((5, 1), 3, (4,), torch.float64, True, None, 0.0),
    "zero_worker_3d": ((4, 0), 3, (2, 3, 2), torch.float64, True, 0.2, 0.0),
    "vectors_no_affine": ((2, 5), 6, (), torch.float64, False, 0.1, 0.0),
    "float32_offset": ((3, 2), 4, (3, 3), torch.float32, True, 0.1, 1000.0),
}
STEPS = 2


def _data(name, step):
    """The full (concatenated) batch x, upstream gradient dy, and the layer's initial gamma, beta."""
    sizes, c, spatial, dtype, _, _, offset = CASES[name]
    g = torch.Generator().manual_seed(list(CASES).index(name) * 100 + step)
    shape = (sum(sizes), c) + spatial
    x = torch.randn(shape, generator=g, dtype=torch.float64) * 2 + 0.5 + offset
    dy = torch.randn(shape, generator=g, dtype=torch.float64)
    gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    return x.to(dtype), dy.to(dtype), gamma.to(dtype), beta.to(dtype)


def _make(cls, name):
    sizes, c, spatial, dtype, affine, momentum, _ = CASES[name]
    bn = cls(c, momentum=momentum, affine=affine).to(dtype)
    if affine:
        _, _, gamma, beta = _data(name, 0)
        with torch.no_grad():
            bn.weight.copy_(gamma)
            bn.bias.copy_(beta)
    return bn


def _run_steps(bn, name, rows, channels_last=False):
    """STEPS training steps on rows ``rows`` of each step's batch, then one eval forward; returns results."""
    out = {"y": [], "dx": [], "dw": [], "db": []}
    for step in range(STEPS):
        x, dy, _, _ = _data(name, step)
        x = x[rows].clone()
        if channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        x.requires_grad_()
        bn.train()
        bn.zero_grad()
        y = bn(x)
        (y * dy[rows]).sum().backward()
        out["y"].append(y.detach())
        out["dx"].append(x.grad)
        if bn.affine:
            out["dw"].append(bn.weight.grad.clone())
            out["db"].append(bn.bias.grad.clone())
    bn.eval()
    out["eval"] = bn(_data(name, 99)[0][rows]).detach()
    out["running_mean"] = bn.running_mean.clone()
    out["running_var"] = bn.running_var.clone()
    out["num_batches_tracked"] = int(bn.num_batches_tracked)
    return out


def _worker(outdir):
    import torch.distributed as dist

    from groupnorm.nn import SyncBatchNorm

    dist.init_process_group("gloo")
    rank = dist.get_rank()
    explicit_group = dist.new_group([0, 1])
    results = {}
    for name, (sizes, *_rest) in CASES.items():
        start = sum(sizes[:rank])
        bn = _make(SyncBatchNorm, name)
        if name == "uneven_1d":
            bn.process_group = explicit_group
        results[name] = _run_steps(bn, name, slice(start, start + sizes[rank]), channels_last=name == "even_2d")
    # one value per channel over both workers: every worker raises the same clear error (no hang)
    try:
        SyncBatchNorm(3).train()(torch.randn(1 - rank, 3))
    except ValueError as exc:
        results["too_small_error"] = str(exc)
    torch.save(results, os.path.join(outdir, f"rank{rank}.pt"))
    dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    outdir = tmp_path_factory.mktemp("syncbn")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore")
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nnodes", "1",
           "--nproc-per-node", "2", __file__, str(outdir)]
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=240)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return [torch.load(outdir / f"rank{r}.pt") for r in range(2)]


@pytest.mark.slow  # one torchrun launch of 2 workers
@pytest.mark.parametrize("name", list(CASES))
def test_two_workers_equal_one_process_on_the_whole_batch(ranks, name):
    sizes, c, spatial, dtype, affine, *_ = CASES[name]
    tol = dict(rtol=1e-10, atol=1e-10) if dtype == torch.float64 else dict(rtol=2e-4, atol=2e-4)
    bn_class = {0: nn.BatchNorm1d, 1: nn.BatchNorm1d, 2: nn.BatchNorm2d, 3: nn.BatchNorm3d}[len(spatial)]
    want = _run_steps(_make(bn_class, name), name, slice(None))
    for step in range(STEPS):
        torch.testing.assert_close(torch.cat([r[name]["y"][step] for r in ranks]), want["y"][step], **tol)
        torch.testing.assert_close(torch.cat([r[name]["dx"][step] for r in ranks]), want["dx"][step], **tol)
        if affine:  # local parameter gradients; their sum over workers is the whole-batch gradient
            torch.testing.assert_close(ranks[0][name]["dw"][step] + ranks[1][name]["dw"][step], want["dw"][step], **tol)
            torch.testing.assert_close(ranks[0][name]["db"][step] + ranks[1][name]["db"][step], want["db"][step], **tol)
    for r in ranks:
        for key in ("running_mean", "running_var"):
            torch.testing.assert_close(r[name][key], want[key], **tol)
        assert r[name]["num_batches_tracked"] == STEPS
    torch.testing.assert_close(torch.cat([r[name]["eval"] for r in ranks]), want["eval"], **tol)


@pytest.mark.slow  # one torchrun launch of 2 workers
def test_first_step_against_numpy_reference(ranks):
    from groupnorm import reference

    name = "uneven_1d"
    x, dy, gamma, beta = (t.numpy() for t in _data(name, 0))
    y = torch.cat([r[name]["y"][0] for r in ranks]).numpy()
    dx = torch.cat([r[name]["dx"][0] for r in ranks]).numpy()
    np.testing.assert_allclose(y, reference.batch_norm(x, gamma, beta), rtol=1e-10, atol=1e-10)
    rdx, rdg, rdb = reference.batch_norm_backward(dy, x, gamma)
    np.testing.assert_allclose(dx, rdx, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose((ranks[0][name]["dw"][0] + ranks[1][name]["dw"][0]).numpy(), rdg, rtol=1e-10)
    assert ranks[0][name]["y"][0].shape[0] == 5 and ranks[1][name]["y"][0].shape[0] == 1


@pytest.mark.slow  # one torchrun launch of 2 workers
def test_too_few_values_error_on_every_worker(ranks):
    for r in ranks:
        assert "more than 1 value per channel" in r["too_small_error"] and "got 1" in r["too_small_error"]


def test_single_process_is_plain_batch_norm_and_bad_input():
    from groupnorm.nn import SyncBatchNorm

    torch.manual_seed(0)
    sync, bn = SyncBatchNorm(5, momentum=None), nn.BatchNorm2d(5, momentum=None)
    x = torch.randn(3, 5, 4, 4)
    for _ in range(2):
        torch.testing.assert_close(sync(x), bn(x), rtol=0, atol=0)
    torch.testing.assert_close(sync.running_var, bn.running_var, rtol=0, atol=0)
    sync.eval(), bn.eval()
    torch.testing.assert_close(sync(x), bn(x), rtol=0, atol=0)
    assert torch.equal(F.batch_norm(x, None, None, training=True), SyncBatchNorm(5, affine=False,
                       track_running_stats=False).eval()(x))
    with pytest.raises(ValueError, match=r"\(N, 5, \*\).*\(3, 4, 4, 4\)"):
        sync(torch.randn(3, 4, 4, 4))
    with pytest.raises(ValueError, match="shape"):
        sync(torch.randn(5))
    with pytest.raises(ValueError, match="num_features"):
        SyncBatchNorm(0)


if __name__ == "__main__":
    _worker(sys.argv[1])
