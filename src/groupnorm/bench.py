"""``groupnorm bench``: the compiled GroupNorm kernels against PyTorch, with medians of interleaved timings.

For each case (shape, dtype, layout; G groups, affine) it times, in one loop that alternates the contenders
(so that drift and other processes hit all of them alike):

* ``fwd``: ours (``groupnorm.functional.group_norm``, the user-facing call, which takes the kernels) vs ``torch.nn.functional.group_norm``, under ``no_grad``;
* ``fwd+bwd``: the same with x, weight, bias requiring grad, forward then ``autograd.grad`` for all three;
* ``gn+silu``: ours fused vs torch eager ``F.silu(F.group_norm(...))`` vs ``torch.compile`` of that function;
* ``gn+add+relu``: a ResNet block's end, ours fused (``activation="relu", residual=r``) vs torch eager as
  torchvision writes it (``out = F.group_norm(...); out += r; out.relu_()``), under ``no_grad``;
* ``naive``: the composite of the seed's tutorial (view (N, G, -1), mean, var, normalize, affine);
* ``copy``: ``y.copy_(x)``, whose bytes moved (read x, write y) per second is the bandwidth reference; our
  forward moves the same bytes (one read of x, one write of y) at best, so ours-GB/s / copy-GB/s says how
  close the forward is to memory speed.

Ratios are ``median(theirs) / median(ours)`` (above 1: ours is faster). ``--json FILE`` writes the results
(rewritten after each case, so an interrupted run keeps what it measured; ``--resume`` skips cases already
in the file). ``--e2e`` also times one training step of a small ResNet with GN+ReLU (fused) with the kernels and
with ``GROUPNORM_DISABLE_KERNELS=1``, in contiguous and channels-last memory formats (:func:`bench_e2e`).

Allocator: every contender allocates its output (25 MB for the largest fp32 case). With glibc's defaults, freed
blocks at the top of the heap are given back to the system once enough is free, and the next allocation
page-faults its memory back in (~6 ms for 25 MB here). Which contender pays that depends on where it sits in
the round, not on its code: measured, one contender's forward took 9.5 ms in every round of a case where its
code takes 3.5 ms. So the bench first tells glibc to keep freed memory (``mallopt``: no heap trimming, blocks
up to 32 MB from the heap; recorded in the JSON's ``meta.keep_memory``); ``--no-keep-memory`` measures with
the defaults.
"""
from __future__ import annotations

import argparse
import contextlib
import ctypes
import json
import os
import platform
import statistics
import time
from pathlib import Path

import torch
import torch.nn.functional as F

DEFAULT_SHAPES = [
    (8, 256, 56, 56), (8, 512, 28, 28), (8, 1024, 14, 14), (8, 2048, 7, 7),  # ResNet-50 stages, batch 8
    (1, 320, 64, 64), (1, 640, 32, 32), (1, 1280, 16, 16),                  # diffusion UNet
    (2, 64, 8, 56, 56),                                                      # video
]
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16, "fp64": torch.float64}
LAYOUTS = ("contiguous", "channels_last")


def keep_freed_memory() -> bool:
    """Ask glibc to keep freed memory in the process (see the module docstring); False if not glibc / refused.

    ``M_TRIM_THRESHOLD`` (-1) = 2 GiB: the heap is not trimmed; ``M_MMAP_THRESHOLD`` (-3) = 32 MiB, the largest
    glibc accepts: blocks below it come from the heap (whose freed pages stay mapped) instead of fresh ``mmap``s.
    """
    if platform.system() != "Linux":
        return False
    try:
        libc = ctypes.CDLL("libc.so.6")
        return bool(libc.mallopt(-1, 2**31 - 1)) and bool(libc.mallopt(-3, 32 * 2**20))
    except (OSError, AttributeError):  # not glibc
        return False


def parse_shapes(text: str) -> list[tuple[int, ...]]:
    """``"8,256,56,56;1,320,64,64"`` -> [(8, 256, 56, 56), (1, 320, 64, 64)]."""
    shapes = []
    for part in text.split(";"):
        part = part.strip().lower().replace("x", ",")
        if not part:
            continue
        try:
            dims = tuple(int(d) for d in part.split(","))
        except ValueError:
            raise ValueError(f"bad shape {part!r}: expected comma-separated integers like 8,256,56,56") from None
        if len(dims) < 3 or min(dims) < 1:
            raise ValueError(f"bad shape {part!r}: need (N, C, *spatial) with rank >= 3 and positive sizes")
        shapes.append(dims)
    if not shapes:
        raise ValueError("no shapes given")
    return shapes


