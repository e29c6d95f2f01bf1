"""The report's PNG plots (matplotlib, Agg), from results rows; error bars are 95% t intervals over seeds.

- ``fig1_batch_size.png``  validation error against images per worker, BN and GN (Figure 1);
- ``fig4_curves_norms.png``  training and validation error per epoch for BN, LN, IN, GN (Figure 4);
- ``fig5_curves_batch.png``  the same for BN and GN at the largest and the smallest batch (Figure 5);
- ``table3_groups.png``  error against the number of groups and against channels per group (Table 3);
- ``noniid.png``  error against classes per worker, per norm;
- ``ghost.png``  BN's error against the images its statistics are taken over, at a fixed global batch and lr,
  with GN and SyncBN as horizontal references;
- ``bn_decomposition.png``  BN's three validation errors (EMA, precise BN, batch statistics) against b;
- ``fig3_vgg.png``  Figure 3: percentiles of the VGG's late conv responses over training, and its curves;
- ``video_table8.png``  the video task (Table 8): top-1 accuracy against clips per worker, BN and GN, with the
  more-frames setting as its own markers (``roles["video"]``: the video rows of the main protocol);
- ``video_curves.png``  the video runs' training and validation error per epoch, BN and GN per setting;
- ``detection_perworker.png`` / ``segmentation_perworker.png``  box AP / mIoU against images per worker, BN and
  GN (``roles["dense"]``: the dense tasks' rows; :func:`.dense.perworker_series`);
- ``detection_curves.png`` / ``segmentation_curves.png``  box AP / mIoU per epoch, BN and GN at 2 images per
  worker (:func:`.dense.curve_series`).
"""
from __future__ import annotations

import os
import statistics
from dataclasses import dataclass

from .. import store
from .rows import bn_batch, ghost_rows, is_standard, kind, noniid_rows, t3_rows
from .stats import error_bar


def _save(fig, plt, out: str, name: str, dpi: int = 120) -> str:
    """Lay out ``fig``, write it to ``out/name`` and close it; returns ``name``."""
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=dpi)
    plt.close(fig)
    return name


def _history(out: str, row: dict) -> list[dict]:
    """A run's per-epoch train/val errors: from the row's curves, else from ``runs/<key>/metrics.jsonl``."""
    if row.get("val_error_curve") is not None:
        return [dict(train_error=t, val_error=v) for t, v in zip(row["train_error_curve"], row["val_error_curve"])]
    return store.read_jsonl(os.path.join(store.run_dir(out, row["config_key"]), "metrics.jsonl"))


def _curves(out: str, rows: list[dict]) -> dict[str, list[float]]:
    """Per-epoch train/val error averaged over the rows' seeds (epochs all seeds have)."""
    hs = [_history(out, r) for r in rows]
    hs = [h for h in hs if h]
    if not hs:
        return {}
    n = min(len(h) for h in hs)
    return {k: [statistics.fmean(h[e][k] for h in hs) for e in range(n)] for k in ("train_error", "val_error")}


@dataclass(frozen=True)
class PlotData:
    """What the plots read: the output directory ``out`` (for older rows' metrics files), the main protocol's
    rows (``res``, a :class:`~.rows.Results`), Table 1's images per worker ``b1``, Table 3's columns
    (``paper_t3``: the paper's groups and channels per group) and the rows by role (``roles``)."""

    out: str
    res: object
    b1: int | None
    paper_t3: tuple
    roles: dict


