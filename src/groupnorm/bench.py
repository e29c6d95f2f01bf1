"""``groupnorm bench``: the compiled GroupNorm kernels against PyTorch, with medians of interleaved timings.

Sections (the default grid unless ``--small``, ``--plain`` or ``--e2e-only`` picks others; ``--e2e`` adds one):

The default grid. For each case (shape, dtype, layout; G groups, affine) it times, in one loop that alternates
the contenders (so that drift and other processes hit all of them alike):

* ``fwd``: ours (``groupnorm.functional.group_norm``, the user-facing call, which takes the kernels) vs ``torch.nn.functional.group_norm``, under ``no_grad``;
* ``fwd+bwd``: the same with x, weight, bias requiring grad, forward then ``autograd.grad`` for all three;
* ``gn+silu``: ours fused vs torch eager ``F.silu(F.group_norm(...))`` vs ``torch.compile`` of that function;
* ``gn+add+relu``: a ResNet block's end, ours fused (``activation="relu", residual=r``) vs torch eager as
  torchvision writes it (``out = F.group_norm(...); out += r; out.relu_()``), under ``no_grad``;
* ``naive``: the textbook composite (view (N, G, -1), mean, unbiased var, normalize, affine);
* ``copy``: ``y.copy_(x)``, whose bytes moved (read x, write y) per second is the bandwidth reference; our
  forward moves the same bytes (one read of x, one write of y) at best, so ours-GB/s / copy-GB/s says how
  close the forward is to memory speed.

``--small`` (:mod:`groupnorm.bench_small`): the per-call cost of one layer on small feature maps, autograd
forward+backward (and the forward alone) of ``groupnorm.nn.GroupNorm`` against ``torch.nn.GroupNorm``, in
microseconds per call.

``--plain`` (:func:`bench_plain_case`): the plain PyTorch path (what every CUDA tensor and every case the
kernels decline gets), run on CPU with ``GROUPNORM_DISABLE_KERNELS=1``, against the torch composite a user
writes, under ``no_grad``: our GN alone vs ``F.group_norm``, ours with ``activation="silu"`` vs
``F.silu(F.group_norm(...))``, ours with ``activation="relu", residual=r`` vs the torchvision block end above;
default dtypes fp32, bf16, fp16.

Ratios are ``median(theirs) / median(ours)`` (above 1: ours is faster). ``--json FILE`` writes the results
atomically (rewritten after each case, so an interrupted run keeps what it measured; ``--resume`` skips cases
already in the file), with ``meta``: the git commit of the code measured (and whether its folder has
uncommitted changes), the CPU model, torch's version and threads, the kernels' instruction-set level, the load
average at the start and at the last write, and the UTC times. ``--e2e`` also times one training step of the
harness's small ResNet with GN+ReLU (fused) with the kernels and with ``GROUPNORM_DISABLE_KERNELS=1``, in
contiguous and channels-last memory formats (:func:`bench_e2e`).

Allocator: :func:`groupnorm.timing.keep_freed_memory` (why: its docstring); ``--no-keep-memory`` measures with glibc's
defaults.
"""
from __future__ import annotations

import json
import platform
from pathlib import Path

import torch
import torch.nn.functional as F

from .bench_cases import (DEFAULT_SHAPES, DTYPES, GRID_DTYPES, LAYOUTS, PLAIN_DTYPES, case_fields,  # noqa: F401
                          case_inputs, git_commit, naive_group_norm, parse_list, parse_shapes, torch_gn_add_relu,
                          torch_gn_silu, utc_now)
from .timing import interleaved, keep_freed_memory  # noqa: F401 (also used from here by scripts)

JSON_FORMAT = 2
"""``meta.format`` of the JSON this bench writes (2: the commit / CPU / time fields in ``meta``, sections ``cases``,
``plain``, ``small``, ``e2e``); ``--resume`` takes only files of this format."""


