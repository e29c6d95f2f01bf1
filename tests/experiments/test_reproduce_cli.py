"""The smoke preset end to end through the CLI: rows, resume after SIGKILL, torn lines, report and plots."""
import json
import os
import re
import signal
import subprocess
import sys

import pytest

from groupnorm.cli import main
from groupnorm.experiments import store
from groupnorm.experiments.protocol import experiment_configs, get_preset
from helpers import SAMPLE_DATA, results_lines, smoke_args

pytestmark = pytest.mark.slow  # whole smoke reproductions, killed and resumed

N_SMOKE = len(experiment_configs("all", get_preset("smoke")))
_rows = results_lines

# Runs `groupnorm reproduce ARGS` and SIGKILLs itself right after it has saved an epoch checkpoint while
# results.jsonl holds at least MIN_ROWS rows: a kill at a chosen moment, not one raced by polling from outside.
KILL_AFTER_CHECKPOINT = """
import os, signal, sys
from groupnorm.cli import main
from groupnorm.experiments import store
min_rows, out, args = int(sys.argv[1]), sys.argv[2], sys.argv[3:]
save = store.save_checkpoint
def save_then_kill(path, state):
    save(path, state)
    if len(store.read_results(out)) >= min_rows:
        os.kill(os.getpid(), signal.SIGKILL)
store.save_checkpoint = save_then_kill
sys.exit(main(args))
"""


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    """One uninterrupted smoke run of every experiment."""
    out = str(tmp_path_factory.mktemp("ref"))
    assert main(smoke_args(out)) == 0
    return out


def test_smoke_writes_one_complete_row_per_run(reference_run):
    rows = _rows(reference_run)
    assert len(rows) == N_SMOKE == len({r["config_key"] for r in rows})
    for r in rows:
        for k in ("experiment", "norm", "groups", "group_size", "batch_per_worker", "workers", "seed", "epochs",
                  "val_error", "train_error", "wall_s", "config_key", "images_per_s"):
            assert k in r, k
        assert 0.0 <= r["val_error"] <= 100.0 and r["epochs_done"] == r["epochs"] == 2 and r["wall_s"] > 0
        metrics = store.read_jsonl(os.path.join(reference_run, "runs", r["config_key"], "metrics.jsonl"))
        assert [m["epoch"] for m in metrics] == [1, 2] and metrics[-1]["val_error"] == r["val_error"]
        assert not os.path.exists(os.path.join(reference_run, "runs", r["config_key"], "checkpoint.pt"))


def test_rerun_skips_finished_runs(reference_run, capsys):
    before = open(os.path.join(reference_run, "results.jsonl")).read()
    assert main(smoke_args(reference_run, "--no-report")) == 0  # no wall-time bound: the message says it
    assert open(os.path.join(reference_run, "results.jsonl")).read() == before
    assert f"{N_SMOKE} already finished, 0 to train" in capsys.readouterr().err


def test_report_holds_the_numbers_of_results_jsonl(reference_run):
    assert main(["report", reference_run]) == 0
    text = open(os.path.join(reference_run, "report.md")).read()
    for name in ("fig1_batch_size.png", "fig4_curves_norms.png", "fig5_curves_batch.png", "table3_groups.png"):
        path = os.path.join(reference_run, name)
        assert os.path.getsize(path) > 5000 and open(path, "rb").read(8) == b"\x89PNG\r\n\x1a\n"
        assert f"({name})" in text
    assert "## Table 1" in text and "## Table 2" in text and "## Table 3" in text
    rows = _rows(reference_run)
    bn2 = [r for r in rows if r["norm"] == "bn" and r["batch_per_worker"] == 2][0]
    gn8 = [r for r in rows if r["norm"] == "gn" and r["batch_per_worker"] == 8 and r["groups"] == 32][0]
    t2 = text.split("## Table 2")[1].split("##")[0]
    assert re.search(r"\| BN \(ours\) \| [^|]+ \| " + re.escape(f"{bn2['val_error']:.2f}") + r" \|", t2)
    assert re.search(r"\| GN \(ours\) \| " + re.escape(f"{gn8['val_error']:.2f}") + r" \|", t2)
    assert "| BN (paper) | 24.8 | 34.7 |" in t2
    for r in rows:  # every run is listed with its error
        assert f"| {r['val_error']:.2f} | {r['train_error']:.2f} |" in text


