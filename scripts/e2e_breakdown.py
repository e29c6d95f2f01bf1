"""Where the time of one training step goes: the GN layers' operators, the rest.

The step is ``groupnorm bench --e2e``'s: the reproduction's ResNet with GN (fused GN+ReLU where ReLU follows GN,
and each block's end, ReLU(GN(out) + shortcut), as one call with the shortcut as GN's residual), batch 32 of
28x28 images, forward + backward + SGD step. Three models are timed in interleaved rounds:

- ``kernels``: GN through the compiled kernels (the ``groupnorm::`` C++ operators);
- ``plain``: the same model with the kernels switched off (torch's own GroupNorm, then ReLU);
- ``no norm``: the same network with ``norm="none"`` (convolutions with a bias, ReLU, no normalization), as a
  floor: ``plain - no norm`` and ``kernels - no norm`` estimate what normalization costs in each.

Then a few more ``kernels`` and ``plain`` steps run under ``torch.profiler``: the self CPU time per step of the
GN operators (``groupnorm::*`` and their backward node; torch's ``aten::native_group_norm*`` in ``plain``),
with the number of calls. The profiler adds its own cost to every operator, so the breakdown's total exceeds the
timed step; its parts are for comparison with each other. Medians over rounds, milliseconds per step.

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
from groupnorm.timing import keep_freed_memory

_GN_OPS = ("groupnorm::", "aten::native_group_norm", "GnForwardBackward", "NativeGroupNormBackward")


def _is_gn(name: str) -> bool:
    return any(name.startswith(p) for p in _GN_OPS)


def _profile_parts(step, rounds: int) -> tuple[dict[str, float], dict[str, int]]:
    """Self CPU milliseconds per step and calls per step of each GN operator over ``rounds`` profiled steps."""
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as prof:
        for _ in range(rounds):
            step()
    ms: dict[str, float] = {}
    calls: dict[str, int] = {}
    for e in prof.key_averages():
        if _is_gn(e.key):
            ms[e.key] = e.self_cpu_time_total / 1e3 / rounds
            calls[e.key] = e.count // rounds
    return ms, calls


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
    with kernels.disabled_scope():  # each mode sets the switch; the caller's setting is restored after
        for r in range(args.warmup + args.repeats):
            for name, (norm, disable) in modes.items():
                kernels.set_disabled(disable)
                t0 = time.perf_counter()
                step(norm)
                dt = time.perf_counter() - t0
                if r < args.warmup:
                    continue
                times[name].append(dt * 1e3)
        parts = {}
        for name in ("kernels", "plain"):
            kernels.set_disabled(modes[name][1])
            parts[name] = _profile_parts(lambda: step("gn"), max(3, args.repeats // 5))

    med = {k: statistics.median(v) for k, v in times.items()}
    print(f"torch {torch.__version__}, {args.threads} threads, batch {args.batch}, "
          f"{'channels-last' if args.channels_last else 'contiguous'}; medians of {args.repeats} "
          f"interleaved rounds, ms per step")
    print("| model | step | minus no-norm step |")
    print("| --- | --- | --- |")
    for k, v in med.items():
        print(f"| {k} | {v:.2f} | {v - med['no norm']:.2f} |")
    print(f"\nspeedup kernels vs plain: {med['plain'] / med['kernels']:.3f}x\n")
    print("GN operators under the profiler, self CPU time per step (calls per step):")
    print("| model | operator | ms per step | us per call |")
    print("| --- | --- | --- | --- |")
    for name, (ms, calls) in parts.items():
        for k in sorted(ms, key=ms.get, reverse=True):
            print(f"| {name} | {k} ({calls[k]}) | {ms[k]:.2f} | {1e3 * ms[k] / max(calls[k], 1):.0f} |")


if __name__ == "__main__":
    main()
