"""Report sections of issue 13's experiments: noniid, ghost and the BN error decomposition.

Cells are mean and 95% confidence interval over seeds (Student t, ``mean ± t_{0.975, n-1} * sd / sqrt(n)``;
one seed: the number alone). These rows are kept out of Tables 1-3 (``is_standard``).
"""
from __future__ import annotations

import math
import statistics

# t_{0.975, df} for df = 1..10 (beyond: 1.96 is within 10% for df >= 11)
_T975 = {1: 12.706, 2: 4.303, 3: 3.182, 4: 2.776, 5: 2.571, 6: 2.447, 7: 2.365, 8: 2.306, 9: 2.262, 10: 2.228}


def ci95(vals: list[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t interval, n); half-width 0 for one value."""
    m = statistics.fmean(vals)
    n = len(vals)
    if n < 2:
        return m, 0.0, n
    return m, _T975.get(n - 1, 1.96) * statistics.stdev(vals) / math.sqrt(n), n


def cell(vals: list[float]) -> str:
    vals = [v for v in vals if v is not None]
    if not vals:
        return "–"
    m, h, n = ci95(vals)
    return f"{m:.2f} ± {h:.2f} (n={n})" if n > 1 else f"{m:.2f}"


def is_standard(row: dict) -> bool:
    """A run of the paper's protocol: i.i.d. worker batches and BN statistics per worker."""
    nb = row.get("norm_batch")
    return row.get("classes_per_worker") is None and (nb is None or nb == row["batch_per_worker"])


def sections(rows: list[dict], kind) -> list[str]:
    """Markdown lines for the noniid, ghost and decomposition tables of ``rows`` (those that exist)."""
    L: list[str] = []
    non = [r for r in rows if r.get("classes_per_worker") is not None]
    if non:
        cs = sorted({r["classes_per_worker"] for r in non})
        kinds = [k for k in ("BN", "SyncBN", "GN") if any(kind(r) == k for r in non)]
        b = non[0]["batch_per_worker"]
        L += [f"## Non-i.i.d. worker batches ({b} images per worker, each worker's from c classes)", "",
              "| classes per worker | " + " | ".join(f"{c}" + (" (i.i.d.)" if c == 10 else "") for c in cs) + " |",
              "|---|" + "---|" * len(cs)]
        for k in kinds:
            L.append(f"| {k} | " + " | ".join(
                cell([r["val_error"] for r in non if kind(r) == k and r["classes_per_worker"] == c]) for c in cs)
                + " |")
        L += ["", "SyncBN: BN statistics over all workers' images (the global batch).", ""]
    ghost = [r for r in rows if r.get("experiment") == "ghost" or (
        r.get("norm_batch") is not None and r.get("classes_per_worker") is None)]
    if ghost:
        gb = ghost[0]["global_batch"]
        bns = sorted({r.get("bn_batch") or r["batch_per_worker"] for r in ghost if kind(r) == "BN"},
                     reverse=True)
        L += [f"## Ghost BN: BN statistics over norm_batch images, global batch {gb} and lr fixed", "",
              "| | " + " | ".join(f"BN nb={nb}" for nb in bns) + " | SyncBN (all) | GN |",
              "|---|" + "---|" * (len(bns) + 2),
              "| val error | " + " | ".join(cell([r["val_error"] for r in ghost if kind(r) == "BN"
                                                  and (r.get("bn_batch") or r["batch_per_worker"]) == nb])
                                           for nb in bns)
              + f" | {cell([r['val_error'] for r in ghost if kind(r) == 'SyncBN'])}"
              + f" | {cell([r['val_error'] for r in ghost if kind(r) == 'GN'])} |", ""]
    dec = [r for r in rows if "val_error_precise_bn" in r]
    if dec:
        L += ["## Where BN's error comes from (EMA vs population vs batch statistics)", "",
              "| run | n | val error (EMA) | precise BN | batch statistics |", "|---|---|---|---|---|"]
        groups: dict = {}
        for r in dec:
            name = (f"{kind(r)} b={r['batch_per_worker']} bn_batch={r.get('bn_batch')}"
                    + (f" c={r['classes_per_worker']}" if r.get("classes_per_worker") is not None else ""))
            groups.setdefault(name, []).append(r)
        for name, rs in sorted(groups.items()):
            L.append(f"| {name} | {len(rs)} | {cell([r['val_error'] for r in rs])} | "
                     f"{cell([r['val_error_precise_bn'] for r in rs])} | "
                     f"{cell([r['val_error_batch_stats'] for r in rs])} |")
        allimg = any(r.get("precise_bn_all_training_images") for r in dec)
        L += ["", f"Precise BN over {min(r['precise_bn_images'] for r in dec)}-"
              f"{max(r['precise_bn_images'] for r in dec)} training images"
              + (" (all of the training set, which is smaller than 10,000)" if allimg else "")
              + "; batch statistics over test batches of the run's BN batch.", ""]
    return L