def bench_case(shape, dtype, layout, groups, repeats, warmup, use_compile=True) -> dict:
    """One case of the default grid (the module docstring's contenders): medians in ``ms``, ``speedup`` =
    torch / ours, the copy bandwidth and ours as a percentage of it."""
    from . import functional, kernels

    x, w, b, dy, res = case_inputs(shape, dtype, layout)
    out = torch.empty_like(x)
    if not kernels.kernel_takes(x, w, b, res):
        raise RuntimeError(f"the kernels do not take this case (available: {kernels.is_available()}, "
                           f"{kernels.load_error() or 'GROUPNORM_DISABLE_KERNELS set?'})")
    xg, wg, bg = (t.detach().clone().requires_grad_(True) for t in (x, w, b))

    def ours_fb():
        torch.autograd.grad(functional.group_norm(xg, groups, wg, bg, 1e-5), (xg, wg, bg), dy)

    def torch_fb():
        torch.autograd.grad(F.group_norm(xg, groups, wg, bg, 1e-5), (xg, wg, bg), dy)

    fns = {
        "copy": lambda: out.copy_(x),
        "ours_fwd": lambda: functional.group_norm(x, groups, w, b, 1e-5),
        "torch_fwd": lambda: F.group_norm(x, groups, w, b, 1e-5),
        "ours_silu": lambda: functional.group_norm(x, groups, w, b, 1e-5, activation="silu"),
        "torch_silu": lambda: torch_gn_silu(x, groups, w, b),
        "naive_fwd": lambda: naive_group_norm(x, groups, w, b),
        "ours_res": lambda: functional.group_norm(x, groups, w, b, 1e-5, activation="relu", residual=res),
        "torch_res": lambda: torch_gn_add_relu(x, groups, w, b, res),
    }
    if use_compile:
        torch._dynamo.reset()  # a fresh compile per case (else dynamo's recompile limit falls back to eager)
        compiled = torch.compile(torch_gn_silu, dynamic=False)
        with torch.no_grad():
            compiled(x, groups, w, b)  # compile outside the timed loop
        fns["compile_silu"] = lambda: compiled(x, groups, w, b)
    with torch.no_grad():
        t = interleaved(fns, repeats, warmup)
    t.update(interleaved({"ours_fb": ours_fb, "torch_fb": torch_fb}, max(3, repeats // 2), max(1, warmup // 2)))
    nbytes = x.numel() * x.element_size()
    rec = {
        **case_fields(shape, dtype, layout, groups),
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
    rec["ours_fwd_pct_copy"] = 100 * rec["ours_fwd_gbps"] / rec["copy_gbps"]
    if "compile_silu" in t:
        rec["speedup"]["silu_vs_compile"] = t["compile_silu"] / t["ours_silu"]
    return rec


def bench_plain_case(shape, dtype, layout, groups, repeats, warmup) -> dict:
    """One case of the plain-path section: ``groupnorm.functional.group_norm`` with ``GROUPNORM_DISABLE_KERNELS=1``
    (the plain PyTorch path) against the torch composite a user writes, under ``no_grad``, three pairs timed in
    one interleaved loop: GN alone (``plain_fwd`` / ``torch_fwd``: ``F.group_norm``), GN+SiLU (``plain_silu`` /
    ``torch_silu``: :func:`torch_gn_silu`), GN+add+ReLU (``plain_res`` / ``torch_res``: :func:`torch_gn_add_relu`).
    Returns medians in ``ms`` and ``speedup`` = torch composite / ours (above 1: the plain path is faster)."""
    from . import functional, kernels

    x, w, b, _, res = case_inputs(shape, dtype, layout)
    fns = {
        "plain_fwd": lambda: functional.group_norm(x, groups, w, b, 1e-5),
        "torch_fwd": lambda: F.group_norm(x, groups, w, b, 1e-5),
        "plain_silu": lambda: functional.group_norm(x, groups, w, b, 1e-5, activation="silu"),
        "torch_silu": lambda: torch_gn_silu(x, groups, w, b),
        "plain_res": lambda: functional.group_norm(x, groups, w, b, 1e-5, activation="relu", residual=res),
        "torch_res": lambda: torch_gn_add_relu(x, groups, w, b, res),
    }
    with kernels.disabled_scope(), torch.no_grad():
        if kernels.kernel_for(x, w, b, res) is not None:
            raise RuntimeError("the kernels still take the call with GROUPNORM_DISABLE_KERNELS=1")
        t = interleaved(fns, repeats, warmup)
    return {**case_fields(shape, dtype, layout, groups), "ms": {k: v * 1e3 for k, v in t.items()},
            "speedup": {"fwd": t["torch_fwd"] / t["plain_fwd"], "silu": t["torch_silu"] / t["plain_silu"],
                        "res_relu": t["torch_res"] / t["plain_res"]}}


def _key(r) -> str:
    return f"{tuple(r['shape'])}|{r.get('dtype')}|{r['layout']}|{r['groups']}"


def format_table(results: list[dict]) -> str:
    """Markdown table of the default grid: medians in ms (ours / torch) and speedups."""
    head = ("| (N,C,*S) G | dtype | layout | fwd ours / torch ms (x) | % copy BW | fwd+bwd ours / torch ms (x) "
            "| GN+SiLU ours / eager / compile ms (x eager, x compile) | GN+add+ReLU ours / eager ms (x) | naive ms |")
    lines = [head, "|" + " --- |" * 9]
    for r in results:
        ms, sp = r["ms"], r["speedup"]
        comp = f"{ms['compile_silu']:.2f}" if "compile_silu" in ms else "-"  # (--no-compile)
        compx = f"{sp['silu_vs_compile']:.2f}" if "silu_vs_compile" in sp else "-"
        lines.append(
            f"| {tuple(r['shape'])} {r['groups']} | {r['dtype']} | {r['layout']} "
            f"| {ms['ours_fwd']:.2f} / {ms['torch_fwd']:.2f} ({sp['fwd']:.2f}) | {r['ours_fwd_pct_copy']:.0f}% "
            f"| {ms['ours_fb']:.2f} / {ms['torch_fb']:.2f} ({sp['fwd+bwd']:.2f}) "
            f"| {ms['ours_silu']:.2f} / {ms['torch_silu']:.2f} / {comp} ({sp['silu_vs_eager']:.2f}, {compx}) "
            f"| {ms['ours_res']:.2f} / {ms['torch_res']:.2f} ({sp['res_relu_vs_eager']:.2f}) "
            f"| {ms['naive_fwd']:.2f} |")
    return "\n".join(lines)


def format_plain_table(results: list[dict]) -> str:
    """Markdown table of the plain-path section: ours (plain path) / torch composite ms and torch / ours."""
    lines = ["| (N,C,*S) G | dtype | layout | GN plain / torch ms (x) | GN+SiLU plain / torch ms (x) "
             "| GN+add+ReLU plain / torch ms (x) |", "|" + " --- |" * 6]
    for r in results:
        ms, sp = r["ms"], r["speedup"]
        lines.append(
            f"| {tuple(r['shape'])} {r['groups']} | {r['dtype']} | {r['layout']} "
            f"| {ms['plain_fwd']:.2f} / {ms['torch_fwd']:.2f} ({sp['fwd']:.2f}) "
            f"| {ms['plain_silu']:.2f} / {ms['torch_silu']:.2f} ({sp['silu']:.2f}) "
            f"| {ms['plain_res']:.2f} / {ms['torch_res']:.2f} ({sp['res_relu']:.2f}) |")
    return "\n".join(lines)


# ------------------------------------------------------------------------------------------ end to end
E2E_MODEL = ("groupnorm.experiments.models.ResNet(norm='gn') (widths 32/64/128, one basic block per stage, "
             "GN+ReLU fused)")


def bench_e2e(repeats: int, warmup: int, batch: int = 32) -> dict:
    """One training step (forward, backward, SGD step) of the harness's default GN ResNet (:data:`E2E_MODEL`)
    on (batch, 1, 28, 28) inputs, with the kernels and with ``GROUPNORM_DISABLE_KERNELS=1``, in both memory
    formats: four contenders timed in interleaved rounds, the same weights and batch in each.

    Channels-last is how a user who wants speed runs convolutions on a CPU (oneDNN's convolutions are faster
    in it), and it is where torch's own GroupNorm is slowest, so both formats are reported. Returns ``ms``:
    ``kernels`` / ``plain`` (contiguous) and ``kernels_cl`` / ``plain_cl`` (channels-last); ``speedup``
    (contiguous, plain / kernels), ``speedup_channels_last``, and ``speedup_best``: the fastest plain step over
    the fastest kernels step (each in its own best format, named in ``best``).
    """
    import copy

    from . import kernels
    from .experiments.models import ResNet

    torch.manual_seed(0)
    model = ResNet(norm="gn")
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
            kernels.set_disabled(disable)
            step(m, inp)
        return run

    with kernels.disabled_scope():  # the contenders switch it per call; the caller's setting is restored after
        t = interleaved({"kernels": contender(model, x, False), "plain": contender(model, x, True),
                         "kernels_cl": contender(model_cl, x_cl, False), "plain_cl": contender(model_cl, x_cl, True)},
                        repeats, warmup)
    best = {k: ("channels_last" if t[k + "_cl"] < t[k] else "contiguous") for k in ("kernels", "plain")}
    fastest = {k: min(t[k], t[k + "_cl"]) for k in ("kernels", "plain")}
    return {"model": E2E_MODEL, "batch": batch, "ms": {k: v * 1e3 for k, v in t.items()},
            "speedup": t["plain"] / t["kernels"], "speedup_channels_last": t["plain_cl"] / t["kernels_cl"],
            "speedup_best": fastest["plain"] / fastest["kernels"], "best": best}


def format_e2e(e: dict) -> str:
    """The end-to-end result as printed lines (a JSON record of :func:`bench_e2e`)."""
    ms, b = e["ms"], e["best"]
    return "\n".join([
        f"end to end ({e['model']}, batch {e['batch']}, one SGD step), kernels vs GROUPNORM_DISABLE_KERNELS=1:",
        f"  contiguous:    kernels {ms['kernels']:.1f} ms, plain {ms['plain']:.1f} ms, {e['speedup']:.2f}x",
        f"  channels_last: kernels {ms['kernels_cl']:.1f} ms, plain {ms['plain_cl']:.1f} ms, "
        f"{e['speedup_channels_last']:.2f}x",
        f"  fastest of each: kernels ({b['kernels']}) vs plain ({b['plain']}), {e['speedup_best']:.2f}x"])


def run_meta(args, keep_memory: bool) -> dict:
    """What the JSON's ``meta`` records about the run: the code (commit), the machine (CPU model, load
    average), the software (torch, threads, kernel level) and the settings; ``finished_utc`` and
    ``load_average_end`` are updated at every write."""
    from . import kernels
    from .hostinfo import cpu_model, load_average

    return {"format": JSON_FORMAT, **git_commit(), "cpu": cpu_model(), "machine": platform.machine(),
            "torch": torch.__version__, "threads": torch.get_num_threads(),
            "isa": kernels.ISA_NAMES[kernels.isa()] if kernels.is_available() else None,
            "keep_memory": keep_memory, "repeats": args.repeats, "warmup": args.warmup, "inner": args.inner,
            "started_utc": utc_now(), "finished_utc": None,
            "load_average_start": load_average(), "load_average_end": None}


# ------------------------------------------------------------------------------------------ CLI
def register(subparsers) -> None:
    p = subparsers.add_parser("bench", help="benchmark the compiled GroupNorm kernels against PyTorch",
                              description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=None,
                   help="';'-separated shapes N,C,*spatial, rank 3 and up (e.g. 8,256,56,56 or 2,64,8,56,56), "
                        "for the default grid and --plain (default: ResNet-50 stages, diffusion UNet, video)")
    p.add_argument("--groups", type=int, default=32, help="number of groups G (default 32)")
    p.add_argument("--dtypes", default=None,
                   help=f"comma-separated from fp32,bf16,fp16,fp64 (default {GRID_DTYPES}; {PLAIN_DTYPES} for --plain)")
    p.add_argument("--layouts", default=",".join(LAYOUTS), help="comma-separated from contiguous,channels_last")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds per case (default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds per case (default 3)")
    p.add_argument("--inner", type=int, default=50,
                   help="calls of each contender per round in --small, timed together (default 50)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's current setting)")
    p.add_argument("--no-compile", action="store_true", help="skip the torch.compile contender (slow to compile)")
    p.add_argument("--small", action="store_true",
                   help="the small-shape grid instead of the default one: one layer's forward+backward, "
                        "groupnorm.nn.GroupNorm vs torch.nn.GroupNorm, microseconds per call (fixed shapes, fp32)")
    p.add_argument("--plain", action="store_true",
                   help="the plain path (GROUPNORM_DISABLE_KERNELS=1) against torch's composite, instead of the "
                        "default grid (with --small: both)")
    p.add_argument("--e2e", action="store_true", help="also time a ResNet training step with and without kernels")
    p.add_argument("--e2e-only", action="store_true", help="only the end-to-end training step")
    p.add_argument("--device", default="cpu",
                   help="cpu (the compiled kernels, default) or cuda[:i]: the Triton kernels on the GPU against "
                        "torch eager, torch.compile and Liger-Kernel (groupnorm.bench_gpu)")
    p.add_argument("--json", type=Path, default=None, help="write results to this JSON file (after each case)")
    p.add_argument("--resume", action="store_true", help="skip cases already in --json FILE")
    p.add_argument("--no-keep-memory", action="store_true",
                   help="leave glibc's malloc defaults (by default freed memory is kept, so that no contender "
                        "pays page faults for its output allocation because of where it sits in the round)")
    p.set_defaults(func=run)


def _check_args(args, grid: bool):
    """The run's settings from the command line, checked: ``(grid_dtypes, plain_dtypes, layouts, shapes)``;
    sets torch's threads. Raises RuntimeError when a section that times the kernels cannot run, ValueError
    naming a bad option."""
    from . import kernels

    if grid or args.small or args.e2e or args.e2e_only:  # the sections that time the kernels
        if not kernels.is_available():
            raise RuntimeError(f"the compiled kernels are not available: {kernels.load_error()}")
        if kernels.disabled():
            raise RuntimeError("GROUPNORM_DISABLE_KERNELS is set: unset it to benchmark the kernels")
    if args.repeats < 1 or args.warmup < 0 or args.inner < 1:
        raise ValueError(f"--repeats and --inner must be >= 1 and --warmup >= 0, got {args.repeats}, "
                         f"{args.inner} and {args.warmup}")
    grid_dtypes = parse_list(args.dtypes or GRID_DTYPES, DTYPES, "dtype")
    plain_dtypes = parse_list(args.dtypes or PLAIN_DTYPES, DTYPES, "dtype")
    layouts = parse_list(args.layouts, LAYOUTS, "layout")
    if args.threads is not None:
        if args.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {args.threads}")
        torch.set_num_threads(args.threads)
    shapes = parse_shapes(args.shapes) if args.shapes else DEFAULT_SHAPES
    if grid or args.plain:
        for s in shapes:
            if s[1] % args.groups:
                raise ValueError(f"--groups={args.groups} does not divide num_channels={s[1]} of shape {s}")
    return grid_dtypes, plain_dtypes, layouts, shapes


def _new_doc(args, kept: bool) -> dict:
    """The JSON document of this run: fresh, or with the sections of ``--json FILE`` under ``--resume``."""
    doc = {"meta": run_meta(args, kept), "cases": [], "plain": [], "small": [], "e2e": None}
    if args.resume and args.json and args.json.exists():
        old = json.loads(args.json.read_text())
        if old.get("meta", {}).get("format") != JSON_FORMAT:
            raise ValueError(f"{args.json} was written by another version of the bench (meta.format "
                             f"{old.get('meta', {}).get('format')!r}, this one writes {JSON_FORMAT}): "
                             "write to a new --json file")
        for k in ("cases", "plain", "small", "e2e"):
            doc[k] = old.get(k, doc[k])
        doc["meta"]["resumed_from"] = old["meta"]
    return doc


def _jobs(args, grid: bool, grid_dtypes, plain_dtypes, layouts, shapes) -> list:
    """The cases to time, in order, as ``(section, key, thunk)``; ``thunk()`` returns the case's record."""
    from .bench_small import SMALL_SHAPES, bench_small_case

    jobs = []
    if grid:
        jobs += [("cases", _key(case_fields(s, DTYPES[d], lay, args.groups)),
                  lambda s=s, d=d, lay=lay: bench_case(s, DTYPES[d], lay, args.groups, args.repeats, args.warmup,
                                                       use_compile=not args.no_compile))
                 for s in shapes for d in grid_dtypes for lay in layouts]
    if args.plain:
        jobs += [("plain", _key(case_fields(s, DTYPES[d], lay, args.groups)),
                  lambda s=s, d=d, lay=lay: bench_plain_case(s, DTYPES[d], lay, args.groups, args.repeats,
                                                             args.warmup))
                 for s in shapes for d in plain_dtypes for lay in layouts]
    if args.small:
        jobs += [("small", _key(case_fields(s, torch.float32, lay, min(32, s[1]))),
                  lambda s=s, lay=lay: bench_small_case(s, lay, args.repeats, args.warmup, args.inner))
                 for s in SMALL_SHAPES for lay in LAYOUTS]
    return jobs


def run(args) -> int:
    from tqdm import tqdm

    from .atomic import atomic_write_bytes
    from .bench_small import format_small_table
    from .hostinfo import load_average

    if args.device != "cpu":
        from .bench_gpu import run_gpu
        return run_gpu(args)
    grid = not (args.small or args.plain or args.e2e_only)
    grid_dtypes, plain_dtypes, layouts, shapes = _check_args(args, grid)
    kept = False if args.no_keep_memory else keep_freed_memory()
    doc = _new_doc(args, kept)

    def save():
        if args.json:
            doc["meta"].update(finished_utc=utc_now(), load_average_end=load_average())
            atomic_write_bytes(str(args.json), json.dumps(doc, indent=1).encode())

    m = doc["meta"]
    commit = f"{m['commit'][:12]}{' (uncommitted changes)' if m['dirty'] else ''}" if m["commit"] else "unknown"
    print(f"CPU: {m['cpu']}; torch {m['torch']}, {m['threads']} threads, kernels: {m['isa']}; commit {commit}; "
          f"medians of {args.repeats} interleaved rounds; freed memory kept: {'yes' if kept else 'no'}; "
          f"load average: {m['load_average_start']}")
    jobs = _jobs(args, grid, grid_dtypes, plain_dtypes, layouts, shapes)
    done = {(sec, _key(r)) for sec in ("cases", "plain", "small") for r in doc[sec]}
    for section, key, thunk in tqdm(jobs, desc="bench", unit="case", disable=not jobs):
        if (section, key) in done:
            continue
        doc[section].append(thunk())
        save()
    if grid and doc["cases"]:
        print(format_table(doc["cases"]))
    if args.plain and doc["plain"]:
        print("\nplain path (GROUPNORM_DISABLE_KERNELS=1) against torch's composite, no grad; (x) = torch / ours:")
        print(format_plain_table(doc["plain"]))
    if args.small and doc["small"]:
        print(f"\nsmall inputs, one layer, {args.inner} calls per round; (x) = torch / ours:")
        print(format_small_table(doc["small"]))
    if args.e2e or args.e2e_only:
        doc["e2e"] = bench_e2e(args.repeats, args.warmup)
        save()
        print("\n" + format_e2e(doc["e2e"]))
    save()
    print(f"load average at the end: {load_average()}")
    return 0
