"""Detection and segmentation canvases built from real images: MNIST-format items on photographs of textures.

A canvas is a grayscale image of ``H x W`` pixels (``H`` and ``W`` drawn independently from
``CANVAS_SIDES``, 96..128) whose background is a crop of one of scikit-image's bundled photographs ``brick``,
``grass`` or ``gravel`` (CC0, 512 x 512, shipped in its wheel; read offline), at half contrast (pixel // 2),
with 1 to 6 items (``ITEMS_PER_CANVAS``) pasted on it. An item is one image of an MNIST-format IDX split
(Fashion-MNIST: the training split's items for ``"train"`` canvases, the test split's for ``"val"`` canvases, so
no item is in both; for the held-out learning-rate sweep ``"holdout-train"`` and ``"holdout-val"`` canvases take
the two parts of the training split cut by :func:`~.holdout.holdout_split`, the rule every held-out run uses),
rescaled to ``s x s`` pixels with ``s`` drawn from ``ITEM_SIDES`` (20..48; bilinear, half-pixel centres, rounded
half up). Its pixels at or above ``MASK_THRESHOLD`` (of 255) are its instance
mask; they replace the background there. Its box is the tight box of its mask; boxes on one canvas do not
overlap (an item gets ``PLACE_TRIES`` draws of a free position, and is left out when none is free, so a
canvas holds at least one and at most six items). Per canvas:

====================  ==================  ======================================================================
field                 shape, dtype        meaning
====================  ==================  ======================================================================
``image``             (H, W) uint8        the canvas
``boxes``             (K, 4) int64        ``x0, y0, x1, y1`` of each item's mask, in pixels, x1 / y1 exclusive
                                          (float64 when read from a COCO file, :mod:`.coco`)
``labels``            (K,) int64          each item's class (its IDX label)
``masks``             (K, H, W) bool      each item's instance mask
``semantic``          (H, W) uint8        0 for background, ``label + 1`` where an item is
``item_ids``          (K,) int64          the items' indices in their IDX split (holdout splits: in its part)
====================  ==================  ======================================================================

Determinism: canvas ``i`` of a set is drawn from ``numpy.random.Generator(PCG64(SeedSequence(seed,
spawn_key=(split code, i))))`` alone (any canvas can be made alone, in any order, by any process; each canvas split
has its own code, so no two splits share a draw), and every image operation is integer arithmetic or elementwise
float64 arithmetic with explicit rounding, so the same seed and items give the same canvases on any machine,
whatever its thread count.

Batches (:func:`collate`) pad as detectron2's ``ImageList`` does: every image normalized (the IDX items'
``MEAN`` and ``STD``, those the backbones are pre-trained with), then zero-padded at the bottom and right to the
batch's largest height and width rounded up to a multiple of ``size_divisibility`` (32), with a boolean mask of
the real pixels (the ``mask=`` of masked GN).
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from .holdout import holdout_split
from .idx import load_split
from .split import MEAN, STD, DataInfo

__all__ = ["TEXTURES", "CANVAS_SIDES", "ITEM_SIDES", "ITEMS_PER_CANVAS", "MASK_THRESHOLD", "PLACE_TRIES",
           "CANVAS_SPLITS", "SEMANTIC_IGNORE", "Canvas", "CanvasSet", "CanvasBatch", "load_textures",
           "resize_bilinear", "make_canvas", "canvas_set", "collate"]

TEXTURES = ("brick", "grass", "gravel")
CANVAS_SIDES = (96, 128)       # inclusive range of a canvas's height and of its width
ITEM_SIDES = (20, 48)          # inclusive range of an item's side after rescaling
ITEMS_PER_CANVAS = (1, 6)      # inclusive range of the items drawn per canvas
MASK_THRESHOLD = 32            # an item's pixel (0..255) at or above this is part of its instance mask
PLACE_TRIES = 30               # draws of a position whose box overlaps no other box on the canvas
# canvas split -> (the IDX split its items come from, its part: None for all, "rest" / "held" for holdout_split's)
CANVAS_SPLITS = {"train": ("train", None), "val": ("test", None), "holdout-train": ("train", "rest"),
                 "holdout-val": ("train", "held")}
SEMANTIC_IGNORE = 255          # the semantic target at padded pixels (cross-entropy's ignore_index)
_SPLIT_CODE = {"train": 0, "val": 1, "holdout-train": 2, "holdout-val": 3}


@dataclass
class Canvas:
    """One canvas; the fields are described in the module docstring."""

    image: np.ndarray
    boxes: np.ndarray
    labels: np.ndarray
    masks: np.ndarray
    semantic: np.ndarray
    item_ids: np.ndarray
    texture: str

    @property
    def size(self) -> tuple[int, int]:
        """(H, W)."""
        return int(self.image.shape[0]), int(self.image.shape[1])


_texture_cache: dict = {}


def load_textures() -> dict:
    """``{name: (512, 512) uint8}`` for ``TEXTURES``: scikit-image's bundled photographs (no network)."""
    if not _texture_cache:
        try:
            import skimage.data
        except ImportError:
            raise ImportError("the canvases' backgrounds are scikit-image's bundled photographs: install "
                              "scikit-image (pip install 'groupnorm[detection]')") from None
        for name in TEXTURES:
            img = np.asarray(getattr(skimage.data, name)())
            if img.dtype != np.uint8 or img.ndim != 2 or min(img.shape) < CANVAS_SIDES[1]:
                raise ValueError(f"scikit-image's {name!r} is {img.dtype} {img.shape}; expected a grayscale uint8 "
                                 f"photograph of at least {CANVAS_SIDES[1]} x {CANVAS_SIDES[1]} pixels")
            _texture_cache[name] = img
    return _texture_cache


