"""The presets: a protocol (a base :class:`~.run_config.RunConfig`), the settings of each experiment, the seeds.

``smoke`` (seconds, for the tests), ``quick`` and ``full`` (Fashion-MNIST on a CPU: one protocol, so quick's runs
are a subset of full's), and the paper's protocol on a GPU (``cifar10``, ``cifar10-resnet20``, ``imagenet``);
the dense tasks' smoke, quick and full in :data:`DENSE_PRESETS`.
"""
from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from ..data.formats import FORMATS
from .run_config import RunConfig

PRESET_NAMES = ("smoke", "quick", "full", "cifar10", "cifar10-resnet20", "imagenet")


@dataclass(frozen=True)
class Preset:
    """A preset: the protocol (``base``), the settings of each experiment and the seeds.

    ``lr_by_norm``: base learning rate (per ``lr_ref_batch`` images) per norm family: ``bn`` (BN, SyncBN,
    ghost BN), ``gn`` (GN, LN, IN, GN+WS), ``none`` (VGG without normalization); norms not named use
    ``base.base_lr``. ``lr_by_variant``: per variant (``RunConfig.variant``: ``LN``, ``GN G=4``, ``GN K=16``,
    ...), before the family's. ``lrsweep_variants``: (norm, groups, group_size) of the variants the lr sweep
    tunes besides BN and GN (at ``lrsweep_variant_lrs``, or ``lrsweep_lrs`` when empty).
    ``seeds_by_experiment``: experiments run with fewer seeds than ``seeds`` (the lr sweep, Figure 3)."""

    name: str
    base: RunConfig
    seeds: int
    table1_norms: tuple
    table2_batches: tuple
    table3_groups: tuple
    table3_group_sizes: tuple
    table1_batch: int = 32
    noniid_classes: tuple = (1, 2, 10)              # classes per worker (10 = i.i.d.)
    noniid_batch: int = 8                           # images per worker in noniid
    noniid_workers: int | None = None               # workers of noniid (None: group_workers)
    noniid_norms: tuple = ("bn", "gn", "syncbn")
    ghost_norm_batches: tuple = (32, 16, 8, 4, 2)   # BN statistics groups at the fixed global batch W x ghost_batch
    ghost_batch: int | None = None                  # images per worker in ghost (None: table1_batch)
    group_workers: int | None = None                # workers of noniid and ghost (None: the protocol's)
    lr_by_norm: tuple = ()                          # ((family, base_lr), ...), see the class docstring
    lrsweep_lrs: tuple = (0.2, 0.4, 0.8, 1.6, 3.2)  # base learning rates per 256 images tried by lrsweep
    lr_by_variant: tuple = ()                       # ((variant, base_lr), ...), see the class docstring
    lrsweep_variants: tuple = ()                    # ((norm, groups, group_size), ...) swept besides BN and GN
    lrsweep_variant_lrs: tuple = ()                 # their base learning rates (empty: lrsweep_lrs)
    control_factor: int = 2                         # the control runs' epochs: this times the protocol's
    vgg_norms: tuple = ("none", "bn", "gn")
    vgg_widths: tuple = (64, 128, 256)
    vgg_blocks: tuple = (2, 2, 2)
    seeds_by_experiment: tuple = (("lrsweep", 1), ("vgg", 1), ("video-lrsweep", 1), ("dense-lrsweep", 1))
    all_experiments: tuple = ("table2", "noniid", "ghost", "table1", "table3", "curves")  # what "all" means
    dataset: str = "Fashion-MNIST"                  # what it trains on (its arch is base.arch)
    needs_data_dir: bool = False                    # no default directory: --data-dir is required
    data_format: str = "auto"                       # --dataset unless given (data.DATASET_CHOICES)
    # The dense tasks' experiments (detection, segmentation; protocol/experiments.py, presets: DENSE_PRESETS):
    task: str = "classification"                    # the task of base and of every run (data.formats.TASKS)
    dense_batch: int = 2                            # images per worker of transfer, head and scratch (paper: 2)
    dense_batches: tuple = (1, 2, 4, 16)            # images per worker of perworker (BN vs GN)
    transfer_norms: tuple = ("bn-frozen", "bn", "syncbn", "gn")  # backbone (and head) norms of transfer
    transfer_schedules: tuple = (1, 2)              # transfer's epochs: these times the protocol's (1x, 2x)
    head_norms: tuple = ("none", "bn", "gn", "syncbn")  # the box head's norms of head (GN backbone)
    head_masks: bool = False                        # head's runs with the mask head too (rows get mask_ap); off:
    # its 4 convs at 14x14 on <= 16 foreground RoIs per image cost about what the box head's at 7x7 on 64 do, and
    # evaluation runs it on up to 100 detections per image: the heads' cost would about double
    scratch_norms: tuple = ("gn", "syncbn", "bn")   # from scratch (no pre-training)
    scratch_schedules: tuple = (1, 3)               # scratch's epochs: these times the protocol's (1x, 3x)
    pretrain_epochs: int = 16                       # transfer's backbone pre-training (pretrain_config)
    dense_lrsweep_lrs: tuple = (0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12)  # base lrs per 256 canvases (dense-lrsweep)
    # The video task (``--task video``): its protocol, the clips per worker BN and GN are compared at (with
    # video_frames frames), the (clips, frames) of "more frames at the same memory", its learning rates and sweep.
    video_base: RunConfig | None = None             # None: the preset has no video protocol
    video_clips: tuple = (8, 4, 2)                  # clips per worker (the paper: 8 and 4 clips per GPU)
    video_frames: int = 4                           # frames per clip at each of video_clips (the paper: 32)
    video_more_frames: tuple = (4, 8)               # (clips per worker, frames): the paper's 4 x 64
    video_lr_by_norm: tuple = ()                    # as lr_by_norm, for the video task (else video_base.base_lr)
    video_lrsweep_lrs: tuple = (0.4, 0.8, 1.6, 3.2)  # base lrs per 256 clips tried by video-lrsweep
    video_experiments: tuple = ("video",)           # what "all" means with --task video

    def base_lr(self, cfg: "RunConfig") -> float:
        """The base learning rate of ``cfg``'s normalization: its variant's (``lr_by_variant``), else its norm
        family's (``lr_by_norm``), else ``base.base_lr``; for the video task ``video_lr_by_norm``, else
        ``video_base.base_lr``."""
        family = {"ln": "gn", "in": "gn", "gn+ws": "gn", "bn-frozen": "bn"}.get(cfg.norm, cfg.norm)
        if cfg.task == "video":
            return dict(self.video_lr_by_norm).get(family, self.task_base("video").base_lr)
        variants = dict(self.lr_by_variant)
        if cfg.variant in variants:
            return variants[cfg.variant]
        return dict(self.lr_by_norm).get(family, self.base.base_lr)

    def task_base(self, task: str) -> "RunConfig":
        """The protocol of ``task``: ``base`` for the preset's own ``task`` (classification, or a dense task's
        preset of :data:`DENSE_PRESETS`), ``video_base`` for video (an error naming the presets that have one)."""
        if task == self.task:
            return self.base
        if task == "video" and self.video_base is not None:
            return self.video_base
        raise ValueError(f"preset {self.name!r} has no {task} protocol; presets with one: "
                         + ", ".join(n for n, p in task_presets(task).items()
                                     if p.task == task or (task == "video" and p.video_base is not None))
                         + (f" (get_preset(name, {task!r}))" if task != "video" else ""))

    def task_experiments(self, task: str) -> tuple:
        """What ``all`` means for ``task``: ``video_experiments`` for video, else ``all_experiments``."""
        return self.video_experiments if task == "video" else self.all_experiments

    def seeds_of(self, experiment: str, seeds: int) -> int:
        return min(seeds, dict(self.seeds_by_experiment).get(experiment, seeds))


