"""A video run in the harness: its data are clips of the directory's items (subsets, held-out part, pool), and it
trains in contiguous or channels_last_3d memory to the same numbers."""
import dataclasses

import pytest
import torch

from groupnorm.experiments import store
from groupnorm.experiments.data import load_run_data
from groupnorm.experiments.data.clips import ClipSplit
from groupnorm.experiments.protocol import RunConfig
from groupnorm.experiments.training import train_run
from helpers import SAMPLE_DATA

VIDEO = RunConfig(task="video", arch="resnet3d", groups=4, workers=2, batch_per_worker=2, epochs=1, train_size=24,
                  val_size=12, widths=(4, 8), blocks=(1, 1), stem_stride=2, warmup_epochs=0.5, base_lr=0.2,
                  frames=4, canvas=16)


def test_video_run_data_are_clips_of_the_run_spec():
    train, val, pool = load_run_data(SAMPLE_DATA, VIDEO)
    assert all(isinstance(s, ClipSplit) for s in (train, val, pool))
    assert (len(train), len(val)) == (24, 12) and len(pool) >= len(train)
    assert train.info.image_shape == (4, 16, 16) and train.info.num_classes == 40
    x, y = next(train.eval_batches(5))
    assert x.shape == (5, 1, 4, 16, 16) and x.dtype == torch.float32 and int(y.max()) < 40
    assert val.items is not train.items  # validation clips move the test split's items
    longer = load_run_data(SAMPLE_DATA, dataclasses.replace(VIDEO, frames=8))[0]
    assert longer.info.image_shape == (8, 16, 16) and next(longer.eval_batches(2))[0].shape[2] == 8
    h_train, h_val, h_pool = load_run_data(SAMPLE_DATA, dataclasses.replace(VIDEO, holdout=True))
    assert h_val.items is h_train.items is h_pool.items  # held-out clips: training items only
    assert not set(h_train.item.tolist()) & set(h_val.item.tolist())


def test_video_run_trains_channels_last_3d_to_the_same_numbers(tmp_path):
    train, val, pool = load_run_data(SAMPLE_DATA, VIDEO)
    rows = {}
    for cl in (False, True):
        cfg = dataclasses.replace(VIDEO, norm="gn")
        rows[cl] = train_run(cfg, train, val, str(tmp_path / str(cl)), pool=pool, progress=False, channels_last=cl)
    a, b = rows[False], rows[True]
    assert b["memory_format"] == "channels_last" and a["memory_format"] == "contiguous"
    for r in (a, b):
        assert r["task"] == "video" and r["frames"] == 4 and r["canvas"] == 16 and r["image_shape"] == [4, 16, 16]
        assert r["arch"] == "resnet3d" and r["num_classes"] == 40 and r["config_key"] == VIDEO.key() != ""
    assert b["train_loss"] == pytest.approx(a["train_loss"], rel=1e-4)
    assert b["val_loss"] == pytest.approx(a["val_loss"], rel=1e-4)
    assert store.read_results(str(tmp_path / "True"))[0]["config_key"] == a["config_key"]


def test_video_bn_run_has_the_precise_bn_decomposition(tmp_path):
    train, val, pool = load_run_data(SAMPLE_DATA, VIDEO)
    row = train_run(dataclasses.replace(VIDEO, norm="bn"), train, val, str(tmp_path), pool=pool, progress=False,
                    channels_last=True)
    assert row["norm"] == "bn" and row["bn_batch"] == 2
    assert 0.0 <= row["val_error_precise_bn"] <= 100.0 and row["precise_bn_images"] > 0
