"""``groupnorm reproduce --task video --preset smoke`` end to end: rows that record the task and the clip spec,
the report's video section, a rerun that trains nothing."""
import pytest

from groupnorm.cli import main
from groupnorm.experiments.protocol import experiment_configs, get_preset
from helpers import results_lines, smoke_args

pytestmark = pytest.mark.slow  # six tiny 3D ResNet runs and the report


def test_smoke_video_end_to_end(tmp_path, capsys):
    out = tmp_path / "video"
    assert main(smoke_args(out, "--task", "video", "--channels-last")) == 0
    rows = results_lines(out)
    want = experiment_configs("all", get_preset("smoke"), task="video")
    assert sorted(r["config_key"] for r in rows) == sorted(c.key() for c in want) and len(rows) == 6
    assert {(r["norm"], r["batch_per_worker"], r["frames"]) for r in rows} == {
        ("bn", 4, 4), ("bn", 2, 4), ("gn", 4, 4), ("gn", 2, 4), ("bn", 2, 8), ("gn", 2, 8)}
    for r in rows:
        assert r["task"] == "video" and r["experiment"] == "video" and r["arch"] == "resnet3d"
        assert r["canvas"] == 16 and r["image_shape"] == [r["frames"], 16, 16] and r["num_classes"] == 40
        assert r["memory_format"] == "channels_last" and r["epochs_done"] == 2 and 0.0 <= r["val_error"] <= 100.0
    text = (out / "report.md").read_text()
    assert "## Video: clips per worker against frames per clip (Table 8)" in text
    assert "| 4 | 4 | " in text and "| 73.3 (8 x 32) | 73.0 (8 x 32) |" in text
    assert "| BN loses accuracy from 4 to 2 clips per worker (4 frames) | −1.2 points (73.3 → 72.1) | " \
           "**not testable here** |" in text  # one seed: no interval
    assert "## Table 2" not in text and (out / "video_table8.png").is_file()
    capsys.readouterr()
    assert main(smoke_args(out, "--task", "video", "--no-report")) == 0
    assert "6 already finished, 0 to train" in capsys.readouterr().err and len(results_lines(out)) == 6


def test_video_bn_as_torchrun_ranks_matches_emulated_workers(tmp_path):
    """Two DDP ranks (gloo), one worker's clips each, train the numbers of two emulated workers."""
    args = ("--task", "video", "--experiment", "video", "--batches", "4", "--seeds", "1", "--no-report")
    emu, real = tmp_path / "emulate", tmp_path / "torchrun"
    assert main(smoke_args(emu, *args)) == 0
    assert main(smoke_args(real, *args, "--launcher", "torchrun", "--max-runs", "1")) == 0
    (r,) = results_lines(real)
    e = {row["config_key"]: row for row in results_lines(emu)}[r["config_key"]]
    assert r["launcher"] == "torchrun" and r["processes"] == 2 and r["norm"] == "bn" and r["task"] == "video"
    assert r["train_loss"] == pytest.approx(e["train_loss"], rel=1e-5)
    assert r["val_loss"] == pytest.approx(e["val_loss"], rel=1e-5) and r["val_error"] == e["val_error"]