# The protocol of quick and full (one protocol, so quick's runs are a subset of full's and a full run can start
# from quick's rows). Fashion-MNIST, 3,000 training images, 2,000 validation images. Widths: 64 channels in every
# layer at least, so G=32 leaves >= 2 channels per group everywhere (Table 3 measures grouping, not
# InstanceNorm); the first stage at stride 2 (28 -> 14 -> 7 -> 4) keeps 64 channels cheap. One worker for Tables
# 1-3 (the global batch is b; BN's statistics are per worker either way, which is what Table 2 varies). noniid:
# 10 workers x 4 images, so that at one class per worker the global batch still holds every class once (the
# optimizer's step stays class-balanced; only BN's per-worker statistics see one class). ghost: 4 workers x 8
# images (global batch 32). 16 epochs for every setting (the paper's protocol: epochs fixed, so b=2 takes 16x the
# steps of b=32; ``ghost`` is the fixed-steps view), the paper's step schedule (lr x0.1 after 30%, 60% and 90% of
# the steps) after a 1-epoch warmup, no augmentation.
# No augmentation, because with random crops and flips the error of this network still falls in the last quarter
# of 30 epochs, while without them it fits its 3,000 images and its held-out error is flat over the last quarter
# (docs/results/README.md); the 2x-longer ``control`` runs check that 16 epochs are enough. Learning rates: the
# lr sweep on held-out training images (``--experiment lrsweep``; its table is in docs/results/README.md).
PROTOCOL = RunConfig(workers=1, epochs=16, train_size=3000, val_size=2000, widths=(64, 128), blocks=(1, 1),
                     stem_stride=2, first_stride=2, warmup_epochs=1.0, base_lr=0.1, augment=False,
                     schedule="step")
