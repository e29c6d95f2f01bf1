"""Non-i.i.d. worker batches (``--experiment noniid``): each worker's b images come from a few classes.

In the GN paper's detection head the RoIs of one GPU come from one or two images, so a worker's batch is far
from an i.i.d. sample; Hsieh et al. (ICML 2020) show BN failing when workers' data are skewed. Here, at every
step (from the run's (seed, epoch) generator):

1. the workers' classes are dealt from a shuffled deck of the classes: worker k takes the next
   ``c = classes_per_worker`` classes of the deck that it does not hold yet (a fresh shuffled deck is added
   when the deck runs out; each step starts from a fresh deck). So the global batch holds the classes as
   evenly as W x c class slots allow: with W = 10 workers and c = 1 every class is exactly one worker's;
2. each of the worker's b images draws one of its c classes uniformly, and takes the next unused image of that
   class (each class's images in a seeded random order, restarted when used up).

So ``c = 1``: every worker's batch is one class; ``c`` = the number of classes: class-uniform i.i.d. sampling,
the control of the same sampler. Dealing the classes (rather than drawing them per worker independently)
keeps the *global* batch class-diverse, so what changes with ``c`` is what each worker's BN statistics see,
not the mix of classes the optimizer's step sees: GN, whose statistics are per image, is the control for the
latter. An epoch has as many steps as a standard one (``len(split) // (W * b)``).
"""
from __future__ import annotations

import torch


def deal_classes(nc: int, workers: int, classes_per_worker: int, g: torch.Generator) -> list[list[int]]:
    """One step's classes: ``workers`` lists of ``classes_per_worker`` distinct class indices (< ``nc``), dealt
    from shuffled decks of the ``nc`` classes (module docstring), so each class occurs
    ``floor(W c / nc)`` or ``ceil(W c / nc)`` times over the workers when ``W c`` is a multiple of ``nc`` or
    less than it."""
    deck: list[int] = []
    out = []
    for _ in range(workers):
        chosen: list[int] = []
        while len(chosen) < classes_per_worker:
            i = next((i for i, cl in enumerate(deck) if cl not in chosen), None)
            if i is None:
                deck.extend(torch.randperm(nc, generator=g).tolist())
                continue
            chosen.append(deck.pop(i))
        out.append(chosen)
    return out


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
    for _ in range(steps):
        for chosen in deal_classes(nc, workers, classes_per_worker, g):
            picks = torch.randint(0, classes_per_worker, (batch_per_worker,), generator=g).tolist()
            for j in picks:
                c = chosen[j]
                if pos[c] == orders[c].numel():
                    orders[c] = pools[c][torch.randperm(pools[c].numel(), generator=g)]
                    pos[c] = 0
                out[i] = orders[c][pos[c]]
                pos[c] += 1
                i += 1
    return out
