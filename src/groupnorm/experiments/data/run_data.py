"""A run's data by its task: the (train, val, pool) splits that :func:`load_run_data` hands a run.

Classification: subsets of the data set's images (:mod:`.loading`); video: the same of its clips, each item of
the directory moving in one clip (:mod:`.clips`); detection and segmentation: canvases of the directory's items
(:mod:`.canvases`). Cached per process, as :mod:`.loading`'s subsets.
"""
from __future__ import annotations

from .clips import ClipSpec, load_clips
from .formats import DENSE_TASKS, detect_format
from .holdout import holdout_split
from .loading import POOL_IMAGES, _splits, load_data, subset
from .spec import as_spec

CANVAS_SEED = 0  # the canvas sets' seed: every run of a dense task sees the same canvases

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
    its images. A dense task's run (``cfg.task`` in ``DENSE_TASKS``) gets canvases (:func:`_run_canvases`)."""
    if cfg.task == "video":
        return _run_clips(data, cfg)
    if cfg.task in DENSE_TASKS:
        return _run_canvases(data, cfg)
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


def _run_canvases(data, cfg) -> tuple:
    """(train, val, train) canvases of a dense task's run: ``cfg.train_size`` canvases of the IDX directory's
    training items and ``cfg.val_size`` of its test items (:func:`groupnorm.experiments.data.canvases.canvas_set`,
    seed ``CANVAS_SEED``), made once per process; the data set's format must be ``idx``. With ``cfg.holdout``
    (the dense lr sweep): ``cfg.train_size`` canvases of the training items outside the held-out part and
    ``cfg.val_size`` canvases of the held-out training items (canvas splits ``holdout-train`` and
    ``holdout-val``), never of the test items."""
    from .canvases import canvas_set

    spec = as_spec(data)
    fmt = detect_format(spec.data_dir) if spec.dataset == "auto" else spec.dataset
    if fmt != "idx":
        raise ValueError(f"task={cfg.task!r} makes its canvases from MNIST-format IDX items; {spec.data_dir!r} "
                         f"holds {fmt!r} data")
    for name in ("train_size", "val_size"):
        if getattr(cfg, name) is None:
            raise ValueError(f"{name}=None: task={cfg.task!r} needs a number of canvases")
    key = (spec, "canvases", cfg.train_size, cfg.val_size, cfg.holdout)
    if key not in _cache:
        splits = ("holdout-train", "holdout-val") if cfg.holdout else ("train", "val")
        _cache[key] = (canvas_set(spec.data_dir, splits[0], cfg.train_size, CANVAS_SEED),
                       canvas_set(spec.data_dir, splits[1], cfg.val_size, CANVAS_SEED))
    train, val = _cache[key]
    return train, val, train
