"""Emulated workers (one process) and real workers (torchrun, 2 processes, gloo) give the same numbers."""
import dataclasses
import os

import pytest
import torch

from groupnorm.experiments import store
from groupnorm.experiments.protocol import RunConfig
from groupnorm.experiments.data import load_data
from groupnorm.experiments.launch.runner import launch_torchrun
from groupnorm.experiments.training import train_run
from helpers import SAMPLE_DATA

pytestmark = pytest.mark.slow  # torchrun launches (several processes each)


def assert_same_history(emu: str, real: str, cfg: RunConfig) -> None:
    """The two runs' per-epoch metrics agree (losses to float rounding, error counts exactly)."""
    he = store.read_jsonl(os.path.join(store.run_dir(emu, cfg.key()), "metrics.jsonl"))
    ht = store.read_jsonl(os.path.join(store.run_dir(real, cfg.key()), "metrics.jsonl"))
    assert len(he) == len(ht) == cfg.epochs
    for a, b in zip(he, ht):
        assert a["train_loss"] == pytest.approx(b["train_loss"], rel=1e-5, abs=1e-6)
        assert a["val_loss"] == pytest.approx(b["val_loss"], rel=1e-4, abs=1e-5)
        assert a["train_error"] == b["train_error"]


@pytest.mark.parametrize("norm", ["bn", "gn"])
def test_emulated_and_torchrun_workers_agree(tmp_path, norm):
    # A few steps: 2 workers x 4 images, 48 images -> 6 steps per epoch, 2 epochs (lr schedule, checkpoint, eval).
    cfg = RunConfig(norm=norm, groups=4, batch_per_worker=4, workers=2, epochs=2, train_size=48, val_size=32,
                    widths=(8, 16), blocks=(1, 1), warmup_epochs=0.5, base_lr=2.0)
    emu, real = str(tmp_path / "emulated"), str(tmp_path / "torchrun")
    train, val = load_data(SAMPLE_DATA, cfg.train_size, cfg.val_size)
    row_e = train_run(cfg, train, val, emu, progress=False)
    launch_torchrun(cfg, SAMPLE_DATA, real, processes=2, threads=1)
    (row_t,) = store.read_results(real)
    assert row_t["processes"] == 2 and row_t["launcher"] == "torchrun" and row_e["processes"] == 1
    assert_same_history(emu, real, cfg)
    se = torch.load(os.path.join(store.run_dir(emu, cfg.key()), "model.pt"), weights_only=True)
    st = torch.load(os.path.join(store.run_dir(real, cfg.key()), "model.pt"), weights_only=True)
    assert se.keys() == st.keys()
    for k in se:  # parameters and BN running statistics (rank 0's = emulated worker 0's)
        torch.testing.assert_close(se[k], st[k], rtol=1e-4, atol=1e-5, msg=k)
    if norm == "bn":  # the running statistics really moved and really are per worker
        rv = [k for k in se if k.endswith("running_var")]
        assert rv and any(not torch.allclose(se[k], torch.ones_like(se[k])) for k in rv)
        # a single worker seeing the whole batch would have different BN statistics and hence different numbers
        one = dataclasses.replace(cfg, workers=1, batch_per_worker=8)
        row_1 = train_run(one, train, val, str(tmp_path / "one"), progress=False)
        assert row_1["train_loss"] != pytest.approx(row_e["train_loss"], rel=1e-6)


def test_torchrun_crash_is_relaunched_and_resumes_exactly(tmp_path, monkeypatch):
    """Rank 0 aborts once mid-run (after the first epoch's checkpoint): launch_torchrun relaunches torchrun, the
    ranks resume from the checkpoint, and the numbers equal an emulated run's."""
    cfg = RunConfig(norm="gn", groups=4, batch_per_worker=4, workers=2, epochs=2, train_size=48, val_size=32,
                    widths=(8, 16), blocks=(1, 1), warmup_epochs=0.5, base_lr=2.0)
    emu, real = str(tmp_path / "emulated"), str(tmp_path / "torchrun")
    train, val = load_data(SAMPLE_DATA, cfg.train_size, cfg.val_size)
    train_run(cfg, train, val, emu, progress=False)
    marker = tmp_path / "crashed"
    monkeypatch.setenv("GROUPNORM_FAULT_INJECT", f"{48 + 16}:{marker}")  # 2 steps into the second epoch
    launch_torchrun(cfg, SAMPLE_DATA, real, processes=2, threads=1)
    assert marker.exists()  # the first job did crash
    assert_same_history(emu, real, cfg)


def test_torchrun_crash_that_repeats_fails_the_run(tmp_path, monkeypatch):
    cfg = RunConfig(norm="gn", groups=4, batch_per_worker=4, workers=2, epochs=1, train_size=32, val_size=16,
                    widths=(8, 16), blocks=(1, 1))
    # a marker path that can never be created: every launch aborts
    monkeypatch.setenv("GROUPNORM_FAULT_INJECT", f"8:{tmp_path / 'missing-dir' / 'marker'}")
    with pytest.raises(RuntimeError, match="torchrun exited with status"):
        launch_torchrun(cfg, SAMPLE_DATA, str(tmp_path / "out"), processes=2, threads=1)