def _axis_weights(n_in: int, n_out: int):
    """Source indices (i0, i1) and weight of i1 for bilinear resampling with half-pixel centres: output pixel
    ``o`` samples the input at ``(o + 0.5) * n_in / n_out - 0.5``, clamped to [0, n_in - 1]."""
    pos = (2 * np.arange(n_out, dtype=np.float64) + 1) * n_in / (2 * n_out) - 0.5
    pos = np.clip(pos, 0.0, n_in - 1)
    i0 = np.floor(pos).astype(np.int64)
    i1 = np.minimum(i0 + 1, n_in - 1)
    return i0, i1, pos - i0


def resize_bilinear(img: np.ndarray, height: int, width: int) -> np.ndarray:
    """A (h, w) uint8 image resized to (height, width) uint8: bilinear, half-pixel centres (as PIL's and
    OpenCV's), edges clamped, in float64 rounded half up. Elementwise arithmetic only: the same bits on every
    machine."""
    if img.ndim != 2 or height < 1 or width < 1:
        raise ValueError(f"resize_bilinear takes a 2-D image and a positive size, got {img.shape} -> "
                         f"({height}, {width})")
    r0, r1, rw = _axis_weights(img.shape[0], height)
    c0, c1, cw = _axis_weights(img.shape[1], width)
    a = img.astype(np.float64)
    rows = a[r0] * (1.0 - rw)[:, None] + a[r1] * rw[:, None]
    out = rows[:, c0] * (1.0 - cw)[None, :] + rows[:, c1] * cw[None, :]
    return np.floor(out + 0.5).clip(0, 255).astype(np.uint8)


def _overlaps(box, boxes) -> bool:
    x0, y0, x1, y1 = box
    return any(x0 < b[2] and b[0] < x1 and y0 < b[3] and b[1] < y1 for b in boxes)


