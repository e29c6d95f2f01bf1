"""The learning-rate schedule: linear warmup, then cosine to 0 or the paper's x0.1 steps."""
import dataclasses
import json

import pytest

from groupnorm.experiments.protocol import RunConfig
from groupnorm.experiments.training import lr_at


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
