"""CPU forward time of diffusers models before and after ``groupnorm.convert_group_norm``.

Two models with random weights (nothing downloaded), batch 1 of 64x64 images, in inference mode:

- ``UNet2DModel``: the DDPM-style config (block_out_channels 64, 128, 256, 256; two layers per block; attention
  in the third down block and the second up block; 32 groups), one denoising step (timestep 10);
- ``AutoencoderKL``: encoder and decoder (block_out_channels 64, 128, 256, 256; one layer per block; 32 groups),
  ``sample_posterior=False``.

Each model is timed as built (``torch.nn.GroupNorm``) and converted (``convert_group_norm(model,
fuse_activation=True)``), in float32 and bfloat16, contiguous and channels-last. The two variants of one case
run interleaved (torch, ours, torch, ours, ...) so that a change in the machine's load hits both; each round
times ``--iters`` forwards of each; the figures are medians over ``--repeats`` rounds, the ratio is the median
of the per-round ratios (torch time / ours: above 1 means the converted model is faster). The header prints
the CPU, torch version, threads and the load average before and after. The last two columns are the shares of
the torch model's CPU time (one profiled forward, ``torch.profiler`` self times) spent in ``aten::group_norm``
(its native kernel) and in SiLU: the most the conversion could save.

On a shared machine use one thread: with two threads on two busy cores, one preempted thread stalls the other
at every parallel region and the timings measure the load, not the layers.

    .venv/bin/python scripts/time_diffusers_convert.py --threads 1 --repeats 15 --iters 3
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from groupnorm.hostinfo import cpu_model, load_average


def build(name: str):
    from diffusers import AutoencoderKL, UNet2DModel

    torch.manual_seed(0)
    if name == "UNet2DModel":
        model = UNet2DModel(
            sample_size=64, in_channels=3, out_channels=3, layers_per_block=2,
            block_out_channels=(64, 128, 256, 256), norm_num_groups=32,
            down_block_types=("DownBlock2D", "DownBlock2D", "AttnDownBlock2D", "DownBlock2D"),
            up_block_types=("UpBlock2D", "AttnUpBlock2D", "UpBlock2D", "UpBlock2D"))
        return model.eval(), lambda m, x: m(x, 10).sample
    model = AutoencoderKL(
        in_channels=3, out_channels=3, latent_channels=4, layers_per_block=1, norm_num_groups=32,
        block_out_channels=(64, 128, 256, 256), down_block_types=("DownEncoderBlock2D",) * 4,
        up_block_types=("UpDecoderBlock2D",) * 4, sample_size=64)
    return model.eval(), lambda m, x: m(x, sample_posterior=False).sample


def shares(run, model, x) -> tuple[float, float]:
    """Fractions of one forward's CPU self time spent in group norm and in SiLU (torch.profiler)."""
    from torch.profiler import ProfilerActivity, profile

    with torch.inference_mode(), profile(activities=[ProfilerActivity.CPU]) as prof:
        run(model, x)
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    gn = sum(e.self_cpu_time_total for e in events if "group_norm" in e.key)
    silu = sum(e.self_cpu_time_total for e in events if "silu" in e.key)
    return gn / total, silu / total


def time_case(run, torch_model, our_model, x, iters: int, repeats: int):
    """Interleaved rounds; returns (torch ms, ours ms, ratio, ratio min, ratio max) per forward, medians."""
    ts, os_, ratios = [], [], []
    with torch.inference_mode():
        for m in (torch_model, our_model):  # warm-up: allocator, kernels' first call, oneDNN primitives
            run(m, x)
            run(m, x)
        for r in range(repeats):
            order = (torch_model, our_model) if r % 2 == 0 else (our_model, torch_model)
            got = {}
            for m in order:
                t0 = time.perf_counter()
                for _ in range(iters):
                    run(m, x)
                got[id(m)] = (time.perf_counter() - t0) / iters * 1e3
            ts.append(got[id(torch_model)])
            os_.append(got[id(our_model)])
            ratios.append(ts[-1] / os_[-1])
    return statistics.median(ts), statistics.median(os_), statistics.median(ratios), min(ratios), max(ratios)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--repeats", type=int, default=7, help="interleaved rounds per case (default 7)")
    p.add_argument("--iters", type=int, default=2, help="forwards per variant per round (default 2)")
    p.add_argument("--models", default="UNet2DModel,AutoencoderKL")
    p.add_argument("--dtypes", default="float32,bfloat16")
    p.add_argument("--layouts", default="contiguous,channels_last")
    args = p.parse_args()
    if args.threads < 1 or args.repeats < 1 or args.iters < 1:
        p.error("--threads, --repeats and --iters must be >= 1")
    models = [m for m in args.models.split(",") if m]
    for m in models:
        if m not in ("UNet2DModel", "AutoencoderKL"):
            p.error(f"--models: unknown model {m!r}; choose from UNet2DModel, AutoencoderKL")
    dtypes = {"float32": torch.float32, "bfloat16": torch.bfloat16}
    for d in args.dtypes.split(","):
        if d not in dtypes:
            p.error(f"--dtypes: unknown dtype {d!r}; choose from float32, bfloat16")
    layouts = {"contiguous": torch.contiguous_format, "channels_last": torch.channels_last}
    for lay in args.layouts.split(","):
        if lay not in layouts:
            p.error(f"--layouts: unknown layout {lay!r}; choose from contiguous, channels_last")
    torch.set_num_threads(args.threads)

    import diffusers

    diffusers.utils.logging.set_verbosity_error()  # its advice on .to(bfloat16) for pretrained models
    from groupnorm import kernels
    from groupnorm.convert import convert_group_norm

    print(f"cpu: {cpu_model()}")
    print(f"torch {torch.__version__}, diffusers {diffusers.__version__}, threads {torch.get_num_threads()}, "
          f"groupnorm kernels isa {kernels.ISA_NAMES[kernels.isa()]}")
    print(f"load average (1, 5, 15 min) at start: {load_average()}")
    print(f"batch 1 x 3 x 64 x 64, inference mode; {args.repeats} interleaved rounds of {args.iters} forwards each")
    print()
    print(f"{'model':<14} {'dtype':<9} {'layout':<14} {'torch ms':>9} {'ours ms':>9} {'torch/ours':>10} "
          f"{'(min-max)':>13} {'GN %':>6} {'SiLU %':>6}")
    for name in models:
        base, run = build(name)
        conv, report = convert_group_norm(base, fuse_activation=True, return_report=True)
        fused = sum(1 for layer in report if layer.fused)
        print(f"# {name}: {sum(p.numel() for p in base.parameters()) / 1e6:.1f}M parameters; {report.summary()}"
              f" ({fused} fused)")
        for dname in args.dtypes.split(","):
            for lname in args.layouts.split(","):
                fmt = layouts[lname]
                a = base.to(dtype=dtypes[dname], memory_format=fmt)
                b = conv.to(dtype=dtypes[dname], memory_format=fmt)
                x = torch.randn(1, 3, 64, 64, generator=torch.Generator().manual_seed(1)).to(
                    dtype=dtypes[dname], memory_format=fmt)
                tm, om, ratio, lo, hi = time_case(run, a, b, x, args.iters, args.repeats)
                gn, silu = shares(run, a, x)
                print(f"{name:<14} {dname:<9} {lname:<14} {tm:9.1f} {om:9.1f} {ratio:10.3f} "
                      f"{f'({lo:.3f}-{hi:.3f})':>13} {100 * gn:6.1f} {100 * silu:6.1f}", flush=True)
    print()
    print(f"load average (1, 5, 15 min) at end: {load_average()}")


if __name__ == "__main__":
    main()
