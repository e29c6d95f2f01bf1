"""``OUT/report.md`` and PNG plots from ``OUT/results.jsonl``: the paper's tables and figures, the experiments
on BN's mechanism (non-i.i.d. batches, ghost BN, BN's error decomposition), the convergence check and a
verdict per claim.

Each table cell is our validation error (%) at the last epoch, mean ± the half-width of the 95% t interval over
seeds (``n`` seeds; one seed: the number alone), beside the paper's ResNet-50 / ImageNet top-1 error;
differences (BN − GN) are paired by seed with their own interval (:mod:`.stats`). Rows are split by role:
the main protocol (the most common epoch count of the ResNet runs validated on the test split), the longer
control runs (other epoch counts), the learning-rate sweep (``holdout`` rows, validated on held-out training
images) and Figure 3 (``arch == "vgg"``). Rows: :mod:`.rows`; verdicts: :mod:`.claims`; plots: :mod:`.plots`.
"""
from __future__ import annotations

import os
import statistics
from collections import defaultdict
from dataclasses import dataclass, field

from .. import store
from ..data.formats import DENSE_TASKS
from .bn import sections
from ..training.provenance import provenance_lines
from .claims import claims
from .dense import dense_sections
from .plots import plot_all
from .video import video_roles, video_section
from .rows import ROW_DEFAULTS, Results, by_setting, is_standard, kind, row_variant, setting_name, split_roles, \
    t3_rows
from .stats import CONVERGENCE_POINTS, cell, control_check, converged, paired

# The paper's numbers (ResNet-50, ImageNet, top-1 validation error %, 8 workers).
PAPER_TABLE1 = {"BN": 23.6, "LN": 25.3, "IN": 28.4, "GN": 24.1}
PAPER_TABLE2 = {"BN": {32: 23.6, 16: 23.7, 8: 24.8, 4: 27.3, 2: 34.7},
                "GN": {32: 24.1, 16: 24.2, 8: 24.0, 4: 24.2, 2: 24.1}}
PAPER_TABLE3_G = {64: 24.6, 32: 24.1, 16: 24.6, 8: 24.4, 4: 24.6, 2: 24.7, 1: 25.3}
PAPER_TABLE3_K = {64: 24.4, 32: 24.5, 16: 24.2, 8: 24.3, 4: 24.8, 2: 25.6, 1: 28.4}
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


def _table1(res: Results, b1: int) -> list[str]:
    t1 = [k for k in ("BN", "LN", "IN", "GN", "GN+WS") if res.find(k, b1, any_groups=True)]
    if not t1:
        return []
    gn = res.find("GN", b1, any_groups=True)
    L = [f"## Table 1: normalization methods, {b1} images per worker", "",
         "| | " + " | ".join(t1) + " |", "|---|" + "---|" * len(t1),
         "| ours: val error | " + " | ".join(cell(res.errors(res.find(k, b1, any_groups=True))) for k in t1) + " |"]
    if gn:
        L.append("| ours: − GN (paired) | " + " | ".join(
            cell(paired(res.find(k, b1, any_groups=True), gn), signed=True) for k in t1) + " |")
    L.append("| ours: train error | " + " | ".join(
        cell([r["train_error"] for r in res.find(k, b1, any_groups=True)]) for k in t1) + " |")
    L.append("| paper (ImageNet) | " + " | ".join(
        f"{PAPER_TABLE1[k]:.1f}" if k in PAPER_TABLE1 else "–" for k in t1) + " |")
    L.append("| paper: − GN | " + " | ".join(
        f"{PAPER_TABLE1[k] - PAPER_TABLE1['GN']:+.1f}" if k in PAPER_TABLE1 else "–" for k in t1) + " |")
    return L + ["", "Curves: `fig4_curves_norms.png`.", ""]