PROTOCOL_LRSWEEP = (0.4, 0.8, 1.6, 3.2, 6.4, 12.8)
# Base learning rates per 256 images: the lr sweep's best for BN and for GN (both inside the swept range); VGG
# without normalization is not swept (a plain deep net needs a smaller rate than a normalized one).
PROTOCOL_LR = (("bn", 1.6), ("gn", 6.4), ("none", 0.4))
# The variants of Tables 1 and 3 besides GN G=32 get their own sweep (full's lrsweep): at GN's 6.4, LN and GN with
# few, large groups do not fit their training images (LN: 19% training error). G=32 is GN; G=1 is LN, K=1 is IN.
PROTOCOL_SWEEP_VARIANTS = (("ln", None, None), ("in", None, None), ("gn+ws", 32, None),
                           *(("gn", g, None) for g in (64, 16, 8, 4, 2)),
                           *(("gn", None, k) for k in (64, 32, 16, 8, 4, 2)))
PROTOCOL_VARIANT_LRSWEEP = (0.4, 0.8, 1.6, 3.2, 6.4)
# Their best rates in the sweep; IN's equals GN's, so IN keeps the family's rate.
PROTOCOL_LR_VARIANT = (("LN", 0.8), ("GN+WS G=32", 1.6), ("GN G=64", 1.6), ("GN G=16", 3.2), ("GN G=8", 3.2),
                       ("GN G=4", 1.6), ("GN G=2", 3.2), ("GN K=64", 3.2), ("GN K=32", 0.8), ("GN K=16", 1.6),
                       ("GN K=8", 0.8), ("GN K=4", 3.2), ("GN K=2", 3.2))

# The video task's protocol (quick and full): clips of Fashion-MNIST items moving on a 32 x 32 canvas
# (data/clips.py: 10 item classes x 4 motion types = 40 classes), 2,000 training clips, 1,000 validation clips
# (from the test items), 4 emulated workers (the paper's 8 GPUs, scaled), 16 epochs for every setting, cosine
# decay after a 1-epoch warmup, augmentation on (a new speed, start and flip per clip and epoch; the label is
# kept). Clips of 4 frames, 8 for "more frames" (the paper's 32 and 64; 3 frames tell the motion type). The 3D
# ResNet: widths (16, 32, 64), one basic block each, stem at spatial stride 2 (32 -> 16 -> 16 -> 8 -> 4), time
# stride 2 from the second stage; GN with 8 groups (2 to 8 channels per group, as the paper's ResNet-50 has 2 to
# 64). Why this size: a step's cost is mostly the 3D convolutions' backward; at widths (32, 64, 128) and 8 and
# 16 frames a step costs about 5x more, which puts the grid out of reach of 2 cores; cosine decay rather than
# the step schedule, whose drop after 30% leaves few steps at the full rate. 16 epochs are not enough either: the
# error still falls 6-9 points over the last quarter (docs/results/README.md), so the video verdicts are not
# testable at this protocol; a converged one needs several times the epochs.
VIDEO_PROTOCOL = RunConfig(task="video", arch="resnet3d", groups=8, workers=4, epochs=16, train_size=2000,
                           val_size=1000, widths=(16, 32, 64), blocks=(1, 1, 1), stem_stride=2, first_stride=1,
                           warmup_epochs=1.0, base_lr=0.4, schedule="cosine", augment=True, frames=4, canvas=32)
