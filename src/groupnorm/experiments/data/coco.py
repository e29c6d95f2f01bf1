"""Canvas sets in COCO's layout on disk, and a reader of that layout (a user's own COCO files too).

Layout (as COCO's ``train2017/`` + ``annotations/instances_train2017.json``)::

    OUT/annotations/instances_<split>.json
    OUT/<split>/000000.png, 000001.png, ...      (grayscale PNG, lossless)

The JSON holds ``images`` (``id``, ``file_name``, ``height``, ``width``), ``categories`` (``id`` = class + 1,
``name``) and ``annotations``: per item ``id``, ``image_id``, ``category_id``, ``bbox`` = ``[x, y, w, h]`` in
pixels (the tight box of the mask), ``area`` (the mask's pixel count), ``iscrowd`` = 0 and ``segmentation``,
the instance mask as pycocotools' compressed RLE (``{"size": [h, w], "counts": "..."}``). The JSON is written
last and atomically, so a directory whose JSON exists is complete.

:func:`read_coco` reads any COCO instances file: segmentations as polygons, uncompressed or compressed RLE (an
annotation without one gets its box as mask); images of any mode, converted to grayscale (Pillow's "L": the
models take one channel); categories mapped to labels 0..K-1 in increasing id order; crowd annotations
(``iscrowd`` = 1) left out, as COCO's evaluation ignores them. The whole JSON is validated when it is opened;
images are read when a canvas is asked for. Every problem is a ``ValueError`` (``FileNotFoundError``) naming
the file and, where there is one, the annotation or image id.
"""
from __future__ import annotations

import json
import os
import warnings

import numpy as np

from ...atomic import atomic_write_bytes
from .canvases import Canvas, canvas_set

__all__ = ["annotation_path", "write_coco", "write_canvas_set", "read_coco", "CocoSet"]


def _mask_api():
    try:
        from pycocotools import mask as mask_api
    except ImportError:
        raise ImportError("COCO masks need pycocotools (pip install 'groupnorm[detection]')") from None
    return mask_api


def annotation_path(out_dir: str, split: str) -> str:
    """``OUT/annotations/instances_<split>.json``."""
    return os.path.join(out_dir, "annotations", f"instances_{split}.json")


def _rle(mask: np.ndarray) -> dict:
    rle = _mask_api().encode(np.asfortranarray(mask.astype(np.uint8)))
    return {"size": [int(s) for s in rle["size"]], "counts": rle["counts"].decode("ascii")}


def write_coco(canvases, out_dir: str, split: str, classes) -> str:
    """Write ``canvases`` (:class:`~.canvases.Canvas`) as ``OUT/<split>/NNNNNN.png`` and their instances JSON
    (module doc); ``classes`` names labels 0..K-1. Returns the JSON's path."""
    from PIL import Image

    if not split or os.sep in split or split in (".", "..", "annotations"):
        raise ValueError(f"split={split!r} must be a plain directory name other than 'annotations'")
    img_dir = os.path.join(out_dir, split)
    os.makedirs(img_dir, exist_ok=True)
    images, anns = [], []
    for i, c in enumerate(canvases):
        name = f"{i:06d}.png"
        Image.fromarray(np.ascontiguousarray(c.image), mode="L").save(os.path.join(img_dir, name))
        h, w = c.size
        images.append({"id": i, "file_name": name, "height": h, "width": w})
        for box, label, m in zip(c.boxes, c.labels, c.masks):
            x0, y0, x1, y1 = (float(v) for v in box)
            anns.append({"id": len(anns) + 1, "image_id": i, "category_id": int(label) + 1,
                         "bbox": [x0, y0, x1 - x0, y1 - y0], "area": float(m.sum()), "iscrowd": 0,
                         "segmentation": _rle(m)})
    doc = {"info": {"description": f"groupnorm detection canvases, split {split}"},
           "images": images, "annotations": anns,
           "categories": [{"id": k + 1, "name": str(n), "supercategory": "item"} for k, n in enumerate(classes)]}
    path = annotation_path(out_dir, split)
    atomic_write_bytes(path, json.dumps(doc, separators=(",", ":")).encode())
    return path


def write_canvas_set(out_dir: str, split: str, count: int, seed: int, data_dir: str) -> str:
    """Make ``count`` canvases of ``split`` ("train" or "val") with ``seed`` from the MNIST-format directory
    ``data_dir`` (:func:`~.canvases.canvas_set`) and write them in COCO's layout under ``out_dir``. Returns the
    instances JSON's path."""
    s = canvas_set(data_dir, split, count, seed)
    return write_coco(s, out_dir, split, s.classes)


