"""The paper's experiments as lists of runs: the plan of each experiment in one map, :data:`PLANS`.

- ``table1``: BN, LN, IN, GN (G=32) at ``b`` = 32 images per worker (the paper's Table 1; Figure 4 curves).
- ``table2``: BN and GN at each ``b`` of the preset's batch list (Table 2, Figure 1; Figure 5 curves).
- ``table3``: GN with G groups (64 .. 1 = LN) and with K channels per group (64 .. 1 = IN) at b = 32.
- ``curves``: the runs behind Figures 4 and 5 (table1's and table2's largest and smallest batch).
- ``noniid``: BN, GN and SyncBN with each worker's b images from ``classes_per_worker`` classes
  (:mod:`groupnorm.experiments.data.noniid`).
- ``ghost``: the global batch and lr fixed, BN statistics over ``norm_batch`` images (the fixed-steps view of
  Table 2); GN and SyncBN references.
- ``lrsweep``: BN and GN at b = 32 for each base learning rate of the preset, validated on held-out *training*
  images (``holdout``), never on the reported validation images; the presets' per-norm learning rates are the
  sweep's best (docs/results/README.md).
- ``control``: BN at the largest and smallest b trained ``control_factor`` (2) times as many epochs: the
  convergence control of the report (their error may change by at most 1 point).
- ``vgg``: the VGG-style network without normalization, with BN and with GN (Figure 3;
  :mod:`groupnorm.experiments.models.vgg`).
- ``video`` (task video): BN and GN at each of the preset's ``video_clips`` clips per worker with
  ``video_frames`` frames, and at ``video_more_frames`` (the paper's Table 8: 4 clips of 64 frames against 8 and
  4 clips of 32); ``video-lrsweep``: BN and GN at the most clips per worker for each of ``video_lrsweep_lrs``,
  validated on held-out training clips; ``video-control``: BN at the most and fewest clips trained
  ``control_factor`` times as many epochs (:mod:`groupnorm.experiments.data.clips`,
  :mod:`groupnorm.experiments.models.resnet3d`).
- ``all``: the preset's ``all_experiments`` (with ``task="video"``: its ``video_experiments``). Runs that two
  experiments share (e.g. GN at b=32) are trained once.

A new experiment is one entry of :data:`PLANS`: a function of the :class:`Plan` (the preset, its base config
and the batch sizes and worker counts the experiments share) returning the overrides of each run.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Callable

from ..models.archs import ARCHS, SHAPE_FIELDS
from .presets import Preset
from .run_config import DEFAULT_CONFIG, RunConfig


@dataclass(frozen=True)
class Plan:
    """What the experiments' plans read: the ``preset`` (with the caller's overrides), its ``base`` config, and
    the sizes several experiments share: ``b1`` (Table 1's images per worker), ``big``/``small`` (Table 2's
    largest and smallest), ``gw``/``gb`` (ghost's workers and images per worker), ``nw``/``nb`` (noniid's)."""

    preset: Preset
    base: RunConfig
    b1: int
    big: int
    small: int
    gw: int
    gb: int
    nw: int
    nb: int


def _table1(p: Plan) -> list[dict]:
    return [dict(norm=n, batch_per_worker=p.b1) for n in p.preset.table1_norms]


def _table2(p: Plan) -> list[dict]:
    return [dict(norm=n, batch_per_worker=b) for n in ("bn", "gn") for b in p.preset.table2_batches]


def _table3(p: Plan) -> list[dict]:
    return ([dict(norm="gn", groups=g, batch_per_worker=p.b1) for g in p.preset.table3_groups]
            + [dict(norm="gn", groups=None, group_size=k, batch_per_worker=p.b1)
               for k in p.preset.table3_group_sizes])


def _curves(p: Plan) -> list[dict]:
    return _table1(p) + [dict(norm=n, batch_per_worker=b) for n in ("bn", "gn") for b in (p.big, p.small)]


def _noniid_norms(nw: int, nb: int) -> dict:
    """noniid's norms: BN, GN, and BN synchronized over all workers (norm_batch = the global batch)."""
    return {"bn": dict(norm="bn"), "gn": dict(norm="gn"), "syncbn": dict(norm="bn", norm_batch=nw * nb)}


