"""One training run's configuration, its identity (hash), the presets and the paper's experiments as run lists.

Protocol (the GN paper, Sec. 4.1, scaled down): W workers, each with ``batch_per_worker`` images (BN statistics
are per worker), SGD with momentum 0.9, the linear scaling rule ``lr = base_lr * W * b / 256``, a linear
warmup then a cosine (or the paper's step) schedule over the same number of epochs for every setting, weight
decay on conv/linear weights only (as in Goyal et al., which the paper follows), gamma = 0 for the last norm of
each residual block.

Experiments:
- ``table1``: BN, LN, IN, GN (G=32) at ``b`` = 32 images per worker (the paper's Table 1; Figure 4 curves).
- ``table2``: BN and GN at each ``b`` of the preset's batch list (Table 2, Figure 1; Figure 5 curves).
- ``table3``: GN with G groups (64 .. 1 = LN) and with K channels per group (64 .. 1 = IN) at b = 32.
- ``curves``: the runs behind Figures 4 and 5 (table1's and table2's largest and smallest batch).
- ``noniid``: BN, GN and SyncBN with each worker's b images from ``classes_per_worker`` classes (noniid.py).
- ``ghost``: the global batch and lr fixed, BN statistics over ``norm_batch`` images (the fixed-steps view of
  Table 2); GN and SyncBN references.
- ``lrsweep``: BN and GN at b = 32 for each base learning rate of the preset, validated on held-out *training*
  images (``holdout``), never on the reported validation images; the presets' per-norm learning rates are the
  sweep's argmins (docs/results/README.md).
- ``control``: BN at the largest and smallest b trained ``control_factor`` (2) times as many epochs: the
  convergence control of the report (their error may change by at most 1 point).
- ``vgg``: the VGG-style network without normalization, with BN and with GN (Figure 3; vgg.py).
- ``all``: the preset's ``all_experiments``. Runs that two experiments share (e.g. GN at b=32) are trained once.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from ..models.archs import ARCHS, DEFAULT_ARCH, SHAPE_FIELDS

EXPERIMENTS = ("table1", "table2", "table3", "curves", "noniid", "ghost", "lrsweep", "control", "vgg", "all")
PRESET_NAMES = ("smoke", "quick", "full", "cifar10", "cifar10-resnet20", "imagenet")


def canonical_norm(norm: str, groups: int | None, group_size: int | None) -> tuple[str, tuple]:
    """(norm, (groups, group_size)) with LN as GN G=1, IN as GN K=1, K winning over G, no G/K for non-GN."""
    g, k = groups, group_size
    if norm == "ln":
        return "gn", (1, None)
    if norm == "in":
        return "gn", (None, 1)
    if norm in ("gn", "gn+ws"):
        return norm, ((None, k) if k is not None else (g, None))
    return norm, (None, None)


def norm_kind(norm: str, groups: int | None = None, group_size: int | None = None, *,
              norm_batch: int | None = None, global_batch: int | None = None) -> str:
    """The name tables and plots use: BN, SyncBN (BN whose ``norm_batch`` is the whole global batch), GN, LN
    (G=1), IN (one channel per group), GN+WS (LN+WS, IN+WS), BN-FROZEN or NONE. ``norm`` may be a config's name
    (``ln``, ``in``) or a row's canonical one."""
    norm, (g, k) = canonical_norm(norm, groups, group_size)
    if norm == "bn":
        return "SyncBN" if norm_batch is not None and norm_batch == global_batch else "BN"
    if norm in ("bn-frozen", "none"):
        return norm.upper()
    ws = "+WS" if norm == "gn+ws" else ""
    if k == 1:
        return "IN" + ws
    if g == 1 and k is None:
        return "LN" + ws
    return "GN" + ws


def variant_label(kind: str, groups_and_size: tuple) -> str:
    """``GN G=32``, ``GN K=4``, ``GN+WS G=32``, ``LN``, ``IN``, ``BN``: the normalization a run uses, as the lr
    sweep, the presets' per-variant learning rates and the run labels name it."""
    g, k = groups_and_size
    gk = f" K={k}" if k not in (None, 1) else (f" G={g}" if kind.startswith("GN") and g is not None else "")
    return kind + gk


def run_label(kind: str, groups_and_size: tuple, batch_per_worker: int, seed: int) -> str:
    """``GN G=32 b=8 s=0``, ``GN K=4 b=32 s=1``, ``BN b=2 s=0``: the run as messages and progress bars name it."""
    return f"{variant_label(kind, groups_and_size)} b={batch_per_worker} s={seed}"


