"""``groupnorm reproduce`` and ``groupnorm report``: the paper's experiments from the command line.

    groupnorm reproduce --experiment {table1,table2,table3,curves,noniid,ghost,lrsweep,control,vgg,video,
                                      video-lrsweep,video-control,transfer,head,scratch,perworker,masked,
                                      dense-lrsweep,all}
                        [--task {classification,video,detection,segmentation}]
                        --preset {smoke,quick,full,cifar10,cifar10-resnet20,imagenet} [--arch NAME]
                        [--data-dir DIR] [--dataset {auto,idx,cifar10,cifar100,imagefolder}] [--image-size S]
                        [--data-workers N] [--out DIR] [--seeds K] [--workers W] [--launcher {emulate,torchrun}]
                        [--epochs E] [--batches B1,B2,..] [--jobs J] [--threads T] [--channels-last]
                        [--device {auto,cpu,cuda}] [--amp {none,bf16}] [--max-runs N]
                        [--no-progress] [--no-report] [--executor {local,slurm,submitit-local}]
                        [--slurm-partition P] [--slurm-account A] [--slurm-time MIN] [--slurm-gpus-per-node G]
                        [--slurm-cpus-per-task C] [--slurm-mem GB] [--slurm-array-parallelism N]
                        [--slurm-folder DIR] [--wait]
    groupnorm report OUT
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys

from .data.formats import DENSE_TASKS, TASKS
from .models.archs import ARCHS
from .protocol import EXPERIMENTS, PRESET_NAMES
from .data.spec import add_data_arguments, spec_from_args
from .training.devices import AMP_MODES, DEVICES

EXECUTORS = ("local", "slurm", "submitit-local")


def _positive(text: str) -> int:
    try:
        v = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not an integer") from None
    if v < 1:
        raise argparse.ArgumentTypeError(f"{v} must be at least 1")
    return v


def _batch_list(text: str) -> tuple:
    try:
        vals = tuple(int(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a comma-separated list of integers") from None
    if not vals or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} must list positive integers")
    return vals


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "reproduce", help="train the GN paper's experiments (resumable; Fashion-MNIST by default, or IDX, CIFAR "
                          "or ImageFolder data) and write the report",
        description="Train the runs of the GN paper's Tables 1-3 / Figures 1, 4, 5 on the data set of --data-dir. "
                    "Each finished run is a line of OUT/results.jsonl; re-running the same command skips finished "
                    "runs and resumes an interrupted one from its last epoch checkpoint. Ends by writing "
                    "OUT/report.md and its plots.")
    p.add_argument("--experiment", choices=EXPERIMENTS, default="all",
                   help="an experiment (video: video, video-lrsweep, video-control; detection: transfer, head, "
                        "scratch, perworker, masked, dense-lrsweep; segmentation: perworker, masked, "
                        "dense-lrsweep), or all: the preset's")
    p.add_argument("--task", choices=TASKS, default=None,
                   help="video: BN vs GN on clips of the data set's images moving on a canvas, with a 3D ResNet "
                        "(the paper's Table 8); detection / segmentation: on canvases of the data set's items "
                        "(Tables 4-7; presets smoke, quick, full; see docs/harness.md); --experiment all then runs "
                        "the task's experiments of the preset (default: the experiment's task; classification for "
                        "all)")
    p.add_argument("--preset", choices=PRESET_NAMES, default="quick",
                   help="smoke: seconds (tests); quick: 13-16 min of training on 2 cores; full: closest to the paper on this CPU "
                        "(hours); cifar10, cifar10-resnet20, imagenet: the paper's protocol on a GPU "
                        "(needs --data-dir; see docs/harness.md)")
    p.add_argument("--arch", choices=tuple(ARCHS), default=None,
                   help="the model (default: the preset's); the table is in groupnorm.experiments.models")
    add_data_arguments(p)
    p.add_argument("--out", default=None, help="output directory (default runs/PRESET)")
    p.add_argument("--seeds", type=_positive, default=None, help="seeds per setting (default: the preset's)")
    p.add_argument("--workers", type=_positive, default=None,
                   help="W workers whose BN statistics are separate (default: the preset's)")
    p.add_argument("--epochs", type=_positive, default=None, help="epochs per run (default: the preset's)")
    p.add_argument("--batches", type=_batch_list, default=None,
                   help="Table 2's images per worker, comma-separated, e.g. 32,2 (default: the preset's)")
    p.add_argument("--launcher", choices=("emulate", "torchrun"), default="emulate",
                   help="emulate: W workers in one process; torchrun: W DDP processes per run (gloo on CPU, nccl on CUDA)")
    p.add_argument("--jobs", type=_positive, default=None,
                   help="runs trained side by side, one process each (emulate only; default: 1 on CUDA, else min(2, CPU count))")
    p.add_argument("--threads", type=_positive, default=1, help="intra-op threads per training process")
    p.add_argument("--channels-last", action="store_true",
                   help="train in channels-last memory format (faster convolutions on CPUs; the same runs, "
                        "numbers equal up to float rounding)")
    p.add_argument("--device", choices=DEVICES, default="auto",
                   help="auto: cuda when available, else cpu; under --launcher torchrun each rank takes "
                        "cuda:LOCAL_RANK (nccl) or the CPU (gloo). Recorded in the rows, not part of a run's identity")
    p.add_argument("--amp", choices=AMP_MODES, default="none",
                   help="bf16: forward pass and loss under bfloat16 autocast (GPUs; CPUs with AVX512-BF16/AMX)")
    p.add_argument("--max-runs", type=_positive, default=None, help="stop after this many newly trained runs")
    p.add_argument("--executor", choices=EXECUTORS, default="local",
                   help="local: train here (default); slurm: submit the runs without a row as one Slurm job array "
                        "through submitit, one run per task (see docs/harness.md); submitit-local: the same job "
                        "array as processes of this machine (submitit's local executor; waits)")
    s = p.add_argument_group("Slurm (--executor slurm)")
    s.add_argument("--slurm-partition", default=None, help="partition of the array tasks")
    s.add_argument("--slurm-account", default=None, help="account charged for the array tasks")
    s.add_argument("--slurm-time", type=_positive, default=24 * 60, help="time limit of one task in minutes "
                   "(a task that reaches it is requeued and resumes its run from its last epoch; default 1440)")
    s.add_argument("--slurm-gpus-per-node", type=int, default=None,
                   help="GPUs per task (default 1 with --launcher emulate, the run's workers with torchrun; 0 on "
                        "CPU nodes)")
    s.add_argument("--slurm-cpus-per-task", type=_positive, default=None, help="CPUs per task")
    s.add_argument("--slurm-mem", type=float, default=None, help="memory per task in GB")
    s.add_argument("--slurm-array-parallelism", type=_positive, default=None,
                   help="at most this many tasks of the array running at once")
    s.add_argument("--slurm-folder", default=None, help="submitit's folder for pickles and logs, on a file system "
                   "the nodes share; %%j is the job id (default OUT/slurm/%%j)")
    s.add_argument("--wait", action="store_true", help="wait for the submitted runs, then write the report")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--no-report", action="store_true", help="do not write the report at the end")
    p.set_defaults(func=run_reproduce)

    r = subparsers.add_parser("report", help="write OUT/report.md and its PNG plots from OUT/results.jsonl",
                              description="Tables 1-3 like the paper's (our mean +- spread over seeds beside the "
                                          "paper's ImageNet numbers) and the plots of Figures 1, 4, 5.")
    r.add_argument("out", help="an output directory of `groupnorm reproduce`")
    r.set_defaults(func=run_report)


def run_reproduce(args) -> int:
    from .protocol import experiment_configs, get_preset, plan_task, preset_data_dir
    from .report.tables import write_report
    from .launch.runner import run_sweep

    def _stop(signum, frame):  # SIGTERM stops like Ctrl-C: running side-by-side runs are terminated too
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, _stop)
    task = args.task or ("classification" if args.experiment == "all" else plan_task(args.experiment))
    preset = get_preset(args.preset, task)
    if task in DENSE_TASKS and args.launcher != "emulate":
        raise ValueError(f"--task {task} emulates its workers in one process; --launcher {args.launcher} "
                         f"is for classification and video")
    preset_data_dir(preset, args.data_dir)
    data = spec_from_args(args)
    if data.dataset == "auto" and preset.data_format != "auto":  # the preset's format: errors say what it needs
        data = dataclasses.replace(data, dataset=preset.data_format)
    out = args.out or os.path.join("runs", args.preset)
    configs = experiment_configs(args.experiment, preset, seeds=args.seeds, workers=args.workers,
                                 epochs=args.epochs, batches=args.batches, arch=args.arch, task=task)
    # the device stays a name ("auto" included): each process, here or on a cluster node, resolves it itself
    sweep = dict(data=data, launcher=args.launcher, threads=args.threads, channels_last=args.channels_last,
                 device=args.device, amp=args.amp)
    if args.executor == "local":
        from .training.devices import resolve_device

        on_gpu = resolve_device(args.device).type == "cuda"
        run_sweep(configs, out, progress=not args.no_progress, max_runs=args.max_runs,
                  jobs=args.jobs or (1 if on_gpu else min(2, os.cpu_count() or 1)), **sweep)  # one run per GPU
    else:
        from .launch import slurm

        options = slurm.SlurmOptions(
            partition=args.slurm_partition, account=args.slurm_account, time_min=args.slurm_time,
            gpus_per_node=args.slurm_gpus_per_node, cpus_per_task=args.slurm_cpus_per_task, mem_gb=args.slurm_mem,
            array_parallelism=args.slurm_array_parallelism, folder=args.slurm_folder)
        jobs = slurm.submit_sweep(configs, out, sweep, options, max_runs=args.max_runs,
                                  cluster="slurm" if args.executor == "slurm" else "local")
        if jobs and not (args.wait or args.executor == "submitit-local"):
            print(f"[reproduce] when they have finished: groupnorm report {out} (the same command again submits "
                  f"the runs that still have no row)", file=sys.stderr)
            return 0
        slurm.wait_for_runs(jobs)
    if not args.no_report:
        path = write_report(out)
        print(f"[reproduce] report: {path}", file=sys.stderr)
    return 0


def run_report(args) -> int:
    from .report.tables import write_report

    if not os.path.isdir(args.out):
        raise FileNotFoundError(f"output directory not found: {args.out}")
    print(write_report(args.out))
    return 0