def plot_all(out: str, res, b1: int | None, paper_t3: tuple, roles: dict) -> list[str]:
    """Write every plot of :data:`PLOTS` that the rows allow; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    d = PlotData(out, res, b1, paper_t3, roles)
    return [name for plot in PLOTS for name in plot(d, plt)]


def _plot_fig1(d: PlotData, plt) -> list[str]:
    """Figure 1: validation error against images per worker, BN and GN."""
    res = d.res
    fig, ax = plt.subplots(figsize=(5, 3.6))
    any_line = False
    for k, color in (("BN", "tab:blue"), ("GN", "tab:red")):
        bs = [b for b in res.batches(k) if res.find(k, b, any_groups=True)]
        if bs:
            any_line = True
            _errbar(ax, bs, [res.errors(res.find(k, b, any_groups=True)) for b in bs], color=color, label=k)
    if not any_line:
        plt.close(fig)
        return []
    _log2_axis(ax, sorted(set(res.batches("BN")) | set(res.batches("GN"))), "images per worker")
    ax.invert_xaxis()
    ax.set_ylabel("validation error (%)")
    ax.set_title("Figure 1: BN vs GN against batch size")
    ax.legend()
    return [_save(fig, plt, d.out, "fig1_batch_size.png")]


def _curves_fig(d: PlotData, plt, series: list[tuple[str, list[dict]]], name: str, title: str) -> list[str]:
    """Training and validation error per epoch (mean over seeds) of each labelled group of rows."""
    data = [(label, _curves(d.out, rows)) for label, rows in series if rows]
    data = [(label, c) for label, c in data if c]
    if not data:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=False)
    for label, c in data:
        ep = list(range(1, len(c["val_error"]) + 1))
        axes[0].plot(ep, c["train_error"], marker=".", label=label)
        axes[1].plot(ep, c["val_error"], marker=".", label=label)
    for ax, t in zip(axes, ("training error (train mode)", "validation error")):
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set_xlabel("epoch")
        ax.set_ylabel("error (%)")
        ax.set_title(t)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(title)
    return [_save(fig, plt, d.out, name)]


def _plot_fig4(d: PlotData, plt) -> list[str]:
    """Figure 4: the curves of each norm at Table 1's images per worker."""
    if d.b1 is None:
        return []
    return _curves_fig(d, plt, [(k, d.res.find(k, d.b1, any_groups=True)) for k in ("BN", "LN", "IN", "GN", "GN+WS")],
                       "fig4_curves_norms.png", f"Figure 4: {d.b1} images/worker")


def _plot_fig5(d: PlotData, plt) -> list[str]:
    """Figure 5: the curves of BN and GN at the largest and the smallest images per worker."""
    bs = sorted(set(d.res.batches("BN")) & set(d.res.batches("GN")))
    if len(bs) < 2:
        return []
    return _curves_fig(d, plt, [(f"{k}, {b} img/worker", d.res.find(k, b, any_groups=True)) for b in (bs[-1], bs[0])
                                for k in ("BN", "GN")], "fig5_curves_batch.png",
                       "Figure 5: BN vs GN, large and small batch")


def _plot_table3(d: PlotData, plt) -> list[str]:
    """Table 3: error against the number of groups and against channels per group."""
    if d.b1 is None:
        return []
    res, b1 = d.res, d.b1
    g_pts = [(g, res.errors(t3_rows(res, b1, groups=g))) for g in sorted(d.paper_t3[0], reverse=True)]
    k_pts = [(k, res.errors(t3_rows(res, b1, group_size=k))) for k in sorted(d.paper_t3[1], reverse=True)]
    g_pts, k_pts = [p for p in g_pts if p[1]], [p for p in k_pts if p[1]]
    if len(g_pts) + len(k_pts) < 2:
        return []
    fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
    for ax, pts, xl in ((axes[0], g_pts, "groups G (1 = LN)"), (axes[1], k_pts, "channels per group (1 = IN)")):
        if pts:
            _errbar(ax, [p[0] for p in pts], [v for _, v in pts], color="tab:red")
            _log2_axis(ax, [p[0] for p in pts], xl)
            ax.invert_xaxis()
        else:
            ax.set_xlabel(xl)
            ax.grid(alpha=0.3)
    axes[0].set_ylabel("validation error (%)")
    fig.suptitle(f"Table 3: group division (GN, {b1} images/worker)")
    return [_save(fig, plt, d.out, "table3_groups.png")]


def _errbar(ax, xs, groups, **kw):
    st = [error_bar(g) for g in groups]
    ax.errorbar(xs, [s[0] for s in st], yerr=[s[1] for s in st], **{"marker": "o", "capsize": 3, **kw})


