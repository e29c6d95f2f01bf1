r"""Clips of moving images for the video experiment: one item bouncing on a blank canvas, as in Moving MNIST
(Srivastava et al. 2015), with a label that needs more than one frame.

A clip is a uint8 item of shape (C, s, s) pasted on a zero canvas of T frames, (C, T, H, H): H = ``canvas``
(32 by default), s = ``item_size`` (default 7/16 of the canvas, Moving MNIST's 28/64: 14 on 32), T = ``frames``
(8 or 16). Its label is ``item_class * M + motion``, M motion types (``MOTIONS``: still, horizontal, vertical,
diagonal); class names are ``"<item class>/<motion>"``.

Motion. Along each axis (rows, columns) the item's top-left corner has L = H - s free positions beyond 0. It
is the fold of an "unfolded" coordinate u on the circle Z_{2L}:

.. math::

    u_t = (u_0 + v t) \bmod 2L, \qquad p_t = L - |L - u_t| \in \{0, \dots, L\}

which is bouncing: p moves v pixels per frame and reflects off both walls (0 and L). A motion type says which
axes move: v = the clip's speed on them (drawn from ``speeds``, 1 to 3 pixels per frame by default, each
below L), 0 on the others. u_0 is uniform on Z_{2L} on each axis, independently. Everything is an integer:
positions are exact, the same on every machine.

Why one frame cannot tell the motion (exactly, by construction). With u_0 uniform on Z_{2L}, u_t = u_0 + v t is
uniform on Z_{2L} for every frame t and every integer v, so p_t has one law, P(0) = P(L) = 1/(2L) and P(p) = 1/L for
0 < p < L, whatever the motion type and speed, on each axis independently; the item does not depend on the motion
either (every item is equally likely to get every motion type, and a flip is drawn independently). Frame t is a
function of the item and of p_t alone, so every frame has the same distribution under every motion type: any
function of one frame (a 1-frame network, even one told t) guesses the motion part with probability exactly 1/M, and
the whole label with at most its item-class accuracy / M. The sign of v is no label: the fold is symmetric, so
fold(u_0 + v t) = fold(-u_0 - v t), the clip of -v from -u_0 (and the direction at some frame t0 would be told by a
single frame near a wall at t0 + 1); which axes move is what reflection keeps, hence motion types. Several frames
tell the type: along an axis with speed 1 <= v < L the item cannot stay put three frames in a row (that needs 2v = 0
mod 2L), so with T >= 3 the axes along which it moves, hence the motion type, are a function of the clip.

Items are the images of any data directory the harness reads (:func:`groupnorm.experiments.data.read_dataset`:
IDX, CIFAR, ImageFolder), center-cropped to a square and resized to s x s by exact area averaging in integer
arithmetic (:func:`resize_items`). Training clips come from the training split's items, validation clips from
the test split's: one clip per item (item i in clip i), motion types balanced within each item class, speed
and start drawn per clip from PCG64 raw outputs (:class:`Draws`), keyed by the data seed and the split.

:class:`ClipSplit` has the harness's split interface (``len``, ``labels``, ``info``, ``take``,
``eval_batches``, ``train_batches``, ``pin_memory``), so ``subset``, ``holdout_split`` and ``epoch_batches``
serve clips as they serve images, and it is a torch ``Dataset`` (clip i: float32 (C, T, H, W), label).
Batches are float32 (B, C, T, H, W), pixels ``(x / 255 - mean_c) / std_c`` with the exact pixel mean and std of
the training clips (:func:`clip_info`). Training augmentation keeps each clip's item and motion type (its
label) and draws a new speed, start and horizontal flip of the item for the whole global batch, from a PCG64
keyed by a number drawn from the run's (seed, epoch) generator (so every rank of a job draws the same).
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import numpy as np
import torch

from .cifar import channel_stats
from .loading import load_full
from .spec import as_spec
from .split import DataInfo, Split, to_input

MOTIONS = ("still", "horizontal", "vertical", "diagonal")
MOTION_AXES = {"still": (0, 0), "horizontal": (0, 1), "vertical": (1, 0), "diagonal": (1, 1)}  # (rows, cols)
DEFAULT_CANVAS = 32
DEFAULT_FRAMES = 8
DEFAULT_SPEEDS = (1, 2, 3)
STREAMS = {"train": 0, "val": 1, "augment": 2}  # the PCG64 key's last word: one stream per use


class Draws:
    """Integers from PCG64's raw 64-bit outputs, keyed by a tuple of non-negative integers (numpy's
    ``SeedSequence``). Built on ``random_raw`` and not on ``Generator``'s methods, whose algorithms numpy may
    change between versions: the same numbers on every machine and numpy version."""

    def __init__(self, *key: int):
        if not key or any(isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0 for k in key):
            raise ValueError(f"key={key!r} must be one or more non-negative integers")
        self.bits = np.random.PCG64(np.random.SeedSequence([int(k) for k in key]))

    def ints(self, n: int, size) -> np.ndarray:
        """int64 array of shape ``size``, uniform on 0..n-1 exactly (raw values in the top 2^64 mod n rejected)."""
        if not isinstance(n, (int, np.integer)) or n < 1:
            raise ValueError(f"n={n!r} must be a positive integer")
        count = int(np.prod(size))
        rem = (1 << 64) % n
        out, filled = np.empty(count, dtype=np.int64), 0
        while filled < count:
            r = self.bits.random_raw(count - filled)
            if rem:
                r = r[r < np.uint64((1 << 64) - rem)]
            out[filled:filled + r.size] = (r % np.uint64(n)).astype(np.int64)
            filled += r.size
        return out.reshape(size)

    def permutation(self, n: int) -> np.ndarray:
        """A random permutation of 0..n-1 (the order of n raw 64-bit keys; ties broken by position)."""
        return np.argsort(self.bits.random_raw(n), kind="stable").astype(np.int64)


def fold(u, length: int):
    """Positions ``L - |L - u|`` of unfolded coordinates ``u`` in 0..2L-1 (``length`` = L): u for u <= L,
    2L - u beyond (the reflection off the wall at L)."""
    return length - abs(length - u)


def trajectory(start: np.ndarray, velocity: np.ndarray, frames: int, length: int) -> np.ndarray:
    """Positions (..., T, 2) int64 of items bouncing in 0..L (``length``) from unfolded starts ``start``
    (..., 2) in 0..2L-1 with integer velocities ``velocity`` (..., 2) (pixels per frame, per axis):
    ``fold((start + velocity t) mod 2L)`` for t = 0..T-1 (module docstring)."""
    start, velocity = np.asarray(start, dtype=np.int64), np.asarray(velocity, dtype=np.int64)
    t = np.arange(frames, dtype=np.int64)[:, None]
    u = (start[..., None, :] + velocity[..., None, :] * t) % (2 * length)
    return fold(u, length)


def resize_items(images: np.ndarray, size: int) -> np.ndarray:
    """uint8 (N, C, h, w) -> uint8 (N, C, size, size): the central m x m square (m = min(h, w), offsets
    floor((h - m) / 2), floor((w - m) / 2)) resized by area averaging, exactly in integers.

    Output pixel i covers input coordinates [i m / size, (i + 1) m / size); scaled by ``size`` its overlap with
    input pixel j, ``|[i m, (i + 1) m) & [j size, (j + 1) size)|``, is an integer weight, each row summing to m.
    The result is sum(weights x pixels) / m^2 rounded half up: the same bytes on every machine."""
    images = np.asarray(images)
    if images.ndim != 4 or images.dtype != np.uint8:
        raise ValueError(f"expected uint8 images (N, C, h, w), got {images.dtype} {images.shape}")
    if not isinstance(size, int) or size < 1:
        raise ValueError(f"size={size!r} must be a positive integer")
    h, w = images.shape[2:]
    m = min(h, w)
    top, left = (h - m) // 2, (w - m) // 2
    i = np.arange(size, dtype=np.int64)[:, None]
    j = np.arange(m, dtype=np.int64)[None, :]
    weight = np.clip(np.minimum((i + 1) * m, (j + 1) * size) - np.maximum(i * m, j * size), 0, None)  # (size, m)
    out = np.empty(images.shape[:2] + (size, size), dtype=np.uint8)
    budget = 1 << 22  # int64 values converted at a time (32 MiB), whatever the images' size
    chunk = max(1, budget // (images.shape[1] * m * m))  # items per pass
    for k in range(0, images.shape[0], chunk):
        x = images[k:k + chunk, :, top:top + m, left:left + m]
        step = max(1, budget // (x.shape[0] * x.shape[1] * m))  # rows per conversion
        cols = np.concatenate([x[:, :, r:r + step].astype(np.int64) @ weight.T for r in range(0, m, step)], 2)
        num = weight @ cols  # (n, C, size, size), at most 255 m^2
        out[k:k + chunk] = (2 * num + m * m) // (2 * m * m)
    return out


def item_split(split, size: int) -> Split:
    """The items of a harness split (:class:`~groupnorm.experiments.data.Split`, or ImageFolder's
    ``FolderSplit``, whose images are decoded here, one by one) as an in-memory :class:`Split` of uint8
    (N, C, size, size) images (:func:`resize_items`), same labels, its info's ``image_shape`` set to the size."""
    if isinstance(split, Split):
        images = resize_items(split.images.numpy(), size)
    elif hasattr(split, "paths"):
        from .imagefolder import open_rgb

        images = np.empty((len(split), 3, size, size), dtype=np.uint8)
        for k, path in enumerate(split.paths):
            pixels = np.asarray(open_rgb(path), dtype=np.uint8).transpose(2, 0, 1)[None]
            images[k] = resize_items(pixels, size)[0]
    else:
        raise TypeError(f"expected a Split or a FolderSplit, got {type(split).__name__}")
    info = dataclasses.replace(split.info, image_shape=(size, size), crop_pad=0)
    return Split(torch.from_numpy(images), split.labels.clone(), info)


