"""``OUT/report.md`` and PNG plots from ``OUT/results.jsonl``: the paper's Tables 1-3 and Figures 1, 4, 5.

Each table cell is our validation error (%) at the last epoch, mean +- sample standard deviation over seeds
(``n`` seeds), beside the paper's ResNet-50 / ImageNet top-1 error. Plots (matplotlib, Agg):

- ``fig1_batch_size.png``  validation error against images per worker, BN and GN (Figure 1);
- ``fig4_curves_norms.png``  training and validation error per epoch for BN, LN, IN, GN (Figure 4);
- ``fig5_curves_batch.png``  the same for BN and GN at the largest and the smallest batch (Figure 5);
- ``table3_groups.png``  error against the number of groups and against channels per group (Table 3).
"""
from __future__ import annotations

import os
import statistics
from collections import Counter, defaultdict

from . import store
from .archs import DEFAULT_ARCH
from .config import norm_kind
from .report_bn import is_standard, sections

# The paper's numbers (ResNet-50, ImageNet, top-1 validation error %, 8 workers).
PAPER_TABLE1 = {"BN": 23.6, "LN": 25.3, "IN": 28.4, "GN": 24.1}
PAPER_TABLE2 = {"BN": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
                "GN": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1}}
PAPER_TABLE3_G = {64: 24.6, 32: 24.1, 16: 24.6, 8: 24.4, 4: 24.6, 2: 24.7, 1: 25.3}
PAPER_TABLE3_K = {64: 24.4, 32: 24.5, 16: 24.2, 8: 24.3, 4: 24.8, 2: 25.6, 1: 28.4}
PROTOCOL_FIELDS = ("workers", "epochs", "train_size", "val_size", "arch", "widths", "blocks")
_ROW_DEFAULTS = {"arch": DEFAULT_ARCH}  # rows written before the field existed


def kind(row: dict) -> str:
    """A results row's kind (BN, GN, LN, IN, GN+WS, ...): :func:`groupnorm.experiments.config.norm_kind`."""
    return norm_kind(row["norm"], row.get("groups"), row.get("group_size"), norm_batch=row.get("norm_batch"),
                     global_batch=row.get("global_batch"))


def _protocol(row: dict) -> tuple:
    return tuple(str(row.get(f, _ROW_DEFAULTS.get(f))) for f in PROTOCOL_FIELDS)


def _stats(vals: list[float]) -> tuple[float, float, int]:
    m = statistics.fmean(vals)
    sd = statistics.stdev(vals) if len(vals) > 1 else 0.0
    return m, sd, len(vals)


def _cell(vals: list[float] | None) -> str:
    if not vals:
        return "–"
    m, sd, n = _stats(vals)
    return f"{m:.2f} ± {sd:.2f} (n={n})" if n > 1 else f"{m:.2f}"


class Results:
    """Rows of one protocol, indexed by setting."""

    def __init__(self, rows: list[dict]):
        protos = Counter(_protocol(r) for r in rows)
        self.protocol = protos.most_common(1)[0][0] if protos else None
        self.other_protocols = sum(c for p, c in protos.items() if p != self.protocol)
        self.rows = [r for r in rows if _protocol(r) == self.protocol]
        self.by = defaultdict(list)
        for r in self.rows:
            if not is_standard(r):  # noniid / ghost rows have their own sections (report_bn)
                continue
            self.by[(kind(r), r["batch_per_worker"], r.get("groups"), r.get("group_size"))].append(r)

    def find(self, k: str, b: int, groups=None, group_size=None, any_groups: bool = False) -> list[dict]:
        if any_groups:
            out = []
            for (kk, bb, g, gs), rs in self.by.items():
                if kk == k and bb == b and (k != "GN" or (g == 32 and gs is None)):
                    out.extend(rs)
            return out
        return self.by.get((k, b, groups, group_size), [])

    def errors(self, rows: list[dict]) -> list[float]:
        return [r["val_error"] for r in rows]

    def batches(self, k: str) -> list[int]:
        return sorted({b for (kk, b, g, gs) in self.by if kk == k}, reverse=True)


def _curves(out: str, rows: list[dict]) -> dict[str, list[float]]:
    """Per-epoch train/val error averaged over the rows' seeds (epochs all seeds have)."""
    hs = [store.read_jsonl(os.path.join(store.run_dir(out, r["config_key"]), "metrics.jsonl")) for r in rows]
    hs = [h for h in hs if h]
    if not hs:
        return {}
    n = min(len(h) for h in hs)
    return {k: [statistics.fmean(h[e][k] for h in hs) for e in range(n)] for k in ("train_error", "val_error")}