def _table2(res: Results) -> list[str]:
    bs = sorted(set(res.batches("BN")) | set(res.batches("GN")), reverse=True)
    if not (res.batches("BN") and res.batches("GN")):
        return []
    L = ["## Table 2: sensitivity to images per worker", "",
         "| images/worker | " + " | ".join(str(b) for b in bs) + " |", "|---|" + "---|" * len(bs)]
    for k in ("BN", "GN"):
        L.append(f"| {k} (ours) | " + " | ".join(cell(res.errors(res.find(k, b, any_groups=True))) for b in bs)
                 + " |")
    L.append("| BN − GN (ours, paired) | " + " | ".join(
        cell(paired(res.find("BN", b, any_groups=True), res.find("GN", b, any_groups=True)), signed=True)
        for b in bs) + " |")
    for k in ("BN", "GN"):
        L.append(f"| {k} (paper) | " + " | ".join(
            f"{PAPER_TABLE2[k][b]:.1f}" if b in PAPER_TABLE2[k] else "–" for b in bs) + " |")
    L.append("| BN − GN (paper) | " + " | ".join(
        f"{PAPER_TABLE2['BN'][b] - PAPER_TABLE2['GN'][b]:+.1f}" if b in PAPER_TABLE2["BN"] else "–"
        for b in bs) + " |")
    ips = {k: statistics.fmean(r["images_per_s"] for r in res.rows if kind(r) == k and is_standard(r))
           for k in ("BN", "GN") if any(kind(r) == k and is_standard(r) for r in res.rows)}
    return L + ["", "Plot: `fig1_batch_size.png`; curves: `fig5_curves_batch.png`. Mean training throughput: "
                + ", ".join(f"{k} {v:.0f} images/s" for k, v in ips.items()) + ".", ""]


def _table3(res: Results, b1: int, r0: dict) -> list[str]:
    gcols = [g for g in sorted(PAPER_TABLE3_G, reverse=True) if t3_rows(res, b1, groups=g)]
    kcols = [k for k in sorted(PAPER_TABLE3_K, reverse=True) if t3_rows(res, b1, group_size=k)]
    if len(gcols) + len(kcols) < 2:
        return []
    L = [f"## Table 3: group division (GN, {b1} images per worker)", ""]
    for cols, what, paper, kw in ((gcols, "groups G", PAPER_TABLE3_G, "groups"),
                                  (kcols, "channels per group", PAPER_TABLE3_K, "group_size")):
        if not cols:
            continue
        ours = {c: t3_rows(res, b1, **{kw: c}) for c in cols}
        best = min(cols, key=lambda c: statistics.fmean(res.errors(ours[c])))
        lab = {1: " (=LN)" if kw == "groups" else " (=IN)"}
        L += [f"| {what} | " + " | ".join(f"{c}{lab.get(c, '')}" for c in cols) + " |",
              "|---|" + "---|" * len(cols),
              "| ours | " + " | ".join(cell(res.errors(ours[c])) for c in cols) + " |",
              f"| ours − best ({best}, paired) | " + " | ".join(cell(paired(ours[c], ours[best]), signed=True)
                                                              for c in cols) + " |",
              "| paper | " + " | ".join(f"{paper[c]:.1f}" for c in cols) + " |", ""]
    return L + ["Groups larger than a layer are clamped to it (our narrowest layer has "
                f"{min(r0['widths'])} channels, so G=32 leaves at least {min(r0['widths']) // 32} channels per "
                "group everywhere). Plot: `table3_groups.png`.", ""]


