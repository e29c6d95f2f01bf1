"""``--executor slurm``: a sweep's runs as one Slurm job array, submitted through submitit.

Each array task is one run: :class:`SweepTask` calls :func:`groupnorm.experiments.launch.runner.run_sweep` on that one
run with the same arguments the local sweep would get, so a task takes the run's lock (``store.claim_run``),
re-reads the store, skips a run another process holds or has finished, resumes from the run's checkpoint, and
appends the row once. With ``--launcher emulate`` a task is one process (its W workers emulated, on one GPU when
``gpus_per_node`` is 1); with ``--launcher torchrun`` a task is one node whose process launches ``torchrun``
with W ranks (``processes``, default the run's workers), one GPU each, so ``gpus_per_node`` must be W (or 0 on
CPU nodes). Runs spanning nodes are not supported.

Tasks, local ``groupnorm reproduce`` processes and other submissions may share one ``--out`` (on a file system
that all the nodes see and whose ``flock`` works across machines): every run is trained once and written once
(``docs/harness.md``). A task killed at its time limit or preempted is requeued by submitit (``SweepTask`` is
``Checkpointable``) and resumes from the run's last epoch checkpoint; running the same command again submits the
runs that still have no row. submitit's own files (pickles, logs ``%j_0_log.out``/``.err``) go to
``OUT/slurm/<job id>`` unless ``folder`` says otherwise. submitit is imported only when a sweep is submitted
(the ``cluster`` extra: ``pip install 'groupnorm[cluster]'``).

``cluster="local"`` runs the same job array as processes of this machine through submitit's ``LocalExecutor``
(all tasks at once), which is how the tests exercise this path.
"""
from __future__ import annotations

import dataclasses
import os
import shutil
import sys
from dataclasses import dataclass

from .. import store
from ..protocol import RunConfig

CLUSTERS = ("slurm", "local")

@dataclass(frozen=True)
class SlurmOptions:
    """What each array task asks Slurm for. ``time_min``: the task's time limit in minutes; ``gpus_per_node``:
    None means 1 with the emulate launcher and the run's processes with torchrun; ``mem_gb``: memory per node;
    ``array_parallelism``: at most this many tasks running at once; ``folder``: submitit's folder (``%j`` is the
    job id; default ``OUT/slurm/%j``)."""

    partition: str | None = None
    account: str | None = None
    time_min: int = 24 * 60
    gpus_per_node: int | None = None
    cpus_per_task: int | None = None
    mem_gb: float | None = None
    array_parallelism: int | None = None
    folder: str | None = None
    job_name: str = "groupnorm"

    def parameters(self, launcher: str, processes: int) -> dict:
        """The ``update_parameters`` keywords of a submitit ``AutoExecutor`` for tasks of ``processes`` ranks
        (1 with the emulate launcher); errors name the bad value."""
        if not isinstance(self.time_min, int) or self.time_min < 1:
            raise ValueError(f"time_min={self.time_min!r} must be a positive number of minutes")
        gpus = self.gpus_per_node
        if gpus is None:
            gpus = processes if launcher == "torchrun" else 1
        if not isinstance(gpus, int) or gpus < 0:
            raise ValueError(f"gpus_per_node={gpus!r} must be a non-negative integer")
        if launcher == "torchrun" and gpus not in (0, processes):
            raise ValueError(f"gpus_per_node={gpus}: a torchrun task runs {processes} ranks on one node, one GPU "
                             f"each, so it needs {processes} GPUs (or 0 on CPU nodes)")
        if launcher == "emulate" and gpus > 1:
            raise ValueError(f"gpus_per_node={gpus}: an emulate task trains on one device; use --launcher "
                             f"torchrun for one GPU per worker")
        p = dict(name=self.job_name, timeout_min=self.time_min, nodes=1, tasks_per_node=1, gpus_per_node=gpus)
        for key, value in (("cpus_per_task", self.cpus_per_task), ("mem_gb", self.mem_gb),
                           ("slurm_partition", self.partition), ("slurm_account", self.account),
                           ("slurm_array_parallelism", self.array_parallelism)):
            if value is not None:
                p[key] = value
        return p


