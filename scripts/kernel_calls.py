"""Time the compiled kernels' C entry points against a copy and PyTorch's own GroupNorm ops, on the same tensors.

Unlike ``groupnorm bench`` (the user-facing calls, output allocation and autograd included), this measures the
kernels alone: outputs are preallocated and reused, so what is left is the kernel's own memory traffic and
arithmetic. ``copy`` is ``y.copy_(x)`` (one read, one write: the floor of the forward); the backward reads two
tensors and writes one. PyTorch's side is ``aten.native_group_norm`` / ``native_group_norm_backward`` (which
allocate their outputs). Medians of interleaved rounds, microseconds. ``--layout channels_last`` times channels-last tensors
(both sides).

    .venv/bin/python scripts/kernel_calls.py --shapes "32,32,28,28;32,64,14,14;32,128,7,7" --threads 2
"""
from __future__ import annotations

import argparse

import torch

from groupnorm.bench import parse_shapes
from groupnorm.timing import interleaved, keep_freed_memory
from groupnorm.kernels import _lib


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--shapes", default="32,32,28,28;32,64,14,14;32,128,7,7")
    p.add_argument("--groups", type=int, default=32)
    p.add_argument("--dtype", choices=("fp32", "bf16", "fp16"), default="fp32")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--layout", choices=("contiguous", "channels_last"), default="contiguous")
    p.add_argument("--repeats", type=int, default=40)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    keep_freed_memory()
    dtype = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}[args.dtype]
    nt, g = args.threads, args.groups
    cl = args.layout == "channels_last"
    lay = _lib.LAYOUT_NSC if cl else _lib.LAYOUT_NCS
    print(f"{args.dtype}, {args.layout}, {nt} threads, G={g}; medians of {args.repeats} interleaved rounds, us")
    print("| shape | copy | ours fwd | torch fwd | ours bwd | torch bwd |")
    print("| --- | --- | --- | --- | --- | --- |")
    for shape in parse_shapes(args.shapes):
        n, c, s = shape[0], shape[1], int(torch.tensor(shape[2:]).prod())
        x = torch.randn(shape).to(dtype)
        if cl:  # (N, *spatial, C) in memory; torch's ops take the same tensors
            x = x.movedim(1, -1).contiguous().movedim(-1, 1)
        w, b = torch.randn(c).to(dtype), torch.randn(c).to(dtype)
        dy, y, dx = torch.randn_like(x), torch.empty_like(x), torch.empty_like(x)
        dw, db = torch.empty_like(w), torch.empty_like(b)
        mean = torch.empty(n, g, dtype=torch.float64)
        rstd = torch.empty_like(mean)
        _lib.forward(x, g, w, b, 1e-5, 0, y, mean, rstd, lay, nt)
        _, tm, tr = torch.ops.aten.native_group_norm(x, w, b, n, c, s, g, 1e-5)
        t = interleaved({
            "copy": lambda: y.copy_(x),
            "fwd": lambda: _lib.forward(x, g, w, b, 1e-5, 0, y, mean, rstd, lay, nt),
            "tfwd": lambda: torch.ops.aten.native_group_norm(x, w, b, n, c, s, g, 1e-5),
            "bwd": lambda: _lib.backward(dy, x, mean, rstd, g, w, b, 0, dx, dw, db, lay, nt),
            "tbwd": lambda: torch.ops.aten.native_group_norm_backward(dy, x, tm, tr, w, n, c, s, g,
                                                                      [True, True, True]),
        }, args.repeats, 3)
        us = {k: v * 1e6 for k, v in t.items()}
        print(f"| {tuple(shape)} | {us['copy']:.0f} | {us['fwd']:.0f} | {us['tfwd']:.0f} | {us['bwd']:.0f} "
              f"| {us['tbwd']:.0f} |")


if __name__ == "__main__":
    main()
