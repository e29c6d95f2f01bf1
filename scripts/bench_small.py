"""Per-call cost of one GroupNorm layer on small inputs: ``groupnorm.nn.GroupNorm`` against ``torch.nn.GroupNorm``.

For each shape (G = min(32, C)) and memory format it times autograd forward+backward of one layer,
``torch.autograd.grad(m(x), (x, m.weight, m.bias), dy)``, and the forward alone under ``no_grad``; ours and
torch's take turns within every round (so drift and other processes hit both alike), each round runs ``--inner``
calls of each, and the figure is the median over ``--repeats`` rounds of the time per call. At these sizes the
cost is mostly per call (Python layers, dispatch, autograd bookkeeping, thread start-up), not memory traffic.
The CPU model and the load average (before and after) are printed with the table; ratios are torch / ours
(above 1: ours is faster).

    .venv/bin/python scripts/bench_small.py [--threads 2] [--repeats 31] [--inner 50]

A script that prints numbers (benchmarks are never timed tests).
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from groupnorm.hostinfo import cpu_model, load_average

SHAPES = [(1, 64, 8, 8), (2, 32, 14, 14), (8, 256, 7, 7), (32, 128, 4, 4)]


def median_per_call(fns: dict, repeats: int, inner: int) -> dict:
    """Median over ``repeats`` rounds of seconds per call; contenders alternate in rotating order each round."""
    names = list(fns)
    for k in names:  # warm-up
        for _ in range(inner):
            fns[k]()
    times = {k: [] for k in names}
    for r in range(repeats):
        for k in names[r % len(names):] + names[:r % len(names)]:
            f = fns[k]
            t0 = time.perf_counter()
            for _ in range(inner):
                f()
            times[k].append((time.perf_counter() - t0) / inner)
    return {k: statistics.median(v) for k, v in times.items()}


def case(shape, channels_last: bool, repeats: int, inner: int) -> dict:
    import groupnorm

    n, c = shape[:2]
    g = min(32, c)
    torch.manual_seed(0)
    ours = groupnorm.nn.GroupNorm(g, c)
    theirs = torch.nn.GroupNorm(g, c)
    w, b = torch.rand(c) + 0.5, torch.randn(c) * 0.1
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(w)
            m.bias.copy_(b)
    x = torch.randn(shape)
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    dy = torch.randn_like(x)
    with torch.no_grad():
        assert torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-4), "ours and torch's outputs differ"

    def fwd_bwd(m):
        params = (x, m.weight, m.bias)
        return lambda: torch.autograd.grad(m(x), params, dy)

    def fwd(m):
        def f():
            with torch.no_grad():
                m(x)
        return f

    t = median_per_call({"ours": fwd_bwd(ours), "torch": fwd_bwd(theirs)}, repeats, inner)
    tf = median_per_call({"ours": fwd(ours), "torch": fwd(theirs)}, repeats, inner)
    return {"shape": shape, "layout": "channels_last" if channels_last else "contiguous", "groups": g,
            "fwd_bwd_us": (t["ours"] * 1e6, t["torch"] * 1e6), "fwd_us": (tf["ours"] * 1e6, tf["torch"] * 1e6)}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=31, help="rounds (the median is over these)")
    p.add_argument("--inner", type=int, default=50, help="calls of each contender per round")
    args = p.parse_args(argv)
    if args.threads < 1 or args.repeats < 1 or args.inner < 1:
        raise SystemExit(f"--threads, --repeats and --inner must be >= 1, got {args.threads}, {args.repeats}, {args.inner}")
    torch.set_num_threads(args.threads)
    from groupnorm import kernels

    via = f"kernels ({kernels.ISA_NAMES[kernels.isa()]})" if kernels.is_available() and not kernels.disabled() \
        else f"plain path ({kernels.load_error() or 'GROUPNORM_DISABLE_KERNELS'})"
    print(f"CPU: {cpu_model()}; torch {torch.__version__}, {torch.get_num_threads()} threads; ours via {via}")
    print(f"medians of {args.repeats} interleaved rounds of {args.inner} calls; load average before: {load_average()}")
    print("| input, G=min(32,C) | layout | fwd+bwd ours / torch (us) | ratio | fwd ours / torch (us) | ratio |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape in SHAPES:
        for cl in (False, True):
            r = case(shape, cl, args.repeats, args.inner)
            (ob, tb), (of, tf) = r["fwd_bwd_us"], r["fwd_us"]
            print(f"| {tuple(shape)} | {r['layout']} | {ob:.1f} / {tb:.1f} | {tb / ob:.2f}x | {of:.1f} / {tf:.1f} "
                  f"| {tf / of:.2f}x |", flush=True)
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