def _noniid(p: Plan) -> list[dict]:
    norms = _noniid_norms(p.nw, p.nb)
    return [dict(norms[n], batch_per_worker=p.nb, classes_per_worker=c, workers=p.nw)
            for c in p.preset.noniid_classes for n in p.preset.noniid_norms]


def _ghost(p: Plan) -> list[dict]:
    """The global batch W x gb and the lr fixed; BN statistics over norm_batch images; GN and SyncBN references."""
    return ([dict(norm="bn", batch_per_worker=p.gb, norm_batch=g, workers=p.gw) for g in p.preset.ghost_norm_batches]
            + [dict(norm="gn", batch_per_worker=p.gb, workers=p.gw),
               dict(norm="bn", batch_per_worker=p.gb, norm_batch=p.gw * p.gb, workers=p.gw)])


def _lrsweep(p: Plan) -> list[dict]:
    pr = p.preset
    return ([dict(norm=n, batch_per_worker=p.b1, base_lr=lr, holdout=True) for n in ("bn", "gn")
             for lr in pr.lrsweep_lrs]
            + [dict(norm=n, groups=g, group_size=k, batch_per_worker=p.b1, base_lr=lr, holdout=True)
               for n, g, k in pr.lrsweep_variants for lr in pr.lrsweep_variant_lrs or pr.lrsweep_lrs])


def _control(p: Plan) -> list[dict]:
    return [dict(norm="bn", batch_per_worker=b, epochs=p.base.epochs * p.preset.control_factor)
            for b in (p.big, p.small)]


def _vgg(p: Plan) -> list[dict]:
    return [dict(norm=n, batch_per_worker=p.b1, arch="vgg", widths=p.preset.vgg_widths,
                 blocks=p.preset.vgg_blocks, first_stride=1) for n in p.preset.vgg_norms]


def _video(p: Plan) -> list[dict]:
    pr = p.preset
    clips, frames = pr.video_more_frames
    return ([dict(norm=n, batch_per_worker=c, frames=pr.video_frames) for n in ("bn", "gn") for c in pr.video_clips]
            + [dict(norm=n, batch_per_worker=clips, frames=frames) for n in ("bn", "gn")])


def _video_lrsweep(p: Plan) -> list[dict]:
    pr = p.preset
    return [dict(norm=n, batch_per_worker=max(pr.video_clips), frames=pr.video_frames, base_lr=lr, holdout=True)
            for n in ("bn", "gn") for lr in pr.video_lrsweep_lrs]


def _video_control(p: Plan) -> list[dict]:
    pr = p.preset
    return [dict(norm="bn", batch_per_worker=c, frames=pr.video_frames, epochs=p.base.epochs * pr.control_factor)
            for c in sorted({max(pr.video_clips), min(pr.video_clips)}, reverse=True)]


PLANS: dict[str, Callable[[Plan], list[dict]]] = {
    "table1": _table1, "table2": _table2, "table3": _table3, "curves": _curves, "noniid": _noniid,
    "ghost": _ghost, "lrsweep": _lrsweep, "control": _control, "vgg": _vgg,
    "video": _video, "video-lrsweep": _video_lrsweep, "video-control": _video_control,
}
PLAN_TASKS = {"video": "video", "video-lrsweep": "video", "video-control": "video"}  # others: classification
EXPERIMENTS = (*PLANS, "all")  # "all": the preset's all_experiments


def plan_task(experiment: str) -> str:
    """The task of an experiment's runs (``PLAN_TASKS``; classification when not named there)."""
    return PLAN_TASKS.get(experiment, "classification")


