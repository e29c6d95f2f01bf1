"""Our CPU kernel against onnxruntime's CPU GroupNormalization on the diffusion UNet's GN shapes.

For each shape (float32, G groups, affine) it times one GN layer's forward, per call:

* ours: ``groupnorm.nn.GroupNorm(G, C)`` under ``no_grad`` (the compiled kernels; the script stops if they are
  not available or ``GROUPNORM_DISABLE_KERNELS`` is set), ``--threads`` torch threads;
* onnxruntime: the same layer (same weights) exported by ``groupnorm.onnx_export.export_onnx`` at ``--opset``
  (21: ONNX's GroupNormalization) with static shapes, run by an ``onnxruntime.InferenceSession`` on the
  CPUExecutionProvider with ``intra_op_num_threads = --threads``, ``inter_op_num_threads = 1``, sequential
  execution, the default graph optimizations; fed the NumPy view of the same input (no copy), as a user calls
  ``session.run``.

Each side allocates its output. The two take turns within every round (the order rotates, so drift and other
processes hit both alike); each round runs ``--inner`` calls of each back to back (so that one side's thread
pool winding down after its calls touches at most the first of the other's); the figure is the median over
``--repeats`` rounds of the time per call (``groupnorm.timing.interleaved``). Printed with the CPU model, the
load average before and after, the versions, the exported graph's nodes and the largest difference between
the two outputs; the ratio is onnxruntime / ours (above 1: ours is faster).

    .venv/bin/python scripts/bench_onnx.py --threads 2 --repeats 30

Needs the ``onnx`` extra (onnx, onnxruntime, onnxscript). A script that prints numbers (benchmarks are never
timed tests).
"""
from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

import torch

UNET_SHAPES = "1,320,64,64;1,640,32,32;1,1280,16,16"


def session(path: Path, threads: int):
    """An onnxruntime CPU session for the model at ``path`` with ``threads`` intra-op threads."""
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = threads
    opts.inter_op_num_threads = 1
    opts.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])


def case(shape, groups: int, opset: int, activation, threads: int, repeats: int, warmup: int, inner: int,
         folder: Path) -> dict:
    """Export, check and time one shape: ``us`` (ours, onnxruntime), ``nodes`` (the exported graph's op types),
    ``max_abs_diff``."""
    import onnx

    from groupnorm.timing import interleaved
    from groupnorm.nn import GroupNorm
    from groupnorm.onnx_export import export_onnx

    c = shape[1]
    gen = torch.Generator().manual_seed(0)
    layer = GroupNorm(groups, c, activation=activation).eval()
    with torch.no_grad():
        layer.weight.copy_(torch.rand(c, generator=gen) + 0.5)
        layer.bias.copy_(torch.randn(c, generator=gen) * 0.1)
    x = torch.randn(shape, generator=gen)
    path = folder / f"gn_{'x'.join(map(str, shape))}.onnx"
    export_onnx(layer, (x,), path, opset=opset, dynamic_batch=False)
    nodes = [n.op_type for n in onnx.load(str(path)).graph.node]
    sess = session(path, threads)
    feed = {sess.get_inputs()[0].name: x.numpy()}
    out_names = [o.name for o in sess.get_outputs()]
    with torch.no_grad():
        diff = float((torch.from_numpy(sess.run(out_names, feed)[0]) - layer(x)).abs().max())

        def ours():
            layer(x)

        t = interleaved({"ours": ours, "onnxruntime": lambda: sess.run(out_names, feed)}, repeats, warmup, inner)
    return {"shape": tuple(shape), "us": {k: v * 1e6 for k, v in t.items()}, "nodes": nodes, "max_abs_diff": diff}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default=UNET_SHAPES, help=f"';'-separated N,C,H,W (default {UNET_SHAPES})")
    p.add_argument("--groups", type=int, default=32, help="number of groups G (default 32)")
    p.add_argument("--opset", type=int, default=21, help="ONNX opset of the export (default 21)")
    p.add_argument("--activation", default=None, choices=["relu", "silu", "gelu"],
                   help="the layer's fused activation (default none)")
    p.add_argument("--threads", type=int, default=2, help="threads on both sides (default 2)")
    p.add_argument("--repeats", type=int, default=30, help="timed rounds (the median is over these; default 30)")
    p.add_argument("--warmup", type=int, default=3, help="untimed rounds (default 3)")
    p.add_argument("--inner", type=int, default=10, help="calls of each side per round (default 10)")
    args = p.parse_args(argv)
    if min(args.threads, args.repeats, args.inner) < 1 or args.warmup < 0:
        raise SystemExit("--threads, --repeats and --inner must be >= 1 and --warmup >= 0")
    from groupnorm import kernels
    from groupnorm.bench import parse_shapes
    from groupnorm.hostinfo import cpu_model, load_average

    shapes = parse_shapes(args.shapes)
    for s in shapes:
        if s[1] % args.groups:
            raise SystemExit(f"--groups={args.groups} does not divide num_channels={s[1]} of shape {s}")
    if not kernels.is_available() or kernels.disabled():
        raise SystemExit(f"the kernels are not in use ({kernels.load_error() or 'GROUPNORM_DISABLE_KERNELS set'})")
    import onnxruntime as ort

    torch.set_num_threads(args.threads)
    print(f"CPU: {cpu_model()}; torch {torch.__version__} ({torch.get_num_threads()} threads, kernels: "
          f"{kernels.ISA_NAMES[kernels.isa()]}); onnxruntime {ort.__version__} ({args.threads} intra-op threads); "
          f"opset {args.opset}, float32, G={args.groups}, activation {args.activation}")
    print(f"medians of {args.repeats} interleaved rounds of {args.inner} calls; load average before: {load_average()}")
    rows = []
    with tempfile.TemporaryDirectory() as d:
        for s in shapes:
            rows.append(case(s, args.groups, args.opset, args.activation, args.threads, args.repeats, args.warmup,
                             args.inner, Path(d)))
    print(f"exported graph ({rows[0]['shape']}): {', '.join(rows[0]['nodes'])}")
    print("| input | ours us | onnxruntime us | onnxruntime / ours | max abs diff |")
    print("| --- | --- | --- | --- | --- |")
    for r in rows:
        us = r["us"]
        print(f"| {r['shape']} | {us['ours']:.1f} | {us['onnxruntime']:.1f} | {us['onnxruntime'] / us['ours']:.2f}x "
              f"| {r['max_abs_diff']:.1e} |")
    print(f"load average after: {load_average()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
