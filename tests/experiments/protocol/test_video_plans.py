"""The video task's runs: its plans and presets, the clip spec in a video run's identity only, and the
classification runs' keys, labels and learning rates as they were before the task existed."""
import dataclasses
import hashlib

import pytest

from groupnorm.experiments.protocol import PRESET_NAMES, RunConfig, experiment_configs, get_preset, plan_task

CLASSIFICATION_EXPERIMENTS = ("table1", "table2", "table3", "curves", "noniid", "ghost", "lrsweep", "control", "vgg",
                              "all")
# sha256 of "PRESET EXPERIMENT KEY LABEL BASE_LR" lines of every classification run of every preset, computed by
# the harness before the video task was added: a change here re-keys (re-trains) existing results.
CLASSIFICATION_DIGEST = "a5b3bc386d19893bf39f6c06f311586db0a071f775e2542aad27266afdd89890"


def test_classification_runs_keep_their_keys_labels_and_rates():
    lines = [f"{name} {e} {c.key()} {c.label} {c.base_lr}" for name in PRESET_NAMES for e in CLASSIFICATION_EXPERIMENTS
             for c in experiment_configs(e, get_preset(name))]
    assert len(lines) == 1399
    assert hashlib.sha256("\n".join(lines).encode()).hexdigest() == CLASSIFICATION_DIGEST
    assert RunConfig().key() == RunConfig(frames=16, canvas=64).key()  # the clip spec is no classification field
    assert "frames" not in RunConfig().canonical()


def test_video_identity_holds_the_clip_spec():
    v = RunConfig(task="video", arch="resnet3d")
    ident = v.canonical()
    assert ident["task"] == "video" and ident["frames"] == 8 and ident["canvas"] == 32
    keys = {v.key(), dataclasses.replace(v, frames=16).key(), dataclasses.replace(v, canvas=48).key()}
    assert len(keys) == 3
    assert v.label.endswith("T=8") and dataclasses.replace(v, frames=16).label.endswith("T=16")


@pytest.mark.parametrize("cfg, match", [
    (RunConfig(task="video"), r"arch='resnet' is for the classification task, not task='video'.*resnet3d"),
    (RunConfig(arch="resnet3d"), r"arch='resnet3d' is for the video task, not task='classification'"),
    (RunConfig(task="video", arch="resnet3d", frames=0), r"frames=0 must be an integer of at least 1"),
    (RunConfig(task="video", arch="resnet3d", canvas=1), r"canvas=1 must be an integer of at least 2"),
])
def test_video_config_errors_name_the_bad_value(cfg, match):
    with pytest.raises(ValueError, match=match):
        cfg.validate()


def _settings(cfgs):
    return sorted((c.norm, c.batch_per_worker, c.frames) for c in cfgs if c.seed == 0)


def test_full_video_grid_is_the_papers_table8_scaled():
    full = get_preset("full")
    main = experiment_configs("video", full)
    assert _settings(main) == sorted([(n, c, 4) for n in ("bn", "gn") for c in (8, 4, 2)]
                                     + [("bn", 4, 8), ("gn", 4, 8)])
    assert {c.seed for c in main} == {0, 1, 2} and len(main) == 24
    assert all(c.task == "video" and c.arch == "resnet3d" and c.workers == 4 and not c.holdout for c in main)
    sweep = experiment_configs("video-lrsweep", full)
    assert all(c.holdout and c.batch_per_worker == 8 and c.frames == 4 for c in sweep)
    assert {(c.norm, c.base_lr) for c in sweep} == {(n, lr) for n in ("bn", "gn") for lr in full.video_lrsweep_lrs}
    assert {c.seed for c in sweep} == {0}
    control = experiment_configs("video-control", full)
    assert _settings(control) == [("bn", 2, 4), ("bn", 8, 4)] and {c.epochs for c in control} == {32}
    every = experiment_configs("all", full, task="video")
    assert {c.experiment for c in every} == {"video", "video-lrsweep", "video-control"}
    assert all(c.task == "video" for c in every)


def test_video_task_options():
    smoke = get_preset("smoke")
    assert _settings(experiment_configs("all", smoke, task="video")) == sorted(
        [(n, c, 4) for n in ("bn", "gn") for c in (4, 2)] + [("bn", 2, 8), ("gn", 2, 8)])
    assert _settings(experiment_configs("video", smoke, batches=(3,))) == sorted(
        [("bn", 3, 4), ("gn", 3, 4), ("bn", 2, 8), ("gn", 2, 8)])
    assert {c.workers for c in experiment_configs("video", smoke, workers=1)} == {1}
    assert plan_task("video") == "video" and plan_task("table2") == "classification"
    with pytest.raises(ValueError, match="experiment 'table2' is of the classification task, not task='video'"):
        experiment_configs("table2", smoke, task="video")
    with pytest.raises(ValueError, match="preset 'cifar10' has no video protocol; presets with one: smoke, quick"):
        experiment_configs("video", get_preset("cifar10"))