# ------------------------------------------------------------------------------------------------ reading
def _number(v) -> bool:
    return isinstance(v, (int, float)) and not isinstance(v, bool) and np.isfinite(v)


def _int_id(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


class CocoSet:
    """The canvases of a COCO instances file (:func:`read_coco`); ``set[i]`` reads image i.

    Attributes: ``classes`` (category names, label order), ``category_ids`` (COCO id of each label),
    ``image_ids`` (COCO id of each canvas), ``path`` (the JSON), ``image_dir``."""

    def __init__(self, path: str, image_dir: str, images: list, anns_by_image: dict, categories: list):
        self.path, self.image_dir = path, image_dir
        self._images = images
        self._anns = anns_by_image
        self.category_ids = tuple(c["id"] for c in categories)
        self.classes = tuple(str(c.get("name", c["id"])) for c in categories)
        self._label = {cid: k for k, cid in enumerate(self.category_ids)}
        self.image_ids = tuple(im["id"] for im in images)

    def __len__(self) -> int:
        return len(self._images)

    def __iter__(self):
        return (self[i] for i in range(len(self)))

    def __getitem__(self, i: int) -> Canvas:
        from PIL import Image, UnidentifiedImageError

        im = self._images[i]
        fpath = os.path.join(self.image_dir, im["file_name"])
        if not os.path.isfile(fpath):
            raise FileNotFoundError(f"{self.path}: image id {im['id']}: file not found: {fpath}")
        try:
            with Image.open(fpath) as f:
                image = np.asarray(f.convert("L"))
        except (UnidentifiedImageError, OSError) as exc:
            raise ValueError(f"{fpath}: not a readable image (image id {im['id']} of {self.path}): {exc}") from None
        h, w = im["height"], im["width"]
        if image.shape != (h, w):
            raise ValueError(f"{fpath}: image is {image.shape[1]} x {image.shape[0]} (w x h) but {self.path} says "
                             f"{w} x {h} for image id {im['id']}")
        boxes, labels, masks = [], [], []
        for a in self._anns.get(im["id"], []):
            x, y, bw, bh = a["bbox"]
            boxes.append((x, y, x + bw, y + bh))
            labels.append(self._label[a["category_id"]])
            masks.append(self._decode(a, h, w))
        semantic = np.zeros((h, w), dtype=np.uint8)
        for m, c in zip(masks, labels):
            semantic[m] = c + 1
        return Canvas(image=np.ascontiguousarray(image), boxes=np.asarray(boxes, dtype=np.float64).reshape(-1, 4),
                      labels=np.asarray(labels, dtype=np.int64), masks=np.asarray(masks, dtype=bool).reshape(-1, h, w),
                      semantic=semantic, item_ids=np.asarray([a["id"] for a in self._anns.get(im["id"], [])],
                                                             dtype=np.int64), texture="")

    def _decode(self, a: dict, h: int, w: int) -> np.ndarray:
        seg = a.get("segmentation")
        if not seg:  # no segmentation: the box, rounded outwards to whole pixels
            x, y, bw, bh = a["bbox"]
            m = np.zeros((h, w), dtype=bool)
            m[max(0, int(np.floor(y))):int(np.ceil(y + bh)), max(0, int(np.floor(x))):int(np.ceil(x + bw))] = True
            return m
        mask_api = _mask_api()
        try:
            if isinstance(seg, list):
                rles = mask_api.frPyObjects(seg, h, w)
                rle = mask_api.merge(rles)
            elif isinstance(seg.get("counts"), list):
                rle = mask_api.frPyObjects(seg, h, w)
            else:
                rle = {"size": seg["size"], "counts": seg["counts"].encode("ascii")
                       if isinstance(seg["counts"], str) else seg["counts"]}
            with warnings.catch_warnings():  # pycocotools' decode warns under NumPy 2 (its __array__ signature)
                warnings.simplefilter("ignore", DeprecationWarning)
                m = mask_api.decode(rle)
        except Exception as exc:  # pycocotools raises several types for malformed input
            raise ValueError(f"{self.path}: annotation id {a['id']}: cannot decode its segmentation: "
                             f"{type(exc).__name__}: {exc}") from None
        if m.shape != (h, w):
            raise ValueError(f"{self.path}: annotation id {a['id']}: segmentation of size {m.shape} on image id "
                             f"{a['image_id']} of size ({h}, {w})")
        return m.astype(bool)


def read_coco(path: str, image_dir: str | None = None) -> CocoSet:
    """Open the COCO instances file ``path`` (validated whole) with its images in ``image_dir`` (default: for
    ``ROOT/annotations/instances_<split>.json``, ``ROOT/<split>``). Returns a :class:`CocoSet`."""
    if not os.path.isfile(path):
        raise FileNotFoundError(f"COCO annotation file not found: {path}")
    if image_dir is None:
        base = os.path.basename(path)
        parent = os.path.dirname(os.path.abspath(path))
        if not (base.startswith("instances_") and base.endswith(".json") and os.path.basename(parent) == "annotations"):
            raise ValueError(f"{path}: pass image_dir (the images' directory cannot be inferred from a file not "
                             f"named ROOT/annotations/instances_<split>.json)")
        image_dir = os.path.join(os.path.dirname(parent), base[len("instances_"):-len(".json")])
    try:
        with open(path, "rb") as f:
            doc = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ValueError(f"{path}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict):
        raise ValueError(f"{path}: expected a JSON object with images, annotations and categories")
    for key in ("images", "annotations", "categories"):
        if not isinstance(doc.get(key), list):
            raise ValueError(f"{path}: missing or non-list {key!r}")
    cats = doc["categories"]
    cat_ids = set()
    for c in cats:
        if not isinstance(c, dict) or not _int_id(c.get("id")):
            raise ValueError(f"{path}: category {c!r} has no integer id")
        if c["id"] in cat_ids:
            raise ValueError(f"{path}: category id {c['id']} appears twice")
        cat_ids.add(c["id"])
    images, sizes = [], {}
    for im in doc["images"]:
        iid = im.get("id") if isinstance(im, dict) else None
        if not _int_id(iid):
            raise ValueError(f"{path}: image entry {im!r} has no integer id")
        if iid in sizes:
            raise ValueError(f"{path}: image id {iid} appears twice")
        for key in ("height", "width"):
            if not _int_id(im.get(key)) or im[key] < 1:
                raise ValueError(f"{path}: image id {iid}: {key}={im.get(key)!r} must be a positive integer")
        if not isinstance(im.get("file_name"), str) or not im["file_name"]:
            raise ValueError(f"{path}: image id {iid}: missing file_name")
        sizes[iid] = (im["height"], im["width"])
        images.append(im)
    anns: dict = {}
    seen = set()
    for a in doc["annotations"]:
        aid = a.get("id") if isinstance(a, dict) else None
        if not _int_id(aid):
            raise ValueError(f"{path}: annotation {a!r} has no integer id")
        if aid in seen:
            raise ValueError(f"{path}: annotation id {aid} appears twice")
        seen.add(aid)
        if a.get("image_id") not in sizes:
            raise ValueError(f"{path}: annotation id {aid}: image_id {a.get('image_id')!r} is not an image of the file")
        if a.get("category_id") not in cat_ids:
            raise ValueError(f"{path}: annotation id {aid}: category_id {a.get('category_id')!r} is not a category "
                             f"of the file")
        box = a.get("bbox")
        if not (isinstance(box, list) and len(box) == 4 and all(_number(v) for v in box)):
            raise ValueError(f"{path}: annotation id {aid}: bbox {box!r} must be 4 finite numbers [x, y, w, h]")
        h, w = sizes[a["image_id"]]
        x, y, bw, bh = box
        if bw <= 0 or bh <= 0 or x < 0 or y < 0 or x + bw > w + 1e-6 or y + bh > h + 1e-6:
            raise ValueError(f"{path}: annotation id {aid}: bbox {box} is empty or outside its image id "
                             f"{a['image_id']} of {w} x {h} (w x h)")
        seg = a.get("segmentation")
        if seg is not None and not isinstance(seg, (list, dict)):
            raise ValueError(f"{path}: annotation id {aid}: segmentation must be polygons (a list) or RLE (an "
                             f"object), got {type(seg).__name__}")
        if isinstance(seg, dict) and ("size" not in seg or "counts" not in seg):
            raise ValueError(f"{path}: annotation id {aid}: RLE segmentation needs 'size' and 'counts'")
        if isinstance(seg, dict) and list(seg["size"]) != [h, w]:
            raise ValueError(f"{path}: annotation id {aid}: RLE size {seg['size']} differs from its image id "
                             f"{a['image_id']}'s [{h}, {w}]")
        if a.get("iscrowd", 0):
            continue
        anns.setdefault(a["image_id"], []).append(a)
    categories = sorted((c for c in cats), key=lambda c: c["id"])
    return CocoSet(path, image_dir, images, anns, categories)