# Base learning rates per 256 clips: the video lr sweep's best for BN and for GN (full's ``video-lrsweep``, one
# seed, held-out training clips; docs/results/video/report.md has its table).
VIDEO_LR = (("bn", 1.6), ("gn", 0.8))

PRESETS = {
    # Seconds: a handful of tiny runs, for the tests.
    "smoke": Preset(
        "smoke",
        RunConfig(workers=2, epochs=2, train_size=128, val_size=64, widths=(8, 16), blocks=(1, 1),
                  warmup_epochs=0.5, base_lr=0.2),
        seeds=1, table1_norms=("bn", "gn"), table2_batches=(8, 2), table3_groups=(8, 1),
        table3_group_sizes=(4,), table1_batch=8, noniid_classes=(1, 10), noniid_batch=4,
        ghost_norm_batches=(8, 2), lrsweep_lrs=(0.1, 0.4), vgg_widths=(8, 16), vgg_blocks=(1, 1),
        all_experiments=("table2", "table1", "table3", "curves"),
        video_base=RunConfig(task="video", arch="resnet3d", groups=4, workers=2, epochs=2, train_size=32,
                             val_size=16, widths=(4, 8), blocks=(1, 1), stem_stride=2, warmup_epochs=0.5,
                             base_lr=0.2, frames=4, canvas=16),
        video_clips=(4, 2), video_frames=4, video_more_frames=(2, 8), video_lrsweep_lrs=(0.1, 0.4)),
    # The README's main job (<= 15 minutes on 2 idle cores; docs/results/README.md has the measured time): the
    # two ends of Table 2 (BN and GN at 32 and 2 images per worker) and noniid (BN, GN) at 1 and 10 classes per
    # worker, 3 seeds. Same protocol as full, which adds SyncBN to noniid and the 2x-longer control.
    "quick": Preset(
        "quick", PROTOCOL, seeds=3, group_workers=4, ghost_batch=8, noniid_workers=10, noniid_batch=4,
        seeds_by_experiment=(("lrsweep", 2), ("vgg", 1), ("video-lrsweep", 1), ("video-control", 1)),
        table1_norms=("bn", "gn"), table2_batches=(32, 2), table3_groups=(32,), table3_group_sizes=(),
        noniid_classes=(1, 10), noniid_norms=("bn", "gn"), lr_by_norm=PROTOCOL_LR, lrsweep_lrs=PROTOCOL_LRSWEEP,
        all_experiments=("table2", "noniid"), video_base=VIDEO_PROTOCOL, video_clips=(8, 4),
        video_lr_by_norm=VIDEO_LR),
    # Every experiment on the same protocol, 3 seeds (lr sweep and Figure 3: one); seeds run one after the other
    # (all settings of seed 0 first), so a partial run is a full table. ~2.5 hours on 2 cores; resumable.
    "full": Preset(
        "full", PROTOCOL, seeds=3, group_workers=4, ghost_batch=8, noniid_workers=10, noniid_batch=4,
        seeds_by_experiment=(("lrsweep", 2), ("vgg", 1), ("video-lrsweep", 1), ("video-control", 1)),
        table1_norms=("bn", "ln", "in", "gn", "gn+ws"), lrsweep_lrs=PROTOCOL_LRSWEEP,
        table2_batches=(32, 16, 8, 4, 2), table3_groups=(64, 32, 16, 8, 4, 2, 1),
        table3_group_sizes=(64, 32, 16, 8, 4, 2, 1), lr_by_norm=PROTOCOL_LR,
        lr_by_variant=PROTOCOL_LR_VARIANT, lrsweep_variants=PROTOCOL_SWEEP_VARIANTS,
        lrsweep_variant_lrs=PROTOCOL_VARIANT_LRSWEEP,
        all_experiments=("lrsweep", "table2", "noniid", "ghost", "control", "table1", "table3", "vgg"),
        video_base=VIDEO_PROTOCOL, video_lr_by_norm=VIDEO_LR,
        video_experiments=("video-lrsweep", "video", "video-control")),
    # What a GPU user runs (see docs/harness.md): the paper's protocol, data sets in their official formats.
    # CIFAR-10 (50k training images, validation on the 10k test images): 8 workers, the paper's b list, its
    # schedule in epochs (100 epochs, lr x0.1 at 30/60/90) and its lr 0.1 per 256 images, weight decay 1e-4.
    # ResNet-18 with the 3x3 stem: 64..512 channels, so GN's 32 groups hold 2..16 channels as in ResNet-50.
    "cifar10": Preset(
        "cifar10",
        RunConfig(arch="resnet18_cifar", workers=8, epochs=100, train_size=None, val_size=None, base_lr=0.1,
                  warmup_epochs=1.0, schedule="step"),
        seeds=3, table1_norms=("bn", "ln", "in", "gn"), table2_batches=(32, 16, 8, 4, 2),
        table3_groups=(64, 32, 16, 8, 4, 2, 1), table3_group_sizes=(64, 32, 16, 8, 4, 2, 1),
        dataset="CIFAR-10", needs_data_dir=True, data_format="cifar10"),
    # The same with He et al.'s ResNet-20 (0.27M parameters, about 14x cheaper a step than ResNet-18): 16..64
    # channels, so GN uses 8 groups (2..8 channels per group; 32 groups would be InstanceNorm in its first two
    # stages). Table 3 from G=16 (its widest division of the 16-channel layers) down.
    "cifar10-resnet20": Preset(
        "cifar10-resnet20",
        RunConfig(arch="resnet20", groups=8, workers=8, epochs=100, train_size=None, val_size=None, base_lr=0.1,
                  warmup_epochs=1.0, schedule="step"),
        seeds=3, table1_norms=("bn", "ln", "in", "gn"), table2_batches=(32, 16, 8, 4, 2),
        table3_groups=(16, 8, 4, 2, 1), table3_group_sizes=(16, 8, 4, 2, 1),
        dataset="CIFAR-10", needs_data_dir=True, data_format="cifar10"),
    # The paper's Sec. 4.1 on ImageNet (an ImageFolder directory: train/<class>/, val/<class>/): ResNet-50,
    # 8 workers (one GPU each with --launcher torchrun), 100 epochs, lr 0.1 per 256 images (linear scaling
    # rule), x0.1 at epochs 30, 60, 90, weight decay 1e-4, and a 5-epoch linear warmup (Goyal et al., whose
    # details the paper says it follows). One seed: each run is days of 8 GPUs.
    "imagenet": Preset(
        "imagenet",
        RunConfig(arch="resnet50", workers=8, epochs=100, train_size=None, val_size=None, base_lr=0.1,
                  warmup_epochs=5.0, schedule="step"),
        seeds=1, table1_norms=("bn", "ln", "in", "gn"), table2_batches=(32, 16, 8, 4, 2),
        table3_groups=(64, 32, 16, 8, 4, 2, 1), table3_group_sizes=(64, 32, 16, 8, 4, 2, 1),
        all_experiments=("table2", "table1", "table3", "curves"), dataset="ImageNet", needs_data_dir=True,
        data_format="imagefolder"),
}


