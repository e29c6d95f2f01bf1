"""What a training run is: :class:`RunConfig` (everything that determines its numbers), its identity (a hash of
the fields that matter) and the names the tables, plots and messages use for its normalization.

Protocol (the GN paper, Sec. 4.1, scaled down): W workers, each with ``batch_per_worker`` images (BN statistics
are per worker), SGD with momentum 0.9, the linear scaling rule ``lr = base_lr * W * b / 256``, a linear
warmup then a cosine (or the paper's step) schedule over the same number of epochs for every setting, weight
decay on conv/linear weights only (as in Goyal et al., which the paper follows), gamma = 0 for the last norm of
each residual block.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
from dataclasses import dataclass, field

from ..data import NUM_CLASSES
from ..data.formats import DENSE_TASKS, TASKS
from ..models.archs import ARCHS, DEFAULT_ARCH, SHAPE_FIELDS

HEAD_NORMS = ("bn", "syncbn", "gn", "bn-frozen", "none")  # the dense tasks' head norms (RunConfig.head_norm)


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
    # The fields below are left out of the run's identity at their defaults (so the keys of runs that predate a
    # field hold). norm_batch and classes_per_worker: None is the standard protocol.
    norm_batch: int | None = None          # BN statistics over groups of this many images (ghost BN); = the
    #                                        global batch: BN synchronized across all workers (SyncBN)
    classes_per_worker: int | None = None  # each worker's b images drawn from this many classes (noniid)
    first_stride: int = 1       # stride of the ResNet's first stage (models.ResNet)
    holdout: bool = False       # validate on held-out training images, not the test split (lrsweep; data/holdout.py)
    arch: str = DEFAULT_ARCH    # a key of archs.ARCHS: "resnet" (the small ResNet shaped by widths, blocks,
    #                             stem_stride, first_stride), "vgg" (vgg.VGG, no residuals: Figure 3), or a
    #                             named ResNet (resnet20 .. resnet101, resnet18_cifar, ...: models/)
    task: str = "classification"  # what the run's data, model and rows are for (data.formats.TASKS)
    frames: int = 8             # video only: frames T per clip (data.clips.ClipSpec); in the identity for video
    canvas: int = 32            # video only: frames are canvas x canvas pixels; in the identity for video
    # The dense tasks' fields (detection, segmentation; left out of the identity at their defaults):
    head_norm: str | None = None  # the heads' norm (a make_norm name, or "syncbn": BN over the global batch);
    #                               None: the backbone's
    masked_stats: bool = False    # GN leaves the padding of a batch of canvases out of its statistics
    pretrain_epochs: int = 0      # epochs of the backbone's classification pre-training (presets.pretrain_config);
    #                               0: from random weights
    masks: bool = False           # arch two_stage: the Mask R-CNN mask head beside the box head (rows get mask_ap)
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
        return config_label(self)

    def canonical_groups(self) -> tuple:
        """(groups, group_size) as the run's identity and its results row have them (LN is G=1, IN is K=1)."""
        d = self.canonical()
        return d["groups"], d["group_size"]

    def canonical(self) -> dict:
        """The identity of the run (:func:`identity`): LN is GN with G=1, IN is GN with one channel per group."""
        return identity(self)

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
        """A ValueError naming the first bad field (:func:`validate`)."""
        validate(self)

    def to_json(self) -> dict:
        d = dataclasses.asdict(self)
        d["widths"], d["blocks"] = list(self.widths), list(self.blocks)
        return d

    @classmethod
    def from_json(cls, d: dict) -> "RunConfig":
        d = dict(d)
        d["widths"], d["blocks"] = tuple(d["widths"]), tuple(d["blocks"])
        return cls(**d)


DEFAULT_CONFIG = RunConfig()  # the dataclass's defaults (a named ResNet's shape fields stay at them)


def config_label(cfg: RunConfig) -> str:
    """Short human name of the run, for progress bars and messages: e.g. ``GN G=32 b=8 s=0``."""
    extra = (f" norm_batch={cfg.norm_batch}" if cfg.kind == "BN" and cfg.norm_batch is not None else "") \
        + (f" c={cfg.classes_per_worker}" if cfg.classes_per_worker is not None else "") \
        + (f" lr={cfg.base_lr:g} holdout" if cfg.holdout else "") \
        + (f" epochs={cfg.epochs}" if cfg.experiment == "control" else "") \
        + (f" head={cfg.head_norm}" if cfg.head_norm is not None else "") + (" masked" if cfg.masked_stats else "") \
        + (" masks" if cfg.masks else "") \
        + (f" pretrained={cfg.pretrain_epochs}" if cfg.pretrain_epochs else "")
    extra += f" T={cfg.frames}" if cfg.task == "video" else ""
    arch = {DEFAULT_ARCH: "", "vgg": "VGG "}.get(cfg.arch, f"{cfg.arch} ")
    return arch + run_label(cfg.kind, cfg.canonical_groups(), cfg.batch_per_worker, cfg.seed) + extra


