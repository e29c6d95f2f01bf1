"""The GN paper's Figure 2: which values share one mean and variance, for BN, LN, IN and GN.

Each panel is an activation block of shape (N, C, H*W); the blue cells are normalized together:

- Batch Norm: one channel, all samples and positions (the set depends on the batch);
- Layer Norm: one sample, all channels and positions;
- Instance Norm: one sample, one channel;
- Group Norm: one sample, one group of C/G channels (here G = 3 groups of 4 channels).

    python -c "from groupnorm.experiments.report.figure2 import draw_norm_sets; draw_norm_sets('norm_sets.png')"
"""
from __future__ import annotations

import numpy as np

N, C, S = 4, 12, 6  # samples, channels, spatial positions (H*W) in the drawing
GROUP = 4           # channels per group for the GN panel


def norm_set_mask(kind: str, n: int = N, c: int = C, s: int = S, group: int = GROUP) -> np.ndarray:
    """Boolean (N, C, S) mask of the cells normalized together with cell (0, 0, 0) for one method."""
    m = np.zeros((n, c, s), bool)
    if kind == "BN":
        m[:, 0, :] = True
    elif kind == "LN":
        m[0, :, :] = True
    elif kind == "IN":
        m[0, 0, :] = True
    elif kind == "GN":
        m[0, :group, :] = True
    else:
        raise ValueError(f"kind={kind!r} is not one of BN, LN, IN, GN")
    return m


def draw_norm_sets(path: str) -> str:
    """Draw the four panels into ``path`` (PNG) and return the path."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig = plt.figure(figsize=(12, 3.4))
    titles = {"BN": "Batch Norm", "LN": "Layer Norm", "IN": "Instance Norm", "GN": "Group Norm"}
    for i, kind in enumerate(("BN", "LN", "IN", "GN")):
        ax = fig.add_subplot(1, 4, i + 1, projection="3d")
        mask = norm_set_mask(kind)
        # voxel axes: x = C, y = N (depth), z = H*W
        filled = np.ones((C, N, S), bool)
        colors = np.empty((C, N, S), dtype=object)
        colors[:] = "#f2f2f2"
        colors[mask.transpose(1, 0, 2)] = "#3b78c2"
        ax.voxels(filled, facecolors=colors, edgecolors="#9a9a9a", linewidth=0.3)
        ax.set_box_aspect((C, N * 1.2, S))
        ax.view_init(elev=22, azim=-62)
        ax.set_xlabel("C", labelpad=-12)
        ax.set_ylabel("N", labelpad=-12)
        ax.set_zlabel("H,W", labelpad=-14)
        ax.set_xticks([])
        ax.set_yticks([])
        ax.set_zticks([])
        ax.set_title(titles[kind], pad=0)
    fig.suptitle("Normalization sets (blue: values sharing one mean and variance)", y=0.99)
    fig.subplots_adjust(left=0.0, right=1.0, bottom=0.02, top=0.84, wspace=0.0)
    fig.savefig(path, dpi=130)
    plt.close(fig)
    return path