def make_canvas(items: np.ndarray, labels: np.ndarray, rng: np.random.Generator,
                textures: dict | None = None) -> Canvas:
    """One canvas drawn with ``rng`` from ``items`` (uint8 (N, h, w)) and their ``labels`` (N,) (module doc).

    The draws, in order: height, width, texture, crop offset (row, column), number of items; then per item:
    its index, its side, and up to ``PLACE_TRIES`` positions (row, column) of its box.
    """
    textures = load_textures() if textures is None else textures
    names = sorted(textures)
    h = int(rng.integers(CANVAS_SIDES[0], CANVAS_SIDES[1] + 1))
    w = int(rng.integers(CANVAS_SIDES[0], CANVAS_SIDES[1] + 1))
    name = names[int(rng.integers(len(names)))]
    tex = textures[name]
    oy = int(rng.integers(0, tex.shape[0] - h + 1))
    ox = int(rng.integers(0, tex.shape[1] - w + 1))
    image = tex[oy:oy + h, ox:ox + w] // 2
    k = int(rng.integers(ITEMS_PER_CANVAS[0], ITEMS_PER_CANVAS[1] + 1))
    boxes, cls, masks, ids = [], [], [], []
    for _ in range(k):
        idx = int(rng.integers(len(items)))
        side = int(rng.integers(ITEM_SIDES[0], ITEM_SIDES[1] + 1))
        item = resize_bilinear(items[idx], side, side)
        fg = item >= MASK_THRESHOLD
        rows, cols = np.flatnonzero(fg.any(1)), np.flatnonzero(fg.any(0))
        if rows.size == 0:  # an item with no pixel above the threshold has nothing to detect
            continue
        item, fg = item[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1], fg[rows[0]:rows[-1] + 1, cols[0]:cols[-1] + 1]
        bh, bw = fg.shape
        for _ in range(PLACE_TRIES):
            y0 = int(rng.integers(0, h - bh + 1))
            x0 = int(rng.integers(0, w - bw + 1))
            box = (x0, y0, x0 + bw, y0 + bh)
            if not _overlaps(box, boxes):
                break
        else:
            continue
        region = image[y0:y0 + bh, x0:x0 + bw]
        region[fg] = item[fg]
        m = np.zeros((h, w), dtype=bool)
        m[y0:y0 + bh, x0:x0 + bw] = fg
        boxes.append(box)
        cls.append(int(labels[idx]))
        masks.append(m)
        ids.append(idx)
    semantic = np.zeros((h, w), dtype=np.uint8)
    for m, c in zip(masks, cls):
        semantic[m] = c + 1
    return Canvas(image=image, boxes=np.asarray(boxes, dtype=np.int64).reshape(-1, 4),
                  labels=np.asarray(cls, dtype=np.int64), masks=np.asarray(masks, dtype=bool).reshape(-1, h, w),
                  semantic=semantic, item_ids=np.asarray(ids, dtype=np.int64), texture=name)


class CanvasSet:
    """``count`` canvases of ``split`` (a key of ``CANVAS_SPLITS``) made on demand from ``items`` / ``labels``
    (the IDX split, or its part, of ``CANVAS_SPLITS[split]``); ``set[i]`` is canvas i, the same whenever and
    wherever it is made.
    ``classes``: the items' class names (IDX files carry none: "0".."9" by default)."""

    def __init__(self, items: np.ndarray, labels: np.ndarray, split: str, count: int, seed: int,
                 classes: tuple | None = None, source: str | None = None):
        if split not in _SPLIT_CODE:
            raise ValueError(f"split={split!r} is not one of {', '.join(_SPLIT_CODE)}")
        if not isinstance(count, int) or count < 1:
            raise ValueError(f"count={count!r} must be a positive integer")
        if not isinstance(seed, int) or seed < 0:
            raise ValueError(f"seed={seed!r} must be a non-negative integer")
        items, labels = np.asarray(items), np.asarray(labels)
        if items.ndim != 3 or items.dtype != np.uint8 or len(items) != len(labels) or len(items) == 0:
            raise ValueError(f"items must be uint8 (N, h, w) with one label each, got {items.dtype} {items.shape} "
                             f"and {labels.shape} labels")
        self.items, self.labels = items, labels.astype(np.int64)
        self.split, self.count, self.seed = split, count, seed
        self.source = source  # the IDX directory of the items (canvas_set), where pre-training reads its images
        n = int(self.labels.max()) + 1
        if int(self.labels.min()) < 0 or n > SEMANTIC_IGNORE - 1:
            raise ValueError(f"item labels must lie in 0..{SEMANTIC_IGNORE - 2} (the semantic mask is uint8 with "
                             f"{SEMANTIC_IGNORE} for padding), got {int(self.labels.min())}..{n - 1}")
        self.classes = tuple(classes) if classes is not None else tuple(str(c) for c in range(max(n, 10)))
        if len(self.classes) < n:
            raise ValueError(f"{len(self.classes)} class names for labels up to {n - 1}")
        self._textures = load_textures()

    def __len__(self) -> int:
        return self.count

    @property
    def info(self):
        """The set as results rows describe a data set (:class:`~.split.DataInfo`; the largest canvas side)."""
        return DataInfo("canvases", self.classes, 1, (CANVAS_SIDES[1], CANVAS_SIDES[1]), (MEAN,), (STD,))

    def rng(self, i: int) -> np.random.Generator:
        """The generator canvas ``i`` is drawn from (module doc)."""
        ss = np.random.SeedSequence(self.seed, spawn_key=(_SPLIT_CODE[self.split], i))
        return np.random.Generator(np.random.PCG64(ss))

    def __getitem__(self, i: int) -> Canvas:
        if not -self.count <= i < self.count:
            raise IndexError(f"canvas {i} of a set of {self.count}")
        i %= self.count
        return make_canvas(self.items, self.labels, self.rng(i), self._textures)

    def __iter__(self):
        return (self[i] for i in range(self.count))


