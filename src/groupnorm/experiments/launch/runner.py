"""Run a sweep: skip finished runs, resume interrupted ones, emulate workers or launch ``torchrun`` per run.

Threads: each training process uses ``threads`` intra-op threads (default 1). On a small shared CPU, several
single-threaded runs side by side (``jobs``) are much faster than one multi-threaded run: these convolutions are
too small to parallelize well, and OpenMP threads that spin-wait for a busy core slow a run down many times.

Progress: an overall bar over all images still to train (with ETA) and, below it, one bar per running run.
"""
from __future__ import annotations

import os
import socket
import subprocess
import sys
import time

from .. import store
from ..protocol import RunConfig
from ..data import DataSpec, as_spec, load_full, load_run_data
from ..training.devices import check_amp, resolve_device
from ..training import memory_format_name, train_run


def _write_launch(cfg: RunConfig, out: str) -> str:
    path = os.path.join(store.run_dir(out, cfg.key()), "launch.json")
    store.atomic_write_json(path, cfg.to_json())
    return path


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


TORCHRUN_RELAUNCHES = 1


def launch_torchrun(cfg: RunConfig, data: DataSpec | str, out: str, processes: int, threads: int | None = None,
                    channels_last: bool = False, lock: store.RunLock | None = None, device: str = "cpu",
                    amp: str = "none") -> None:
    """Train ``cfg`` as ``processes`` DDP ranks under ``torchrun`` (on CPU with gloo, or on CUDA with nccl, rank
    r on ``cuda:LOCAL_RANK``; ``device`` "cpu", "cuda" or "auto"); rank 0 writes the row.

    If torchrun fails (a rank died), it is launched once more (``TORCHRUN_RELAUNCHES``) on a fresh port: the
    ranks resume from the run's last checkpoint, which gives the same numbers as an uninterrupted run, so a
    rank that dies once (e.g. an abort inside torch) costs an epoch, not the run; a failure that repeats still
    raises. torchrun's own ``--max-restarts`` is not used: with a static ``--master-addr`` rendezvous its
    restarted ranks do not reconnect.

    If ``lock`` (the run's, held by this process) is given, torchrun inherits it, so that the run stays locked
    while torchrun lives even if this process dies, and rank 0 does not take it again.
    """
    cfg_path = _write_launch(cfg, out)
    env = dict(os.environ)
    env["OMP_NUM_THREADS"] = str(threads or max(1, (os.cpu_count() or 1) // processes))
    for attempt in range(1 + TORCHRUN_RELAUNCHES):
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nnodes=1", f"--nproc-per-node={processes}",
               "--master-addr=127.0.0.1", f"--master-port={_free_port()}",
               "-m", "groupnorm.experiments.launch.run_one", "--config", cfg_path, *as_spec(data).cli_args(), "--out", out]
        cmd += ["--device", device, "--amp", amp] + (["--channels-last"] if channels_last else [])
        if lock is not None:
            cmd.append("--lock-held")
        proc = subprocess.run(cmd, env=env, pass_fds=() if lock is None else (lock.fd,))
        if proc.returncode == 0:
            return
        if attempt < TORCHRUN_RELAUNCHES:
            print(f"torchrun exited with status {proc.returncode} for run {cfg.key()}: launching it again "
                  f"(resumes from the last checkpoint)", file=sys.stderr, flush=True)
    raise RuntimeError(f"torchrun exited with status {proc.returncode} for run {cfg.key()} ({cfg.norm}, "
                       f"b={cfg.batch_per_worker})")


class Claims:
    """The runs of ``todo`` that this process may train, one at a time, each with its lock held.

    Iterating yields ``(cfg, lock)``: the caller trains ``cfg`` and then calls ``lock.release()``. A run whose
    lock another process holds is skipped and tried again after the first pass (its holder may have died:
    the lock is then free and the run is taken over, resuming from its checkpoint); one still held then is left
    to its holder (``left``). A run found finished once its lock is taken is not trained again (``others``).
    ``on_skip(cfg)`` is called for each run this process will not train.
    """

    def __init__(self, todo: list[RunConfig], out: str, on_skip=None):
        self.todo, self.out, self.on_skip = list(todo), out, on_skip
        self.others: list[RunConfig] = []
        self.left: list[RunConfig] = []

    def __iter__(self):
        deferred = []
        for second in (False, True):
            for cfg in (deferred if second else self.todo):
                status, lock = store.claim_run(self.out, cfg.key())
                if status == "claimed":
                    yield cfg, lock
                    continue
                if status == "held" and not second:
                    deferred.append(cfg)
                    continue
                (self.left if status == "held" else self.others).append(cfg)
                if self.on_skip is not None:
                    self.on_skip(cfg)

    def summary(self) -> str:
        parts = []
        if self.others:
            parts.append(f"{len(self.others)} finished by other processes meanwhile")
        if self.left:
            parts.append(f"{len(self.left)} left to the processes training them ("
                         + ", ".join(f"{c.label}: {store.RunLock(store.run_dir(self.out, c.key())).holder()}"
                                     for c in self.left) + ")")
        return "; ".join(parts)


def run_sweep(configs: list[RunConfig], out: str, *, data: DataSpec | str | None = None, launcher: str = "emulate",
              processes: int | None = None, progress: bool = True, max_runs: int | None = None, jobs: int = 1,
              threads: int = 1, channels_last: bool = False, device: str = "auto", amp: str = "none") -> list[dict]:
    """Train every config of ``configs`` that has no row in ``OUT/results.jsonl`` yet; return all rows.

    Args:
        data: the data set (a :class:`~groupnorm.experiments.data.DataSpec`, or a directory whose format is
            detected; default ``$GROUPNORM_DATA`` or Debian's Fashion-MNIST).
        launcher: "emulate" (W workers in one process) or "torchrun" (``processes`` ranks per run, default W).
        jobs: runs trained at the same time (emulate only), each in its own process.
        threads: intra-op threads per training process.
        channels_last: models and batches in channels-last memory (faster convolutions on CPUs; the numbers
            differ only by float rounding, so it is not part of a run's identity).
        max_runs: stop after this many newly finished runs (for tests and partial sessions).
        device: "auto" (CUDA if available), "cpu" or "cuda"; amp: "none" or "bf16" (autocast). How the runs
            execute, recorded in their rows, not part of their identity (:mod:`groupnorm.experiments.training.devices`).
    """
    if launcher not in ("emulate", "torchrun"):
        raise ValueError(f"launcher={launcher!r} must be 'emulate' or 'torchrun'")
    if jobs < 1 or threads < 1:
        raise ValueError(f"jobs={jobs} and threads={threads} must be at least 1")
    data = as_spec(data)
    device = resolve_device(device).type  # "cpu" or "cuda" (each process then takes its own GPU)
    check_amp(amp)
    os.makedirs(out, exist_ok=True)
    todo, available, n_done = _pending(configs, out, data, max_runs, jobs)

    def remaining_images(c: RunConfig) -> int:  # counting epochs already checkpointed as done
        ep = len(store.read_jsonl(os.path.join(store.run_dir(out, c.key()), "metrics.jsonl")))
        return max(0, c.epochs - ep) * c.images_per_epoch(available)

    print(f"[reproduce] {len(configs)} runs, {n_done} already finished, {len(todo)} to train; launcher={launcher}, "
          f"jobs={jobs}, threads={threads}, device={device}, amp={amp}, memory format="
          f"{memory_format_name(channels_last)}; output {out}", file=sys.stderr, flush=True)
    from tqdm.auto import tqdm

    overall = tqdm(total=sum(remaining_images(c) for c in todo), unit="img", unit_scale=True, position=0,
                   desc="all runs", dynamic_ncols=True, disable=not progress, smoothing=0.05)
    t0 = time.perf_counter()

    def on_skip(c: RunConfig) -> None:  # another process trains it: not in this process's total
        overall.total = max(overall.n, overall.total - remaining_images(c))
        overall.refresh()

    claims = Claims(todo, out, on_skip=on_skip)
    exec_args = ["--device", device, "--amp", amp] + (["--channels-last"] if channels_last else [])
    try:
        if launcher == "torchrun":
            finished = _train_with_torchrun(claims, len(todo), data, out, overall, remaining_images, processes,
                                            threads, channels_last, device, amp)
        elif jobs == 1:
            finished = _train_here(claims, len(todo), data, out, overall, progress, threads, channels_last, device,
                                   amp)
        else:
            finished = _run_parallel(iter(claims), out, data, jobs, threads, overall, progress, exec_args, available)
    finally:
        overall.close()
    note = claims.summary()
    print(f"[reproduce] trained {finished} runs in {time.perf_counter() - t0:.0f} s" + (f"; {note}" if note else ""),
          file=sys.stderr, flush=True)
    return store.read_results(out)


def _pending(configs: list[RunConfig], out: str, data: DataSpec, max_runs: int | None,
             jobs: int) -> tuple[list[RunConfig], int, int]:
    """(the configs without a row in OUT, at most ``max_runs`` of them, the longest first when ``jobs`` > 1;
    the images of the data set's training split; how many configs have a row). Reads the data set when there
    is anything to train, so a bad directory or a ``classes_per_worker`` beyond its classes fails first."""
    done = {r["config_key"] for r in store.read_results(out)}
    todo = [c for c in configs if c.key() not in done]
    n_done = len(configs) - len(todo)
    if max_runs is not None:
        todo = todo[:max_runs]
    available = 0
    if todo:
        full_train = load_full(data)[0]
        available = len(full_train)
        too_many = [c for c in todo if (c.classes_per_worker or 0) > full_train.info.num_classes]
        if too_many:
            raise ValueError(f"classes_per_worker={too_many[0].classes_per_worker} ({too_many[0].label}) is more "
                             f"than the {full_train.info.num_classes} classes of the data set in {data.data_dir}")
    if jobs > 1:  # the longest runs (most optimizer steps) of each seed first, so no job idles at its end
        todo.sort(key=lambda c: (c.seed, -c.epochs * (c.images_per_epoch(available) // c.global_batch)))
    return todo, available, n_done


def _train_with_torchrun(claims, n_todo, data, out, overall, remaining_images, processes, threads, channels_last,
                         device, amp) -> int:
    """Each claimed run as a ``torchrun`` job (:func:`launch_torchrun`), one after the other; returns how many
    finished."""
    finished = 0
    for i, (cfg, lock) in enumerate(claims):
        try:
            overall.set_postfix_str(f"run {i + 1}/{n_todo}")
            before = remaining_images(cfg)
            launch_torchrun(cfg, data, out, processes or cfg.workers, threads, channels_last, lock, device, amp)
        finally:
            lock.release()
        overall.update(before)
        finished += 1
    return finished


def _train_here(claims, n_todo, data, out, overall, progress, threads, channels_last, device, amp) -> int:
    """Each claimed run in this process (emulated workers), one after the other; returns how many finished."""
    import torch

    torch.set_num_threads(threads)
    finished = 0
    for i, (cfg, lock) in enumerate(claims):
        try:
            overall.set_postfix_str(f"run {i + 1}/{n_todo}")
            train, val, pool = load_run_data(data, cfg)
            train_run(cfg, train, val, out, progress=progress, on_images=overall.update,
                      channels_last=channels_last, lock_held=True, device=resolve_device(device), amp=amp,
                      pool=pool)
        finally:
            lock.release()
        finished += 1
    return finished


def _run_parallel(claims, out, data, jobs, threads, overall, progress, exec_args, available) -> int:
    """Up to ``jobs`` runs at a time, each a ``run_one`` subprocess reporting its progress on stdout
    (``exec_args``: its ``--device``, ``--amp``, ``--channels-last`` arguments).

    ``claims`` yields ``(cfg, lock)`` (see :class:`Claims`): this process holds each run's lock while its
    subprocess trains it (the subprocess inherits the lock: the run stays locked while it lives, even if this
    process dies) and releases its own copy once the subprocess has exited."""
    import queue as queue_mod
    import threading

    from tqdm.auto import tqdm

    events: queue_mod.Queue = queue_mod.Queue()

    def reader(key, proc):
        for line in proc.stdout:
            if line.startswith("progress "):
                events.put((key, int(line.split()[1])))
        events.put((key, None))

    exhausted = False
    running: dict = {}  # key -> (proc, bar, slot, cfg, lock)
    free = list(range(1, jobs + 1))
    finished, failures = 0, []
    try:
        while not exhausted or running:
            while not exhausted and len(running) < jobs:
                nxt = next(claims, None)
                if nxt is None:
                    exhausted = True
                    break
                cfg, lock = nxt
                key = cfg.key()
                try:
                    cfg_path = _write_launch(cfg, out)
                    env = dict(os.environ, OMP_NUM_THREADS=str(threads))
                    env.pop("WORLD_SIZE", None)
                    proc = subprocess.Popen([sys.executable, "-m", "groupnorm.experiments.launch.run_one", "--config",
                                             cfg_path, *data.cli_args(), "--out", out, "--threads",
                                             str(threads), "--progress-stdout", "--lock-held", *exec_args],
                                            stdout=subprocess.PIPE, text=True, env=env, pass_fds=(lock.fd,))
                except BaseException:
                    lock.release()
                    raise
                slot = free.pop(0)
                total = cfg.images_per_run(available)
                bar = tqdm(total=total, unit="img", unit_scale=True, leave=False, position=slot, desc=cfg.label,
                           dynamic_ncols=True, disable=not progress)
                running[key] = (proc, bar, slot, cfg, lock)
                threading.Thread(target=reader, args=(key, proc), daemon=True).start()
            if not running:
                break
            key, n = events.get()
            proc, bar, slot, cfg, lock = running[key]
            if n is not None:
                bar.update(n)
                overall.update(n)
                continue
            rc = proc.wait()
            lock.release()
            bar.close()
            free.append(slot)
            free.sort()
            del running[key]
            if rc != 0:
                failures.append(f"{cfg.label} (exit status {rc})")
            else:
                finished += 1
    finally:
        for proc, bar, _, _, lock in running.values():
            proc.terminate()
            proc.wait()
            lock.release()
            bar.close()
    if failures:
        raise RuntimeError("runs failed: " + "; ".join(failures) + "; re-run the same command to resume")
    return finished
