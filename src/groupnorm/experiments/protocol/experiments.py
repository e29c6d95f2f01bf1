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
- The dense tasks' experiments (``--task detection|segmentation``; presets in :mod:`.dense_presets`), at the
  preset's ``dense_batch`` (2) images per worker unless said otherwise; ``syncbn`` is BN over the global batch in
  the backbone and the heads:

  - ``transfer`` (Tables 4 and 6): the backbone (and head) norm BN* (``bn-frozen``), BN per worker, SyncBN, GN, at
    each of ``transfer_schedules`` (1x, 2x), the backbone pre-trained by the harness on the data set's
    classification (``pretrain_epochs``; :func:`.presets.pretrain_config`: BN for BN*, BN and SyncBN, GN for GN).
    Tests GN > BN*.
  - ``head`` (Table 5): the two-stage detector, GN backbone, the box head without norm, with BN (per worker:
    its RoIs come from its own canvases, not i.i.d.), GN, and SyncBN (the control that gives BN i.i.d.
    statistics); with the preset's ``head_masks`` the mask head too (mask AP). Tests that BN in the head is far
    worse.
  - ``scratch`` (Table 7): GN, SyncBN and BN from random weights at 1x and 3x (``scratch_schedules``). Tests that
    GN trains from scratch and gains with the longer schedule.
  - ``perworker``: BN vs GN at each of ``dense_batches`` images per worker b (detector or U-Net), at the global
    batch of the preset's workers x ``dense_batch`` (8 x 2 = 16) held fixed: ``16 / b`` workers, so the steps, the
    learning rate and the data are the same at every b and only the batch BN's statistics come from changes.
    Tests that BN degrades at few images per worker and GN does not.
  - ``dense-lrsweep``: BN and GN (backbone; heads follow) at ``dense_batch`` images per worker for each base lr of
    ``dense_lrsweep_lrs`` (per 256 canvases), trained on canvases of the training items outside the held-out part
    and validated on canvases of the held-out training items (``holdout``; never the test items), one seed by
    default (``seeds_by_experiment``). The presets' ``lr_by_norm`` is to be set to its best.
  - ``masked``: GN with the padding of a batch left out of its statistics (``masked_stats``) beside GN as
    detectron2 computes it (padding included). Measures whether the padding in GN's statistics matters.
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
from .presets import Preset, task_presets
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


def _dense_norm(name: str, p: Plan, b: int) -> dict:
    """A dense run's norm by name: ``syncbn`` is BN over the global batch (``norm_batch``) in the backbone and
    the heads; other names are the backbone's norm, which the heads follow."""
    if name == "syncbn":
        return dict(norm="bn", norm_batch=p.base.workers * b, head_norm="syncbn")
    return dict(norm=name)


def _transfer(p: Plan) -> list[dict]:
    b = p.preset.dense_batch
    return [dict(_dense_norm(n, p, b), batch_per_worker=b, epochs=p.base.epochs * k,
                 pretrain_epochs=p.preset.pretrain_epochs)
            for k in p.preset.transfer_schedules for n in p.preset.transfer_norms]


def _head(p: Plan) -> list[dict]:
    return [dict(norm="gn", arch="two_stage", head_norm=h, batch_per_worker=p.preset.dense_batch,
                 masks=p.preset.head_masks) for h in p.preset.head_norms]


def _scratch(p: Plan) -> list[dict]:
    b = p.preset.dense_batch
    return [dict(_dense_norm(n, p, b), batch_per_worker=b, epochs=p.base.epochs * k)
            for k in p.preset.scratch_schedules for n in p.preset.scratch_norms]