@dataclass(frozen=True)
class ClipSpec:
    """What a clip is: ``canvas`` H (the frames are H x H), ``frames`` T, ``item_size`` s (None: 7/16 of the
    canvas, rounded), ``speeds`` (pixels per frame, each in 1..L-1, L = H - s), ``motions`` (names of
    ``MOTIONS``, in label order)."""

    canvas: int = DEFAULT_CANVAS
    frames: int = DEFAULT_FRAMES
    item_size: int | None = None
    speeds: tuple = DEFAULT_SPEEDS
    motions: tuple = MOTIONS

    def __post_init__(self):
        for name in ("canvas", "frames"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < (2 if name == "canvas" else 1):
                raise ValueError(f"{name}={v!r} must be an integer of at least {2 if name == 'canvas' else 1}")
        if self.item_size is None:
            object.__setattr__(self, "item_size", max(1, round(self.canvas * 7 / 16)))
        s = self.item_size
        if isinstance(s, bool) or not isinstance(s, int) or not 1 <= s < self.canvas - 1:
            raise ValueError(f"item_size={s!r} must be an integer from 1 to canvas - 2 = {self.canvas - 2} "
                             f"(an item needs room to move)")
        object.__setattr__(self, "speeds", tuple(self.speeds))
        object.__setattr__(self, "motions", tuple(self.motions))
        bad = [v for v in self.speeds if isinstance(v, bool) or not isinstance(v, int) or not 1 <= v < self.free]
        if not self.speeds or bad:
            raise ValueError(f"speeds={self.speeds!r}: each must be an integer from 1 to L - 1 = {self.free - 1} "
                             f"(L = canvas - item_size = {self.free}; a speed of L or more cannot be seen)")
        unknown = [m for m in self.motions if m not in MOTION_AXES]
        if not self.motions or unknown or len(set(self.motions)) != len(self.motions):
            raise ValueError(f"motions={self.motions!r} must be distinct names of {', '.join(MOTIONS)}")

    @property
    def free(self) -> int:
        """L = canvas - item_size: the largest position of the item's top-left corner on each axis."""
        return self.canvas - self.item_size

    def velocity(self, motion: np.ndarray, speed: np.ndarray) -> np.ndarray:
        """(..., 2) int64 velocities (rows, columns) of motion indices (into ``motions``) at ``speed``."""
        axes = np.array([MOTION_AXES[m] for m in self.motions], dtype=np.int64)
        return axes[np.asarray(motion)] * np.asarray(speed, dtype=np.int64)[..., None]


@dataclass(frozen=True)
class ClipInfo(DataInfo):
    """:class:`DataInfo` of a clip data set: ``image_shape`` is (T, H, W), ``frames`` T; ``mean``/``std`` per
    channel of the clips' pixels (:func:`clip_info`)."""

    frames: int = DEFAULT_FRAMES


def clip_info(items: Split, spec: ClipSpec) -> ClipInfo:
    """The info of clips of ``items`` (the training items, at ``spec.item_size``): classes ``"<item class>/
    <motion>"``, and per channel the exact mean and std of the clips' pixels: every frame holds one item's s^2
    pixels and H^2 - s^2 zeros, so with a = s^2 / H^2, mean = a mean_item and E[x^2] = a E_item[x^2]
    (over the items, each used once; flips do not change them)."""
    mean_i, std_i = channel_stats(items.images.numpy())
    a = spec.item_size ** 2 / spec.canvas ** 2
    mean = tuple(a * m for m in mean_i)
    std = tuple(math.sqrt(max(a * (s * s + m * m) - (a * m) ** 2, 1e-12)) for m, s in zip(mean_i, std_i))
    classes = tuple(f"{c}/{m}" for c in items.info.classes for m in spec.motions)
    return ClipInfo(f"clips-{items.info.name}", classes, items.info.channels,
                    (spec.frames, spec.canvas, spec.canvas), mean, std, crop_pad=0, frames=spec.frames)


def render(items: torch.Tensor, positions: torch.Tensor, canvas: int) -> torch.Tensor:
    """uint8 clips (B, C, T, H, H): item b (uint8 (B, C, s, s)) pasted with its top-left corner at
    ``positions[b, t]`` (int64 (B, T, 2): row, column) in frame t of a zero canvas."""
    b, c, s = items.shape[0], items.shape[1], items.shape[2]
    t = positions.shape[1]
    out = torch.zeros(b, t, canvas, canvas, c, dtype=torch.uint8)
    ar = torch.arange(s)
    rows = positions[:, :, 0, None, None] + ar[:, None]  # (B, T, s, 1)
    cols = positions[:, :, 1, None, None] + ar[None, :]  # (B, T, 1, s)
    out[torch.arange(b)[:, None, None, None], torch.arange(t)[None, :, None, None], rows, cols] = \
        items.permute(0, 2, 3, 1)[:, None]
    return out.permute(0, 4, 1, 2, 3).contiguous()


@dataclass(eq=False)
class ClipSplit(torch.utils.data.Dataset):
    """n clips of ``items`` (a :class:`Split` of uint8 (N, C, s, s) items): clip k shows item ``item[k]``
    moving as ``motion[k]`` (an index into ``spec.motions``) at ``speed[k]`` pixels per frame from the
    unfolded start ``start[k]`` (int64 (n, 2), rows and columns, in 0..2L-1). ``labels`` (int64 (n,)):
    ``items.labels[item] * M + motion``. See the module docstring."""

    items: Split
    item: torch.Tensor
    motion: torch.Tensor
    speed: torch.Tensor
    start: torch.Tensor
    spec: ClipSpec
    info: ClipInfo
    pin_memory: bool = False
    labels: torch.Tensor = field(init=False)

    def __post_init__(self):
        n = self.item.shape[0]
        for name in ("motion", "speed"):
            if getattr(self, name).shape != (n,):
                raise ValueError(f"{name} has shape {tuple(getattr(self, name).shape)}, expected ({n},)")
        if self.start.shape != (n, 2):
            raise ValueError(f"start has shape {tuple(self.start.shape)}, expected ({n}, 2)")
        if n:
            for name, values, top in (("item", self.item, len(self.items) - 1),
                                      ("motion", self.motion, len(self.spec.motions) - 1),
                                      ("start", self.start, 2 * self.spec.free - 1)):
                if int(values.min()) < 0 or int(values.max()) > top:
                    raise ValueError(f"{name} values span {int(values.min())}..{int(values.max())}, outside "
                                     f"0..{top}")
            bad = sorted(set(self.speed.tolist()) - set(self.spec.speeds))
            if bad:
                raise ValueError(f"speeds {bad} are not among spec.speeds={self.spec.speeds}")
        self.labels = self.items.labels[self.item] * len(self.spec.motions) + self.motion

    def __len__(self) -> int:
        return int(self.item.shape[0])

    def __getitem__(self, k: int):
        """Clip ``k``: (float32 (C, T, H, W), int label), not augmented."""
        x, y = next(self._batches(torch.tensor([int(k)])))
        return x[0], int(y[0])

    def take(self, idx: torch.Tensor) -> "ClipSplit":
        return ClipSplit(self.items, self.item[idx], self.motion[idx], self.speed[idx], self.start[idx],
                         self.spec, self.info, self.pin_memory)

    def clips(self, idx: torch.Tensor, speed=None, start=None, flip=None) -> torch.Tensor:
        """uint8 (B, C, T, H, W) clips ``idx``; ``speed`` (B,), ``start`` (B, 2) and ``flip`` (B,) bool replace
        the stored trajectories and flip the items (augmentation)."""
        speed = self.speed[idx] if speed is None else torch.as_tensor(speed)
        start = self.start[idx] if start is None else torch.as_tensor(start)
        vel = self.spec.velocity(self.motion[idx].numpy(), speed.numpy())
        pos = torch.from_numpy(trajectory(start.numpy(), vel, self.spec.frames, self.spec.free))
        items = self.items.images[self.item[idx]]
        if flip is not None:
            items = torch.where(torch.as_tensor(flip).view(-1, 1, 1, 1), items.flip(-1), items)
        return render(items, pos, self.spec.canvas)

    def normalize(self, clips_u8: torch.Tensor) -> torch.Tensor:
        """uint8 (B, C, T, H, W) -> float32, ``(x / 255 - mean_c) / std_c`` (the info's statistics)."""
        b, c, t, h, w = clips_u8.shape
        return to_input(clips_u8.reshape(b, c, t * h, w), self.info).view(b, c, t, h, w)

    def _out(self, x, y):
        return (x.pin_memory(), y.pin_memory()) if self.pin_memory else (x, y)

    def _batches(self, *idx_lists):
        for idx in idx_lists:
            yield self._out(self.normalize(self.clips(idx)), self.labels[idx])

    def eval_batches(self, batch: int, drop_last: bool = False):
        """(x float32 (B, C, T, H, W), y int64 (B,)) in order, the stored clips (not augmented)."""
        stop = len(self) - (len(self) % batch if drop_last else 0)
        yield from self._batches(*(torch.arange(i, min(i + batch, stop)) for i in range(0, stop, batch)))

    def train_batches(self, order: torch.Tensor, g: torch.Generator, global_batch: int, steps: int,
                      augment: bool, part: tuple = (0, 1)):
        """Step s: part ``(r, world)`` (the r-th of ``world`` equal shares) of the global batch
        ``order[s*B:(s+1)*B]``; with ``augment`` each clip of the global batch gets a new speed, start and item
        flip from ``Draws(key, STREAMS["augment"])``, ``key`` drawn from ``g`` (whatever ``part``)."""
        r, world = part
        local = global_batch // world
        lo, hi = r * local, (r + 1) * local
        n_speeds, two_l = len(self.spec.speeds), 2 * self.spec.free
        speeds = torch.tensor(self.spec.speeds, dtype=torch.int64)
        for s in range(steps):
            idx = order[s * global_batch:(s + 1) * global_batch]
            if augment:
                d = Draws(int(torch.randint(0, 2 ** 62, (1,), generator=g)), STREAMS["augment"])
                speed = speeds[torch.from_numpy(d.ints(n_speeds, global_batch))]
                start = torch.from_numpy(d.ints(two_l, (global_batch, 2)))
                flip = torch.from_numpy(d.ints(2, global_batch)).bool()
                x = self.clips(idx[lo:hi], speed[lo:hi], start[lo:hi], flip[lo:hi])
            else:
                x = self.clips(idx[lo:hi])
            yield self._out(self.normalize(x), self.labels[idx[lo:hi]])


def make_clips(items: Split, spec: ClipSpec, info: ClipInfo, seed: int = 0, stream: str = "train") -> ClipSplit:
    """One clip per item of ``items`` (uint8 (N, C, s, s), s = ``spec.item_size``): item k in clip k; motion
    types balanced within each item class (the class's items in a random order take motions 0, 1, .., M - 1,
    0, ...); speed uniform on ``spec.speeds``; unfolded start uniform on Z_{2L}^2; all from
    ``Draws(seed, STREAMS[stream])``."""
    if stream not in STREAMS:
        raise ValueError(f"stream={stream!r} is not one of {', '.join(STREAMS)}")
    if tuple(items.images.shape[2:]) != (spec.item_size, spec.item_size):
        raise ValueError(f"items of shape {tuple(items.images.shape[2:])} do not match item_size={spec.item_size}"
                         f" (resize them with item_split)")
    n, m = len(items), len(spec.motions)
    d = Draws(seed, STREAMS[stream])
    perm = d.permutation(n)
    lab = items.labels.numpy()[perm]
    order = np.argsort(lab, kind="stable")  # the permuted items grouped by class, each class in permuted order
    rank = np.arange(n) - np.searchsorted(lab[order], lab[order], side="left")  # index within its class
    motion = np.empty(n, dtype=np.int64)
    motion[perm[order]] = rank % m
    speed = np.asarray(spec.speeds, dtype=np.int64)[d.ints(len(spec.speeds), n)]
    start = d.ints(2 * spec.free, (n, 2))
    return ClipSplit(items, torch.arange(n), torch.from_numpy(motion), torch.from_numpy(speed),
                     torch.from_numpy(start), spec, info)


def clip_splits(train_items, test_items, spec: ClipSpec = ClipSpec(), seed: int = 0) -> tuple[ClipSplit, ClipSplit]:
    """(training clips, validation clips) of a data set's (train, test) splits (any harness split: resized to
    ``spec.item_size`` by :func:`item_split`), their info from the training items (:func:`clip_info`)."""
    train, test = item_split(train_items, spec.item_size), item_split(test_items, spec.item_size)
    info = clip_info(train, spec)
    return make_clips(train, spec, info, seed, "train"), make_clips(test, spec, info, seed, "val")


_cache: dict = {}


def load_clips(data=None, spec: ClipSpec = ClipSpec(), seed: int = 0) -> tuple[ClipSplit, ClipSplit]:
    """:func:`clip_splits` of the data set in ``data`` (a ``DataSpec`` or a directory; None: the harness's
    default; read by :func:`groupnorm.experiments.data.load_full`), cached per process."""
    key = (as_spec(data), spec, seed)
    if key not in _cache:
        _cache[key] = clip_splits(*load_full(data), spec, seed)
    return _cache[key]
