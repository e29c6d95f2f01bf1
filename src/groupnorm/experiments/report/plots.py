"""The report's PNG plots (matplotlib, Agg), from results rows; error bars are 95% t intervals over seeds.

- ``fig1_batch_size.png``  validation error against images per worker, BN and GN (Figure 1);
- ``fig4_curves_norms.png``  training and validation error per epoch for BN, LN, IN, GN (Figure 4);
- ``fig5_curves_batch.png``  the same for BN and GN at the largest and the smallest batch (Figure 5);
- ``table3_groups.png``  error against the number of groups and against channels per group (Table 3);
- ``noniid.png``  error against classes per worker, per norm;
- ``ghost.png``  BN's error against the images its statistics are taken over, at a fixed global batch and lr,
  with GN and SyncBN as horizontal references;
- ``bn_decomposition.png``  BN's three validation errors (EMA, precise BN, batch statistics) against b;
- ``fig3_vgg.png``  Figure 3: percentiles of the VGG's late conv responses over training, and its curves.
"""
from __future__ import annotations

import os
import statistics

from ..launch import store
from .bn import bn_batch, ghost_rows, noniid_rows
from .stats import ci95


def _save(fig, plt, out: str, name: str, dpi: int = 120) -> str:
    """Lay out ``fig``, write it to ``out/name`` and close it; returns ``name``."""
    fig.tight_layout()
    fig.savefig(os.path.join(out, name), dpi=dpi)
    plt.close(fig)
    return name


def _stats(vals):
    m, h, n = ci95(vals)
    return m, (0.0 if n < 2 else h), n


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