def _to_layout(x: torch.Tensor, layout: str) -> torch.Tensor:
    return x.movedim(1, -1).contiguous().movedim(-1, 1) if layout == "channels_last" else x.contiguous()


def naive_group_norm(x, num_groups, weight, bias, eps=1e-5):
    """The seed tutorial's composite GroupNorm, as written there (view, mean, unbiased var, normalize, affine)."""
    n, c = x.shape[:2]
    xv = x.reshape(n, num_groups, -1)
    mean = xv.mean(-1, keepdim=True)
    var = xv.var(-1, keepdim=True)
    xv = (xv - mean) / (var + eps).sqrt()
    shape = (1, c) + (1,) * (x.dim() - 2)
    return xv.reshape(x.shape) * weight.reshape(shape) + bias.reshape(shape)


def interleaved(fns: dict, repeats: int, warmup: int) -> dict:
    """Median seconds of each callable, timed in rotating order within each round."""
    names = list(fns)
    for _ in range(warmup):
        for k in names:
            fns[k]()
    times = {k: [] for k in names}
    for r in range(repeats):
        order = names[r % len(names):] + names[:r % len(names)]
        for k in order:
            t0 = time.perf_counter()
            fns[k]()
            times[k].append(time.perf_counter() - t0)
    return {k: statistics.median(v) for k, v in times.items()}


