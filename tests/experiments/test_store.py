"""The results store: durable appends, torn lines, atomic checkpoints, the per-run lock."""
import os

import pytest
import torch

from groupnorm.experiments import store


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
