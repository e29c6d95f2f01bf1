"""The results store: durable appends, torn lines, atomic checkpoints, the per-run lock, config identity."""
import dataclasses
import json
import os

import pytest
import torch

from groupnorm.experiments import store
from groupnorm.experiments.protocol import RunConfig, experiment_configs, get_preset
from groupnorm.experiments.training import lr_at


def test_append_after_a_torn_line_keeps_every_complete_row(tmp_path):
    out = str(tmp_path)
    store.append_result(out, {"config_key": "a", "val_error": 1.0})
    with open(tmp_path / "results.jsonl", "ab") as f:
        f.write(b'{"config_key": "b", "val_er')  # a writer killed mid-line
    store.append_result(out, {"config_key": "c", "val_error": 3.0})
    store.append_result(out, {"config_key": "a", "val_error": 9.0})  # a duplicate key: the first row wins
    rows = store.read_results(out)
    assert [(r["config_key"], r["val_error"]) for r in rows] == [("a", 1.0), ("c", 3.0)]
    assert open(tmp_path / "results.jsonl").read().count("\n") == 4


def test_checkpoint_roundtrip_weights_only_and_no_temp_files(tmp_path):
    path = str(tmp_path / "run" / "checkpoint.pt")
    state = {"model": {"w": torch.arange(3.0)}, "epoch": 2, "history": [{"val_error": 1.5}], "config_key": "k"}
    store.save_checkpoint(path, state)
    store.save_checkpoint(path, dict(state, epoch=3))
    got = store.load_checkpoint(path)
    assert got["epoch"] == 3 and torch.equal(got["model"]["w"], torch.arange(3.0))
    assert os.listdir(tmp_path / "run") == ["checkpoint.pt"]
    assert store.load_checkpoint(str(tmp_path / "none.pt")) is None
    (tmp_path / "run" / "bad.pt").write_bytes(b"not a checkpoint")
    with pytest.raises(RuntimeError, match="cannot load checkpoint .*bad.pt"):
        store.load_checkpoint(str(tmp_path / "run" / "bad.pt"))
    store.write_jsonl(str(tmp_path / "m.jsonl"), [{"epoch": 1}, {"epoch": 2}])
    assert [r["epoch"] for r in store.read_jsonl(str(tmp_path / "m.jsonl"))] == [1, 2]


def test_run_lock_is_exclusive_and_released(tmp_path):
    with store.RunLock(str(tmp_path)):
        with pytest.raises(RuntimeError, match="being trained by another process"):
            with store.RunLock(str(tmp_path)):
                pass
    with store.RunLock(str(tmp_path)):
        pass


def test_config_identity_and_experiment_plans():
    base = RunConfig()
    assert base.key() == dataclasses.replace(base, experiment="other").key()
    assert RunConfig(norm="ln").key() == RunConfig(norm="gn", groups=1).key()
    assert RunConfig(norm="in").key() == RunConfig(norm="gn", groups=None, group_size=1).key()
    assert RunConfig(norm="bn", groups=8).key() == RunConfig(norm="bn", groups=32).key()
    assert base.key() != dataclasses.replace(base, seed=1).key()
    assert RunConfig(workers=8, batch_per_worker=2, base_lr=0.8).lr == pytest.approx(0.05)
    full = get_preset("full")
    cfgs = experiment_configs("all", full, seeds=1)
    # 24 settings of Tables 1-3; noniid adds 3 norms x 3 class counts; ghost (4 workers x 8 images) 4 BN norm
    # batches, SyncBN and GN; the lr sweep 2 norms x 6 rates and 14 variants (LN, IN, GN+WS, G and K of Table 3
    # but GN G=32 itself, LN and IN) x 5 rates; the control BN at b=32 and b=2; Figure 3's 3 VGGs
    assert len(cfgs) == len({c.key() for c in cfgs}) == 24 + 9 + 6 + 12 + 14 * 5 + 2 + 3
    tables = [c for c in cfgs if c.experiment in ("table1", "table2", "table3")]
    assert len(tables) == 24 and all(c.norm_batch is None and c.classes_per_worker is None for c in tables)
    assert all(c.workers == 1 and min(c.widths) >= 64 for c in tables)  # G=32: >= 2 channels per group
    assert [c.seed for c in experiment_configs("all", full)].count(2) == 54 - 10 - 3  # lr sweep (2), VGG (1)
    sweep = [c for c in cfgs if c.experiment == "lrsweep"]
    assert all(c.holdout for c in sweep) and not any(c.holdout for c in cfgs if c.experiment != "lrsweep")
    assert sorted({c.base_lr for c in sweep if c.variant in ("BN", "GN G=32")}) == sorted(full.lrsweep_lrs)
    assert len({c.variant for c in sweep}) == 16 and len({c.key() for c in sweep}) == 2 * 6 + 14 * 5
    # every variant of Tables 1 and 3 is swept (so its lr is its own argmin), at b=32 like the tables
    tables_variants = {c.variant for c in tables if c.experiment != "table2"}
    assert tables_variants <= {c.variant for c in sweep} and {c.batch_per_worker for c in sweep} == {32}
    control = [c for c in cfgs if c.experiment == "control"]
    assert sorted((c.batch_per_worker, c.epochs) for c in control) == [(2, 32), (32, 32)]
    quick = experiment_configs("all", get_preset("quick"))
    # Table 2's ends and noniid (BN, GN) at 1 and 10 classes per worker, 3 seeds; every quick run is a full run
    assert len(quick) == 3 * (4 + 4) and {c.key() for c in quick} <= {c.key() for c in experiment_configs("all", full)}
    t2 = experiment_configs("table2", full, seeds=2)
    assert sorted({(c.norm, c.batch_per_worker) for c in t2}) == sorted(
        (n, b) for n in ("bn", "gn") for b in (32, 16, 8, 4, 2))
    assert [c.seed for c in t2] == [0] * 10 + [1] * 10
    with pytest.raises(ValueError, match="unknown experiment 'table9'"):
        experiment_configs("table9", full)
    with pytest.raises(ValueError, match="smaller than one global batch"):
        RunConfig(train_size=100, workers=8, batch_per_worker=32).validate()


def test_schedule_warmup_then_cosine_or_step():
    cfg = RunConfig(workers=4, batch_per_worker=32, base_lr=0.8, warmup_epochs=1.0)
    steps, total = 10, 40
    lrs = [lr_at(cfg, s, total, steps) for s in range(total)]
    assert lrs[0] == pytest.approx(cfg.lr / 10) and lrs[9] == pytest.approx(cfg.lr)
    assert all(a >= b for a, b in zip(lrs[10:], lrs[11:])) and lrs[-1] < 0.01 * cfg.lr
    step = dataclasses.replace(cfg, schedule="step")
    assert lr_at(step, 13, total, steps) == pytest.approx(cfg.lr * 0.1)
    assert lr_at(step, 37, total, steps) == pytest.approx(cfg.lr * 0.001)
    assert json.loads(json.dumps(cfg.to_json())) == cfg.to_json()