def _log2_axis(ax, ticks, label):
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _plot_noniid(d: PlotData, plt) -> list[str]:
    """Error against classes per worker, per norm."""
    non = noniid_rows(d.res.rows)
    cs = sorted({r["classes_per_worker"] for r in non})
    if len(cs) < 2:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for k, color in (("BN", "tab:blue"), ("SyncBN", "tab:green"), ("GN", "tab:red")):
        pts = [(c, [r["val_error"] for r in non if kind(r) == k and r["classes_per_worker"] == c]) for c in cs]
        pts = [p for p in pts if p[1]]
        if pts:
            _errbar(ax, [p[0] for p in pts], [p[1] for p in pts], color=color, label=k)
    _log2_axis(ax, cs, "classes per worker (10 = i.i.d.)")
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"Non-i.i.d. worker batches ({non[0]['batch_per_worker']} images/worker)")
    ax.legend()
    return [_save(fig, plt, d.out, "noniid.png")]


def _plot_ghost(d: PlotData, plt) -> list[str]:
    """BN's error against its statistics' images at a fixed global batch; GN and SyncBN as references."""
    ghost = ghost_rows(d.res.rows)
    nbs = sorted({bn_batch(r) for r in ghost if kind(r) == "BN"})
    if len(nbs) < 2:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _errbar(ax, nbs, [[r["val_error"] for r in ghost if kind(r) == "BN" and bn_batch(r) == nb] for nb in nbs],
            color="tab:blue", label="BN (statistics over norm_batch images)")
    for k, color in (("SyncBN", "tab:green"), ("GN", "tab:red")):
        v = [r["val_error"] for r in ghost if kind(r) == k]
        if v:
            m, h, _ = error_bar(v)
            ax.axhline(m, color=color, label=f"{k} ({m:.2f})")
            if h:
                ax.axhspan(m - h, m + h, color=color, alpha=0.15)
    _log2_axis(ax, nbs, "images per BN statistics group (norm_batch)")
    ax.invert_xaxis()
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"Ghost BN: global batch {ghost[0]['global_batch']}, lr fixed")
    ax.legend(fontsize=8)
    return [_save(fig, plt, d.out, "ghost.png")]


def _plot_decomposition(d: PlotData, plt) -> list[str]:
    """BN's three validation errors (EMA, precise BN, batch statistics) against images per worker."""
    dec = [r for r in d.res.rows if "val_error_precise_bn" in r and kind(r) == "BN" and is_standard(r)]
    bs = sorted({r["batch_per_worker"] for r in dec})
    if len(bs) < 2:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for field, label, color in (("val_error", "EMA running statistics", "tab:blue"),
                                ("val_error_precise_bn", "precise BN (population)", "tab:purple"),
                                ("val_error_batch_stats", "test-batch statistics", "tab:orange")):
        _errbar(ax, bs, [[r[field] for r in dec if r["batch_per_worker"] == b] for b in bs], color=color,
                label=label)
    _log2_axis(ax, bs, "images per worker")
    ax.invert_xaxis()
    ax.set_ylabel("validation error (%)")
    ax.set_title("BN's error, three ways of normalizing at test time")
    ax.legend(fontsize=8)
    return [_save(fig, plt, d.out, "bn_decomposition.png")]


def _plot_fig3(d: PlotData, plt) -> list[str]:
    """Figure 3: percentiles of the VGG's late conv responses over training, and its curves."""
    runs = [(kind(r), r) for r in sorted(d.roles.get("vgg", []), key=lambda r: (r["seed"], r["norm"]))
            if r.get("feature_percentiles")]
    seen, keep = set(), []
    for k, r in runs:  # one run (the lowest seed) per norm
        if k not in seen:
            seen.add(k)
            keep.append((k, r))
    if not keep:
        return []
    fig, axes = plt.subplots(1, len(keep) + 1, figsize=(4 * (len(keep) + 1), 3.4))
    for ax, (k, r) in zip(axes, keep):
        fp = r["feature_percentiles"]
        steps = [p[0] for p in fp]
        for i, (q, style) in enumerate(zip(("1st", "20th", "80th", "99th"), (":", "-", "-", ":"))):
            ax.plot(steps, [p[1 + i] for p in fp], style, color="k", lw=1, label=q)
        ax.fill_between(steps, [p[2] for p in fp], [p[3] for p in fp], color="tab:blue", alpha=0.2)
        ax.set_title(f"VGG, {k}: late conv, before norm")
        ax.set_xlabel("training step")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("response percentiles")
    axes[0].legend(fontsize=7)
    ax = axes[-1]
    for k, r in keep:
        ep = list(range(1, len(r["val_error_curve"]) + 1))
        line, = ax.plot(ep, r["train_error_curve"], "--", label=f"{k} train")
        ax.plot(ep, r["val_error_curve"], "-", color=line.get_color(), label=f"{k} val")
    ax.set_xlabel("epoch")
    ax.set_ylabel("error (%)")
    ax.set_title("training (dashed) and validation error")
    ax.legend(fontsize=7)
    ax.grid(alpha=0.3)
    return [_save(fig, plt, d.out, "fig3_vgg.png", dpi=110)]


