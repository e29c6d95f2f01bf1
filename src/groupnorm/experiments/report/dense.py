"""The dense tasks' sections of the report (detection, segmentation): each setting's metric over seeds, the
paired differences behind the paper's claims (Tables 4-7) with their 95% intervals and verdicts
(:mod:`.claims`; fewer than 2 paired seeds: "not testable here"), and every run.

A setting is (arch, backbone norm kind, head norm kind, images per worker, epochs, masked statistics, pre-training epochs); the
metric is the task's headline (:data:`groupnorm.experiments.training.dense.TASK_METRICS`: box AP or mIoU, in
points); pre-trained runs (``pretrain_epochs``) are settings of their own. Rows are found by setting, not by the
experiment that asked for them first.

Runs of the two-stage detector with its mask head (``masks``) add a ``mask_ap`` column (COCO mask AP).

Rows by role (:func:`dense_roles`): ``main`` (validated on canvases of the test items), ``lrsweep``
(``holdout``: the ``dense-lrsweep`` runs, validated on canvases of held-out training items; only in the sweep's
own table, never in the settings, claims or plots) and ``superseded`` (a setting's rows at a learning rate other
than that of its most recent run: :func:`.rows.current_lr`; counted, not shown).
"""
from __future__ import annotations

from collections import Counter

from ..data.formats import DENSE_TASKS
from ..protocol import norm_kind
from ..training.dense import TASK_METRICS
from .claims import verdict_greater
from .rows import current_lr, kind, protocol_of
from .stats import cell, paired

TITLES = {"detection": "Detection (canvases of Fashion-MNIST items): COCO box AP",
          "segmentation": "Semantic segmentation (canvases of Fashion-MNIST items): mIoU"}
# The paper's numbers (Mask R-CNN on COCO, ResNet-50), beside which our differences are shown.
PAPER = {"transfer": "GN − BN* box AP: +1.1 (R50-C4, Table 4), +1.7 (FPN, 2x, Table 6)",
         "head": "BN in the box head: about 9 box AP below GN (Table 5)",
         "scratch": "GN from scratch: 39.5 box AP at 3x, more than at shorter schedules (Table 7)",
         "perworker": "detection and segmentation run at 1-2 images per GPU, where BN must be frozen (Sec. 6)",
         "bn_batch": "BN's statistics degrade with few images per worker (Sec. 6: 1-2 images per GPU in detection; "
                     "Figure 1: +10 points of error from 32 to 2 images in classification)",
         "head_control": "BN in the box head is about 9 AP worse because a batch's RoIs come from the same image, "
                         "not i.i.d., which degrades BN's batch statistics (Sec. 6.1)"}


def head_kind(row: dict) -> str:
    """The heads' norm of a dense row: its ``head_norm`` (``syncbn``: SyncBN), or the backbone's kind."""
    h = row.get("head_norm")
    if h is None:
        return kind(row)
    return "SyncBN" if h == "syncbn" else norm_kind(h, row.get("groups"))


def setting(row: dict) -> tuple:
    """(arch, backbone kind, head kind, images per worker, epochs, masked statistics, pre-training epochs); the
    two-stage detector with its mask head (``masks``) is the arch ``two_stage+masks``."""
    return (row["arch"] + ("+masks" if row.get("masks") else ""), kind(row), head_kind(row),
            row["batch_per_worker"], row["epochs"], bool(row.get("masked_stats")), row.get("pretrain_epochs") or 0)


def setting_name(s: tuple) -> str:
    arch, k, h, b, epochs, masked, pre = s
    return (f"{arch} {k}" + (f" head {h}" if h != k else "") + f" b={b} {epochs} ep" + (" masked" if masked else "")
            + (f" pre-trained {pre} ep" if pre else ""))


def dense_roles(rows: list[dict]) -> dict:
    """A dense task's rows by role (module doc): ``main``, ``lrsweep``, ``superseded``."""
    sweep = [r for r in rows if r.get("holdout")]
    main, superseded = current_lr((r for r in rows if not r.get("holdout")),
                                  lambda r: (protocol_of(r), setting(r)))
    return dict(main=main, lrsweep=sweep, superseded=superseded)


def lrsweep_table(rows: list[dict], metric: str) -> list[str]:
    """The lr sweep's table: ``metric`` (mean over seeds) per backbone norm (rows) and base lr (columns), the
    best (largest) of each norm in bold and named in the last column; none without rows."""
    if not rows:
        return []
    by: dict = {}
    for r in rows:
        if r.get(metric) is not None:
            by.setdefault((setting(r)[1], r["base_lr"]), []).append(r[metric])
    lrs = sorted({lr for _, lr in by})
    L = [f"Learning-rate sweep (`dense-lrsweep`; validated on canvases of held-out *training* items, never the "
         f"test items; {metric}, mean over seeds, the best of each norm in bold):", "",
         "| norm | " + " | ".join(f"{lr:g}" for lr in lrs) + " | best |", "|---|" + "---|" * (len(lrs) + 1)]
    for k in sorted({k for k, _ in by}):
        means = {lr: sum(by[(k, lr)]) / len(by[(k, lr)]) for lr in lrs if (k, lr) in by}
        best = max(means, key=means.get)
        L.append(f"| {k} | " + " | ".join("–" if lr not in means else (f"**{means[lr]:.2f}**" if lr == best
                                                                         else f"{means[lr]:.2f}") for lr in lrs)
                 + f" | {best:g} |")
    return L