def _lrsweep(rows: list[dict], main: list[dict]) -> list[str]:
    """The sweep's table: held-out error per variant and base lr, its argmin, and the rates the main runs of
    the sweep's batch size used (``main``)."""
    if not rows:
        return []
    b = rows[0]["batch_per_worker"]
    lrs = sorted({r["base_lr"] for r in rows})
    variants = list(dict.fromkeys(row_variant(r) for r in sorted(rows, key=lambda r: _variant_order(row_variant(r)))))
    used = defaultdict(set)
    for r in main:
        if is_standard(r) and r["batch_per_worker"] == b:
            used[row_variant(r)].add(r["base_lr"])
    L = ["## Learning-rate sweep (held-out training images, not the reported validation set)", "",
         f"{b} images per worker, {rows[0]['workers']} worker(s), the main protocol's "
         f"epochs and data; validation on {rows[0]['val_size']} images held out of the training split "
         "(`holdout`), so the choice does not look at the images the tables report. Base learning rate per 256 "
         "images (linear scaling); mean ± 95% interval over the sweep's seeds.", "",
         "| variant | " + " | ".join(f"{lr:g}" for lr in lrs) + " | best | used by the runs |",
         "|---|" + "---|" * (len(lrs) + 2)]
    for v in variants:
        errs = {lr: [r["val_error"] for r in rows if row_variant(r) == v and r["base_lr"] == lr] for lr in lrs}
        have = {lr: statistics.fmean(e) for lr, e in errs.items() if e}
        best = min(have, key=have.get)
        u = ", ".join(f"{x:g}" for x in sorted(used.get(v, ()))) or "–"
        L.append(f"| {v} | " + " | ".join(cell(errs[lr]) if errs[lr] else "–" for lr in lrs)
                 + f" | {best:g} | {u} |")
    return L + ["", "The paper uses 0.1 per 256 for every norm (tuned for BN) and notes that BN's "
                "hyper-parameters may not suit GN; the presets use each variant's best (variants not swept take "
                "their family's: BN's for BN kinds, GN's for the GN family).", ""]


def _variant_order(v: str) -> tuple:
    """Sweep table order: BN, GN G=32, LN, IN, GN+WS, then G and K from large to small."""
    head = ("BN", "GN G=32", "LN", "IN", "GN+WS G=32")
    if v in head:
        return (0, head.index(v), 0)
    name, _, val = v.partition(" ")
    return (1 if "G=" in val else 2, -int(val.split("=")[1]) if "=" in val else 0, name)


def _convergence(main: list[dict], control: list[dict], read_metrics) -> tuple[list[str], list[str]]:
    """The convergence section, and the names of the settings that fail it."""
    L = ["## Convergence check", "",
         f"Per setting: mean validation error after 75% and after 100% of the epochs; converged when they differ "
         f"by at most {CONVERGENCE_POINTS:g} point. The control runs, trained longer (same settings, more epochs), "
         f"must change the error by at most {CONVERGENCE_POINTS:g} point too.", "",
         "| setting | n | epochs | at 75% | at 100% | change | converged |", "|---|---|---|---|---|---|---|"]
    failed = []
    for key, rs in sorted(by_setting(main).items(), key=lambda kv: setting_name(kv[1][0])):
        c = converged(rs, read_metrics)
        if c["ok"] is None:
            continue
        name = setting_name(rs[0])
        if not c["ok"]:
            failed.append(name)
        L.append(f"| {name} | {len(c['at_100'])} | {rs[0]['epochs']} | {cell(c['at_75'])} | {cell(c['at_100'])} | "
                 f"{c['change']:+.2f} | {'yes' if c['ok'] else '**no**'} |")
    if control:
        L += ["", "| control | epochs (main → control) | main | control | change (paired) | within 1 point |",
              "|---|---|---|---|---|---|"]
        main_by = by_setting(main)
        for key, rs in sorted(by_setting(control).items(), key=lambda kv: setting_name(kv[1][0])):
            m = main_by.get(key[:7] + (main[0]["epochs"],) + key[8:], []) if main else []
            chk = control_check(m, rs)
            name = setting_name(rs[0])
            if chk["ok"] is False:
                failed.append(name + f" ({rs[0]['epochs']} epochs)")
            L.append(f"| {name} | {m[0]['epochs'] if m else '?'} → {rs[0]['epochs']} | "
                     f"{cell([r['val_error'] for r in m])} | {cell([r['val_error'] for r in rs])} | "
                     f"{cell(chk['diffs'], signed=True)} | "
                     f"{'–' if chk['ok'] is None else ('yes' if chk['ok'] else '**no**')} |")
    L += ["", ("Every setting passes." if not failed else
               "Not converged by this criterion: " + ", ".join(failed) + ". Their numbers are end points of a "
               "fixed budget, not converged errors."), ""]
    return L, failed


