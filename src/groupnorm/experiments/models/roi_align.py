"""RoIAlign (He et al. 2017) written with ``torch.nn.functional.grid_sample``: detectron2's ``ROIAlign`` (and
torchvision's ``roi_align``) semantics without torchvision.

For features ``(N, C, H, W)`` and RoIs ``(R, 5)`` rows ``[b, x0, y0, x1, y1]`` (image index ``b``, box in input
pixels), output ``(R, C, ph, pw)``. With ``s = spatial_scale`` and ``o = 0.5`` when ``aligned`` (else 0), a RoI
spans ``[x0 s - o, x1 s - o] x [y0 s - o, y1 s - o]`` in feature coordinates (pixel centres at integers; without
``aligned`` its width and height are at least 1). Each of its ``ph x pw`` bins of size ``(bh, bw)`` averages
``gh x gw`` bilinear samples at

.. math::

    y = y_0 + i\\, b_h + (k + \\tfrac12)\\, b_h / g_h, \\qquad x = x_0 + j\\, b_w + (l + \\tfrac12)\\, b_w / g_w,

with ``gh = gw = sampling_ratio``, or with ``sampling_ratio = 0`` ``gh = ceil(roi height / ph)`` and ``gw =
ceil(roi width / pw)`` per RoI (adaptive). A sample with ``y < -1``, ``y > H``, ``x < -1`` or ``x > W`` is 0;
otherwise its coordinates are clamped to ``[0, H - 1] x [0, W - 1]`` and it is interpolated bilinearly from the
four nearest features (torchvision's ``bilinear_interpolate``). ``grid_sample`` (``align_corners=True`` on the
clamped coordinates) does the interpolation and its backward, one call per image and per adaptive grid size.
"""
from __future__ import annotations


import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["roi_align", "ROIAlign", "boxes_to_rois"]


def boxes_to_rois(boxes: list) -> torch.Tensor:
    """Per-image boxes ``[(K_i, 4)]`` -> ``(sum K_i, 5)`` rows ``[i, x0, y0, x1, y1]``."""
    if not boxes:
        raise ValueError("boxes_to_rois needs a list of per-image (K, 4) boxes, got an empty list")
    rows = []
    for i, b in enumerate(boxes):
        if b.dim() != 2 or b.shape[1] != 4:
            raise ValueError(f"boxes of image {i} must have shape (K, 4), got {tuple(b.shape)}")
        rows.append(torch.cat([torch.full((b.shape[0], 1), float(i), dtype=b.dtype, device=b.device), b], 1))
    return torch.cat(rows, 0)


def _check(features, rois, output_size, sampling_ratio, spatial_scale):
    if not isinstance(features, torch.Tensor) or features.dim() != 4 or not features.is_floating_point():
        got = tuple(features.shape) if isinstance(features, torch.Tensor) else type(features).__name__
        raise ValueError(f"roi_align expects floating-point features of shape (N, C, H, W), got {got}")
    if not isinstance(rois, torch.Tensor) or rois.dim() != 2 or rois.shape[1] != 5:
        got = tuple(rois.shape) if isinstance(rois, torch.Tensor) else type(rois).__name__
        raise ValueError(f"rois must have shape (R, 5) rows [batch index, x0, y0, x1, y1], got {got}")
    ph, pw = (output_size, output_size) if isinstance(output_size, int) else tuple(output_size)
    if ph < 1 or pw < 1:
        raise ValueError(f"output_size={output_size!r} must be positive")
    if not isinstance(sampling_ratio, int) or sampling_ratio < 0:
        raise ValueError(f"sampling_ratio={sampling_ratio!r} must be a non-negative integer (0: adaptive)")
    if not spatial_scale > 0:
        raise ValueError(f"spatial_scale={spatial_scale!r} must be positive")
    if rois.shape[0]:
        b = rois[:, 0]
        if bool(((b < 0) | (b >= features.shape[0]) | (b != b.floor())).any()):
            raise ValueError(f"rois' batch indices must be integers in 0..{features.shape[0] - 1}, got "
                             f"{sorted(set(b.tolist()))}")
    return int(ph), int(pw)