def plain_rows(rows: list[dict], task: str) -> list[dict]:
    """The rows the plots show: the main rows of ``task`` (:func:`dense_roles`) with BN or GN throughout (the
    heads following the backbone), without masked statistics or pre-training, of the (arch, epochs) most of
    them have among those with rows of both norms; none without such an (arch, epochs)."""
    metric = TASK_METRICS[task][0]
    mine = [r for r in dense_roles([r for r in rows if r.get("task") == task])["main"]
            if setting(r)[1] == setting(r)[2] in ("BN", "GN") and not setting(r)[5] and not setting(r)[6]
            and r.get(metric) is not None]
    at = lambda r: (setting(r)[0], r["epochs"])  # noqa: E731
    both = Counter(at(r) for r in mine if {setting(x)[1] for x in mine if at(x) == at(r)} == {"BN", "GN"})
    if not both:
        return []
    common = both.most_common(1)[0][0]
    return [r for r in mine if at(r) == common]


def perworker_series(rows: list[dict], task: str) -> dict:
    """The per-worker plot's data: ``{"BN": {b: [metric per seed]}, "GN": {...}}`` of :func:`plain_rows`."""
    metric, out = TASK_METRICS[task][0], {}
    for r in plain_rows(rows, task):
        out.setdefault(kind(r), {}).setdefault(r["batch_per_worker"], []).append(r[metric])
    return {k: dict(sorted(v.items())) for k, v in sorted(out.items())}


def curve_series(rows: list[dict], task: str, b: int = 2) -> dict:
    """The curves plot's data: ``{"BN": [mean metric per epoch], "GN": [...]}``, the ``<metric>_curve`` of the
    :func:`plain_rows` at ``b`` images per worker averaged over seeds (over the epochs all seeds have); ``{}``
    unless both norms have curves."""
    key = f"{TASK_METRICS[task][0]}_curve"
    out = {}
    for k in ("BN", "GN"):
        cs = [r[key] for r in plain_rows(rows, task) if kind(r) == k and r["batch_per_worker"] == b and r.get(key)]
        if not cs:
            return {}
        n = min(len(c) for c in cs)
        out[k] = [sum(c[e] for c in cs) / len(cs) for e in range(n)]
    return out


def _find(rows: list[dict], **want) -> list[dict]:
    keys = dict(arch=0, kind=1, head=2, b=3, epochs=4, masked=5, pre=6)
    return [r for r in rows if all(setting(r)[keys[k]] == v for k, v in want.items())]


def _claim_lines(rows: list[dict], task: str, metric: str) -> list[str]:
    """(claim, paper, verdict, evidence) table rows of the experiments whose runs exist."""
    out = []

    def add(text, paper, a, b):
        d = paired(a, b, metric)
        if a and b:
            v, ev = verdict_greater(d, text)
            out.append(f"| {text} | {paper} | {v} | {ev} |")

    epochs = sorted({r["epochs"] for r in rows})
    base = epochs[0] if epochs else None
    bs = sorted({r["batch_per_worker"] for r in rows})
    for arch, pre in sorted({(setting(r)[0], setting(r)[6]) for r in rows}):
        arch_ = arch + (" pre-trained" if pre else "")
        for b in bs:
            for ep in epochs:
                same = dict(arch=arch, b=b, epochs=ep, masked=False, pre=pre)
                gn = _find(rows, kind="GN", head="GN", **same)
                add(f"{arch_} GN − BN at b={b}, {ep} ep", PAPER["perworker"], gn,
                    _find(rows, kind="BN", head="BN", **same))
                if task == "detection":
                    add(f"{arch_} GN − BN* at b={b}, {ep // base}x", PAPER["transfer"], gn,
                        _find(rows, kind="BN-FROZEN", **same))
                    add(f"{arch_} GN − SyncBN at b={b}, {ep // base}x", PAPER["scratch"], gn,
                        _find(rows, kind="SyncBN", head="SyncBN", **same))
                    gb = dict(same, kind="GN")
                    add(f"{arch_} box head GN − BN (GN backbone), b={b}", PAPER["head"],
                        _find(rows, head="GN", **gb), _find(rows, head="BN", **gb))
                    add(f"{arch_} box head SyncBN − BN (GN backbone), b={b}", "control: BN's head statistics "
                        "over all workers' RoIs", _find(rows, head="SyncBN", **gb), _find(rows, head="BN", **gb))
                    for longer in epochs:
                        if longer > ep:
                            add(f"{arch_} GN {longer} ep − {ep} ep, b={b}", PAPER["scratch"],
                                _find(rows, **dict(same, kind="GN", head="GN", epochs=longer)), gn)
        for ep in epochs if len(bs) > 1 else ():  # BN at the most images per worker against BN at the fewest
            same = dict(arch=arch, kind="BN", head="BN", epochs=ep, masked=False, pre=pre)
            add(f"{arch_} BN at b={bs[-1]} − BN at b={bs[0]}, {ep} ep",
                PAPER["bn_batch"], _find(rows, b=bs[-1], **same), _find(rows, b=bs[0], **same))
        for b in bs:
            masked = _find(rows, arch=arch, kind="GN", b=b, masked=True, pre=pre)
            for ep in sorted({r["epochs"] for r in masked}):
                add(f"{arch_} GN masked − unmasked statistics, b={b}", "(not in the paper)",
                    _find(masked, epochs=ep),
                    _find(rows, arch=arch, kind="GN", head="GN", b=b, epochs=ep, masked=False, pre=pre))
    return out


