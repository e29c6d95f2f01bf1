"""``groupnorm bench --small``: the per-call cost of one GroupNorm layer on small inputs,
``groupnorm.nn.GroupNorm`` (the kernels) against ``torch.nn.GroupNorm``.

For each shape of :data:`SMALL_SHAPES` (G = min(32, C), float32, affine) in both memory formats it times, in
microseconds per call:

* ``fwd+bwd``: autograd forward+backward of one layer, ``torch.autograd.grad(m(x), (x, m.weight, m.bias), dy)``;
* ``fwd``: the forward alone under ``no_grad``.

Ours and torch's take turns within every round (the order rotates, so drift and other processes hit both
alike); each round runs ``inner`` calls of each back to back, and the figure is the median over the rounds of
the time per call. At these sizes the cost is mostly per call (Python layers, dispatch, autograd bookkeeping,
thread start-up), not memory traffic: these are the feature maps of detection heads, FPN levels and late
ResNet stages. Ratios are torch / ours (above 1: ours is faster).
"""
from __future__ import annotations

import torch

from .timing import interleaved

SMALL_SHAPES = [(1, 64, 8, 8), (2, 32, 14, 14), (8, 256, 7, 7), (32, 128, 4, 4)]


def bench_small_case(shape, layout: str, repeats: int, warmup: int, inner: int) -> dict:
    """One shape in one layout ("contiguous" or "channels_last"): medians in ``us`` (``ours_fb``, ``torch_fb``,
    ``ours_fwd``, ``torch_fwd``) and ``speedup`` (``fwd+bwd``, ``fwd``) = torch / ours. Raises RuntimeError
    if the two layers' outputs differ (the same weights in both)."""
    import groupnorm

    c = shape[1]
    g = min(32, c)
    gen = torch.Generator().manual_seed(0)
    ours, theirs = groupnorm.nn.GroupNorm(g, c), torch.nn.GroupNorm(g, c)
    w, b = torch.rand(c, generator=gen) + 0.5, torch.randn(c, generator=gen) * 0.1
    with torch.no_grad():
        for m in (ours, theirs):
            m.weight.copy_(w)
            m.bias.copy_(b)
    x = torch.randn(shape, generator=gen)
    dy = torch.randn(shape, generator=gen)
    if layout == "channels_last":
        x, dy = x.contiguous(memory_format=torch.channels_last), dy.contiguous(memory_format=torch.channels_last)
    x.requires_grad_(True)
    with torch.no_grad():
        if not torch.allclose(ours(x), theirs(x), rtol=1e-4, atol=1e-4):
            raise RuntimeError(f"groupnorm.nn.GroupNorm and torch.nn.GroupNorm differ on {shape} {layout}")

    def fwd_bwd(m):
        params = (x, m.weight, m.bias)
        return lambda: torch.autograd.grad(m(x), params, dy)

    def fwd(m):
        def f():
            with torch.no_grad():
                m(x)
        return f

    t = interleaved({"ours_fb": fwd_bwd(ours), "torch_fb": fwd_bwd(theirs)}, repeats, warmup, inner)
    t.update(interleaved({"ours_fwd": fwd(ours), "torch_fwd": fwd(theirs)}, repeats, warmup, inner))
    return {"shape": list(shape), "dtype": "float32", "layout": layout, "groups": g,
            "us": {k: v * 1e6 for k, v in t.items()},
            "speedup": {"fwd+bwd": t["torch_fb"] / t["ours_fb"], "fwd": t["torch_fwd"] / t["ours_fwd"]}}


def format_small_table(results: list[dict]) -> str:
    """Markdown table: microseconds per call, ours / torch, and torch / ours."""
    lines = ["| input, G=min(32,C) | layout | fwd+bwd ours / torch us (x) | fwd ours / torch us (x) |",
             "|" + " --- |" * 4]
    for r in results:
        us, sp = r["us"], r["speedup"]
        lines.append(f"| {tuple(r['shape'])} {r['groups']} | {r['layout']} "
                     f"| {us['ours_fb']:.1f} / {us['torch_fb']:.1f} ({sp['fwd+bwd']:.2f}) "
                     f"| {us['ours_fwd']:.1f} / {us['torch_fwd']:.1f} ({sp['fwd']:.2f}) |")
    return "\n".join(lines)