def test_kill_at_any_moment_then_resume_gives_the_same_rows(reference_run, tmp_path):
    out = str(tmp_path / "killed")
    # Killed twice: after the first checkpoint (no row yet), then, resumed, after a checkpoint once 3 rows exist.
    for min_rows in (0, 3):
        proc = subprocess.run([sys.executable, "-c", KILL_AFTER_CHECKPOINT, str(min_rows), out,
                               *smoke_args(out, "--no-report")], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=600)
        assert proc.returncode == -signal.SIGKILL, proc.stderr[-2000:]
        runs = os.path.join(out, "runs")
        assert any(os.path.exists(os.path.join(runs, d, "checkpoint.pt")) for d in os.listdir(runs))
        assert len(store.read_results(out)) == min_rows
    partial = store.read_results(out)
    assert len(partial) < N_SMOKE  # really interrupted
    with open(os.path.join(out, "results.jsonl"), "ab") as f:  # and a torn last line, as a kill mid-write leaves
        f.write(b'{"config_key": "torn", "val_err')
    assert main(smoke_args(out, "--no-report")) == 0
    rows = store.read_results(out)
    assert len(rows) == N_SMOKE == len({r["config_key"] for r in rows})
    ref = {r["config_key"]: r for r in _rows(reference_run)}
    for r in rows:  # resumed from epoch checkpoints: exactly the numbers of the uninterrupted run
        assert r["val_error"] == ref[r["config_key"]]["val_error"]
        assert r["train_loss"] == pytest.approx(ref[r["config_key"]]["train_loss"], rel=1e-6)
    lines = open(os.path.join(out, "results.jsonl"), "rb").read().splitlines()
    assert sum(1 for ln in lines if ln.startswith(b'{"config_key": "torn"')) == 1  # torn line kept apart


def test_bad_arguments_give_clear_errors(tmp_path, capsys):
    assert main(["reproduce", "--preset", "smoke", "--data-dir", str(tmp_path), "--out", str(tmp_path / "o"),
                 "--no-progress"]) == 2
    assert "holds no data set the harness knows: expected MNIST-format train-images-idx3-ubyte" in capsys.readouterr().err
    assert main(["report", str(tmp_path / "missing")]) == 2
    with pytest.raises(SystemExit):
        main(["reproduce", "--preset", "huge"])
    with pytest.raises(SystemExit):
        main(["reproduce", "--seeds", "0"])


def test_bn_batch_statistics_diagnostic(reference_run):
    import torch

    from groupnorm.experiments.protocol import RunConfig
    from groupnorm.experiments.data import load_data, to_input
    from groupnorm.experiments.report.diagnostics import between_image_share
    from groupnorm.experiments.training import build_run_model

    bn = [r for r in _rows(reference_run) if r["norm"] == "bn"][0]
    layers = between_image_share(reference_run, bn["config_key"], SAMPLE_DATA, images=64)
    assert len(layers) == 6 and all(0.0 <= rho <= 1.0 for *_, rho in layers)  # stem, 2 + 2 block norms, shortcut
    rdir = os.path.join(reference_run, "runs", bn["config_key"])
    cfg = RunConfig.from_json({k: v for k, v in json.load(open(os.path.join(rdir, "config.json"))).items()
                               if k != "key"})
    model = build_run_model(cfg)
    model.load_state_dict(torch.load(os.path.join(rdir, "model.pt"), weights_only=True))
    _, val = load_data(SAMPLE_DATA, cfg.train_size, 64)
    with torch.no_grad():
        x = model.stem[0](to_input(val.images)).double()
    rho = (x.mean(dim=(2, 3)).var(dim=0) / x.var(dim=(0, 2, 3))).mean().item()
    assert layers[0][:3] == (8, 14, 14) and layers[0][3] == pytest.approx(rho, rel=1e-6)


@pytest.mark.parametrize("jobs", ["1", "2"])
def test_channels_last_runs_match_contiguous(reference_run, tmp_path, jobs):
    """``--channels-last`` trains the same runs (same keys) in channels-last memory, in process (jobs 1) and in
    ``run_one`` subprocesses (jobs 2); their numbers equal the contiguous ones up to float rounding."""
    out = str(tmp_path / "cl")
    assert main(smoke_args(out, "--jobs", jobs, "--channels-last", "--no-report", experiment="table1")) == 0
    rows = {r["config_key"]: r for r in _rows(out)}
    ref = {r["config_key"]: r for r in _rows(reference_run)}
    assert rows and set(rows) <= set(ref)
    for key, r in rows.items():
        assert r["memory_format"] == "channels_last" and ref[key]["memory_format"] == "contiguous"
        assert r["train_loss"] == pytest.approx(ref[key]["train_loss"], rel=1e-3)
        assert r["val_loss"] == pytest.approx(ref[key]["val_loss"], rel=1e-3)