def _fig3(rows: list[dict]) -> list[str]:
    rows = [r for r in rows if r.get("feature_percentiles")]
    if not rows:
        return []
    L = ["## Figure 3: VGG without residuals, late conv responses before normalization", "",
         "Percentiles (1st, 20th, 80th, 99th) of the last conv layer's output over a training batch, sampled "
         "through training; spread = p99 − p1, at the first and at the last sample.", "",
         "| norm | seed | val error | train error | spread first → last | p1 / p99 last |", "|---|---|---|---|---|---|"]
    for r in sorted(rows, key=lambda r: (r["norm"], r["seed"])):
        fp = r["feature_percentiles"]
        L.append(f"| {kind(r)} | {r['seed']} | {r['val_error']:.2f} | {r['train_error']:.2f} | "
                 f"{fp[0][4] - fp[0][1]:.2f} → {fp[-1][4] - fp[-1][1]:.2f} | {fp[-1][1]:.2f} / {fp[-1][4]:.2f} |")
    return L + ["", "Plot: `fig3_vgg.png`.", ""]


@dataclass
class Report:
    """What the report's sections read: the output directory, every row, the rows by role
    (:func:`~.rows.split_roles`), the main protocol's (``res``), its first row ``r0``, Table 1's images per
    worker ``b1``, and the convergence section with the settings that fail it (``failed``)."""

    out: str
    rows: list
    roles: dict
    res: Results
    r0: dict | None = None
    b1: int | None = None
    convergence: list = field(default_factory=list)
    failed: list = field(default_factory=list)
    video: list = field(default_factory=list)  # the video task's rows (their own section, :mod:`.video`)


def read_report(out: str) -> Report:
    """The :class:`Report` of ``OUT/results.jsonl``."""
    rows = store.read_results(out)
    video = [r for r in rows if r.get("task") == "video"]
    rows = [r for r in rows  # a dense task's rows, the video task's and dense backbones' pre-training are apart
            if r.get("task", "classification") == "classification" and r.get("experiment") != "pretrain"]
    roles = split_roles(rows)
    rep = Report(out, rows, roles, Results(roles["main"]), video=video)
    if rows:
        rep.r0 = (rep.res.rows or rows)[0]
        bn_bs = rep.res.batches("BN") + rep.res.batches("GN")
        rep.b1 = 32 if 32 in bn_bs else (max(bn_bs) if bn_bs else None)
        read_metrics = lambda r: store.read_jsonl(os.path.join(store.run_dir(out, r["config_key"]),  # noqa: E731
                                                               "metrics.jsonl"))
        rep.convergence, rep.failed = _convergence(rep.res.rows, roles["control"], read_metrics)
    return rep


def _header(rep: Report) -> list[str]:
    rows, roles, res, r0 = rep.rows, rep.roles, rep.res, rep.r0
    seeds = sorted({r["seed"] for r in rows})
    wall = sum(r["wall_s"] for r in rows)
    augment = "random crops and flips" if r0.get("augment", ROW_DEFAULTS["augment"]) else "no augmentation"
    L = [f"{len(rows)} finished runs ({len(res.rows)} of the main protocol, {len(roles['control'])} longer "
         f"controls, {len(roles['lrsweep'])} of the lr sweep, {len(roles['vgg'])} VGG); protocol: "
         f"{r0['epochs']} epochs, {r0['train_size']} training images, {r0['val_size']} validation images "
         f"(from the test split), {augment}, "
         f"ResNet widths {r0['widths']} blocks {r0['blocks']}, seeds {seeds}. Sum of the "
         f"runs' wall times {wall / 60:.1f} min{_elapsed(rows)} ({r0.get('machine', '?')}, torch "
         f"{r0.get('torch', '?')}, {r0.get('threads', '?')} thread(s) per run).",
         "",
         "Numbers are our validation error (%) after the last epoch: mean ± half-width of the 95% t interval "
         "over seeds (n seeds; a single number when there is one seed). Differences are paired by seed (same "
         "initialization and data order), with their own interval. *Paper* is ResNet-50 on ImageNet (top-1 "
         "error %, 8 workers, 100 epochs): the trends are comparable, the absolute values are not.", ""]
    if res.other_protocols:
        L += [f"({res.other_protocols} rows of another protocol in this directory are not shown.)", ""]
    if roles["superseded"]:
        names = sorted({f"{setting_name(r)} at base lr {r.get('base_lr')}" for r in roles["superseded"]})
        L += [f"({len(roles['superseded'])} rows at a learning rate the preset no longer uses are not shown: "
              + ", ".join(names) + ".)", ""]
    div = [r for r in rows if r.get("diverged")]
    if div:
        L += ["Diverged runs (loss became non-finite; their error is the one measured when they stopped): "
              + ", ".join(f"{setting_name(r)} seed {r['seed']}" for r in div), ""]
    return L


