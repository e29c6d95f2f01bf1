"""Several processes on one output directory: every run trained once and written once, none failing because of
another (the lock re-checked against the store, held runs skipped, dead holders' locks taken over)."""
import os
import signal
import subprocess
import sys

import pytest

from groupnorm.experiments import store
from groupnorm.experiments.launch import runner
from groupnorm.experiments.protocol import experiment_configs, get_preset
from helpers import SAMPLE_DATA, results_lines

CONFIGS = experiment_configs("table2", get_preset("smoke"))


def _raw_keys(out):
    """The config keys of every line of results.jsonl, duplicates included."""
    return [r["config_key"] for r in results_lines(out)]


def test_claim_run_claimed_held_done(tmp_path):
    out, key = str(tmp_path), CONFIGS[0].key()
    status, lock = store.claim_run(out, key)
    assert status == "claimed"
    assert store.claim_run(out, key) == ("held", None)  # another open file: as another process
    assert str(os.getpid()) in store.RunLock(store.run_dir(out, key)).holder()
    store.append_result(out, {"config_key": key})
    lock.release()
    assert store.claim_run(out, key) == ("done", None)  # the row is seen once the lock is taken


@pytest.mark.slow  # subprocesses training runs
def test_lock_of_a_killed_holder_is_taken_over(tmp_path):
    out, key = str(tmp_path), CONFIGS[0].key()
    code = ("import sys, time; from groupnorm.experiments import store; "
            f"assert store.RunLock(store.run_dir({out!r}, {key!r})).acquire(); print('held', flush=True); "
            "time.sleep(600)")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    try:
        assert proc.stdout.readline().strip() == "held"
        assert store.claim_run(out, key)[0] == "held"
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    status, lock = store.claim_run(out, key)
    assert status == "claimed"
    lock.release()


@pytest.mark.slow  # subprocesses training runs
def test_a_run_held_by_another_process_is_skipped_not_an_error(tmp_path, capsys):
    out = str(tmp_path)
    held = store.RunLock(store.run_dir(out, CONFIGS[0].key()))
    assert held.acquire()
    try:
        rows = runner.run_sweep(CONFIGS, out, data=SAMPLE_DATA, progress=False)
    finally:
        held.release()
    assert sorted(r["config_key"] for r in rows) == sorted(c.key() for c in CONFIGS[1:])
    assert "1 left to the processes training them" in capsys.readouterr().err
    rows = runner.run_sweep(CONFIGS, out, data=SAMPLE_DATA, progress=False)  # the holder is gone: trained now
    assert sorted(_raw_keys(out)) == sorted(c.key() for c in CONFIGS)


@pytest.mark.slow  # subprocesses training runs
def test_store_checked_again_after_taking_the_lock(tmp_path, monkeypatch):
    """A process whose view of the store is stale (another finished a run since it read results.jsonl) does not
    train that run again."""
    out = str(tmp_path)
    runner.run_sweep(CONFIGS, out, data=SAMPLE_DATA, progress=False, max_runs=1)
    calls = []
    real = store.read_results

    def stale_first(o):
        calls.append(o)
        return [] if len(calls) == 1 else real(o)

    monkeypatch.setattr(store, "read_results", stale_first)
    for jobs in (1, 2):
        runner.run_sweep(CONFIGS, out, data=SAMPLE_DATA, progress=False, jobs=jobs)
        calls.clear()
    keys = _raw_keys(out)
    assert sorted(keys) == sorted(c.key() for c in CONFIGS) and len(keys) == len(set(keys))


@pytest.mark.slow  # subprocesses training runs
def test_concurrent_reproduce_processes_on_one_out_write_each_row_once(tmp_path):
    out = str(tmp_path / "shared")
    cmd = [sys.executable, "-m", "groupnorm", "reproduce", "--experiment", "table2", "--preset", "smoke",
           "--data-dir", SAMPLE_DATA, "--out", out, "--no-progress", "--no-report"]
    procs = [subprocess.Popen(cmd + ["--jobs", str(j)], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True) for j in (1, 1, 2)]
    errs = [p.communicate(timeout=600)[1] for p in procs]
    for p, err in zip(procs, errs):
        assert p.returncode == 0, err
        assert "Error" not in err, err
    keys = _raw_keys(out)
    assert sorted(keys) == sorted(c.key() for c in CONFIGS), keys  # each run exactly once
