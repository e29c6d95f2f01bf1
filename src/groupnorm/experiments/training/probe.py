"""Figure 3's measurement during training: percentiles of a model's ``probe`` layer output."""
from __future__ import annotations

import torch

from ..models.vgg import response_percentiles


class FeatureProbe:
    """Figure 3's measurement: percentiles of a model's ``probe`` layer output (``vgg.VGG.probe``, the late
    conv before its norm) on the training batch of ``PROBES_PER_EPOCH`` evenly spaced steps of each epoch
    (``samples``: ``[global step, p1, p20, p80, p99]`` lists). A model without ``probe``: does nothing."""

    PROBES_PER_EPOCH = 8

    def __init__(self, model: torch.nn.Module, steps_per_epoch: int):
        self.layer = getattr(model, "probe", None)
        self.every = max(1, steps_per_epoch // self.PROBES_PER_EPOCH)
        self.samples: list = []
        self._step = None
        self._hook = None if self.layer is None else self.layer.register_forward_hook(self._record)

    def start_epoch(self) -> None:
        self.samples = []

    def arm(self, s: int, step: int) -> None:
        """Record the next forward of the layer if step ``s`` of the epoch is a probe step."""
        self._step = step if s % self.every == 0 else None

    def _record(self, module, inputs, output) -> None:
        if self._step is not None:
            self.samples.append([self._step] + response_percentiles(output))
            self._step = None

    def close(self) -> None:
        if self._hook is not None:
            self._hook.remove()


def percentile_fields(history: list[dict]) -> dict:
    """``feature_percentiles`` for the row: every epoch's samples, in order ({} if none were taken)."""
    samples = [s for h in history for s in h.get("feature_percentiles", [])]
    return dict(feature_percentiles=samples) if samples else {}