@dataclass(frozen=True)
class RunConfig:
    """Everything that determines a run's numbers (paths and the launcher do not)."""

    norm: str = "gn"
    groups: int | None = 32
    group_size: int | None = None
    batch_per_worker: int = 32
    workers: int = 8
    seed: int = 0
    epochs: int = 5
    train_size: int | None = 10000
    val_size: int | None = 2000
    widths: tuple = (32, 64, 128)
    blocks: tuple = (1, 1, 1)
    stem_stride: int = 2
    base_lr: float = 0.1          # per lr_ref_batch images (linear scaling rule)
    lr_ref_batch: int = 256
    warmup_epochs: float = 1.0
    schedule: str = "cosine"      # "cosine" or "step" (x0.1 at 30%, 60%, 90% of training, as the paper's 30/60/90)
    weight_decay: float = 1e-4
    momentum: float = 0.9
    augment: bool = True
    # Issue-13 experiments; None = the standard protocol, and then left out of the identity (older keys hold).
    norm_batch: int | None = None          # BN statistics over groups of this many images (ghost BN); = the
    #                                        global batch: BN synchronized across all workers (SyncBN)
    classes_per_worker: int | None = None  # each worker's b images drawn from this many classes (noniid)
    # Later fields, also left out of the identity at their defaults (older keys hold):
    first_stride: int = 1       # stride of the ResNet's first stage (models.ResNet)
    holdout: bool = False       # validate on held-out training images, not the test split (lrsweep; holdout.py)
    arch: str = DEFAULT_ARCH    # a key of archs.ARCHS: "resnet" (the small ResNet shaped by widths, blocks,
    #                             stem_stride, first_stride), "vgg" (vgg.VGG, no residuals: Figure 3), or a
    #                             named ResNet (resnet20 .. resnet101, resnet18_cifar, ...: models.py)
    experiment: str = field(default="", compare=False)  # who asked for it first; not part of the identity

    @property
    def global_batch(self) -> int:
        return self.workers * self.batch_per_worker

    @property
    def lr(self) -> float:
        return self.base_lr * self.global_batch / self.lr_ref_batch

    def images_per_epoch(self, available: int | None = None) -> int:
        """Images trained per epoch: whole global batches of the ``train_size`` images (or of ``available``,
        the images actually there, when smaller or when ``train_size`` is None); the last partial batch is
        dropped. The one place this formula lives (training loop, progress bars, ETA)."""
        n = self.train_size if self.train_size is not None else available
        if available is not None:
            n = min(n, available)
        if n is None:
            raise ValueError("images_per_epoch: train_size is None and the number of available images is unknown")
        return (n // self.global_batch) * self.global_batch

    def images_per_run(self, available: int | None = None) -> int:
        return self.epochs * self.images_per_epoch(available)

    @property
    def kind(self) -> str:
        return norm_kind(self.norm, *self.canonical_groups(), norm_batch=self.norm_batch,
                         global_batch=self.global_batch)

    @property
    def variant(self) -> str:
        """The normalization variant (``variant_label``): what the lr sweep tunes a learning rate for."""
        return variant_label(self.kind, self.canonical_groups())

    @property
    def label(self) -> str:
        """Short human name of the run, for progress bars and messages: e.g. ``GN G=32 b=8 s=0``."""
        extra = (f" norm_batch={self.norm_batch}" if self.kind == "BN" and self.norm_batch is not None else "") \
            + (f" c={self.classes_per_worker}" if self.classes_per_worker is not None else "") \
            + (f" lr={self.base_lr:g} holdout" if self.holdout else "") \
            + (f" epochs={self.epochs}" if self.experiment == "control" else "")
        arch = {DEFAULT_ARCH: "", "vgg": "VGG "}.get(self.arch, f"{self.arch} ")
        return arch + run_label(self.kind, self.canonical_groups(), self.batch_per_worker, self.seed) + extra

    def canonical_groups(self) -> tuple:
        """(groups, group_size) as the run's identity and its results row have them (LN is G=1, IN is K=1)."""
        d = self.canonical()
        return d["groups"], d["group_size"]

    def canonical(self) -> dict:
        """The identity of the run: LN is GN with G=1, IN is GN with one channel per group (same model)."""
        d = dataclasses.asdict(self)
        d.pop("experiment")
        norm, (g, k) = canonical_norm(d["norm"], d["groups"], d["group_size"])
        d.update(norm=norm, groups=g, group_size=k, widths=list(self.widths), blocks=list(self.blocks))
        if self.arch in ARCHS and not ARCHS[self.arch].config_fields:
            for name in ("widths", "blocks", "stem_stride"):  # a named ResNet fixes them (validate: at defaults)
                d.pop(name)
        if d["norm_batch"] is None or d["norm_batch"] == self.batch_per_worker:
            d.pop("norm_batch")  # BN per worker: the standard run
        if d["classes_per_worker"] is None:
            d.pop("classes_per_worker")
        for name, default in (("first_stride", 1), ("holdout", False), ("arch", DEFAULT_ARCH)):
            if d[name] == default:
                d.pop(name)
        return d

    def shape_overrides(self) -> dict:
        """The shape fields (``archs.SHAPE_FIELDS``) this run's arch takes from the config, for
        :func:`groupnorm.experiments.models.build_model`: all four for ``resnet``, widths and blocks for
        ``vgg``, none for a named ResNet (which fixes them)."""
        return {n: tuple(v) if isinstance(v, (list, tuple)) else v
                for n in ARCHS[self.arch].config_fields for v in [getattr(self, n)]}

    @property
    def bn_batch(self) -> int | None:
        """Images per BN statistics group (``norm_batch``, else one worker's b); None for other norms."""
        if self.norm != "bn":
            return None
        return self.norm_batch if self.norm_batch is not None else self.batch_per_worker

    def key(self) -> str:
        blob = json.dumps(self.canonical(), sort_keys=True)
        return hashlib.sha256(blob.encode()).hexdigest()[:16]

    def validate(self) -> None:
        for name in ("batch_per_worker", "workers", "epochs"):
            v = getattr(self, name)
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name}={v!r} must be a positive integer")
        if self.arch not in ARCHS:
            raise ValueError(f"arch={self.arch!r} must be one of {', '.join(ARCHS)}")
        if self.first_stride not in (1, 2):
            raise ValueError(f"first_stride={self.first_stride!r} must be 1 or 2")
        fixed = () if ARCHS[self.arch].config_fields else SHAPE_FIELDS  # a named ResNet's
        changed = [n for n in fixed if getattr(self, n) != getattr(_DEFAULT, n)]
        if changed:
            raise ValueError(f"arch={self.arch!r} fixes its shape; {', '.join(changed)} apply to "
                             f"{DEFAULT_ARCH!r} only")
        if self.schedule not in ("cosine", "step"):
            raise ValueError(f"schedule={self.schedule!r} must be 'cosine' or 'step'")
        if self.norm_batch is not None:
            if self.norm != "bn":
                raise ValueError(f"norm_batch={self.norm_batch} applies to BN only, not norm={self.norm!r}")
            if not isinstance(self.norm_batch, int) or self.norm_batch < 1 or self.global_batch % self.norm_batch:
                raise ValueError(f"norm_batch={self.norm_batch!r} does not divide the global batch of "
                                 f"{self.global_batch} images ({self.workers} workers x {self.batch_per_worker})")
        if self.classes_per_worker is not None:
            from ..data.loading import NUM_CLASSES

            c = self.classes_per_worker
            if not isinstance(c, int) or not 1 <= c <= NUM_CLASSES:
                raise ValueError(f"classes_per_worker={c!r} must be an integer from 1 to the number of classes "
                                 f"({NUM_CLASSES})")
        if self.train_size is not None and self.train_size < self.global_batch:
            raise ValueError(f"train_size={self.train_size} is smaller than one global batch "
                             f"({self.workers} workers x {self.batch_per_worker} images)")

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"], d["blocks"] = list(self.widths), list(self.blocks)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["widths"], d["blocks"] = tuple(d["widths"]), tuple(d["blocks"])
        return cls(**d)