# The presets of the dense tasks (``groupnorm reproduce --task detection|segmentation --preset NAME``).
#
# Canvases of Fashion-MNIST items on texture photographs (:mod:`groupnorm.experiments.data.canvases`, 96-128 px),
# 8 emulated workers as the paper's 8 GPUs (smoke: 2), the detection backbone shape of
# :data:`groupnorm.experiments.models.backbone.DETECTION_SHAPE` (widths 32, 64, 128; GN with 8 groups, so every
# group holds at least 4 channels), the paper's step schedule after a warmup, no augmentation. ``quick`` and
# ``full`` share one protocol (quick's runs are a subset of full's); their learning rates (the linear scaling rule
# from one base rate per norm family, ``lr_by_norm``) come from ``dense-lrsweep``, which tries
# ``dense_lrsweep_lrs`` for BN and GN on held-out training canvases (one seed), first in quick's and full's "all".
# Detection (quick sweep, box AP on held-out canvases, 0.08-5.12 per 256): BN 13.8 / 19.4 / 22.1 / 24.7 / 27.3 /
# 29.8 / 24.2, best 2.56; GN 7.7 / 14.2 / 17.2 / 23.0 / 22.7 / 22.5 / 4.0, best 0.64 (flat over 0.64-2.56). Both
# argmins lie inside the range. Segmentation keeps 0.32 until its sweep is run. The ``head`` runs (two-stage
# detector, GN backbone) take GN's rate from this one-stage sweep; at it 3 of their first 5 runs diverged, so
# Table 5 needs a held-out sweep of the two-stage detector per head norm (not yet a plan).
#
# Segmentation trains 3x the epochs (36): at 12, held-out sweep runs of BN at 0.08-0.64 and GN at 0.64 predicted
# background almost everywhere (mIoU 7.7-10.3, background alone is 7.7), while GN at 1.28 over 36 epochs passed
# 19 by epoch 12 and kept rising (per-pixel classes learn more slowly than the detector's class heatmaps).
#
# - ``smoke``: seconds, for the tests: BN and GN at 1 and 2 images per worker, tiny widths, 8 + 8 canvases.
# - ``quick``: the lr sweep, BN vs GN at 2 and 16 images per worker and (detection) the head experiment, 3 seeds.
# - ``full``: every experiment of the task (detection: dense-lrsweep, transfer, head, scratch, perworker, masked;
#   segmentation: dense-lrsweep, perworker, masked), 3 seeds.
_SMOKE = RunConfig(norm="gn", groups=4, workers=2, batch_per_worker=2, epochs=2, train_size=8, val_size=8,
                   widths=(8, 16, 32), blocks=(1, 1, 1), stem_stride=2, first_stride=2, warmup_epochs=0.5,
                   base_lr=0.2, augment=False, schedule="step")