def plot_all(out: str, res, b1: int | None, kind, t3_rows, paper_t3: tuple, roles: dict) -> list[str]:
    """Write every plot the rows allow; return the file names."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    made = []
    # Figure 1: error vs batch size.
    fig, ax = plt.subplots(figsize=(5, 3.6))
    any_line = False
    for k, color in (("BN", "tab:blue"), ("GN", "tab:red")):
        bs = res.batches(k)
        pts = [(b, _stats(res.errors(res.find(k, b, any_groups=True)))) for b in bs
               if res.find(k, b, any_groups=True)]
        if pts:
            any_line = True
            ax.errorbar([p[0] for p in pts], [p[1][0] for p in pts], yerr=[p[1][1] for p in pts], marker="o",
                        color=color, label=k, capsize=3)
    if any_line:
        ax.set_xscale("log", base=2)
        ticks = sorted(set(res.batches("BN")) | set(res.batches("GN")))
        ax.set_xticks(ticks, [str(t) for t in ticks])
        ax.minorticks_off()
        ax.invert_xaxis()
        ax.set_xlabel("images per worker")
        ax.set_ylabel("validation error (%)")
        ax.set_title("Figure 1: BN vs GN against batch size")
        ax.legend()
        ax.grid(alpha=0.3)
        fig.tight_layout()
        fig.savefig(os.path.join(out, "fig1_batch_size.png"), dpi=120)
        made.append("fig1_batch_size.png")
    plt.close(fig)

    def curves_fig(series: list[tuple[str, list[dict]]], name: str, title: str):
        data = [(label, _curves(out, rows)) for label, rows in series if rows]
        data = [(label, c) for label, c in data if c]
        if not data:
            return
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
        made.append(_save(fig, plt, out, name))

    if b1 is not None:
        curves_fig([(k, res.find(k, b1, any_groups=True)) for k in ("BN", "LN", "IN", "GN", "GN+WS")],
                   "fig4_curves_norms.png", f"Figure 4: {b1} images/worker")
    bs = sorted(set(res.batches("BN")) & set(res.batches("GN")))
    if len(bs) >= 2:
        hi, lo = bs[-1], bs[0]
        curves_fig([(f"{k}, {b} img/worker", res.find(k, b, any_groups=True)) for b in (hi, lo)
                    for k in ("BN", "GN")], "fig5_curves_batch.png", "Figure 5: BN vs GN, large and small batch")

    # Table 3 plot.
    if b1 is not None:
        g_pts = [(g, res.errors(t3_rows(res, b1, groups=g))) for g in sorted(paper_t3[0], reverse=True)]
        k_pts = [(k, res.errors(t3_rows(res, b1, group_size=k))) for k in sorted(paper_t3[1], reverse=True)]
        g_pts, k_pts = [p for p in g_pts if p[1]], [p for p in k_pts if p[1]]
        if len(g_pts) + len(k_pts) >= 2:
            fig, axes = plt.subplots(1, 2, figsize=(9, 3.6), sharey=True)
            for ax, pts, xl in ((axes[0], g_pts, "groups G (1 = LN)"), (axes[1], k_pts, "channels per group (1 = IN)")):
                if pts:
                    st = [_stats(v) for _, v in pts]
                    ax.errorbar([p[0] for p in pts], [s[0] for s in st], yerr=[s[1] for s in st], marker="o",
                                capsize=3, color="tab:red")
                    ax.set_xscale("log", base=2)
                    ax.set_xticks([p[0] for p in pts], [str(p[0]) for p in pts])
                    ax.minorticks_off()
                    ax.invert_xaxis()
                ax.set_xlabel(xl)
                ax.grid(alpha=0.3)
            axes[0].set_ylabel("validation error (%)")
            fig.suptitle(f"Table 3: group division (GN, {b1} images/worker)")
            made.append(_save(fig, plt, out, "table3_groups.png"))
    made += _plot_noniid(out, res.rows, kind, plt) + _plot_ghost(out, res.rows, kind, plt)
    made += _plot_decomposition(out, res.rows, kind, plt) + _plot_fig3(out, roles.get("vgg", []), kind, plt)
    return made


def _errbar(ax, xs, groups, **kw):
    st = [_stats(g) for g in groups]
    ax.errorbar(xs, [s[0] for s in st], yerr=[s[1] for s in st], marker="o", capsize=3, **kw)


def _log2_axis(ax, ticks, label):
    ax.set_xscale("log", base=2)
    ax.set_xticks(ticks, [str(t) for t in ticks])
    ax.minorticks_off()
    ax.set_xlabel(label)
    ax.grid(alpha=0.3)


def _plot_noniid(out, rows, kind, plt) -> list[str]:
    non = noniid_rows(rows)
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
    return [_save(fig, plt, out, "noniid.png")]


def _plot_ghost(out, rows, kind, plt) -> list[str]:
    ghost = ghost_rows(rows)
    nbs = sorted({bn_batch(r) for r in ghost if kind(r) == "BN"})
    if len(nbs) < 2:
        return []
    fig, ax = plt.subplots(figsize=(5, 3.6))
    _errbar(ax, nbs, [[r["val_error"] for r in ghost if kind(r) == "BN" and bn_batch(r) == nb] for nb in nbs],
            color="tab:blue", label="BN (statistics over norm_batch images)")
    for k, color in (("SyncBN", "tab:green"), ("GN", "tab:red")):
        v = [r["val_error"] for r in ghost if kind(r) == k]
        if v:
            m, h, _ = _stats(v)
            ax.axhline(m, color=color, label=f"{k} ({m:.2f})")
            if h:
                ax.axhspan(m - h, m + h, color=color, alpha=0.15)
    _log2_axis(ax, nbs, "images per BN statistics group (norm_batch)")
    ax.invert_xaxis()
    ax.set_ylabel("validation error (%)")
    ax.set_title(f"Ghost BN: global batch {ghost[0]['global_batch']}, lr fixed")
    ax.legend(fontsize=8)
    return [_save(fig, plt, out, "ghost.png")]


def _plot_decomposition(out, rows, kind, plt) -> list[str]:
    from .bn import is_standard

    dec = [r for r in rows if "val_error_precise_bn" in r and kind(r) == "BN" and is_standard(r)]
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
    return [_save(fig, plt, out, "bn_decomposition.png")]


def _plot_fig3(out, vgg_rows, kind, plt) -> list[str]:
    runs = [(kind(r), r) for r in sorted(vgg_rows, key=lambda r: (r["seed"], r["norm"]))
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
    return [_save(fig, plt, out, "fig3_vgg.png", dpi=110)]