def roi_align(features: torch.Tensor, rois: torch.Tensor, output_size, spatial_scale: float = 1.0,
              sampling_ratio: int = 0, aligned: bool = True) -> torch.Tensor:
    """RoIAlign of ``rois`` (R, 5) on ``features`` (N, C, H, W) -> (R, C, ph, pw); see the module docstring.
    Differentiable in ``features`` (not in the boxes)."""
    ph, pw = _check(features, rois, output_size, sampling_ratio, spatial_scale)
    n, c, h, w = features.shape
    r = rois.shape[0]
    out = features.new_zeros((r, c, ph, pw))
    if r == 0:
        return out
    rois = rois.detach().to(features.dtype)
    off = 0.5 if aligned else 0.0
    x0, y0 = rois[:, 1] * spatial_scale - off, rois[:, 2] * spatial_scale - off
    rw, rh = rois[:, 3] * spatial_scale - off - x0, rois[:, 4] * spatial_scale - off - y0
    if not aligned:
        rw, rh = rw.clamp(min=1.0), rh.clamp(min=1.0)
    if sampling_ratio > 0:
        gh = torch.full((r,), sampling_ratio, dtype=torch.long, device=rois.device)
        gw = gh
    else:
        gh = torch.ceil(rh / ph).long().clamp(min=1)
        gw = torch.ceil(rw / pw).long().clamp(min=1)
    bidx = rois[:, 0].long()
    pieces = []
    for ghv, gwv in torch.unique(torch.stack([gh, gw], 1), dim=0).tolist():
        sel_g = (gh == ghv) & (gw == gwv)
        for b in torch.unique(bidx[sel_g]).tolist():
            sel = (sel_g & (bidx == b)).nonzero().flatten()
            pieces.append((sel, _sample(features[b:b + 1], x0[sel], y0[sel], rw[sel], rh[sel], ph, pw, ghv, gwv)))
    idx = torch.cat([p[0] for p in pieces])
    vals = torch.cat([p[1] for p in pieces])
    return out.index_copy(0, idx, vals)


def _sample(feat, x0, y0, rw, rh, ph, pw, gh, gw):
    """The bins of k RoIs of one image (feat (1, C, H, W)), all with grid gh x gw -> (k, C, ph, pw)."""
    _, c, h, w = feat.shape
    k = x0.shape[0]
    dt, dev = feat.dtype, feat.device
    # sample offsets inside the RoI, in units of the RoI's size: (i + (g + 1/2) / G) / P
    fy = ((torch.arange(ph, dtype=dt, device=dev)[:, None] + (torch.arange(gh, dtype=dt, device=dev) + 0.5) / gh)
          / ph).reshape(-1)  # (ph * gh,)
    fx = ((torch.arange(pw, dtype=dt, device=dev)[:, None] + (torch.arange(gw, dtype=dt, device=dev) + 0.5) / gw)
          / pw).reshape(-1)  # (pw * gw,)
    ys = y0[:, None] + rh[:, None] * fy[None, :]  # (k, ph * gh)
    xs = x0[:, None] + rw[:, None] * fx[None, :]  # (k, pw * gw)
    valid = (((ys >= -1.0) & (ys <= h))[:, :, None] & ((xs >= -1.0) & (xs <= w))[:, None, :]).to(dt)
    yc, xc = ys.clamp(0, h - 1), xs.clamp(0, w - 1)
    gy = 2.0 * yc / (h - 1) - 1.0 if h > 1 else torch.zeros_like(yc)
    gx = 2.0 * xc / (w - 1) - 1.0 if w > 1 else torch.zeros_like(xc)
    grid = torch.stack([gx[:, None, :].expand(k, ph * gh, pw * gw), gy[:, :, None].expand(k, ph * gh, pw * gw)], -1)
    grid = grid.reshape(1, k * ph * gh, pw * gw, 2)
    v = F.grid_sample(feat, grid, mode="bilinear", padding_mode="border", align_corners=True)  # (1, C, k*ph*gh, pw*gw)
    v = v.reshape(c, k, ph * gh, pw * gw) * valid[None]
    return v.reshape(c, k, ph, gh, pw, gw).mean(dim=(3, 5)).permute(1, 0, 2, 3)


class ROIAlign(nn.Module):
    """:func:`roi_align` as a module, detectron2's ``ROIAlign(output_size, spatial_scale, sampling_ratio,
    aligned=True)``; ``forward(features, rois)``."""

    def __init__(self, output_size, spatial_scale: float, sampling_ratio: int = 0, aligned: bool = True):
        super().__init__()
        self.output_size, self.spatial_scale = output_size, float(spatial_scale)
        self.sampling_ratio, self.aligned = int(sampling_ratio), bool(aligned)

    def forward(self, features: torch.Tensor, rois: torch.Tensor) -> torch.Tensor:
        return roi_align(features, rois, self.output_size, self.spatial_scale, self.sampling_ratio, self.aligned)

    def extra_repr(self) -> str:
        return (f"output_size={self.output_size}, spatial_scale={self.spatial_scale}, "
                f"sampling_ratio={self.sampling_ratio}, aligned={self.aligned}")