_PROTOCOL = RunConfig(norm="gn", groups=8, workers=8, batch_per_worker=2, epochs=12, train_size=512, val_size=256,
                      widths=(32, 64, 128), blocks=(1, 1, 1), stem_stride=2, first_stride=2, warmup_epochs=1.0,
                      base_lr=0.32, augment=False, schedule="step")
_LR = {"detection": (("bn", 2.56), ("gn", 0.64), ("none", 0.32)),  # per 256 canvases; 0.32: 0.02 at 8 x 2
       "segmentation": (("bn", 0.32), ("gn", 0.32), ("none", 0.32))}
_EPOCHS = {"detection": 12, "segmentation": 36}
# Segmentation's sweep goes one step higher: BN's held-out mIoU was still rising at 5.12 (9.7 / 10.2 / 12.9 / 23.3
# at 0.64-5.12), so its best was not yet inside the range.
_SWEEP = {"detection": (0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12),
          "segmentation": (0.08, 0.16, 0.32, 0.64, 1.28, 2.56, 5.12, 10.24)}
_EMPTY = dict(table1_norms=(), table2_batches=(2,), table3_groups=(), table3_group_sizes=())


def _task(task: str, arch: str) -> dict:
    smoke = Preset("smoke", dataclasses.replace(_SMOKE, task=task, arch=arch), seeds=1, dense_batches=(1, 2),
                   all_experiments=("perworker",), task=task, pretrain_epochs=1, transfer_schedules=(1,),
                   dense_lrsweep_lrs=(0.1, 0.4), **_EMPTY)
    protocol = dataclasses.replace(_PROTOCOL, task=task, arch=arch, epochs=_EPOCHS[task])
    quick = Preset("quick", protocol, seeds=3, dense_batches=(2, 16), dense_lrsweep_lrs=_SWEEP[task],
                   lr_by_norm=_LR[task], head_norms=("none", "bn", "gn"), task=task,
                   all_experiments=(("dense-lrsweep", "perworker", "head") if task == "detection"
                                    else ("dense-lrsweep", "perworker")), **_EMPTY)
    full = Preset("full", protocol, seeds=3, lr_by_norm=_LR[task], task=task, dense_lrsweep_lrs=_SWEEP[task],
                  all_experiments=(("dense-lrsweep", "transfer", "head", "scratch", "perworker", "masked")
                                   if task == "detection" else ("dense-lrsweep", "perworker", "masked")), **_EMPTY)
    return {"smoke": smoke, "quick": quick, "full": full}