def head_control(rows: list[dict]) -> list[str]:
    """Table 5's control: per setting with a BN head whose rows carry ``box_ap_batchstats`` (the same weights
    evaluated with the heads' BN on each evaluation batch's statistics, one worker's canvases per batch), box AP
    with running and with batch statistics and their paired difference, beside the GN head's box AP."""
    groups: dict = {}
    for r in rows:
        if r.get("box_ap_batchstats") is not None and head_kind(r) == "BN":
            groups.setdefault(setting(r), []).append(r)
    if not groups:
        return []
    L = ["", f"Table 5's control, BN head evaluated with batch statistics instead of running statistics (paper: "
             f"{PAPER['head_control']}). If batch statistics close the gap to the GN head, the deficit is the "
             "mismatch between the running estimates and the non-i.i.d. batch statistics the head was trained "
             "with; if not, the head itself trained worse with them:", "",
         "| setting | box AP, running statistics | box AP, batch statistics | batch − running (paired) | "
         "GN head box AP |", "|---|---|---|---|---|"]
    for s in sorted(groups):
        rs = groups[s]
        gn = _find(rows, arch=s[0], kind=s[1], head="GN", b=s[3], epochs=s[4], masked=s[5], pre=s[6])
        diffs = [r["box_ap_batchstats"] - r["box_ap"] for r in rs]
        L.append(f"| {setting_name(s)} | {cell([r['box_ap'] for r in rs])} | "
                 f"{cell([r['box_ap_batchstats'] for r in rs])} | {cell(diffs, signed=True)} | "
                 f"{cell([r['box_ap'] for r in gn])} |")
    return L


def task_section(rows: list[dict], task: str) -> list[str]:
    """The section of ``task``'s rows (module doc)."""
    metric = TASK_METRICS[task][0]
    roles = dense_roles(rows)
    rows, L = roles["main"], [f"## {TITLES[task]}", ""]
    if roles["superseded"]:
        L += [f"({len(roles['superseded'])} rows at a learning rate the preset no longer uses are not shown.)", ""]
    if not rows:
        return L + lrsweep_table(roles["lrsweep"], metric) + [""]
    r0 = rows[0]
    metrics = TASK_METRICS[task] + (("mask_ap",) if any(r.get("mask_ap") is not None for r in rows) else ())
    splits = ", ".join(f"{w} x {b}" for w, b in sorted({(r["workers"], r["batch_per_worker"]) for r in rows},
                                                        key=lambda wb: -wb[0]))
    L += [f"{len(rows)} finished runs; canvases: {r0['train_size']} training, {r0['val_size']} validation (items of "
         f"the test split), emulated workers x canvases per worker: {splits}; backbone widths {r0['widths']}, seeds "
         f"{sorted({r['seed'] for r in rows})}. Numbers are our {metric} (points) after the last epoch: mean ± "
         "half-width of the 95% t interval over seeds; differences are paired by seed. The paper's numbers are "
         "Mask R-CNN on COCO: the directions are comparable, the values are not.", "",
         "| setting | " + " | ".join(metrics) + " |", "|---|" + "---|" * len(metrics)]
    groups: dict = {}
    for r in rows:
        groups.setdefault(setting(r), []).append(r)
    for s in sorted(groups, key=lambda s: (s[0], s[6], s[3], s[4], s[1], s[2], s[5])):
        L.append(f"| {setting_name(s)} | " + " | ".join(cell([r.get(m) for r in groups[s]])
                                                        for m in metrics) + " |")
    claims = _claim_lines(rows, task, metric)
    if claims:
        L += ["", "| claim (difference in points) | paper | verdict | evidence |", "|---|---|---|---|", *claims]
    L += head_control(rows)
    div = [r for r in rows if r.get("diverged")]
    if div:
        L += ["", "Diverged runs: " + ", ".join(f"{setting_name(setting(r))} seed {r['seed']}" for r in div)]
    if roles["lrsweep"]:
        L += ["", *lrsweep_table(roles["lrsweep"], metric)]
    return L + [""]


def dense_sections(rows: list[dict]) -> list[str]:
    """The sections of the dense tasks present in ``rows`` (in ``DENSE_TASKS`` order)."""
    out = []
    for task in DENSE_TASKS:
        mine = [r for r in rows if r.get("task") == task]
        if mine:
            out += task_section(mine, task)
    return out
