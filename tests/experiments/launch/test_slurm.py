"""--executor slurm: the sweep as a job array through submitit. Run here through submitit's local executor (with
a local `groupnorm reproduce` on the same --out at the same time), and submitted to a fake `sbatch` to check what
Slurm would be asked for."""
import os
import pickle
import stat
import subprocess
import sys

import pytest

from groupnorm.experiments import store
from groupnorm.experiments.protocol import experiment_configs, get_preset
from groupnorm.experiments.launch.slurm import SlurmOptions, SweepTask, submit_sweep
from helpers import SAMPLE_DATA, results_lines, smoke_args

CONFIGS = experiment_configs("table2", get_preset("smoke"))


def test_options_become_submitit_parameters():
    p = SlurmOptions(partition="gpu", account="proj", time_min=600, cpus_per_task=10, mem_gb=64,
                     array_parallelism=4).parameters("torchrun", 8)
    assert p == dict(name="groupnorm", timeout_min=600, nodes=1, tasks_per_node=1, gpus_per_node=8,
                     cpus_per_task=10, mem_gb=64, slurm_partition="gpu", slurm_account="proj",
                     slurm_array_parallelism=4)
    assert SlurmOptions().parameters("emulate", 1)["gpus_per_node"] == 1
    assert SlurmOptions(gpus_per_node=0).parameters("torchrun", 8)["gpus_per_node"] == 0
    with pytest.raises(ValueError, match="gpus_per_node=4: a torchrun task runs 8 ranks"):
        SlurmOptions(gpus_per_node=4).parameters("torchrun", 8)
    with pytest.raises(ValueError, match="gpus_per_node=2: an emulate task trains on one device"):
        SlurmOptions(gpus_per_node=2).parameters("emulate", 1)
    with pytest.raises(ValueError, match="time_min=0"):
        SlurmOptions(time_min=0).parameters("emulate", 1)


def test_a_task_skips_a_run_another_process_holds(tmp_path):
    out = str(tmp_path / "out")
    cfg = CONFIGS[0]
    task = pickle.loads(pickle.dumps(SweepTask(out, dict(data=SAMPLE_DATA, progress=False, jobs=1))))
    with store.RunLock(store.run_dir(out, cfg.key())):
        assert task(cfg.to_json()) is None
    assert results_lines(out) == []
    assert task.checkpoint(cfg.to_json()).args == (cfg.to_json(),)  # requeued with the same run


@pytest.mark.slow
def test_local_executor_with_a_concurrent_local_sweep_trains_each_run_once(tmp_path):
    out = str(tmp_path / "out")
    env = dict(os.environ, OMP_NUM_THREADS="1")
    cmd = [sys.executable, "-m", "groupnorm.cli", *smoke_args(out, "--no-report", experiment="table2")]
    local = subprocess.Popen(cmd, env=env, stderr=subprocess.PIPE, text=True)
    try:
        from groupnorm.cli import main

        assert main(smoke_args(out, "--executor", "submitit-local", "--slurm-gpus-per-node", "0", "--slurm-time",
                               "30", "--no-report", experiment="table2")) == 0
    finally:
        _, err = local.communicate(timeout=600)
    assert local.returncode == 0, err
    rows = results_lines(out)
    assert sorted(r["config_key"] for r in rows) == sorted(c.key() for c in CONFIGS)  # each once, none twice
    assert all(r["epochs_done"] == r["epochs"] for r in rows)
    logs = list((tmp_path / "out" / "slurm").rglob("*_log.err"))
    assert len(logs) >= 1  # submitit's own folder under OUT/slurm
    # a second submission finds nothing left to train and submits nothing
    jobs = submit_sweep(CONFIGS, out, dict(data=SAMPLE_DATA), SlurmOptions(gpus_per_node=0), cluster="local")
    assert jobs == [] and len(results_lines(out)) == len(CONFIGS)


def _fake_slurm(bin_dir, record):
    """`sbatch` that keeps the script it is given and answers like Slurm; `srun`, which submitit looks for."""
    bin_dir.mkdir()
    (bin_dir / "sbatch").write_text(f"#!/bin/sh\ncp \"$1\" {record}\necho 'Submitted batch job 4242'\n")
    (bin_dir / "srun").write_text("#!/bin/sh\nexit 1\n")
    for f in ("sbatch", "srun"):
        (bin_dir / f).chmod(stat.S_IRWXU)


def test_slurm_submission_asks_for_what_the_flags_say(tmp_path, monkeypatch, capsys):
    from groupnorm.cli import main

    record = tmp_path / "submitted.sh"
    _fake_slurm(tmp_path / "bin", record)
    monkeypatch.setenv("PATH", f"{tmp_path / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = tmp_path / "out"
    assert main(smoke_args(out, "--executor", "slurm", "--launcher", "torchrun", "--slurm-partition", "gpu",
                           "--slurm-account", "proj", "--slurm-time", "90", "--slurm-cpus-per-task", "6",
                           "--slurm-mem", "32", "--slurm-array-parallelism", "3", experiment="table2")) == 0
    script = record.read_text()
    for line in ("#SBATCH --partition=gpu", "#SBATCH --account=proj", "#SBATCH --time=90",
                 "#SBATCH --gpus-per-node=2", "#SBATCH --ntasks-per-node=1", "#SBATCH --cpus-per-task=6",
                 "#SBATCH --mem=32GB", f"#SBATCH --array=0-{len(CONFIGS) - 1}%3"):
        assert line in script, (line, script)
    err = capsys.readouterr().err
    assert f"submitted {len(CONFIGS)} runs as a Slurm job array (4242)" in err and "groupnorm report" in err
    assert results_lines(str(out)) == []  # nothing trained by the submitting process


def test_slurm_without_sbatch_is_a_clear_error(tmp_path, monkeypatch, capsys):
    from groupnorm.cli import main

    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch there
    assert main(smoke_args(tmp_path / "out", "--executor", "slurm", experiment="table2")) == 2
    assert "sbatch is not on this machine's PATH" in capsys.readouterr().err


def test_submission_errors_name_the_bad_value(tmp_path, capsys):
    with pytest.raises(FileNotFoundError, match="data directory not found: /nonexistent"):
        submit_sweep(CONFIGS, str(tmp_path), dict(data="/nonexistent"), SlurmOptions(), cluster="local")
    with pytest.raises(ValueError, match="cluster='pbs'"):
        submit_sweep(CONFIGS, str(tmp_path), dict(data=SAMPLE_DATA), SlurmOptions(), cluster="pbs")