DENSE_PRESETS = {"detection": _task("detection", "centernet"), "segmentation": _task("segmentation", "unet")}


def pretrain_config(cfg: RunConfig) -> RunConfig:
    """The classification run whose weights the backbone of the dense run ``cfg`` starts from (``cfg.pretrain_epochs``
    > 0; the paper's ImageNet pre-training, at our scale): the quick/full classification protocol (``PROTOCOL``:
    the data set's own 28x28 images, 32 per worker, one worker, the step schedule, its lr for the norm family)
    for ``cfg.pretrain_epochs`` epochs, on the ``resnet`` of ``cfg``'s shape and groups, with BN for BN, BN* and
    SyncBN backbones (a BN model, frozen or fine-tuned afterwards) and GN for GN; ``cfg``'s seed. Its
    ``experiment`` is ``pretrain`` (kept out of the classification tables)."""
    if cfg.pretrain_epochs < 1:
        raise ValueError(f"pretrain_epochs={cfg.pretrain_epochs!r}: run {cfg.label!r} is not pre-trained")
    norm = "bn" if cfg.norm in ("bn", "bn-frozen") else cfg.norm
    pre = dataclasses.replace(PROTOCOL, norm=norm, groups=cfg.groups if norm == "gn" else PROTOCOL.groups,
                              batch_per_worker=32, widths=tuple(cfg.widths), blocks=tuple(cfg.blocks),
                              stem_stride=cfg.stem_stride, first_stride=cfg.first_stride, seed=cfg.seed,
                              epochs=cfg.pretrain_epochs, experiment="pretrain")
    return dataclasses.replace(pre, base_lr=dict(PROTOCOL_LR).get(norm, PROTOCOL.base_lr))


def preset_data_dir(preset: Preset, data_dir: str | None) -> str | None:
    """``data_dir``, checked against the preset: one whose data set has no default directory on this machine
    (``needs_data_dir``) raises an error naming the preset, its data set and the directory it needs when
    ``data_dir`` is None (``$GROUPNORM_DATA``, the Fashion-MNIST default's override, does not count)."""
    if data_dir is None and preset.needs_data_dir:
        fmt = FORMATS.get(preset.data_format)
        hint = fmt.holds if fmt is not None else f"a directory with {preset.dataset}"
        raise ValueError(f"preset {preset.name!r} trains {preset.base.arch} on {preset.dataset}, which has no "
                         f"default directory: pass --data-dir DIR ({hint})")
    return data_dir


def task_presets(task: str) -> dict:
    """The presets that serve ``task``: :data:`PRESETS` (classification and video), or ``DENSE_PRESETS[task]``."""
    if task in ("classification", "video"):
        return PRESETS
    if task not in DENSE_PRESETS:
        raise ValueError(f"unknown task {task!r}; choose one of classification, video, {', '.join(DENSE_PRESETS)}")
    return DENSE_PRESETS[task]


def get_preset(name: str, task: str = "classification") -> Preset:
    """The preset ``name`` of ``task``: one of :data:`PRESETS` for classification and video (its ``base`` and
    ``video_base``), a dense task's of :data:`DENSE_PRESETS`; its protocol is ``.task_base(task)``."""
    presets = task_presets(task)
    if name not in presets:
        raise ValueError(f"task {task!r} has no preset {name!r}; choose one of {', '.join(presets)}")
    return presets[name]
