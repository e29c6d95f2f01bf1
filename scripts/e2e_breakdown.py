"""Where the time of one training step goes: the GN layers' compiled kernels, the Python around them, the rest.

The step is ``groupnorm bench --e2e``'s: the reproduction's ResNet with GN (fused GN+ReLU where ReLU follows GN,
and each block's end, ReLU(GN(out) + shortcut), as one call with the shortcut as GN's residual), batch 32 of
28x28 images, forward + backward + SGD step. Three models are timed in interleaved rounds:

- ``kernels``: GN through the compiled kernels;
- ``plain``: the same model with ``GROUPNORM_DISABLE_KERNELS=1`` (torch's own GroupNorm, then ReLU);
- ``no norm``: the same network with ``norm="none"`` (convolutions with a bias, ReLU, no normalization), as a
  floor: ``plain - no norm`` and ``kernels - no norm`` estimate what normalization costs in each.

In the ``kernels`` rounds the kernels' C entry points and the Python layers above them are timed (wrappers
around ``groupnorm.kernels._lib.forward`` / ``backward``, ``nn.GroupNorm.forward`` and
``GroupNormFunction.backward``; the wrappers add well under a microsecond per call), per layer call. Medians
over rounds, milliseconds per step.

    .venv/bin/python scripts/e2e_breakdown.py --threads 2 --repeats 30 [--channels-last]
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch
import torch.nn.functional as F

from groupnorm import kernels
from groupnorm.experiments.models import ResNet
from groupnorm.kernels import _lib, ops
from groupnorm.nn import group_norm as gn_module
from groupnorm.timing import keep_freed_memory

_acc: dict[str, float] = {}
_calls: dict[str, int] = {}


def _timed(fn, key):
    def wrapper(*args, **kwargs):
        t0 = time.perf_counter()
        try:
            return fn(*args, **kwargs)
        finally:
            _acc[key] = _acc.get(key, 0.0) + time.perf_counter() - t0
            _calls[key] = _calls.get(key, 0) + 1
    return wrapper


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=32)
    p.add_argument("--channels-last", action="store_true",
                   help="models and batch in channels-last memory format (default: contiguous)")
    args = p.parse_args()
    if args.repeats < 1 or args.warmup < 0 or args.threads < 1 or args.batch < 1:
        p.error("--repeats, --threads and --batch must be >= 1 and --warmup >= 0")
    torch.set_num_threads(args.threads)
    keep_freed_memory()

    _lib.forward = _timed(_lib.forward, "C forward")
    _lib.backward = _timed(_lib.backward, "C backward")
    gn_module.GroupNorm.forward = _timed(gn_module.GroupNorm.forward, "GroupNorm.forward (Python + C)")
    ops.GroupNormFunction.backward = staticmethod(_timed(ops.GroupNormFunction.backward,
                                                         "GroupNormFunction.backward (Python + C)"))

    fmt = torch.channels_last if args.channels_last else torch.contiguous_format
    x = torch.randn(args.batch, 1, 28, 28).contiguous(memory_format=fmt)
    target = torch.randint(0, 10, (args.batch,))
    models = {}
    for norm in ("gn", "none"):
        torch.manual_seed(0)
        m = ResNet(norm=norm).train().to(memory_format=fmt)
        models[norm] = (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9))

    def step(norm):
        m, opt = models[norm]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(m(x), target).backward()
        opt.step()

    modes = {"kernels": ("gn", False), "plain": ("gn", True), "no norm": ("none", True)}
    times = {k: [] for k in modes}
    parts: dict[str, list[float]] = {}
    with kernels.disabled_scope():  # each mode sets the switch; the caller's setting is restored after
        for r in range(args.warmup + args.repeats):
            for name, (norm, disable) in modes.items():
                kernels.set_disabled(disable)
                _acc.clear()
                _calls.clear()
                t0 = time.perf_counter()
                step(norm)
                dt = time.perf_counter() - t0
                if r < args.warmup:
                    continue
                times[name].append(dt * 1e3)
                if name == "kernels":
                    for k, v in _acc.items():
                        parts.setdefault(k, []).append(v * 1e3)
                    ncalls = dict(_calls)

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{'channels-last' if args.channels_last else 'contiguous'}; medians of {args.repeats} "
          f"interleaved rounds, ms per step")
    print("| model | step | minus no-norm step |")
    print("| --- | --- | --- |")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {v - med['no norm']:.2f} |")
    print(f"\nspeedup kernels vs plain: {med['plain'] / med['kernels']:.3f}x\n")
    print("kernels step, per step (calls per step):")
    print("| part | ms per step | us per call |")
    print("| --- | --- | --- |")
    for k, v in parts.items():
        m = statistics.median(v)
        print(f"| {k} ({ncalls[k]}) | {m:.2f} | {1e3 * m / ncalls[k]:.0f} |")


if __name__ == "__main__":
    main()