def canvas_set(data_dir: str, split: str, count: int, seed: int = 0) -> CanvasSet:
    """The canvas set of ``split`` from the MNIST-format directory ``data_dir`` (read and validated by the
    harness's IDX reader): "train": items of the IDX training split; "val": of its test split; "holdout-train"
    and "holdout-val": of the rest and of the held-out part of the training split (:func:`~.holdout.holdout_split`
    with its defaults: the same items are held out as for every other held-out run)."""
    if split not in CANVAS_SPLITS:
        raise ValueError(f"split={split!r} is not one of {', '.join(CANVAS_SPLITS)}")
    idx_split, part = CANVAS_SPLITS[split]
    s = load_split(data_dir, idx_split)
    if part is not None:
        rest, held = holdout_split(s)
        s = rest if part == "rest" else held
    return CanvasSet(s.images[:, 0].numpy(), s.labels.numpy(), split, count, seed, s.info.classes, data_dir)


@dataclass
class CanvasBatch:
    """A padded batch of B canvases (:func:`collate`).

    images: (B, 1, Hp, Wp) float32, normalized, 0 in the padding; pad_mask: (B, 1, Hp, Wp) bool, True at real
    pixels; image_sizes: [(h, w)] per image; boxes: per image (K_i, 4) float32 ``x0, y0, x1, y1``; labels: per
    image (K_i,) int64; masks: per image (K_i, h, w) bool (unpadded); semantic: (B, Hp, Wp) int64, 0..classes
    at real pixels, ``SEMANTIC_IGNORE`` in the padding."""

    images: torch.Tensor
    pad_mask: torch.Tensor
    image_sizes: list
    boxes: list
    labels: list
    masks: list
    semantic: torch.Tensor

    def __len__(self) -> int:
        return int(self.images.shape[0])

    def to(self, device) -> "CanvasBatch":
        mv = lambda ts: [t.to(device) for t in ts]  # noqa: E731
        return CanvasBatch(self.images.to(device), self.pad_mask.to(device), list(self.image_sizes),
                           mv(self.boxes), mv(self.labels), mv(self.masks), self.semantic.to(device))


def collate(canvases, size_divisibility: int = 32) -> CanvasBatch:
    """Canvases -> a :class:`CanvasBatch` padded to the largest height and width rounded up to a multiple of
    ``size_divisibility`` (detectron2's ``ImageList.from_tensors``: normalize, then pad with 0)."""
    canvases = list(canvases)
    if not canvases:
        raise ValueError("collate needs at least one canvas")
    if not isinstance(size_divisibility, int) or size_divisibility < 1:
        raise ValueError(f"size_divisibility={size_divisibility!r} must be a positive integer")
    sizes = [c.size for c in canvases]
    d = size_divisibility
    hp = -(-max(h for h, _ in sizes) // d) * d
    wp = -(-max(w for _, w in sizes) // d) * d
    b = len(canvases)
    images = torch.zeros(b, 1, hp, wp)
    pad_mask = torch.zeros(b, 1, hp, wp, dtype=torch.bool)
    semantic = torch.full((b, hp, wp), SEMANTIC_IGNORE, dtype=torch.int64)
    for i, (c, (h, w)) in enumerate(zip(canvases, sizes)):
        images[i, 0, :h, :w] = (torch.from_numpy(c.image).float() / 255.0 - MEAN) / STD
        pad_mask[i, 0, :h, :w] = True
        semantic[i, :h, :w] = torch.from_numpy(c.semantic.astype(np.int64))
    return CanvasBatch(images, pad_mask, sizes, [torch.from_numpy(c.boxes).float() for c in canvases],
                       [torch.from_numpy(c.labels) for c in canvases], [torch.from_numpy(c.masks) for c in canvases],
                       semantic)