def _all_runs(rep: Report) -> list[str]:
    L = ["## All runs", "",
         "| run | seed | epochs | base lr | lr | global batch | val error | train error | images/s | wall (s) |",
         "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(rep.rows, key=lambda r: (setting_name(r), r["epochs"], r.get("holdout") or False,
                                             r.get("base_lr") or 0, r["seed"])):
        tag = (" holdout" if r.get("holdout") else "") + (" VGG" if r.get("arch") == "vgg" else "")
        L.append(f"| {setting_name(r)}{tag} | {r['seed']} | {r['epochs']} | {r.get('base_lr', '–')} | "
                 f"{r['lr']:.4g} | {r['global_batch']} | "
                 f"{r['val_error']:.2f} | {r['train_error']:.2f} | {r['images_per_s']:.0f} | {r['wall_s']:.0f} |")
    return L


SECTIONS = (  # the report's sections in order; a new one: a function of the Report returning markdown lines
    _header,
    lambda rep: provenance_lines(rep.rows, rep.roles["other_code"], setting_name),
    lambda rep: claims(rep.res, rep.roles, kind, rep.failed),
    lambda rep: _table2(rep.res),
    lambda rep: [] if rep.b1 is None else _table1(rep.res, rep.b1) + _table3(rep.res, rep.b1, rep.r0),
    lambda rep: sections(rep.res.rows),
    lambda rep: _lrsweep(rep.roles["lrsweep"], rep.res.rows),
    lambda rep: rep.convergence,
    lambda rep: _fig3(rep.roles["vgg"]),
    _all_runs,
)


def render(rep: Report) -> str:
    """``report.md``'s text: the title, then each of :data:`SECTIONS`."""
    L = ["# Group Normalization on Fashion-MNIST: reproduction report", ""]
    dense = dense_sections(store.read_results(rep.out))
    if not rep.rows and not rep.video and not dense:
        return "\n".join(L + ["No finished runs in `results.jsonl` yet."]) + "\n"
    read_metrics = lambda r: store.read_jsonl(os.path.join(store.run_dir(rep.out, r["config_key"]),  # noqa: E731
                                                           "metrics.jsonl"))
    video = video_section(rep.video, read_metrics)
    classification = [line for section in SECTIONS for line in section(rep)] if rep.rows else []
    return "\n".join(L + classification + video + dense) + "\n"


def build_report(out: str) -> tuple[str, Results]:
    """(``report.md``'s text, the main protocol's rows) of ``OUT/results.jsonl``."""
    rep = read_report(out)
    return render(rep), rep.res


def write_report(out: str) -> str:
    """Write ``OUT/report.md`` and the plots; return the report's path."""
    rep = read_report(out)
    text = render(rep)
    dense = [r for r in store.read_results(out) if r.get("task") in DENSE_TASKS]
    roles = dict(rep.roles, video=video_roles(rep.video)["main"], dense=dense)
    made = (plot_all(out, rep.res, rep.b1, (PAPER_TABLE3_G, PAPER_TABLE3_K), roles) if rep.rows or rep.video or dense
            else [])
    if made:
        text += "\n## Plots\n\n" + "\n".join(f"![{m}]({m})" for m in made) + "\n"
    path = os.path.join(out, "report.md")
    store.atomic_write_bytes(path, text.encode())
    return path
