"""``groupnorm bench --device cuda``: the Triton GroupNorm kernels (``groupnorm.kernels.triton``) against torch
on the GPU.

For each case (shape, dtype, layout; G groups, affine) and each composite:

* ``gn``: ours (``groupnorm.functional.group_norm``, which routes CUDA tensors to the Triton kernels) vs torch
  eager ``F.group_norm`` vs Liger-Kernel's Triton GN (where ``liger_kernel`` is importable; it takes
  contiguous inputs only, so a channels-last input is copied first, as it does itself);
* ``gn+silu``: ours fused vs ``F.silu(F.group_norm(...))`` eager and compiled;
* ``gn+add+relu``: ours fused (``activation="relu", residual=r``) vs ``F.relu(F.group_norm(...) + r)`` eager
  and compiled;

each as ``fwd`` (under ``no_grad``) and ``fwd+bwd`` (x, weight, bias requiring grad; forward, then
``autograd.grad`` for all three). Times are medians of CUDA-event timings (``triton.testing.do_bench``, which
clears the L2 cache before each call); ratios are ``theirs / ours`` (above 1: ours is faster). ``copy`` is
``y.copy_(x)``: its bytes (read x, write y) per second are the bandwidth reference; the forward's GB/s counts
the bytes it must move (read x [and r], write y), and ``% copy`` is that against the copy's.

Lines are printed after each case (a run cut short keeps what it measured). ``torch.compile`` recompiles
for every shape, dtype and layout (``torch.compiler.reset()`` before each case, so that dynamo's recompile
limit never sends a case back to eager); ``--no-compile`` skips it.
"""
from __future__ import annotations

import platform

import torch
import torch.nn.functional as F

from .bench_cases import DEFAULT_SHAPES, case_fields, case_inputs, git_commit, torch_gn_silu, utc_now

__all__ = ["GPU_SHAPES", "bench_gpu_case", "format_gpu_table", "run_gpu"]

GPU_SHAPES = DEFAULT_SHAPES + [(1, 320, 128, 128), (16, 256, 64, 64)]
"""The CPU bench's ResNet, UNet and video shapes, a large UNet map (1x320x128x128: 5M values per sample, few
groups for the GPU's multiprocessors) and a 64 MB (fp32) input."""
COMPOSITES = ("gn", "gn+silu", "gn+add+relu")
PASSES = ("fwd", "fwd+bwd")
COMPILED = ("gn+silu", "gn+add+relu")
"""The composites timed under ``torch.compile`` too: those where its fusion competes with ours (GN alone compiles
to about what eager runs, and every compile costs seconds per case)."""


def torch_gn_add_relu_fn(x, groups, w, b, res):
    """A ResNet block's end, differentiable: ``F.relu(F.group_norm(x) + r)``."""
    return F.relu(F.group_norm(x, groups, w, b, 1e-5) + res)


def _gn(x, groups, w, b):
    return F.group_norm(x, groups, w, b, 1e-5)


def _liger():
    """Liger-Kernel's GN as ``f(x, groups, w, b)``, or None where it is not importable."""
    try:
        from liger_kernel.ops.group_norm import LigerGroupNormFunction
    except Exception:  # noqa: BLE001 - not installed, or built for another torch / Triton
        return None

    def liger(x, groups, w, b):
        return LigerGroupNormFunction.apply(x.contiguous(), w, b, x.shape[1], groups, 1e-5)
    return liger


