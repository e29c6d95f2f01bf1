"""RoIAlign through grid_sample against a direct computation (torchvision's CPU loops, written out in Python)
on small inputs: values and gradients, aligned or not, fixed or adaptive sampling, boxes across the borders."""
import math

import pytest
import torch

from groupnorm.experiments.models.roi_align import ROIAlign, boxes_to_rois, roi_align


def _bilinear(f, y, x):
    """torchvision's bilinear_interpolate on one (H, W) map (a differentiable torch expression)."""
    h, w = f.shape
    if y < -1.0 or y > h or x < -1.0 or x > w:
        return f.new_zeros(())
    y, x = max(y, 0.0), max(x, 0.0)
    yl, xl = int(y), int(x)
    if yl >= h - 1:
        yh = yl = h - 1
        y = float(yl)
    else:
        yh = yl + 1
    if xl >= w - 1:
        xh = xl = w - 1
        x = float(xl)
    else:
        xh = xl + 1
    ly, lx = y - yl, x - xl
    hy, hx = 1.0 - ly, 1.0 - lx
    return hy * hx * f[yl, xl] + hy * lx * f[yl, xh] + ly * hx * f[yh, xl] + ly * lx * f[yh, xh]


def _direct(features, rois, ph, pw, scale, ratio, aligned):
    out = []
    for roi in rois.tolist():
        b = int(roi[0])
        off = 0.5 if aligned else 0.0
        x0, y0, x1, y1 = (v * scale - off for v in roi[1:])
        rw, rh = x1 - x0, y1 - y0
        if not aligned:
            rw, rh = max(rw, 1.0), max(rh, 1.0)
        bh, bw = rh / ph, rw / pw
        gh = ratio if ratio > 0 else math.ceil(rh / ph)
        gw = ratio if ratio > 0 else math.ceil(rw / pw)
        chans = []
        for c in range(features.shape[1]):
            f = features[b, c]
            bins = []
            for i in range(ph):
                for j in range(pw):
                    acc = f.new_zeros(())
                    for k in range(gh):
                        y = y0 + i * bh + (k + 0.5) * bh / gh
                        for l in range(gw):
                            acc = acc + _bilinear(f, y, x0 + j * bw + (l + 0.5) * bw / gw)
                    bins.append(acc / max(gh * gw, 1))
            chans.append(torch.stack(bins).reshape(ph, pw))
        out.append(torch.stack(chans))
    return torch.stack(out)


ROIS = torch.tensor([[0, 1.0, 1.5, 6.0, 7.0],      # inside
                     [1, -3.0, -2.0, 4.0, 3.5],    # across the top-left border
                     [0, 5.5, 6.0, 11.0, 12.0],    # across the bottom-right border and outside
                     [1, 2.2, 3.3, 2.9, 3.9],      # smaller than a bin
                     [0, 0.0, 0.0, 9.0, 10.0]],    # the whole map
                    dtype=torch.float64)


@pytest.mark.parametrize("ratio", [0, 1, 2])
@pytest.mark.parametrize("aligned", [True, False])
@pytest.mark.parametrize("scale,out", [(1.0, (2, 3)), (0.5, (3, 3))])
def test_roi_align_matches_direct_computation(ratio, aligned, scale, out):
    g = torch.Generator().manual_seed(0)
    feats = torch.randn(2, 3, 9, 8, generator=g, dtype=torch.float64)
    rois = ROIS.clone()
    f1 = feats.clone().requires_grad_(True)
    f2 = feats.clone().requires_grad_(True)
    got = roi_align(f1, rois, out, scale, ratio, aligned)
    want = _direct(f2, rois, *out, scale, ratio, aligned)
    torch.testing.assert_close(got, want, atol=1e-12, rtol=0)
    dy = torch.randn(got.shape, generator=g, dtype=torch.float64)
    (g1,), (g2,) = torch.autograd.grad(got, f1, dy), torch.autograd.grad(want, f2, dy)
    torch.testing.assert_close(g1, g2, atol=1e-12, rtol=0)


def test_known_values_and_module():
    # a linear ramp f[y, x] = 10 y + x is reproduced exactly by bilinear sampling inside the map: with aligned=True
    # a 2x2 box from pixel corner (2, 4) to (4, 6) has bin centres at feature coordinates 2.0 and 3.0 (x), 4.0, 5.0 (y)
    ys, xs = torch.meshgrid(torch.arange(8.0), torch.arange(8.0), indexing="ij")
    feats = (10 * ys + xs)[None, None]
    m = ROIAlign((2, 2), spatial_scale=1.0, sampling_ratio=2)
    got = m(feats, torch.tensor([[0, 2.0, 4.0, 4.0, 6.0]]))
    torch.testing.assert_close(got[0, 0], torch.tensor([[42.0, 43.0], [52.0, 53.0]]))
    # a box entirely beyond the map by more than one pixel samples nothing
    assert torch.all(m(feats, torch.tensor([[0, 20.0, 20.0, 30.0, 30.0]])) == 0)
    assert m(feats, torch.zeros(0, 5)).shape == (0, 1, 2, 2)
    assert "sampling_ratio=2" in repr(m)


def test_boxes_to_rois():
    rois = boxes_to_rois([torch.tensor([[1.0, 2, 3, 4]]), torch.zeros(0, 4), torch.tensor([[5.0, 6, 7, 8], [0, 0, 1, 1]])])
    torch.testing.assert_close(rois, torch.tensor([[0, 1.0, 2, 3, 4], [2, 5, 6, 7, 8], [2, 0, 0, 1, 1]]))
    with pytest.raises(ValueError, match=r"image 0 must have shape \(K, 4\), got \(3,\)"):
        boxes_to_rois([torch.zeros(3)])


@pytest.mark.parametrize("kwargs,match", [
    (dict(rois=torch.zeros(2, 4)), r"rois must have shape \(R, 5\).*got \(2, 4\)"),
    (dict(features=torch.zeros(2, 9, 8)), r"features of shape \(N, C, H, W\), got \(2, 9, 8\)"),
    (dict(rois=torch.tensor([[2.0, 0, 0, 1, 1]])), r"batch indices must be integers in 0..1, got \[2.0\]"),
    (dict(sampling_ratio=-1), "sampling_ratio=-1"),
    (dict(output_size=0), "output_size=0"),
    (dict(spatial_scale=0.0), "spatial_scale=0.0"),
])
def test_bad_arguments(kwargs, match):
    args = dict(features=torch.zeros(2, 1, 9, 8), rois=torch.zeros(1, 5), output_size=2, spatial_scale=1.0,
                sampling_ratio=0) | kwargs
    with pytest.raises(ValueError, match=match):
        roi_align(**args)