_DEFAULT = RunConfig()  # the dataclass's defaults (a named ResNet's shape fields stay at them)


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
    seeds_by_experiment: tuple = (("lrsweep", 1), ("vgg", 1))
    all_experiments: tuple = ("table2", "noniid", "ghost", "table1", "table3", "curves")  # what "all" means
    dataset: str = "Fashion-MNIST"                  # what it trains on (its arch is base.arch)
    needs_data_dir: bool = False                    # no default directory: --data-dir is required
    data_format: str = "auto"                       # --dataset unless given (dataspec.FORMATS)

    def base_lr(self, cfg: "RunConfig") -> float:
        """The base learning rate of ``cfg``'s normalization: its variant's (``lr_by_variant``), else its norm
        family's (``lr_by_norm``), else ``base.base_lr``."""
        variants = dict(self.lr_by_variant)
        if cfg.variant in variants:
            return variants[cfg.variant]
        family = {"ln": "gn", "in": "gn", "gn+ws": "gn", "bn-frozen": "bn"}.get(cfg.norm, cfg.norm)
        return dict(self.lr_by_norm).get(family, self.base.base_lr)

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
# Why these: at 8 epochs with random crops and flips (the previous protocol) training error was still ~20% and
# validation error fell by 1-2 points in the last quarter (not converged); with augmentation the error keeps
# falling with every doubling of the epochs, still by 3 points in the last quarter of 30 epochs. Without
# augmentation the network fits its 3,000 images (training error ~0 by epoch 13) and held-out error is flat over
# the last quarter and the same at 8 and 16 epochs: converged errors of the no-augmentation regime, higher than
# augmentation's at 30 epochs (probes in docs/results/README.md). The 2x-longer ``control`` runs check that 16
# epochs are enough. Learning rates: the lr sweep on held-out training images (``--experiment lrsweep``), see
# docs/results/README.md.
PROTOCOL = RunConfig(workers=1, epochs=16, train_size=3000, val_size=2000, widths=(64, 128), blocks=(1, 1),
                     stem_stride=2, first_stride=2, warmup_epochs=1.0, base_lr=0.1, augment=False,
                     schedule="step")