def _plot_all(out: str, res: Results, b1: int | None) -> list[str]:
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
        for ax, t in zip(axes, ("training error (train mode, augmented)", "validation error")):
            ax.xaxis.get_major_locator().set_params(integer=True)
            ax.set_xlabel("epoch")
            ax.set_ylabel("error (%)")
            ax.set_title(t)
            ax.grid(alpha=0.3)
            ax.legend()
        fig.suptitle(title)
        fig.tight_layout()
        fig.savefig(os.path.join(out, name), dpi=120)
        plt.close(fig)
        made.append(name)

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
        g_pts = [(g, res.errors(_t3_rows(res, b1, groups=g))) for g in sorted(PAPER_TABLE3_G, reverse=True)]
        k_pts = [(k, res.errors(_t3_rows(res, b1, group_size=k))) for k in sorted(PAPER_TABLE3_K, reverse=True)]
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
            fig.tight_layout()
            fig.savefig(os.path.join(out, "table3_groups.png"), dpi=120)
            plt.close(fig)
            made.append("table3_groups.png")
    return made


def _t3_rows(res: Results, b: int, groups=None, group_size=None) -> list[dict]:
    if group_size == 1:
        return res.find("IN", b, None, 1)
    if groups == 1:
        return res.find("LN", b, 1, None)
    return res.find("GN", b, groups, group_size)


def _elapsed(rows: list[dict]) -> str:
    """', elapsed X min' from the first run's start to the last run's end (runs may train side by side)."""
    import calendar
    import time

    try:
        ends = [calendar.timegm(time.strptime(r["finished_at"], "%Y-%m-%dT%H:%M:%SZ")) for r in rows]
    except (KeyError, ValueError):
        return ""
    starts = [e - r["wall_s"] for e, r in zip(ends, rows)]
    return f", elapsed {(max(ends) - min(starts)) / 60:.1f} min (runs train side by side)"


