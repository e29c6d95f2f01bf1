"""Train one run in this process: alone, or as one rank of a ``torchrun`` job (gloo on CPU, nccl on CUDA).

Launched by :mod:`groupnorm.experiments.launch.runner`, either as a side-by-side job::

    python -m groupnorm.experiments.launch.run_one --config OUT/runs/<key>/launch.json --data-dir DIR --out OUT \\
        [--dataset FORMAT] [--image-size S] [--data-workers N] --progress-stdout

(which prints ``progress <images>`` lines for the parent's progress bars), or under torchrun::

    python -m torch.distributed.run --nproc-per-node=W -m groupnorm.experiments.launch.run_one --config ... 

Fault injection (for the tests of the runner's relaunch): ``GROUPNORM_FAULT_INJECT=IMAGES:MARKER`` makes rank 0
abort (SIGABRT, as a crash inside torch would) once it has trained IMAGES images, unless the file MARKER exists;
it creates MARKER first, so the relaunched job runs through (a MARKER that cannot be created: every launch aborts).
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from ..protocol import RunConfig
from ..data import add_data_arguments, load_run_data, spec_from_args
from ..training.devices import AMP_MODES, DEVICES, backend_for, bind, local_rank, resolve_device
from ..training import train_run


def _fault_hook(spec: str, inner):
    """on_images callback that aborts the process once (see the module docstring); inner is called first."""
    count, _, marker = spec.partition(":")
    if not count.isdigit() or not marker:
        raise ValueError(f"GROUPNORM_FAULT_INJECT={spec!r}: expected IMAGES:MARKER_PATH")
    limit, seen = int(count), [0]

    def hook(n: int) -> None:
        if inner is not None:
            inner(n)
        seen[0] += n
        if seen[0] >= limit and not os.path.exists(marker):
            try:
                open(marker, "w").close()
            except OSError:  # a marker that cannot be created: abort on every launch
                pass
            os.abort()

    return hook


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m groupnorm.experiments.launch.run_one")
    p.add_argument("--config", required=True)
    add_data_arguments(p, required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--channels-last", action="store_true", help="model and batches in channels-last memory")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: cuda if available; under torchrun a CUDA rank takes cuda:LOCAL_RANK")
    p.add_argument("--amp", choices=AMP_MODES, default="none", help="bf16: forward and loss under autocast")
    p.add_argument("--lock-held", action="store_true",
                   help="the launching sweep holds the run's lock (see store.claim_run)")
    p.add_argument("--progress-stdout", action="store_true", help="print 'progress N' after each step")
    args = p.parse_args(argv)
    with open(args.config) as f:
        cfg = RunConfig.from_json(json.load(f))
    data = spec_from_args(args)
    torch.set_num_threads(max(1, args.threads))
    on_images = None
    if args.progress_stdout:
        def on_images(n: int) -> None:
            sys.stdout.write(f"progress {n}\n")
            sys.stdout.flush()
    if os.environ.get("GROUPNORM_FAULT_INJECT"):
        on_images = _fault_hook(os.environ["GROUPNORM_FAULT_INJECT"], on_images)
    device = resolve_device(args.device, local_rank())
    bind(device)
    run = dict(on_images=on_images, channels_last=args.channels_last, lock_held=args.lock_held, device=device,
               amp=args.amp)
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        import torch.distributed as dist

        dist.init_process_group(backend_for(device))
        try:
            rank, world = dist.get_rank(), dist.get_world_size()
            train, val, pool = load_run_data(data, cfg)
            train_run(cfg, train, val, args.out, rank=rank, world=world, launcher="torchrun",
                      progress=not args.progress_stdout, pool=pool, **run)
        finally:
            dist.destroy_process_group()
    else:
        train, val, pool = load_run_data(data, cfg)
        train_run(cfg, train, val, args.out, progress=False, pool=pool, **run)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
