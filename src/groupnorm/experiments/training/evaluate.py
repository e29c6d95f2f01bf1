"""A model's loss and error on a split (eval mode), and a batch moved to the run's device and memory format."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from groupnorm.layout import LAYOUT_NCS, LAYOUT_NSC, torch_format

from .devices import autocast


def memory_format(channels_last: bool, ndim: int = 4) -> torch.memory_format:
    """``torch.channels_last`` (rank 4: images) or ``torch.channels_last_3d`` (rank 5: clips) if
    ``channels_last``, else ``torch.contiguous_format`` (:func:`groupnorm.layout.torch_format`)."""
    return torch_format(LAYOUT_NSC if channels_last else LAYOUT_NCS, ndim)


def memory_format_name(channels_last: bool) -> str:
    """The memory format as results rows and messages name it: "channels_last" or "contiguous"."""
    return "channels_last" if channels_last else "contiguous"


@torch.no_grad()
def evaluate(model: torch.nn.Module, split, batch: int = 250, *,
             channels_last: bool = False, amp: str = "none") -> tuple[float, float]:
    """(mean cross-entropy, error in %) of ``model`` in eval mode on ``split``, on the model's device (batches in
    channels-last memory if ``channels_last``; forward under the ``amp`` autocast), in batches of ``batch`` images
    (250 evaluates ~1.4x faster than 1000 on CPU: the activations stay in cache)."""
    was = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum, wrong = 0.0, 0
    for x, y in split.eval_batches(batch):
        x = to_device(x, device, channels_last)
        y = y.to(device, non_blocking=True)
        with autocast(device, amp):
            logits = model(x).float()
        loss_sum += float(F.cross_entropy(logits, y, reduction="sum"))
        wrong += int((logits.argmax(1) != y).sum())
    model.train(was)
    return loss_sum / len(split), 100.0 * wrong / len(split)


def to_device(x: torch.Tensor, device: torch.device, channels_last: bool = False) -> torch.Tensor:
    """A batch on ``device`` in the run's memory format (asynchronous from pinned memory)."""
    return x.to(device, non_blocking=True).contiguous(memory_format=memory_format(channels_last, x.dim()))