def build_report(out: str) -> tuple[str, Results]:
    rows = store.read_results(out)
    res = Results(rows)
    L = [f"# Group Normalization on Fashion-MNIST: reproduction report", ""]
    if not res.rows:
        L += ["No finished runs in `results.jsonl` yet."]
        return "\n".join(L) + "\n", res
    r0 = res.rows[0]
    seeds = sorted({r["seed"] for r in res.rows})
    wall = sum(r["wall_s"] for r in res.rows)
    L += [f"{len(res.rows)} finished runs; protocol: {r0['workers']} workers, {r0['epochs']} epochs, "
          f"{r0['train_size']} training images, {r0['val_size']} validation images (from the test split), "
          f"ResNet widths {r0['widths']} blocks {r0['blocks']}, seeds {seeds}. Sum of the runs' wall times "
          f"{wall / 60:.1f} min{_elapsed(res.rows)} ({r0.get('machine', '?')}, torch {r0.get('torch', '?')}, "
          f"{r0.get('threads', '?')} thread(s) per run).",
          "",
          "Numbers are our validation error (%) after the last epoch: mean ± standard deviation over seeds "
          "(a single number when there is one seed). *Paper* is ResNet-50 on ImageNet (top-1 error %, "
          "8 workers, 100 epochs): the trends are comparable, the absolute values are not.", ""]
    if res.other_protocols:
        L += [f"({res.other_protocols} rows of another protocol in this directory are not shown.)", ""]
    div = [r for r in res.rows if r.get("diverged")]
    if div:
        L += ["Diverged runs (loss became non-finite; their error is the one measured when they stopped): "
              + ", ".join(f"{kind(r)} b={r['batch_per_worker']} seed {r['seed']}" for r in div), ""]

    # Table 1.
    bn_bs = res.batches("BN") + res.batches("GN")
    b1 = 32 if 32 in bn_bs else (max(bn_bs) if bn_bs else None)
    t1 = [k for k in ("BN", "LN", "IN", "GN", "GN+WS") if b1 is not None and res.find(k, b1, any_groups=True)]
    if t1:
        L += [f"## Table 1: normalization methods, {b1} images per worker", "",
              "| | " + " | ".join(t1) + " |", "|---|" + "---|" * len(t1),
              "| ours: val error | " + " | ".join(_cell(res.errors(res.find(k, b1, any_groups=True))) for k in t1)
              + " |"]
        bn = res.errors(res.find("BN", b1)) if "BN" in t1 else []
        if bn:
            L.append("| ours: − BN | " + " | ".join(
                f"{statistics.fmean(res.errors(res.find(k, b1, any_groups=True))) - statistics.fmean(bn):+.2f}"
                for k in t1) + " |")
        L.append("| ours: train error | " + " | ".join(
            _cell([r["train_error"] for r in res.find(k, b1, any_groups=True)]) for k in t1) + " |")
        L.append("| paper (ImageNet) | " + " | ".join(
            f"{PAPER_TABLE1[k]:.1f}" if k in PAPER_TABLE1 else "–" for k in t1) + " |")
        L += ["", "Curves: `fig4_curves_norms.png`.", ""]

    # Table 2.
    bs = sorted(set(res.batches("BN")) | set(res.batches("GN")), reverse=True)
    if bs and (res.batches("BN") and res.batches("GN")):
        L += ["## Table 2: sensitivity to images per worker", "",
              "| images/worker | " + " | ".join(str(b) for b in bs) + " |", "|---|" + "---|" * len(bs)]
        means = {}
        for k in ("BN", "GN"):
            cells = []
            for b in bs:
                e = res.errors(res.find(k, b, any_groups=True))
                cells.append(_cell(e))
                if e:
                    means[(k, b)] = statistics.fmean(e)
            L.append(f"| {k} (ours) | " + " | ".join(cells) + " |")
        L.append("| BN − GN (ours) | " + " | ".join(
            f"{means[('BN', b)] - means[('GN', b)]:+.2f}" if ("BN", b) in means and ("GN", b) in means else "–"
            for b in bs) + " |")
        for k in ("BN", "GN"):
            L.append(f"| {k} (paper) | " + " | ".join(
                f"{PAPER_TABLE2[k][b]:.1f}" if b in PAPER_TABLE2[k] else "–" for b in bs) + " |")
        L.append("| BN − GN (paper) | " + " | ".join(
            f"{PAPER_TABLE2['BN'][b] - PAPER_TABLE2['GN'][b]:+.1f}" if b in PAPER_TABLE2["BN"] else "–"
            for b in bs) + " |")
        ips = {k: statistics.fmean(r["images_per_s"] for r in res.rows if kind(r) == k and is_standard(r))
               for k in ("BN", "GN") if any(kind(r) == k and is_standard(r) for r in res.rows)}
        L += ["", "Plot: `fig1_batch_size.png`; curves: `fig5_curves_batch.png`. Mean training throughput: "
              + ", ".join(f"{k} {v:.0f} images/s" for k, v in ips.items()) + ".", ""]

    # Table 3.
    if b1 is not None:
        gcols = [g for g in sorted(PAPER_TABLE3_G, reverse=True) if _t3_rows(res, b1, groups=g)]
        kcols = [k for k in sorted(PAPER_TABLE3_K, reverse=True) if _t3_rows(res, b1, group_size=k)]
        if len(gcols) + len(kcols) >= 2:
            L += [f"## Table 3: group division (GN, {b1} images per worker)", ""]
            for cols, what, paper, kw in ((gcols, "groups G", PAPER_TABLE3_G, "groups"),
                                          (kcols, "channels per group", PAPER_TABLE3_K, "group_size")):
                if not cols:
                    continue
                ours = {c: res.errors(_t3_rows(res, b1, **{kw: c})) for c in cols}
                best = min(statistics.fmean(v) for v in ours.values())
                lab = {1: " (=LN)" if kw == "groups" else " (=IN)"}
                L += [f"| {what} | " + " | ".join(f"{c}{lab.get(c, '')}" for c in cols) + " |",
                      "|---|" + "---|" * len(cols),
                      "| ours | " + " | ".join(_cell(ours[c]) for c in cols) + " |",
                      "| ours − best | " + " | ".join(f"{statistics.fmean(ours[c]) - best:+.2f}" for c in cols)
                      + " |",
                      "| paper | " + " | ".join(f"{paper[c]:.1f}" for c in cols) + " |", ""]
            L += ["Groups larger than a layer are clamped to it (our narrowest layer has "
                  f"{min(r0['widths'])} channels), as ResNet-50's 64-channel layers do with 64 channels per "
                  "group. Plot: `table3_groups.png`.", ""]

    L += sections(res.rows, kind)
    L += ["## All runs", "",
          "| norm | G | K | images/worker | global batch | lr | seed | val error | train error | images/s | "
          "wall (s) |", "|---|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(res.rows, key=lambda r: (kind(r), -r["batch_per_worker"], -(r.get("groups") or 0),
                                             -(r.get("group_size") or 0), r["seed"])):
        L.append(f"| {kind(r)} | {r.get('groups') or '–'} | {r.get('group_size') or '–'} | "
                 f"{r['batch_per_worker']} | {r['global_batch']} | {r['lr']:.4g} | {r['seed']} | "
                 f"{r['val_error']:.2f} | {r['train_error']:.2f} | {r['images_per_s']:.0f} | {r['wall_s']:.0f} |")
    return "\n".join(L) + "\n", res


def write_report(out: str) -> str:
    """Write ``OUT/report.md`` and the plots; return the report's path."""
    text, res = build_report(out)
    made = []
    if res.rows:
        bn_bs = res.batches("BN") + res.batches("GN")
        b1 = 32 if 32 in bn_bs else (max(bn_bs) if bn_bs else None)
        made = _plot_all(out, res, b1)
    if made:
        text += "\n## Plots\n\n" + "\n".join(f"![{m}]({m})" for m in made) + "\n"
    path = os.path.join(out, "report.md")
    store.atomic_write_bytes(path, text.encode())
    return path