PROTOCOL_LRSWEEP = (0.4, 0.8, 1.6, 3.2, 6.4, 12.8)
# The lr sweep's argmins (docs/results/full, rows with holdout=True; held-out error %, mean of 2 seeds, base lr
# 0.4 / 0.8 / 1.6 / 3.2 / 6.4 / 12.8 per 256): BN 16.93 / 15.50 / 15.02 / 15.03 / 15.47 / 17.25 -> 1.6; GN 17.75 /
# 16.20 / 15.65 / 15.70 / 15.43 / 19.00 -> 6.4. Both inside the swept range. VGG without normalization: not
# swept, 0.4 per 256 (a plain deep net needs a smaller rate than a normalized one).
PROTOCOL_LR = (("bn", 1.6), ("gn", 6.4), ("none", 0.4))
# The variants of Tables 1 and 3 besides GN G=32 get their own sweep (full's lrsweep): at GN's 6.4, LN and GN with
# few, large groups do not fit their training images (LN: 19% training error). G=32 is GN; G=1 is LN, K=1 is IN.
PROTOCOL_SWEEP_VARIANTS = (("ln", None, None), ("in", None, None), ("gn+ws", 32, None),
                           *(("gn", g, None) for g in (64, 16, 8, 4, 2)),
                           *(("gn", None, k) for k in (64, 32, 16, 8, 4, 2)))
PROTOCOL_VARIANT_LRSWEEP = (0.4, 0.8, 1.6, 3.2, 6.4)
# Their argmins (docs/results/full, holdout rows, mean of 2 seeds; docs/results/README.md has the table). IN's is
# 6.4 = GN's (its curve is flat within 0.4 points over 0.8-6.4), so IN keeps the family's rate.
PROTOCOL_LR_VARIANT = (("LN", 0.8), ("GN+WS G=32", 1.6), ("GN G=64", 1.6), ("GN G=16", 3.2), ("GN G=8", 3.2),
                       ("GN G=4", 1.6), ("GN G=2", 3.2), ("GN K=64", 3.2), ("GN K=32", 0.8), ("GN K=16", 1.6),
                       ("GN K=8", 0.8), ("GN K=4", 3.2), ("GN K=2", 3.2))

