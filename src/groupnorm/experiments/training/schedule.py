"""The learning rate at each step (warmup, then cosine or the paper's steps) and the optimizer (SGD)."""
from __future__ import annotations

import math

import torch


def lr_at(cfg, step: int, total_steps: int, steps_per_epoch: int) -> float:
    """Learning rate at optimizer step ``step`` (0-based) of ``total_steps``."""
    warm = min(int(round(cfg.warmup_epochs * steps_per_epoch)), total_steps - 1)
    if step < warm:
        return cfg.lr * (step + 1) / warm
    if cfg.schedule == "cosine":
        t = (step - warm) / max(1, total_steps - warm)
        return 0.5 * cfg.lr * (1.0 + math.cos(math.pi * t))
    passed = sum(step >= f * total_steps for f in (0.3, 0.6, 0.9))
    return cfg.lr * 0.1 ** passed


def make_optimizer(model: torch.nn.Module, cfg) -> torch.optim.SGD:
    """SGD with ``cfg.momentum`` at ``cfg.lr``; weight decay ``cfg.weight_decay`` on the parameters of rank >= 2
    (conv and linear weights) only, as Goyal et al. (which the GN paper follows)."""
    decay = [p for p in model.parameters() if p.ndim >= 2]
    no_decay = [p for p in model.parameters() if p.ndim < 2]
    return torch.optim.SGD([{"params": decay, "weight_decay": cfg.weight_decay},
                            {"params": no_decay, "weight_decay": 0.0}], lr=cfg.lr, momentum=cfg.momentum)
