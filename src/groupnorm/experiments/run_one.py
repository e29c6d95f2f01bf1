"""Train one run in this process: alone, or as one rank of a ``torchrun`` job (gloo; the harness trains on CPU).

Launched by :mod:`groupnorm.experiments.runner`, either as a side-by-side job::

    python -m groupnorm.experiments.run_one --config OUT/runs/<key>/launch.json --data-dir DIR --out OUT \\
        --progress-stdout

(which prints ``progress <images>`` lines for the parent's progress bars), or under torchrun::

    python -m torch.distributed.run --nproc-per-node=W -m groupnorm.experiments.run_one --config ... 
"""
from __future__ import annotations

import argparse
import json
import os
import sys

import torch

from .config import RunConfig
from .runner import load_data
from .train import train_run


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m groupnorm.experiments.run_one")
    p.add_argument("--config", required=True)
    p.add_argument("--data-dir", required=True)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=int(os.environ.get("OMP_NUM_THREADS", "1")))
    p.add_argument("--progress-stdout", action="store_true", help="print 'progress N' after each step")
    args = p.parse_args(argv)
    with open(args.config) as f:
        cfg = RunConfig.from_json(json.load(f))
    torch.set_num_threads(max(1, args.threads))
    on_images = None
    if args.progress_stdout:
        def on_images(n: int) -> None:
            sys.stdout.write(f"progress {n}\n")
            sys.stdout.flush()
    if "WORLD_SIZE" in os.environ and int(os.environ["WORLD_SIZE"]) > 1:
        import torch.distributed as dist

        dist.init_process_group("gloo")
        try:
            rank, world = dist.get_rank(), dist.get_world_size()
            train, val = load_data(args.data_dir, cfg.train_size, cfg.val_size)
            train_run(cfg, train, val, args.out, rank=rank, world=world, launcher="torchrun",
                      progress=not args.progress_stdout, on_images=on_images)
        finally:
            dist.destroy_process_group()
    else:
        train, val = load_data(args.data_dir, cfg.train_size, cfg.val_size)
        train_run(cfg, train, val, args.out, progress=False, on_images=on_images)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
