"""Non-i.i.d. worker batches (``--experiment noniid``): each worker's b images come from a few classes.

In the GN paper's detection head the RoIs of one GPU come from one or two images, so a worker's batch is far
from an i.i.d. sample; Hsieh et al. (ICML 2020) show BN failing when workers' data are skewed. Here, at every
step and for every worker k independently (from the run's (seed, epoch) generator):

1. ``c = classes_per_worker`` distinct classes are drawn uniformly;
2. each of the worker's b images draws one of those c classes uniformly, and takes the next unused image of that
   class (each class's images in a seeded random order, restarted when used up).

So ``c = 1``: every worker's batch is one class; ``c = 10`` (all classes): class-uniform i.i.d. sampling, the
control of the same sampler. An epoch has as many steps as a standard one (``len(split) // (W * b)``).
"""
from __future__ import annotations

import torch


def worker_class_order(labels: torch.Tensor, steps: int, workers: int, batch_per_worker: int,
                       classes_per_worker: int, g: torch.Generator) -> torch.Tensor:
    """Indices (steps * workers * b,) into ``labels``: step s, worker k's b images at [(s*W + k)*b, ...+b).

    ``classes_per_worker`` must be at most the number of classes present in ``labels`` (else ValueError).
    """
    classes = torch.unique(labels)
    nc = int(classes.numel())
    if not 1 <= classes_per_worker <= nc:
        raise ValueError(f"classes_per_worker={classes_per_worker} must be from 1 to the number of classes in "
                         f"the training data ({nc})")
    pools = [torch.nonzero(labels == c).flatten() for c in classes.tolist()]
    orders = [p[torch.randperm(p.numel(), generator=g)] for p in pools]
    pos = [0] * nc
    out = torch.empty(steps * workers * batch_per_worker, dtype=torch.long)
    i = 0
    for _ in range(steps * workers):
        chosen = torch.randperm(nc, generator=g)[:classes_per_worker]
        picks = chosen[torch.randint(0, classes_per_worker, (batch_per_worker,), generator=g)].tolist()
        for c in picks:
            if pos[c] == orders[c].numel():
                orders[c] = pools[c][torch.randperm(pools[c].numel(), generator=g)]
                pos[c] = 0
            out[i] = orders[c][pos[c]]
            pos[c] += 1
            i += 1
    return out
