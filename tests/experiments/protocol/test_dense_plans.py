"""The dense tasks' learning-rate sweep: its runs, their held-out canvases, and its place in the presets."""
import pytest

from groupnorm.experiments.data import load_run_data
from groupnorm.experiments.protocol import experiment_configs, get_preset, plan_tasks
from helpers import SAMPLE_DATA


@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_dense_lrsweep_is_bn_and_gn_at_each_rate_on_held_out_canvases(task):
    assert plan_tasks("dense-lrsweep") == ("detection", "segmentation")
    for name in ("smoke", "quick", "full"):
        p = get_preset(name, task)
        sweep = experiment_configs("dense-lrsweep", p)
        assert [(c.norm, c.base_lr) for c in sweep] == [(n, lr) for n in ("bn", "gn") for lr in p.dense_lrsweep_lrs]
        assert all(c.holdout and c.seed == 0 and c.batch_per_worker == p.dense_batch and c.task == task
                   and c.head_norm is None and c.experiment == "dense-lrsweep" for c in sweep)
        everything = experiment_configs("all", p)
        assert not any(c.holdout for c in everything if c.experiment != "dense-lrsweep")
        for c in everything:  # every grid run at its norm family's rate (GN's for the head runs' GN backbone)
            if not c.holdout:
                assert c.base_lr == p.base_lr(c), c.label
    rates = (0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12) + ((10.24,) if task == "segmentation" else ())
    assert get_preset("full", task).dense_lrsweep_lrs == get_preset("quick", task).dense_lrsweep_lrs == rates
    assert len(get_preset("smoke", task).dense_lrsweep_lrs) == 2
    for name in ("quick", "full"):  # the sweep first, before the grid it chooses the rates of
        assert get_preset(name, task).all_experiments[0] == "dense-lrsweep"
        assert experiment_configs("all", get_preset(name, task))[0].experiment == "dense-lrsweep"
    assert len(experiment_configs("dense-lrsweep", get_preset("quick", task), seeds=3)) == 2 * len(rates)  # one seed


def test_detection_rates_are_the_committed_sweeps_best():
    """The presets' detection rates are the argmin of the committed quick sweep (docs/results/detection), each
    strictly inside the swept range."""
    import json
    import pathlib
    rows = [json.loads(line) for line in
            (pathlib.Path(__file__).parents[3] / "docs/results/detection/results.jsonl").read_text().splitlines()]
    sweep = [r for r in rows if r["experiment"] == "dense-lrsweep"]
    p = get_preset("quick", "detection")
    for norm in ("bn", "gn"):
        mine = {r["base_lr"]: r["box_ap"] for r in sweep if r["norm"] == norm}
        assert sorted(mine) == list(p.dense_lrsweep_lrs)
        best = max(mine, key=mine.get)
        assert best not in (min(mine), max(mine))
        assert dict(p.lr_by_norm)[norm] == dict(get_preset("full", "detection").lr_by_norm)[norm] == best


def test_held_out_runs_train_and_validate_on_held_out_canvases_of_the_training_items():
    cfg = experiment_configs("dense-lrsweep", get_preset("smoke", "segmentation"))[0]
    train, val, pool = load_run_data(SAMPLE_DATA, cfg)
    assert (train.split, val.split, len(train), len(val)) == ("holdout-train", "holdout-val", cfg.train_size,
                                                             cfg.val_size)
    assert pool is train
    std = experiment_configs("perworker", get_preset("smoke", "segmentation"))[0]
    t2, v2, _ = load_run_data(SAMPLE_DATA, std)
    assert (t2.split, v2.split) == ("train", "val")
    assert len(train.items) + len(val.items) == len(t2.items)  # the training split cut in two
