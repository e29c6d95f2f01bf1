"""COCO's average precision (the paper's box AP, AP50, AP75 and mask AP), computed by pycocotools' ``COCOeval``.

Ground truth and detections are given per image, in pixels; both are handed to pycocotools in memory (no file):

* ground truth, per image: ``{"boxes": (K, 4) x0, y0, x1, y1, "labels": (K,) 0..C-1}``, plus ``"masks": (K, H,
  W) bool`` for mask AP;
* detections, per image: ``{"boxes": (D, 4), "scores": (D,), "labels": (D,)}``, plus ``"masks": (D, H, W)``
  (bool, or probabilities binarized at 0.5) for mask AP.

``AP`` is the mean over IoU thresholds 0.50:0.05:0.95 and over the classes present in the ground truth of the
101-point interpolated precision, at up to 100 detections per image and all object areas; ``AP50`` and ``AP75``
at one IoU threshold. Values are fractions in [0, 1] (COCO's tables print them x 100). Without any detection
every AP is 0.
"""
from __future__ import annotations

import contextlib
import io
import warnings

import numpy as np

__all__ = ["box_ap", "mask_ap", "KEYS"]

KEYS = ("AP", "AP50", "AP75")


def _api():
    try:
        from pycocotools import mask as mask_api
        from pycocotools.coco import COCO
        from pycocotools.cocoeval import COCOeval
    except ImportError:
        raise ImportError("COCO's AP needs pycocotools (pip install 'groupnorm[detection]')") from None
    return COCO, COCOeval, mask_api


def _np(t):
    return t.detach().cpu().numpy() if hasattr(t, "detach") else np.asarray(t)


def _rle(m, mask_api):
    rle = mask_api.encode(np.asfortranarray(m.astype(np.uint8)))
    rle["counts"] = rle["counts"].decode("ascii")
    return rle


def _xywh(b) -> list:
    x0, y0, x1, y1 = (float(v) for v in b)
    return [x0, y0, x1 - x0, y1 - y0]


def _check(gts, dets, with_masks: bool):
    if len(gts) != len(dets):
        raise ValueError(f"{len(gts)} ground-truth images but {len(dets)} images of detections")
    need = ("boxes", "labels") + (("masks",) if with_masks else ())
    for i, (g, d) in enumerate(zip(gts, dets)):
        for what, entry, keys in (("ground truth", g, need), ("detections", d, need + ("scores",))):
            missing = [k for k in keys if k not in entry]
            if missing:
                raise ValueError(f"{what} of image {i} lacks {', '.join(missing)}")
            n = len(_np(entry["labels"]))
            b = _np(entry["boxes"])
            if b.shape != (n, 4):
                raise ValueError(f"{what} of image {i}: boxes of shape {b.shape} for {n} labels (want ({n}, 4))")
            for k in keys[2:]:
                if len(_np(entry[k])) != n:
                    raise ValueError(f"{what} of image {i}: {len(_np(entry[k]))} {k} for {n} labels")


def _evaluate(gts, dets, iou_type: str) -> dict:
    COCO, COCOeval, mask_api = _api()
    segm = iou_type == "segm"
    _check(gts, dets, segm)
    images, anns, results, classes = [], [], [], set()
    for i, (g, d) in enumerate(zip(gts, dets)):
        if segm:
            h, w = _np(g["masks"]).shape[1:] if len(_np(g["labels"])) else _np(d["masks"]).shape[1:]
        else:  # boxes need no image size; COCO wants one
            h = w = 1
        images.append({"id": i, "height": int(h), "width": int(w)})
        gm = _np(g["masks"]) if segm else None
        for k, (box, label) in enumerate(zip(_np(g["boxes"]), _np(g["labels"]))):
            ann = {"id": len(anns) + 1, "image_id": i, "category_id": int(label) + 1, "bbox": _xywh(box),
                   "iscrowd": 0}
            if segm:
                ann["segmentation"] = _rle(gm[k], mask_api)
                ann["area"] = float(gm[k].sum())
            else:
                ann["area"] = ann["bbox"][2] * ann["bbox"][3]
            anns.append(ann)
            classes.add(int(label) + 1)
        dm = _np(d["masks"]) if segm else None
        for k, (box, label, score) in enumerate(zip(_np(d["boxes"]), _np(d["labels"]), _np(d["scores"]))):
            r = {"image_id": i, "category_id": int(label) + 1, "bbox": _xywh(box), "score": float(score)}
            if segm:
                m = dm[k] if dm.dtype == bool else dm[k] >= 0.5
                r["segmentation"] = _rle(m, mask_api)
            results.append(r)
            classes.add(int(label) + 1)
    if not results or not anns:
        return {k: 0.0 for k in KEYS}
    gt = COCO()
    gt.dataset = {"images": images, "annotations": anns,
                  "categories": [{"id": c, "name": str(c - 1)} for c in sorted(classes)]}
    with contextlib.redirect_stdout(io.StringIO()), warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)  # pycocotools' mask code under NumPy 2
        gt.createIndex()
        dt = gt.loadRes(results)
        ev = COCOeval(gt, dt, iou_type)
        ev.evaluate()
        ev.accumulate()
        ev.summarize()
    return {k: max(float(v), 0.0) for k, v in zip(KEYS, ev.stats[:3])}


def box_ap(gts: list, dets: list) -> dict:
    """``{"AP", "AP50", "AP75"}`` of the boxes of ``dets`` against ``gts`` (per-image dicts, module doc)."""
    return _evaluate(gts, dets, "bbox")


def mask_ap(gts: list, dets: list) -> dict:
    """``{"AP", "AP50", "AP75"}`` of the instance masks of ``dets`` against ``gts`` (per-image dicts with
    ``"masks"``, module doc)."""
    return _evaluate(gts, dets, "segm")
