"""The video section of the report: the paper's Table 8 (I3D ResNet-50 on Kinetics, BN vs GN at clips per GPU
and frames per clip) against our 3D ResNet on moving-item clips (``task == "video"`` rows).

The paper reports top-1 *accuracy*, so the table shows ours (100 − validation error); differences and verdicts
are in error points, paired by seed (:mod:`.stats`, :mod:`.claims`). Settings: ``c`` clips per worker with
``T`` frames per clip; the base frame count is the most common one of the rows, the "more frames" setting the
rows at a larger T (the paper: 4 clips of 64 frames beside 8 and 4 clips of 32).

Claims (the paper's numbers: BN 73.3 / 72.1 / 73.3 and GN 73.0 / 72.8 / 74.5 at 8 x 32, 4 x 32, 4 x 64):

- BN loses accuracy from ``hi`` to ``lo`` clips per worker (paper: −1.2 points, 8 → 4);
- GN does not (paper: −0.2, within ±1);
- BN loses more than GN: [BN(lo) − BN(hi)] − [GN(lo) − GN(hi)] in error, per seed (paper: +1.0);
- GN gains from more frames at ``lo`` clips: GN(lo, T) − GN(lo, more T) in error (paper: +1.7);
- GN beats BN at the fewest clips per worker (not in the paper: it ran 4 clips at least).

Rows by role: ``main`` (test-split validation, the most common epoch count), ``control`` (other epoch counts:
the ``video-control`` runs) and ``lrsweep`` (``holdout``, validated on held-out training clips).
"""
from __future__ import annotations

from collections import Counter, defaultdict

from .claims import EQUAL_MARGIN, RULE, verdict_equal, verdict_greater
from .rows import current_lr, kind
from .stats import CONVERGENCE_POINTS, cell, control_check, converged, paired

# Table 8 of the paper: I3D ResNet-50 on Kinetics, top-1 accuracy (%), (clips per GPU, frames) -> accuracy.
PAPER_TABLE8 = {"BN": {(8, 32): 73.3, (4, 32): 72.1, (4, 64): 73.3},
                "GN": {(8, 32): 73.0, (4, 32): 72.8, (4, 64): 74.5}}


def video_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("task") == "video"]


def video_roles(rows: list[dict]) -> dict:
    """The video rows by role (module docstring): ``main``, ``control``, ``lrsweep``, and ``superseded``: rows
    at a learning rate the preset no longer uses (:func:`.rows.current_lr`)."""
    rows = video_rows(rows)
    sweep = [r for r in rows if r.get("holdout")]
    rest, superseded = current_lr(r for r in rows if not r.get("holdout"))
    counts = Counter(r["epochs"] for r in rest if r.get("experiment") != "video-control") \
        or Counter(r["epochs"] for r in rest)
    epochs = counts.most_common(1)[0][0] if counts else None
    return dict(main=[r for r in rest if r["epochs"] == epochs], control=[r for r in rest if r["epochs"] != epochs],
                lrsweep=sweep, superseded=superseded)


def _by(rows: list[dict]) -> dict:
    """(kind, clips per worker, frames) -> rows."""
    out: dict = defaultdict(list)
    for r in rows:
        out[(kind(r), r["batch_per_worker"], r["frames"])].append(r)
    return out


def _acc(rows: list[dict]) -> list[float]:
    return [100.0 - r["val_error"] for r in rows]


def grid(main: list[dict]) -> tuple[int | None, list[int], tuple | None]:
    """(base frames, clips per worker at the base frames with BN and GN rows, largest first, (clips, frames) of
    the more-frames setting or None)."""
    by = _by(main)
    frames = Counter(r["frames"] for r in main)
    if not frames:
        return None, [], None
    t = frames.most_common(1)[0][0]
    clips = sorted({c for (k, c, f) in by if f == t and ("BN", c, f) in by and ("GN", c, f) in by}, reverse=True)
    more = sorted({(c, f) for (k, c, f) in by if f > t and ("BN", c, f) in by and ("GN", c, f) in by},
                  key=lambda cf: (-cf[1], -cf[0]))
    return t, clips, (more[0] if more else None)


