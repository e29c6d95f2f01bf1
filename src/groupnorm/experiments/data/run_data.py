"""A run's data by its task: the (train, val, pool) splits that :func:`load_run_data` hands a run.

Classification: subsets of the data set's images (:mod:`.loading`); video: the same of its clips, each item of
the directory moving in one clip (:mod:`.clips`). Cached per process, as :mod:`.loading`'s subsets.
"""
from __future__ import annotations

from .clips import ClipSpec, load_clips
from .holdout import holdout_split
from .loading import POOL_IMAGES, _splits, load_data, subset
from .spec import as_spec

_cache: dict = {}


def load_run_data(data: "DataSpec | str | None", cfg) -> tuple:
    """(train, val, pool) for the run ``cfg`` (a RunConfig): :func:`load_data`'s training and validation
    subsets, and ``pool``: ``POOL_IMAGES`` images of the same training split (or, with ``cfg.holdout``, of its
    part outside the held-out images), a fixed seeded class-balanced draw that includes images the run did not
    train on. Precise BN (:mod:`groupnorm.experiments.training.bn_eval`) recomputes population statistics over
    the pool, since the run's own training subset can be smaller than the 10,000 images Wu & Johnson's precise
    BN asks for; the pool never holds validation (test-split or held-out) images.

    The video task (``cfg.task == "video"``): the same of the data set's clips (:func:`.clips.load_clips`, each
    item of the directory moving in one clip of ``cfg.frames`` frames of ``cfg.canvas`` pixels), in place of
    its images."""
    if cfg.task == "video":
        return _run_clips(data, cfg)
    train, val = load_data(data, cfg.train_size, cfg.val_size, cfg.holdout)
    pkey = (as_spec(data), "pool", cfg.holdout)
    if pkey not in _cache:
        _cache[pkey] = subset(_splits(data, cfg.holdout)[0], POOL_IMAGES, seed=2)
    pool = _cache[pkey]
    return train, val, (pool if len(pool) > len(train) else train)


def _run_clips(data, cfg) -> tuple:
    """:func:`load_run_data` for the video task: subsets, held-out part and pool of the clip splits."""
    key = (as_spec(data), "clips", cfg.frames, cfg.canvas, cfg.holdout)
    if key not in _cache:
        train, test = load_clips(data, ClipSpec(canvas=cfg.canvas, frames=cfg.frames))
        if cfg.holdout:
            train, test = holdout_split(train)
        _cache[key] = (train, test, subset(train, POOL_IMAGES, seed=2))
    train_all, test, pool = _cache[key]
    train, val = subset(train_all, cfg.train_size, seed=0), subset(test, cfg.val_size, seed=1)
    return train, val, (pool if len(pool) > len(train) else train)