PRESETS = {
    # Seconds: a handful of tiny runs, for the tests.
    "smoke": Preset(
        "smoke",
        RunConfig(workers=2, epochs=2, train_size=128, val_size=64, widths=(8, 16), blocks=(1, 1),
                  warmup_epochs=0.5, base_lr=0.2),
        seeds=1, table1_norms=("bn", "gn"), table2_batches=(8, 2), table3_groups=(8, 1),
        table3_group_sizes=(4,), table1_batch=8, noniid_classes=(1, 10), noniid_batch=4,
        ghost_norm_batches=(8, 2), lrsweep_lrs=(0.1, 0.4), vgg_widths=(8, 16), vgg_blocks=(1, 1),
        all_experiments=("table2", "table1", "table3", "curves")),
    # The README's main job (<= 15 minutes on 2 idle cores; docs/results/README.md has the measured time): the
    # two ends of Table 2 (BN and GN at 32 and 2 images per worker) and noniid (BN, GN) at 1 and 10 classes per
    # worker, 3 seeds. Same protocol as full, which adds SyncBN to noniid and the 2x-longer control.
    "quick": Preset(
        "quick", PROTOCOL, seeds=3, group_workers=4, ghost_batch=8, noniid_workers=10, noniid_batch=4,
        seeds_by_experiment=(("lrsweep", 2), ("vgg", 1)),
        table1_norms=("bn", "gn"), table2_batches=(32, 2), table3_groups=(32,), table3_group_sizes=(),
        noniid_classes=(1, 10), noniid_norms=("bn", "gn"), lr_by_norm=PROTOCOL_LR, lrsweep_lrs=PROTOCOL_LRSWEEP,
        all_experiments=("table2", "noniid")),
    # Every experiment on the same protocol, 3 seeds (lr sweep and Figure 3: one); seeds run one after the other
    # (all settings of seed 0 first), so a partial run is a full table. ~2.5 hours on 2 cores; resumable.
    "full": Preset(
        "full", PROTOCOL, seeds=3, group_workers=4, ghost_batch=8, noniid_workers=10, noniid_batch=4,
        seeds_by_experiment=(("lrsweep", 2), ("vgg", 1)),
        table1_norms=("bn", "ln", "in", "gn", "gn+ws"), lrsweep_lrs=PROTOCOL_LRSWEEP,
        table2_batches=(32, 16, 8, 4, 2), table3_groups=(64, 32, 16, 8, 4, 2, 1),
        table3_group_sizes=(64, 32, 16, 8, 4, 2, 1), lr_by_norm=PROTOCOL_LR,
        lr_by_variant=PROTOCOL_LR_VARIANT, lrsweep_variants=PROTOCOL_SWEEP_VARIANTS,
        lrsweep_variant_lrs=PROTOCOL_VARIANT_LRSWEEP,
        all_experiments=("lrsweep", "table2", "noniid", "ghost", "control", "table1", "table3", "vgg")),
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


DATA_DIR_HINTS = {
    "CIFAR-10": "the directory with CIFAR-10's data_batch_1..5, test_batch and batches.meta (or the extracted "
                "cifar-10-batches-py above them)",
    "ImageNet": "an ImageFolder directory: train/<class>/*.JPEG and val/<class>/*.JPEG",
}


def preset_data_dir(preset: Preset, data_dir: str | None) -> str | None:
    """``data_dir``, checked against the preset: one whose data set has no default directory on this machine
    (``needs_data_dir``) raises an error naming the preset, its data set and the directory it needs when
    ``data_dir`` is None (``$GROUPNORM_DATA``, the Fashion-MNIST default's override, does not count)."""
    if data_dir is None and preset.needs_data_dir:
        hint = DATA_DIR_HINTS.get(preset.dataset, f"a directory with {preset.dataset}")
        raise ValueError(f"preset {preset.name!r} trains {preset.base.arch} on {preset.dataset}, which has no "
                         f"default directory: pass --data-dir DIR, {hint}")
    return data_dir


def get_preset(name: str) -> Preset:
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return PRESETS[name]


def experiment_configs(experiment: str, preset: Preset, seeds: int | None = None, workers: int | None = None,
                       epochs: int | None = None, batches: tuple | None = None,
                       arch: str | None = None) -> list[RunConfig]:
    """The runs of one experiment (or ``all``), each seed, duplicates (by key) removed, in a stable order.

    ``seeds``, ``workers``, ``epochs``, ``batches`` (Table 2's images per worker) and ``arch`` override the
    preset's (a named arch replaces the preset's ``resnet`` widths, blocks and strides).
    Every run gets its norm's learning rate (``Preset.base_lr``) unless its experiment sets one (lrsweep).
    """
    if experiment not in EXPERIMENTS:
        raise ValueError(f"unknown experiment {experiment!r}; choose one of {', '.join(EXPERIMENTS)}")
    n_seeds = preset.seeds if seeds is None else seeds
    if n_seeds < 1:
        raise ValueError(f"seeds={n_seeds} must be at least 1")
    over_base = {k: v for k, v in (("workers", workers), ("epochs", epochs)) if v is not None}
    if arch is not None:
        over_base["arch"] = arch
        if arch not in ARCHS:
            raise ValueError(f"arch={arch!r} must be one of {', '.join(ARCHS)}")
        if not ARCHS[arch].config_fields:  # a named ResNet: the preset's small-ResNet shape does not apply
            over_base.update({n: getattr(_DEFAULT, n) for n in SHAPE_FIELDS})
    base = dataclasses.replace(preset.base, **over_base)
    if batches is not None:
        if not batches or any(not isinstance(b, int) or b < 1 for b in batches):
            raise ValueError(f"batches={batches!r} must be positive integers")
        preset = dataclasses.replace(preset, table2_batches=tuple(batches))
    b1 = preset.table1_batch
    big, small = max(preset.table2_batches), min(preset.table2_batches)
    nb = preset.noniid_batch
    gw = preset.group_workers or base.workers  # ghost's workers (and noniid's unless noniid_workers)
    nw = preset.noniid_workers or gw
    if workers is not None:
        gw = nw = workers
    gb = preset.ghost_batch or b1
    noniid_norm = {"bn": dict(norm="bn"), "gn": dict(norm="gn"), "syncbn": dict(norm="bn", norm_batch=nw * nb)}
    for n in preset.noniid_norms:
        if n not in noniid_norm:
            raise ValueError(f"noniid norm {n!r} must be one of {', '.join(noniid_norm)}")
    plan: dict[str, list[dict]] = {
        "table1": [dict(norm=n, batch_per_worker=b1) for n in preset.table1_norms],
        "table2": [dict(norm=n, batch_per_worker=b) for n in ("bn", "gn") for b in preset.table2_batches],
        "table3": [dict(norm="gn", groups=g, batch_per_worker=b1) for g in preset.table3_groups]
        + [dict(norm="gn", groups=None, group_size=k, batch_per_worker=b1) for k in preset.table3_group_sizes],
        "curves": [dict(norm=n, batch_per_worker=b1) for n in preset.table1_norms]
        + [dict(norm=n, batch_per_worker=b) for n in ("bn", "gn") for b in (big, small)],
        # BN, GN, and BN synchronized over all workers (norm_batch = the global batch), per classes_per_worker
        "noniid": [dict(noniid_norm[n], batch_per_worker=nb, classes_per_worker=c, workers=nw)
                   for c in preset.noniid_classes for n in preset.noniid_norms],
        # the global batch W x gb and the lr fixed; BN statistics over norm_batch images; GN and SyncBN references
        "ghost": [dict(norm="bn", batch_per_worker=gb, norm_batch=g, workers=gw) for g in preset.ghost_norm_batches]
        + [dict(norm="gn", batch_per_worker=gb, workers=gw),
           dict(norm="bn", batch_per_worker=gb, norm_batch=gw * gb, workers=gw)],
        "lrsweep": [dict(norm=n, batch_per_worker=b1, base_lr=lr, holdout=True)
                    for n in ("bn", "gn") for lr in preset.lrsweep_lrs]
        + [dict(norm=n, groups=g, group_size=k, batch_per_worker=b1, base_lr=lr, holdout=True)
           for n, g, k in preset.lrsweep_variants for lr in preset.lrsweep_variant_lrs or preset.lrsweep_lrs],
        "control": [dict(norm="bn", batch_per_worker=b, epochs=base.epochs * preset.control_factor)
                    for b in (big, small)],
        "vgg": [dict(norm=n, batch_per_worker=b1, arch="vgg", widths=preset.vgg_widths, blocks=preset.vgg_blocks,
                     first_stride=1) for n in preset.vgg_norms],
    }
    # Table 2 (the paper's main claim) first, so that a partial run of a preset answers it first.
    names = list(preset.all_experiments) if experiment == "all" else [experiment]
    out, seen = [], set()
    for seed in range(n_seeds):
        for name in names:
            if seed >= preset.seeds_of(name, n_seeds):
                continue
            for over in plan[name]:
                cfg = dataclasses.replace(base, seed=seed, experiment=name, **over)
                if "base_lr" not in over:
                    cfg = dataclasses.replace(cfg, base_lr=preset.base_lr(cfg))
                cfg.validate()
                if cfg.key() not in seen:
                    seen.add(cfg.key())
                    out.append(cfg)
    return out