def _seedwise(a: list[dict], b: list[dict], c: list[dict], d: list[dict]) -> list[float]:
    """Per seed (seeds all four hold): (a − b) − (c − d) of ``val_error``."""
    ab, cd = dict(zip(_seeds(a, b), paired(a, b))), dict(zip(_seeds(c, d), paired(c, d)))
    return [ab[s] - cd[s] for s in sorted(ab.keys() & cd.keys())]


def _seeds(a: list[dict], b: list[dict]) -> list[int]:
    return sorted({r["seed"] for r in a if r.get("val_error") is not None}
                  & {r["seed"] for r in b if r.get("val_error") is not None})


def video_claims(main: list[dict]) -> list[dict]:
    """The video claims the rows allow (module docstring): dicts of claim, paper, verdict, evidence."""
    t, clips, more = grid(main)
    by, out = _by(main), []

    def claim(text, paper, v):
        out.append(dict(claim=text, paper=paper, verdict=v[0], evidence=v[1]))

    if len(clips) >= 2:
        hi = clips[0]
        lo = more[0] if more is not None and more[0] in clips[1:] else clips[1]
        bn_hi, bn_lo, gn_hi, gn_lo = by[("BN", hi, t)], by[("BN", lo, t)], by[("GN", hi, t)], by[("GN", lo, t)]
        paper_pair = (hi, lo) == (8, 4)
        claim(f"BN loses accuracy from {hi} to {lo} clips per worker ({t} frames)", "−1.2 points (73.3 → 72.1)",
              verdict_greater(paired(bn_lo, bn_hi), f"BN error, {lo} − {hi} clips",
                              paper=1.2 if paper_pair else None))
        claim(f"GN's accuracy does not depend on clips per worker ({hi} vs {lo})", "−0.2 points (73.0 → 72.8)",
              verdict_equal(paired(gn_lo, gn_hi), f"GN error, {lo} − {hi} clips", EQUAL_MARGIN))
        claim(f"BN loses more than GN from {hi} to {lo} clips per worker", "1.2 vs 0.2 points: +1.0",
              verdict_greater(_seedwise(bn_lo, bn_hi, gn_lo, gn_hi), "BN's loss − GN's loss",
                              paper=1.0 if paper_pair else None))
        if more is not None and ("GN", more[0], t) in by:
            c, f = more
            claim(f"GN gains from {f} instead of {t} frames at {c} clips per worker", "+1.7 points (72.8 → 74.5)",
                  verdict_greater(paired(by[("GN", c, t)], by[("GN", c, f)]), f"GN error, {t} − {f} frames",
                                  paper=1.7 if (c, t, f) == (4, 32, 64) else None))
            claim(f"BN gains less from more frames than GN ({t} → {f} frames at {c} clips)",
                  "GN +1.7 (72.8 → 74.5), BN +1.2 (72.1 → 73.3): +0.5",
                  verdict_greater(_seedwise(by[("GN", c, t)], by[("GN", c, f)], by[("BN", c, t)], by[("BN", c, f)]),
                                  "GN's gain − BN's gain"))
        few = clips[-1]
        claim(f"GN beats BN at {few} clips per worker", "not in the paper (4 clips per GPU at least)",
              verdict_greater(paired(by[("BN", few, t)], by[("GN", few, t)]), f"BN − GN error at {few} clips"))
    return out


def _table(main: list[dict]) -> list[str]:
    t, clips, more = grid(main)
    by = _by(main)
    settings = [(c, t) for c in clips] + ([more] if more else [])
    paper_of = {}
    if clips:  # the paper's settings by position: its 8 x 32, 4 x 32 and 4 x 64 against our largest ones
        paper_of = {(clips[0], t): (8, 32), (more[0] if more else None, t): (4, 32)}
        if more:
            paper_of[more] = (4, 64)
    L = ["| clips per worker | frames | BN top-1 | GN top-1 | GN − BN top-1 (paired) | paper BN | paper GN |",
         "|---|---|---|---|---|---|---|"]
    for c, f in settings:
        bn, gn = by.get(("BN", c, f), []), by.get(("GN", c, f), [])
        p = paper_of.get((c, f))
        pb, pg = (f"{PAPER_TABLE8[k][p]} ({p[0]} x {p[1]})" for k in ("BN", "GN")) if p else ("–", "–")
        L.append(f"| {c} | {f} | {cell(_acc(bn))} | {cell(_acc(gn))} | {cell(paired(bn, gn), signed=True)} | "
                 f"{pb} | {pg} |")
    return L