def _perworker(p: Plan) -> list[dict]:
    total = p.base.workers * p.preset.dense_batch  # the global batch, held fixed: only BN's statistics change
    bad = [b for b in p.preset.dense_batches if total % b]
    if bad:
        raise ValueError(f"perworker holds the global batch at {p.base.workers} workers x {p.preset.dense_batch} = "
                         f"{total} images; images per worker {bad} do not divide it")
    return [dict(norm=n, batch_per_worker=b, workers=total // b) for n in ("bn", "gn") for b in p.preset.dense_batches]


def _dense_lrsweep(p: Plan) -> list[dict]:
    return [dict(norm=n, batch_per_worker=p.preset.dense_batch, base_lr=lr, holdout=True) for n in ("bn", "gn")
            for lr in p.preset.dense_lrsweep_lrs]


def _masked(p: Plan) -> list[dict]:
    return [dict(norm="gn", batch_per_worker=p.preset.dense_batch, masked_stats=m) for m in (False, True)]


PLANS: dict[str, Callable[[Plan], list[dict]]] = {
    "table1": _table1, "table2": _table2, "table3": _table3, "curves": _curves, "noniid": _noniid,
    "ghost": _ghost, "lrsweep": _lrsweep, "control": _control, "vgg": _vgg,
    "video": _video, "video-lrsweep": _video_lrsweep, "video-control": _video_control,

    "transfer": _transfer, "head": _head, "scratch": _scratch, "perworker": _perworker, "masked": _masked,
    "dense-lrsweep": _dense_lrsweep,

}
PLAN_TASKS = {"video": ("video",), "video-lrsweep": ("video",), "video-control": ("video",),
              "transfer": ("detection",), "head": ("detection",), "scratch": ("detection",),
              "perworker": ("detection", "segmentation"),
              "masked": ("detection", "segmentation"),
              "dense-lrsweep": ("detection", "segmentation")}  # the others: ("classification",)
EXPERIMENTS = (*PLANS, "all")  # "all": the preset's all_experiments


def plan_tasks(experiment: str) -> tuple:
    """The tasks an experiment's runs can be of (``PLAN_TASKS``; classification when not named there)."""
    return PLAN_TASKS.get(experiment, ("classification",))


def plan_task(experiment: str) -> str:
    """The task of an experiment's runs by default: the first of :func:`plan_tasks`."""
    return plan_tasks(experiment)[0]


def _run_task(experiment: str, preset: Preset, task: str | None) -> str:
    """The task of ``experiment``'s runs on ``preset`` (see :func:`experiment_configs`), or an error naming the
    experiments of the task asked for."""
    def of(t):
        return ", ".join(n for n in PLANS if t in plan_tasks(n))
    if experiment == "all":
        return preset.task if task is None else task
    own = plan_tasks(experiment)
    if task is None:
        if preset.task in own:
            return preset.task
        if task_presets(own[0]) is not task_presets(preset.task):
            raise ValueError(f"experiment {experiment!r} is not one of task {preset.task!r} (preset "
                             f"{preset.name!r}); choose one of {of(preset.task)}, or a preset of task {own[0]!r}")
        return own[0]
    if task not in own:
        raise ValueError(f"experiment {experiment!r} is of the {' / '.join(own)} task, not task={task!r}; the {task} "
                         f"task's experiments: {of(task)}")
    return task


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
    worker of ``video``; with a dense task, the images per worker of ``perworker``) and ``arch`` override the
    preset's (a named arch replaces the preset's ``resnet`` widths, blocks and strides). ``task``: by default the
    preset's own (:attr:`Preset.task`) where the experiment is one of its, else the experiment's
    (:func:`plan_task`) where the same presets serve it (video), else an error; with ``all``, which task's
    experiments (default the preset's). A named experiment of another task is an error.
    Every run gets its norm's learning rate (``Preset.base_lr``) unless its experiment sets one (lrsweep).
    """
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    task = _run_task(experiment, preset, task)
    n_seeds = preset.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"seeds={n_seeds} must be at least 1")
    base = _base(preset, workers, epochs, arch, task)
    if batches is not None:
        if not batches or any(not isinstance(b, int) or b < 1 for b in batches):
            raise ValueError(f"batches={batches!r} must be positive integers")
        field = {"classification": "table2_batches", "video": "video_clips"}.get(task, "dense_batches")
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