def _base(preset: Preset, workers: int | None, epochs: int | None, arch: str | None,
          task: str = "classification") -> RunConfig:
    """The preset's base config of ``task`` (:meth:`Preset.task_base`) with the caller's ``workers``,
    ``epochs`` and ``arch`` (a named arch replaces the preset's ``resnet`` widths, blocks and strides)."""
    over = {k: v for k, v in (("workers", workers), ("epochs", epochs)) if v is not None}
    if arch is not None:
        over["arch"] = arch
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} must be one of {', '.join(ARCHS)}")
        if not ARCHS[arch].config_fields:  # a named ResNet: the preset's small-ResNet shape does not apply
            over.update({n: getattr(DEFAULT_CONFIG, n) for n in SHAPE_FIELDS})
    return dataclasses.replace(preset.task_base(task), **over)


def make_plan(preset: Preset, base: RunConfig, workers: int | None = None) -> Plan:
    """The :class:`Plan` of ``preset`` on ``base`` (``workers``: the caller's, for ghost and noniid too)."""
    gw = preset.group_workers or base.workers  # ghost's workers (and noniid's unless noniid_workers)
    nw = preset.noniid_workers or gw
    if workers is not None:
        gw = nw = workers
    for n in preset.noniid_norms:
        if n not in _noniid_norms(nw, preset.noniid_batch):
            raise ValueError(f"noniid norm {n!r} must be one of {', '.join(_noniid_norms(nw, preset.noniid_batch))}")
    return Plan(preset, base, preset.table1_batch, max(preset.table2_batches), min(preset.table2_batches), gw,
                preset.ghost_batch or preset.table1_batch, nw, preset.noniid_batch)


def experiment_configs(experiment: str, preset: Preset, seeds: int | None = None, workers: int | None = None,
                       epochs: int | None = None, batches: tuple | None = None,
                       arch: str | None = None, task: str | None = None) -> list[RunConfig]:
    """The runs of one experiment (or ``all``), each seed, duplicates (by key) removed, in a stable order.

    ``seeds``, ``workers``, ``epochs``, ``batches`` (Table 2's images per worker; with task video, the clips per
    worker of ``video``) and ``arch`` override the preset's (a named arch replaces the preset's ``resnet``
    widths, blocks and strides). ``task``: the experiment's (:func:`plan_task`) by default; with ``all``, which
    task's experiments (default classification); a named experiment of another task is an error.
    Every run gets its norm's learning rate (``Preset.base_lr``) unless its experiment sets one (lrsweep).
    """
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    own = "classification" if experiment == "all" else plan_task(experiment)
    if task is None:
        task = own
    elif experiment != "all" and task != own:
        raise ValueError(f"experiment {experiment!r} is of the {own} task, not task={task!r}; the {task} task's "
                         f"experiments: {', '.join(n for n in PLANS if plan_task(n) == task)}")
    n_seeds = preset.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"seeds={n_seeds} must be at least 1")
    base = _base(preset, workers, epochs, arch, task)
    if batches is not None:
        if not batches or any(not isinstance(b, int) or b < 1 for b in batches):
            raise ValueError(f"batches={batches!r} must be positive integers")
        field = "video_clips" if task == "video" else "table2_batches"
        preset = dataclasses.replace(preset, **{field: tuple(batches)})
    plan = make_plan(preset, base, workers)
    names = list(preset.task_experiments(task)) if experiment == "all" else [experiment]
    out, seen = [], set()
    for seed in range(n_seeds):  # all settings of seed 0 first, so a partial run is a full table
        for name in names:
            if seed >= preset.seeds_of(name, n_seeds):
                continue
            for over in PLANS[name](plan):
                cfg = dataclasses.replace(base, seed=seed, experiment=name, **over)
                if "base_lr" not in over:
                    cfg = dataclasses.replace(cfg, base_lr=preset.base_lr(cfg))
                cfg.validate()
                if cfg.key() not in seen:
                    seen.add(cfg.key())
                    out.append(cfg)
    return out