def identity(cfg: RunConfig) -> dict:
    """What determines ``cfg``'s numbers, as a dict whose hash is its key: LN is GN with G=1, IN is GN with one
    channel per group (the same model); fields at the defaults that predate them, ``experiment`` (who asked for
    the run) and a named arch's fixed shape are left out."""
    d = dataclasses.asdict(cfg)
    d.pop("experiment")
    norm, (g, k) = canonical_norm(d["norm"], d["groups"], d["group_size"])
    d.update(norm=norm, groups=g, group_size=k, widths=list(cfg.widths), blocks=list(cfg.blocks))
    if cfg.arch in ARCHS and not ARCHS[cfg.arch].config_fields:
        for name in ("widths", "blocks", "stem_stride"):  # a named ResNet fixes them (validate: at defaults)
            d.pop(name)
    if d["norm_batch"] is None or d["norm_batch"] == cfg.batch_per_worker:
        d.pop("norm_batch")  # BN per worker: the standard run
    if d["classes_per_worker"] is None:
        d.pop("classes_per_worker")
    for name, default in (("first_stride", 1), ("holdout", False), ("arch", DEFAULT_ARCH),
                          ("task", "classification"), ("head_norm", None), ("masked_stats", False),
                          ("pretrain_epochs", 0), ("masks", False)):
        if d[name] == default:
            d.pop(name)
    if cfg.task != "video":  # the clip spec means nothing to other tasks (and their keys predate it)
        d.pop("frames")
        d.pop("canvas")
    return d


def validate(cfg: RunConfig) -> None:
    """A ValueError naming the first field of ``cfg`` with a bad value."""
    for name in ("batch_per_worker", "workers", "epochs"):
        v = getattr(cfg, name)
        if not isinstance(v, int) or v < 1:
            raise ValueError(f"{name}={v!r} must be a positive integer")
    if cfg.arch not in ARCHS:
        raise ValueError(f"arch={cfg.arch!r} must be one of {', '.join(ARCHS)}")
    if cfg.first_stride not in (1, 2):
        raise ValueError(f"first_stride={cfg.first_stride!r} must be 1 or 2")
    fixed = () if ARCHS[cfg.arch].config_fields else SHAPE_FIELDS  # a named ResNet's
    changed = [n for n in fixed if getattr(cfg, n) != getattr(DEFAULT_CONFIG, n)]
    if changed:
        raise ValueError(f"arch={cfg.arch!r} fixes its shape; {', '.join(changed)} apply to "
                         f"{DEFAULT_ARCH!r} only")
    if cfg.task not in TASKS:
        raise ValueError(f"task={cfg.task!r} must be one of {', '.join(TASKS)}")
    if ARCHS[cfg.arch].task != cfg.task:
        raise ValueError(f"arch={cfg.arch!r} is for the {ARCHS[cfg.arch].task} task, not task={cfg.task!r} "
                         f"(choose one of {', '.join(n for n, a in ARCHS.items() if a.task == cfg.task)})")
    if cfg.task not in DENSE_TASKS and (cfg.head_norm is not None or cfg.masked_stats or cfg.pretrain_epochs):
        raise ValueError(f"head_norm={cfg.head_norm!r}, masked_stats={cfg.masked_stats!r} and pretrain_epochs="
                         f"{cfg.pretrain_epochs!r} apply to the tasks {', '.join(DENSE_TASKS)} only, not "
                         f"task={cfg.task!r}")
    if cfg.masks is not False and (cfg.masks is not True or cfg.arch != "two_stage"):
        raise ValueError(f"masks={cfg.masks!r}: the mask head is the two-stage detector's (arch='two_stage', "
                         f"masks=True), not arch={cfg.arch!r}'s")
    if not isinstance(cfg.pretrain_epochs, int) or cfg.pretrain_epochs < 0:
        raise ValueError(f"pretrain_epochs={cfg.pretrain_epochs!r} must be a non-negative integer")
    if cfg.head_norm is not None and cfg.head_norm not in HEAD_NORMS:
        raise ValueError(f"head_norm={cfg.head_norm!r} must be one of {', '.join(HEAD_NORMS)}")
    if cfg.task in DENSE_TASKS and cfg.group_size is not None:
        raise ValueError(f"group_size={cfg.group_size!r}: the {cfg.task} models take GN's groups only")
    if cfg.task == "video":
        for name, low in (("frames", 1), ("canvas", 2)):
            v = getattr(cfg, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < low:
                raise ValueError(f"{name}={v!r} must be an integer of at least {low}")
    if cfg.schedule not in ("cosine", "step"):
        raise ValueError(f"schedule={cfg.schedule!r} must be 'cosine' or 'step'")
    if cfg.norm_batch is not None:
        if cfg.norm != "bn":
            raise ValueError(f"norm_batch={cfg.norm_batch} applies to BN only, not norm={cfg.norm!r}")
        if not isinstance(cfg.norm_batch, int) or cfg.norm_batch < 1 or cfg.global_batch % cfg.norm_batch:
            raise ValueError(f"norm_batch={cfg.norm_batch!r} does not divide the global batch of "
                             f"{cfg.global_batch} images ({cfg.workers} workers x {cfg.batch_per_worker})")
    if cfg.classes_per_worker is not None:
        c = cfg.classes_per_worker
        if not isinstance(c, int) or not 1 <= c <= NUM_CLASSES:
            raise ValueError(f"classes_per_worker={c!r} must be an integer from 1 to the number of classes "
                             f"({NUM_CLASSES})")
    if cfg.train_size is not None and cfg.train_size < cfg.global_batch:
        raise ValueError(f"train_size={cfg.train_size} is smaller than one global batch "
                         f"({cfg.workers} workers x {cfg.batch_per_worker} images)")