def _plot_video(d: PlotData, plt) -> list[str]:
    """Table 8: top-1 accuracy against clips per worker, BN and GN, at the base frames and with more frames."""
    from .video import grid

    main = d.roles.get("video", [])
    t, clips, more = grid(main)
    if not clips:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    for k, color in (("BN", "tab:blue"), ("GN", "tab:red")):
        acc = [[100.0 - r["val_error"] for r in main if kind(r) == k and r["batch_per_worker"] == c
                and r["frames"] == f] for c, f in [(c, t) for c in clips] + ([more] if more else [])]
        _errbar(ax, clips, acc[:len(clips)], color=color, label=f"{k}, {t} frames")
        if more:
            _errbar(ax, [more[0]], acc[-1:], color=color, marker="s", mfc="none", ls="none",
                    label=f"{k}, {more[1]} frames")
    _log2_axis(ax, sorted(set(clips) | ({more[0]} if more else set())), "clips per worker")
    ax.set_ylabel("top-1 accuracy (%)")
    ax.set_title("Video: clips per worker against frames per clip")
    ax.legend(fontsize=8)
    return [_save(fig, plt, d.out, "video_table8.png")]


def _plot_video_curves(d: PlotData, plt) -> list[str]:
    """The video runs' training and validation error per epoch (mean over seeds), BN and GN at each clips per
    worker and frames setting of the table: whether the curves have flattened."""
    from .video import grid

    main = d.roles.get("video", [])
    t, clips, more = grid(main)
    settings = [(c, t) for c in clips] + ([more] if more else [])
    series = [(f"{k} c={c} T={f}", [r for r in main if kind(r) == k and r["batch_per_worker"] == c
                                     and r["frames"] == f]) for c, f in settings for k in ("BN", "GN")]
    return _curves_fig(d, plt, series, "video_curves.png", "Video: error per epoch")


_DENSE_LABEL = {"detection": "box AP", "segmentation": "mIoU"}


def _plot_dense(d: PlotData, plt) -> list[str]:
    """Per dense task: its metric against images per worker, BN and GN; and per epoch at 2 images per worker."""
    from .dense import curve_series, perworker_series

    rows, made = d.roles.get("dense", []), []
    for task, label in _DENSE_LABEL.items():
        pw = perworker_series(rows, task)
        if pw:
            fig, ax = plt.subplots(figsize=(5, 3.6))
            for k, color in (("BN", "tab:blue"), ("GN", "tab:red")):
                if k in pw:
                    _errbar(ax, list(pw[k]), list(pw[k].values()), color=color, label=k)
            _log2_axis(ax, sorted({b for v in pw.values() for b in v}), "images per worker")
            ax.set_ylabel(f"{label} (points)")
            ax.set_title(f"{task.capitalize()}: BN vs GN against images per worker")
            ax.legend()
            made.append(_save(fig, plt, d.out, f"{task}_perworker.png"))
        cs = curve_series(rows, task)
        if cs:
            fig, ax = plt.subplots(figsize=(5, 3.6))
            for k, color in (("BN", "tab:blue"), ("GN", "tab:red")):
                ax.plot(range(1, len(cs[k]) + 1), cs[k], marker=".", color=color, label=k)
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("epoch")
            ax.set_ylabel(f"validation {label} (points)")
            ax.set_title(f"{task.capitalize()}: 2 images per worker")
            ax.grid(alpha=0.3)
            ax.legend()
            made.append(_save(fig, plt, d.out, f"{task}_curves.png"))
    return made


PLOTS = (_plot_fig1, _plot_fig4, _plot_fig5, _plot_table3, _plot_noniid, _plot_ghost, _plot_decomposition,
         _plot_fig3, _plot_video, _plot_video_curves,
         _plot_dense)  # in the report's order; a new plot: a function of (PlotData, pyplot) -> file names