def bench_case(shape, dtype, layout, groups, repeats, warmup, use_compile=True) -> dict:
    from . import functional, kernels

    gen = torch.Generator().manual_seed(0)
    x = _to_layout(torch.randn(shape, generator=gen).to(dtype), layout)
    c = shape[1]
    w = (torch.rand(c, generator=gen) + 0.5).to(dtype)
    b = (torch.randn(c, generator=gen) * 0.1).to(dtype)
    dy = _to_layout(torch.randn(shape, generator=gen).to(dtype), layout)
    out = torch.empty_like(x)
    if not kernels.can_handle(x, w, b):
        raise RuntimeError(f"the kernels do not take this case (available: {kernels.is_available()}, "
                           f"{kernels.load_error() or 'GROUPNORM_DISABLE_KERNELS set?'})")
    xg, wg, bg = (t.detach().clone().requires_grad_(True) for t in (x, w, b))

    def ours_fb():
        torch.autograd.grad(functional.group_norm(xg, groups, wg, bg, 1e-5), (xg, wg, bg), dy)

    def torch_fb():
        torch.autograd.grad(F.group_norm(xg, groups, wg, bg, 1e-5), (xg, wg, bg), dy)

    def eager_silu(t):
        return F.silu(F.group_norm(t, groups, w, b, 1e-5))

    res = _to_layout(torch.randn(shape, generator=gen).to(dtype), layout)
    if not kernels.can_handle(x, w, b, res):
        raise RuntimeError("the kernels do not take this case with a residual")

    def eager_res_relu():  # a ResNet block's end as torchvision writes it: out += identity; relu(inplace)
        out = F.group_norm(x, groups, w, b, 1e-5)
        out += res
        return out.relu_()

    fns = {
        "copy": lambda: out.copy_(x),
        "ours_fwd": lambda: functional.group_norm(x, groups, w, b, 1e-5),
        "torch_fwd": lambda: F.group_norm(x, groups, w, b, 1e-5),
        "ours_silu": lambda: functional.group_norm(x, groups, w, b, 1e-5, activation="silu"),
        "torch_silu": lambda: eager_silu(x),
        "naive_fwd": lambda: naive_group_norm(x, groups, w, b),
        "ours_res": lambda: functional.group_norm(x, groups, w, b, 1e-5, activation="relu", residual=res),
        "torch_res": eager_res_relu,
    }
    if use_compile:
        torch._dynamo.reset()  # a fresh compile per case (else dynamo's recompile limit falls back to eager)
        compiled = torch.compile(eager_silu, dynamic=False)
        with torch.no_grad():
            compiled(x)  # compile outside the timed loop
        fns["compile_silu"] = lambda: compiled(x)
    with torch.no_grad():
        t = interleaved(fns, repeats, warmup)
    t.update(interleaved({"ours_fb": ours_fb, "torch_fb": torch_fb}, max(3, repeats // 2), max(1, warmup // 2)))
    nbytes = x.numel() * x.element_size()
    res = {
        "shape": list(shape), "dtype": str(dtype).replace("torch.", ""), "layout": layout, "groups": groups,
        "mbytes": nbytes / 1e6, "ms": {k: v * 1e3 for k, v in t.items()},
        "copy_gbps": 2 * nbytes / t["copy"] / 1e9, "ours_fwd_gbps": 2 * nbytes / t["ours_fwd"] / 1e9,
        "speedup": {
            "fwd": t["torch_fwd"] / t["ours_fwd"],
            "fwd+bwd": t["torch_fb"] / t["ours_fb"],
            "silu_vs_eager": t["torch_silu"] / t["ours_silu"],
            "silu_vs_naive": t["naive_fwd"] / t["ours_fwd"],
            "res_relu_vs_eager": t["torch_res"] / t["ours_res"],
        },
    }
    res["ours_fwd_pct_copy"] = 100 * res["ours_fwd_gbps"] / res["copy_gbps"]
    if "compile_silu" in t:
        res["speedup"]["silu_vs_compile"] = t["compile_silu"] / t["ours_silu"]
    return res


def _key(r) -> str:
    return f"{tuple(r['shape'])}|{r['dtype']}|{r['layout']}|{r['groups']}"


def format_table(results: list[dict]) -> str:
    """Markdown table: medians in ms (ours / torch) and speedups."""
    head = ("| (N,C,*S) G | dtype | layout | fwd ours / torch ms (x) | % copy BW | fwd+bwd ours / torch ms (x) "
            "| GN+SiLU ours / eager / compile ms (x eager, x compile) | GN+add+ReLU ours / eager ms (x) | naive ms |")
    lines = [head, "|" + " --- |" * 9]
    for r in results:
        ms, sp = r["ms"], r["speedup"]
        comp = f"{ms['compile_silu']:.2f}" if "compile_silu" in ms else "-"
        compx = f"{sp['silu_vs_compile']:.2f}" if "silu_vs_compile" in sp else "-"
        resid = (f"{ms['ours_res']:.2f} / {ms['torch_res']:.2f} ({sp['res_relu_vs_eager']:.2f})"
                 if "ours_res" in ms else "-")  # (JSON files of earlier versions lack it)
        lines.append(
            f"| {tuple(r['shape'])} {r['groups']} | {r['dtype']} | {r['layout']} "
            f"| {ms['ours_fwd']:.2f} / {ms['torch_fwd']:.2f} ({sp['fwd']:.2f}) | {r['ours_fwd_pct_copy']:.0f}% "
            f"| {ms['ours_fb']:.2f} / {ms['torch_fb']:.2f} ({sp['fwd+bwd']:.2f}) "
            f"| {ms['ours_silu']:.2f} / {ms['torch_silu']:.2f} / {comp} ({sp['silu_vs_eager']:.2f}, {compx}) "
            f"| {resid} | {ms['naive_fwd']:.2f} |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ end to end
class _SmallResNet(torch.nn.Module):
    """conv-GN-ReLU stem and 3 stages of two basic blocks (GN+ReLU fused), global pool, linear: 28x28x1 input."""

    def __init__(self, widths=(32, 64, 128), groups=8, num_classes=10):
        super().__init__()
        from .nn import GroupNorm

        def gn(c, act="relu"):
            return GroupNorm(groups, c, activation=act)

        layers = [torch.nn.Conv2d(1, widths[0], 3, padding=1, bias=False), gn(widths[0])]
        cin = widths[0]
        for i, cout in enumerate(widths):
            for j in range(2):
                stride = 2 if (j == 0 and i > 0) else 1
                layers.append(_Block(cin, cout, stride, gn))
                cin = cout
        self.body = torch.nn.Sequential(*layers)
        self.fc = torch.nn.Linear(cin, num_classes)

    def forward(self, x):
        return self.fc(self.body(x).mean(dim=(2, 3)))


class _Block(torch.nn.Module):
    def __init__(self, cin, cout, stride, gn):
        super().__init__()
        self.c1 = torch.nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.n1 = gn(cout)
        self.c2 = torch.nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
        self.n2 = gn(cout, None)
        self.short = (torch.nn.Sequential(torch.nn.Conv2d(cin, cout, 1, stride, bias=False), gn(cout, None))
                      if stride != 1 or cin != cout else torch.nn.Identity())

    def forward(self, x):
        return F.relu(self.n2(self.c2(self.n1(self.c1(x)))) + self.short(x))


def build_e2e_model():
    """(model, description): the reproduction's GN ResNet when ``groupnorm.experiments`` provides one."""
    try:
        from .experiments import models
    except ImportError:
        models = None
    if models is not None:
        for name in ("build_model", "make_model", "create_model"):
            fn = getattr(models, name, None)
            if fn is None:
                continue
            with contextlib.suppress(TypeError, ValueError):
                return fn(norm="gn"), f"groupnorm.experiments.models.{name}(norm='gn')"
        if hasattr(models, "ResNet"):
            with contextlib.suppress(TypeError, ValueError):
                return models.ResNet(norm="gn"), "groupnorm.experiments.models.ResNet(norm='gn')"
    return _SmallResNet(), "bench.py's own small ResNet (conv-GN+ReLU, 3 stages x 2 basic blocks, widths 32/64/128)"


def bench_e2e(repeats: int, warmup: int, batch: int = 32) -> dict:
    """One training step (forward, backward, SGD step) of the GN ResNet, with the kernels and with
    ``GROUPNORM_DISABLE_KERNELS=1``, in both memory formats: four contenders timed in interleaved rounds, the
    same weights and batch in each.

    Channels-last is how a user who wants speed runs convolutions on a CPU (oneDNN's convolutions are faster
    in it), and it is where torch's own GroupNorm is slowest, so both formats are reported. Returns ``ms``:
    ``kernels`` / ``plain`` (contiguous) and ``kernels_cl`` / ``plain_cl`` (channels-last); ``speedup``
    (contiguous, plain / kernels), ``speedup_channels_last``, and ``speedup_best``: the fastest plain step over
    the fastest kernels step (each in its own best format, named in ``best``).
    """
    import copy

    torch.manual_seed(0)
    model, desc = build_e2e_model()
    model.train()
    model_cl = copy.deepcopy(model).to(memory_format=torch.channels_last)
    x = torch.randn(batch, 1, 28, 28)
    x_cl = x.contiguous(memory_format=torch.channels_last)
    target = torch.randint(0, 10, (batch,))
    runs = {m: (m, torch.optim.SGD(m.parameters(), lr=0.01, momentum=0.9)) for m in (model, model_cl)}

    def step(m, inp):
        net, opt = runs[m]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(net(inp), target).backward()
        opt.step()

    def contender(m, inp, disable):
        def run():
            if disable:
                os.environ["GROUPNORM_DISABLE_KERNELS"] = "1"
            else:
                os.environ.pop("GROUPNORM_DISABLE_KERNELS", None)
            step(m, inp)
        return run

    saved = os.environ.get("GROUPNORM_DISABLE_KERNELS")
    try:
        t = interleaved({"kernels": contender(model, x, False), "plain": contender(model, x, True),
                         "kernels_cl": contender(model_cl, x_cl, False), "plain_cl": contender(model_cl, x_cl, True)},
                        repeats, warmup)
    finally:
        if saved is None:
            os.environ.pop("GROUPNORM_DISABLE_KERNELS", None)
        else:
            os.environ["GROUPNORM_DISABLE_KERNELS"] = saved
    best = {k: ("channels_last" if t[k + "_cl"] < t[k] else "contiguous") for k in ("kernels", "plain")}
    fastest = {k: min(t[k], t[k + "_cl"]) for k in ("kernels", "plain")}
    return {"model": desc, "batch": batch, "ms": {k: v * 1e3 for k, v in t.items()},
            "speedup": t["plain"] / t["kernels"], "speedup_channels_last": t["plain_cl"] / t["kernels_cl"],
            "speedup_best": fastest["plain"] / fastest["kernels"], "best": best}


def format_e2e(e: dict) -> str:
    """The end-to-end result as printed lines (a JSON record of :func:`bench_e2e`)."""
    ms = e["ms"]
    lines = [f"end to end ({e['model']}, batch {e['batch']}, one SGD step), kernels vs GROUPNORM_DISABLE_KERNELS=1:",
             f"  contiguous:    kernels {ms['kernels']:.1f} ms, plain {ms['plain']:.1f} ms, {e['speedup']:.2f}x"]
    if "kernels_cl" in ms:  # records before the channels-last contenders have only the contiguous pair
        b = e["best"]
        lines += [f"  channels_last: kernels {ms['kernels_cl']:.1f} ms, plain {ms['plain_cl']:.1f} ms, "
                  f"{e['speedup_channels_last']:.2f}x",
                  f"  fastest of each: kernels ({b['kernels']}) vs plain ({b['plain']}), {e['speedup_best']:.2f}x"]
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ CLI
def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark the compiled GroupNorm kernels against PyTorch",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=None,
                   help="';'-separated shapes N,C,H,W (default: ResNet-50 stages, diffusion UNet, video)")
    p.add_argument("--groups", type=int, default=32, help="number of groups G (default 32)")
    p.add_argument("--dtypes", default="fp32,bf16", help="comma-separated from fp32,bf16,fp16,fp64 (default fp32,bf16)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated from contiguous,channels_last")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds per case (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds per case (default 3)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender (slow to compile)")
    p.add_argument("--e2e", action="store_true", help="also time a ResNet training step with and without kernels")
    p.add_argument("--e2e-only", action="store_true", help="only the end-to-end training step")
    p.add_argument("--json", type=Path, default=None, help="write results to this JSON file (after each case)")
    p.add_argument("--resume", action="store_true", help="skip cases already in --json FILE")
    p.add_argument("--no-keep-memory", action="store_true",
                   help="leave glibc's malloc defaults (by default freed memory is kept, so that no contender "
                        "pays page faults for its output allocation because of where it sits in the round)")
    p.set_defaults(func=run)


def run(args) -> int:
    from tqdm import tqdm

    from . import kernels

    if not kernels.is_available():
        raise RuntimeError(f"the compiled kernels are not available: {kernels.load_error()}")
    if kernels.disabled():
        raise RuntimeError("GROUPNORM_DISABLE_KERNELS is set: unset it to benchmark the kernels")
    if args.repeats < 1 or args.warmup < 0:
        raise ValueError(f"--repeats must be >= 1 and --warmup >= 0, got {args.repeats} and {args.warmup}")
    dtypes = [d.strip() for d in args.dtypes.split(",") if d.strip()]
    for d in dtypes:
        if d not in DTYPES:
            raise ValueError(f"unknown dtype {d!r}; expected some of {', '.join(DTYPES)}")
    layouts = [s.strip() for s in args.layouts.split(",") if s.strip()]
    for s in layouts:
        if s not in LAYOUTS:
            raise ValueError(f"unknown layout {s!r}; expected some of {', '.join(LAYOUTS)}")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    shapes = parse_shapes(args.shapes) if args.shapes else DEFAULT_SHAPES
    for s in shapes:
        if s[1] % args.groups:
            raise ValueError(f"--groups={args.groups} does not divide num_channels={s[1]} of shape {s}")

    kept = False if args.no_keep_memory else keep_freed_memory()
    doc = {"meta": {"keep_memory": kept, "torch": torch.__version__, "threads": torch.get_num_threads(), "cpu": platform.processor()
                    or platform.machine(), "isa": kernels.ISA_NAMES[kernels.isa()], "repeats": args.repeats,
                    "warmup": args.warmup}, "cases": [], "e2e": None}
    if args.resume and args.json and args.json.exists():
        old = json.loads(args.json.read_text())
        doc["cases"] = old.get("cases", [])
        doc["e2e"] = old.get("e2e")
    done = {_key(r) for r in doc["cases"]}

    def save():
        if args.json:
            args.json.parent.mkdir(parents=True, exist_ok=True)
            tmp = args.json.with_suffix(args.json.suffix + ".tmp")
            tmp.write_text(json.dumps(doc, indent=1))
            tmp.replace(args.json)

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, kernels: {doc['meta']['isa']}; "
          f"medians of {args.repeats} interleaved rounds; freed memory kept: {'yes' if kept else 'no'}")
    cases = [] if args.e2e_only else [(s, d, lay) for s in shapes for d in dtypes for lay in layouts]
    for shape, d, lay in tqdm(cases, desc="bench", unit="case", disable=not cases):
        key = f"{tuple(shape)}|{str(DTYPES[d]).replace('torch.', '')}|{lay}|{args.groups}"
        if key in done:
            continue
        doc["cases"].append(bench_case(shape, DTYPES[d], lay, args.groups, args.repeats, args.warmup,
                                       use_compile=not args.no_compile))
        save()
    if doc["cases"]:
        print(format_table(doc["cases"]))
    if args.e2e or args.e2e_only:
        doc["e2e"] = bench_e2e(args.repeats, args.warmup)
        save()
        print("\n" + format_e2e(doc["e2e"]))
    return 0