def _ms(fn, rep_ms: int) -> float:
    from triton.testing import do_bench

    return float(do_bench(fn, warmup=max(5, rep_ms // 4), rep=rep_ms, return_mode="median"))


def _forward_bytes(x, composite: str) -> int:
    """Bytes a forward must move: read x (and the residual), write y."""
    return x.numel() * x.element_size() * (3 if composite == "gn+add+relu" else 2)


def bench_gpu_case(shape, dtype, layout, groups, device, use_compile=True, rep_ms=100) -> dict:
    """One case: per composite and pass, medians in ``ms`` of ours and each contender, ``speedup`` = theirs /
    ours, the forward's GB/s and its percentage of the copy's."""
    from . import functional
    from .kernels import triton as gt

    x, w, b, dy, res = (t.to(device) for t in case_inputs(shape, dtype, layout))
    if not gt.takes(x, w, b, res):
        raise RuntimeError(f"the Triton kernels do not take this case (available: {gt.is_available()}: "
                           f"{gt.load_error() or 'GROUPNORM_DISABLE_KERNELS set?'})")
    if use_compile:
        torch.compiler.reset()
    ours = {
        "gn": lambda x_, w_, b_: functional.group_norm(x_, groups, w_, b_),
        "gn+silu": lambda x_, w_, b_: functional.group_norm(x_, groups, w_, b_, activation="silu"),
        "gn+add+relu": lambda x_, w_, b_: functional.group_norm(x_, groups, w_, b_, activation="relu", residual=res),
    }
    eager = {
        "gn": lambda x_, w_, b_: _gn(x_, groups, w_, b_),
        "gn+silu": lambda x_, w_, b_: torch_gn_silu(x_, groups, w_, b_),
        "gn+add+relu": lambda x_, w_, b_: torch_gn_add_relu_fn(x_, groups, w_, b_, res),
    }
    raw = {"gn": _gn, "gn+silu": torch_gn_silu, "gn+add+relu": torch_gn_add_relu_fn}
    liger = _liger()
    out = torch.empty_like(x)
    copy_ms = _ms(lambda: out.copy_(x), rep_ms)
    copy_gbs = 2 * x.numel() * x.element_size() / copy_ms / 1e6
    result = {**case_fields(shape, dtype, layout, groups), "copy_ms": copy_ms, "copy_gbs": copy_gbs, "rows": []}
    for comp in COMPOSITES:
        contenders = {"ours": ours[comp], "eager": eager[comp]}
        if use_compile and comp in COMPILED:
            compiled = torch.compile(raw[comp], dynamic=False)
            extra = (res,) if comp == "gn+add+relu" else ()
            contenders["compile"] = lambda x_, w_, b_, f=compiled, e=extra: f(x_, groups, w_, b_, *e)
        if comp == "gn" and liger is not None:
            contenders["liger"] = lambda x_, w_, b_: liger(x_, groups, w_, b_)
        for pas in PASSES:
            ms = {}
            for name, fn in contenders.items():
                try:
                    ms[name] = _ms(_pass(fn, pas, x, w, b, dy), rep_ms)
                except Exception as exc:  # noqa: BLE001 - a third-party kernel that declines this case
                    if name != "liger":
                        raise
                    result.setdefault("liger_error", f"{type(exc).__name__}: {exc}"[:200])
            row = {"composite": comp, "pass": pas, "ms": ms,
                   "speedup": {k: v / ms["ours"] for k, v in ms.items() if k != "ours"}}
            if pas == "fwd":
                row["ours_gbs"] = _forward_bytes(x, comp) / ms["ours"] / 1e6
                row["pct_copy"] = 100.0 * row["ours_gbs"] / copy_gbs
            result["rows"].append(row)
    return result


def _pass(fn, pas, x, w, b, dy):
    """A thunk running ``fn`` forward (no grad) or forward + backward for x, w, b."""
    if pas == "fwd":
        def fwd():
            with torch.no_grad():
                fn(x, w, b)
        return fwd
    xr, wr, br = (t.detach().requires_grad_(True) for t in (x, w, b))

    def fwd_bwd():
        torch.autograd.grad(fn(xr, wr, br), (xr, wr, br), dy)
    return fwd_bwd


def format_gpu_table(results: list[dict], header: bool = True) -> str:
    """One line per case, composite and pass: ours in ms, each contender's ms and (theirs / ours), the forward's
    GB/s and % of the copy's; ``header``: with the column names."""
    head = (f"{'shape':<18} {'dtype':<8} {'layout':<13} {'composite':<12} {'pass':<8} {'ours ms':>8} "
            f"{'eager ms (x)':>15} {'compile ms (x)':>15} {'liger ms (x)':>15} {'GB/s':>7} {'%copy':>6}")
    lines = [head, "-" * len(head)] if header else []

    def cell(row, k):
        return f"{row['ms'][k]:7.3f} ({row['speedup'][k]:4.2f})" if k in row["ms"] else f"{'-':>15}"

    for r in results:
        shape = "x".join(map(str, r["shape"]))
        for row in r["rows"]:
            gbs = f"{row['ours_gbs']:7.0f} {row['pct_copy']:5.0f}%" if "ours_gbs" in row else f"{'':7} {'':6}"
            lines.append(f"{shape:<18} {r['dtype']:<8} {r['layout']:<13} {row['composite']:<12} {row['pass']:<8} "
                         f"{row['ms']['ours']:8.3f} {cell(row, 'eager'):>15} {cell(row, 'compile'):>15} "
                         f"{cell(row, 'liger'):>15} {gbs}")
        lines.append(f"{shape:<18} {r['dtype']:<8} {r['layout']:<13} {'copy':<12} {'':<8} {r['copy_ms']:8.3f} "
                     f"{'':>15} {'':>15} {'':>15} {r['copy_gbs']:7.0f}")
    return "\n".join(lines)


def gpu_meta(device) -> dict:
    import triton

    props = torch.cuda.get_device_properties(device)
    return {"device": props.name, "multiprocessors": props.multi_processor_count,
            "memory_gib": round(props.total_memory / 2**30, 1), "torch": torch.__version__,
            "cuda": torch.version.cuda, "triton": triton.__version__, "machine": platform.machine(),
            **git_commit(), "started_utc": utc_now(), "finished_utc": None}


def run_gpu(args) -> int:
    """``groupnorm bench --device cuda``: the grid above over ``--shapes`` (default :data:`GPU_SHAPES`),
    ``--dtypes`` (default fp32,bf16), ``--layouts`` and ``--groups``; ``--json FILE`` is rewritten after each
    case (``meta``: the GPU, torch, CUDA and Triton versions, the commit; ``gpu``: the cases)."""
    import json


    from .atomic import atomic_write_bytes
    from .bench_cases import DTYPES, GRID_DTYPES, parse_list, parse_shapes
    from .kernels import triton as gt

    if args.small or args.plain or args.e2e or args.e2e_only or args.resume:
        raise ValueError(f"--device {args.device} runs the default grid only (no --small, --plain, --e2e, --resume)")
    dtypes = parse_list(args.dtypes or GRID_DTYPES, DTYPES, "dtype")
    layouts = parse_list(args.layouts, ("contiguous", "channels_last"), "layout")
    shapes = parse_shapes(args.shapes) if args.shapes else GPU_SHAPES
    for s in shapes:
        if s[1] % args.groups:
            raise ValueError(f"--groups={args.groups} does not divide num_channels={s[1]} of shape {s}")
    device = torch.device(args.device)
    if device.type != "cuda" or not torch.cuda.is_available():
        raise RuntimeError(f"--device {args.device}: no CUDA device here (torch {torch.__version__}, "
                           f"CUDA {torch.version.cuda})")
    if not gt.is_available():
        raise RuntimeError(f"the Triton kernels are not available: {gt.load_error()}")
    meta = gpu_meta(device)
    print(f"GPU: {meta['device']} ({meta['multiprocessors']} SMs, {meta['memory_gib']} GiB); torch {meta['torch']}, "
          f"CUDA {meta['cuda']}, Triton {meta['triton']}; medians of CUDA-event timings, L2 cleared per call")
    results = []
    for s, d, lay in [(s, d, lay) for s in shapes for d in dtypes for lay in layouts]:
        results.append(bench_gpu_case(s, DTYPES[d], lay, args.groups, device, use_compile=not args.no_compile))
        meta["finished_utc"] = utc_now()
        if args.json:
            atomic_write_bytes(str(args.json), json.dumps({"meta": meta, "gpu": results}, indent=1).encode())
        print(format_gpu_table(results[-1:], header=len(results) == 1), flush=True)  # a run cut short keeps its rows
    return 0