class SweepTask:
    """The picklable function of one array task: ``task(cfg_json)`` trains that run through ``run_sweep`` with
    ``sweep_kwargs`` (the local sweep's arguments) into ``out``; returns the run's row, or None when another
    process holds the run (it is left to that process). Its ``checkpoint`` makes submitit requeue a task that
    reaches its time limit or is preempted (submitit's ``Checkpointable`` protocol); the requeued task resumes the
    run from its last epoch checkpoint."""

    def __init__(self, out: str, sweep_kwargs: dict):
        self.out = out
        self.sweep_kwargs = dict(sweep_kwargs)

    def __call__(self, cfg_json: dict) -> dict | None:
        from .runner import run_sweep

        cfg = RunConfig.from_json(cfg_json)
        rows = run_sweep([cfg], self.out, **self.sweep_kwargs)
        return next((r for r in rows if r["config_key"] == cfg.key()), None)

    def checkpoint(self, *args, **kwargs):
        from submitit.helpers import DelayedSubmission

        return DelayedSubmission(self, *args, **kwargs)


def wait_for_runs(jobs: list) -> list[dict]:
    """Wait for ``jobs`` of :func:`submit_sweep`; return the rows they wrote. A failed task raises an error
    naming its run and its log file, after all the others have ended."""
    rows, failures = [], []
    for job in jobs:
        try:
            row = job.result()
        except Exception as exc:  # submitit.core.utils.FailedJobError / UncompletedJobError
            failures.append(f"job {job.job_id} ({exc.__class__.__name__}; log {job.paths.stderr})")
            continue
        if row is not None:
            rows.append(row)
    if failures:
        raise RuntimeError("runs failed: " + "; ".join(failures) + "; run the same command again to resume them")
    return rows


def submit_sweep(configs: list[RunConfig], out: str, sweep_kwargs: dict, options: SlurmOptions, *,
                 cluster: str = "slurm", max_runs: int | None = None) -> list:
    """Submit the runs of ``configs`` that have no row in ``OUT/results.jsonl`` as one job array; return the
    submitit jobs (``job.job_id``, ``job.result()``: the run's row or None) without waiting for them.

    ``sweep_kwargs``: the keyword arguments of :func:`~groupnorm.experiments.launch.runner.run_sweep` (data, launcher,
    processes, threads, channels_last, ...), the same for every task; ``progress`` is turned off (tasks write
    logs, not terminals) and ``max_runs`` applies here, to the submission. ``cluster``: "slurm", or "local" for
    submitit's local executor. Paths are made absolute, since tasks may start in another directory.
    """
    if cluster not in CLUSTERS:
        raise ValueError(f"cluster={cluster!r} is not one of {', '.join(CLUSTERS)}")
    try:
        import submitit
    except ImportError:
        raise RuntimeError("--executor slurm needs submitit: pip install 'groupnorm[cluster]' (or submitit)") \
            from None
    if cluster == "slurm" and shutil.which("sbatch") is None:
        raise RuntimeError("--executor slurm: sbatch is not on this machine's PATH; submit from a Slurm login node "
                           "(--executor submitit-local runs the same job array here)")
    out = os.path.abspath(out)
    kwargs = dict(sweep_kwargs, progress=False, max_runs=None, jobs=1)
    data = kwargs.get("data")
    if data is not None:
        from ..data import as_spec

        spec = as_spec(data)
        if not os.path.isdir(spec.data_dir):
            raise FileNotFoundError(f"data directory not found: {spec.data_dir} (the tasks read it on their nodes: "
                                    f"it must be on a file system they share)")
        kwargs["data"] = dataclasses.replace(spec, data_dir=os.path.abspath(spec.data_dir))
    launcher = kwargs.get("launcher", "emulate")
    done = {r["config_key"] for r in store.read_results(out)}
    todo = [c for c in configs if c.key() not in done]
    if max_runs is not None:
        todo = todo[:max_runs]
    if not todo:
        print(f"[reproduce] all {len(configs)} runs have rows in {out}: nothing to submit", file=sys.stderr,
              flush=True)
        return []
    processes = {kwargs.get("processes") or c.workers for c in todo} if launcher == "torchrun" else {1}
    if len(processes) != 1:
        raise ValueError(f"the runs need different numbers of torchrun ranks ({sorted(processes)}); one job array "
                         f"asks for one node shape: submit them separately (--workers)")
    params = options.parameters(launcher, processes.pop())
    os.makedirs(out, exist_ok=True)
    folder = options.folder or os.path.join(out, "slurm", "%j")
    executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
    executor.update_parameters(**params)
    jobs = executor.map_array(SweepTask(out, kwargs), [c.to_json() for c in todo])
    print(f"[reproduce] submitted {len(jobs)} runs as {'a Slurm job array' if cluster == 'slurm' else 'local jobs'}"
          f" ({jobs[0].job_id.split('_')[0] if jobs else '-'}); logs in {folder}; output {out}",
          file=sys.stderr, flush=True)
    return jobs