def _lrsweep(rows: list[dict]) -> list[str]:
    if not rows:
        return []
    by: dict = defaultdict(list)
    for r in rows:
        by[(kind(r), r["base_lr"])].append(r["val_error"])
    L = ["", "Learning-rate sweep (validation on held-out *training* clips; mean error % over seeds):", "",
         "| norm | " + " | ".join(f"{lr:g}" for lr in sorted({lr for _, lr in by})) + " | best |",
         "|---|" + "---|" * (len({lr for _, lr in by}) + 1)]
    for k in sorted({k for k, _ in by}):
        lrs = sorted(lr for kk, lr in by if kk == k)
        means = {lr: sum(by[(k, lr)]) / len(by[(k, lr)]) for lr in lrs}
        best = min(means, key=means.get)
        L.append(f"| {k} | " + " | ".join(f"{means[lr]:.2f}" if lr in means else "–"
                                          for lr in sorted({lr for _, lr in by})) + f" | {best:g} |")
    return L


def _convergence(main: list[dict], control: list[dict], read_metrics) -> list[str]:
    L = ["", f"Convergence (mean error after 75% and 100% of the epochs; converged within {CONVERGENCE_POINTS:g} "
             f"point):", "", "| setting | n | at 75% | at 100% | change | converged |", "|---|---|---|---|---|---|"]
    by = _by(main)
    for (k, c, f), rs in sorted(by.items()):
        v = converged(rs, read_metrics)
        if v["ok"] is not None:
            L.append(f"| {k} c={c} T={f} | {len(v['at_100'])} | {cell(v['at_75'])} | {cell(v['at_100'])} | "
                     f"{v['change']:+.2f} | {'yes' if v['ok'] else '**no**'} |")
    for (k, c, f), rs in sorted(_by(control).items()):
        chk = control_check(by.get((k, c, f), []), rs)
        L.append(f"| {k} c={c} T={f}, {rs[0]['epochs']} epochs (control) | {len(chk['diffs'])} | – | – | "
                 f"{cell(chk['diffs'], signed=True)} | "
                 f"{'–' if chk['ok'] is None else ('yes' if chk['ok'] else '**no**')} |")
    return L


def video_section(rows: list[dict], read_metrics=None) -> list[str]:
    """The report's "Video" section (markdown lines; none without video rows)."""
    roles = video_roles(rows)
    main = roles["main"]
    if not main and not roles["lrsweep"]:
        return []
    L = ["## Video: clips per worker against frames per clip (Table 8)", ""]
    if main:
        r0 = main[0]
        L += [f"{len(main)} runs: {r0['arch']} widths {r0['widths']} blocks {r0['blocks']} on {r0['dataset']} "
              f"({r0['num_classes']} classes: item class x motion type), {r0['canvas']} x {r0['canvas']} canvas, "
              f"{r0['train_size']} training clips, {r0['val_size']} validation clips, {r0['workers']} workers, "
              f"{r0['epochs']} epochs, seeds {sorted({r['seed'] for r in main})}. Top-1 accuracy (%) = 100 − "
              f"validation error, mean ± 95% half-width over seeds; *paper*: I3D ResNet-50 on Kinetics (32 or 64 "
              f"frames, 8 GPUs).", ""]
        L += _table(main)
        cl = video_claims(main)
        if cl:
            L += ["", *RULE, "", "| claim | paper | verdict | evidence |", "|---|---|---|---|"]
            L += [f"| {c['claim']} | {c['paper']} | **{c['verdict']}** | {c['evidence']} |" for c in cl]
        L += _convergence(main, roles["control"], read_metrics)
    if roles["superseded"]:
        L += ["", f"({len(roles['superseded'])} rows at a learning rate the preset no longer uses are not shown.)"]
    L += _lrsweep(roles["lrsweep"])
    return L + [""]
