"""Report sections of the experiments on BN's mechanism: noniid, ghost and the BN error decomposition.

Cells are mean and 95% confidence interval over seeds (:mod:`.stats`); differences are paired by seed.
These rows are kept out of Tables 1-3 (``is_standard``).
"""
from __future__ import annotations

from ..training.bn_eval import PRECISE_BN_IMAGES
from .rows import bn_batch, ghost_rows, kind, noniid_rows
from .stats import cell, paired


def sections(rows: list[dict]) -> list[str]:
    """Markdown lines for the noniid, ghost and decomposition tables of ``rows`` (those that exist)."""
    L: list[str] = []
    non = noniid_rows(rows)
    if non:
        cs = sorted({r["classes_per_worker"] for r in non})
        kinds = [k for k in ("BN", "SyncBN", "GN") if any(kind(r) == k for r in non)]
        b = non[0]["batch_per_worker"]
        sel = {(k, c): [r for r in non if kind(r) == k and r["classes_per_worker"] == c] for k in kinds for c in cs}
        L += [f"## Non-i.i.d. worker batches ({b} images per worker, each worker's from c classes)", "",
              "| classes per worker | " + " | ".join(f"{c}" + (" (i.i.d.)" if c == 10 else "") for c in cs) + " |",
              "|---|" + "---|" * len(cs)]
        for k in kinds:
            L.append(f"| {k} | " + " | ".join(cell([r["val_error"] for r in sel[(k, c)]]) for c in cs) + " |")
        if "BN" in kinds and "GN" in kinds:
            L.append("| BN − GN (paired) | " + " | ".join(
                cell(paired(sel[("BN", c)], sel[("GN", c)]), signed=True) for c in cs) + " |")
        L += ["", "SyncBN: BN statistics over all workers' images (the global batch). Plot: `noniid.png`.", ""]
    ghost = ghost_rows(rows)
    if ghost:
        gb = ghost[0]["global_batch"]
        bns = sorted({bn_batch(r) for r in ghost if kind(r) == "BN"}, reverse=True)
        gn = [r for r in ghost if kind(r) == "GN"]
        L += [f"## Ghost BN: BN statistics over norm_batch images, global batch {gb} and lr fixed", "",
              "The fixed-steps view of Table 2: every run takes the same optimizer steps with the same learning rate; "
              "only the number of images BN's statistics are computed over changes.", "",
              "| | " + " | ".join(f"BN nb={nb}" for nb in bns) + " | SyncBN (all) | GN |",
              "|---|" + "---|" * (len(bns) + 2),
              "| val error | " + " | ".join(cell([r["val_error"] for r in ghost if kind(r) == "BN"
                                                  and bn_batch(r) == nb]) for nb in bns)
              + f" | {cell([r['val_error'] for r in ghost if kind(r) == 'SyncBN'])}"
              + f" | {cell([r['val_error'] for r in gn])} |"]
        if gn:
            L.append("| BN − GN (paired) | " + " | ".join(
                cell(paired([r for r in ghost if kind(r) == "BN" and bn_batch(r) == nb], gn), signed=True)
                for nb in bns) + " | " + cell(paired([r for r in ghost if kind(r) == "SyncBN"], gn), signed=True)
                + " | |")
        L += ["", "Plot: `ghost.png`.", ""]
    dec = [r for r in rows if "val_error_precise_bn" in r]
    if dec:
        L += ["## Where BN's error comes from (EMA vs population vs batch statistics)", "",
              "The same trained weights, evaluated three ways: with the EMA running statistics (`val_error`), with "
              "population statistics recomputed after training (precise BN), and with each test batch's own "
              "statistics over groups of the run's BN batch.", "",
              "| run | n | val error (EMA) | precise BN | batch statistics | EMA − precise (paired) |",
              "|---|---|---|---|---|---|"]
        groups: dict = {}
        for r in dec:
            name = (f"{kind(r)} b={r['batch_per_worker']} bn_batch={r.get('bn_batch')}"
                    + (f" c={r['classes_per_worker']}" if r.get("classes_per_worker") is not None else ""))
            groups.setdefault(name, []).append(r)
        for name, rs in sorted(groups.items()):
            L.append(f"| {name} | {len(rs)} | {cell([r['val_error'] for r in rs])} | "
                     f"{cell([r['val_error_precise_bn'] for r in rs])} | "
                     f"{cell([r['val_error_batch_stats'] for r in rs])} | "
                     f"{cell([r['val_error'] - r['val_error_precise_bn'] for r in rs], signed=True)} |")
        # the pool ran short of 10,000 when not even one more global batch would have fitted (rows before the
        # flag's fix set it for 9,984 = 312 batches of 32, too)
        allimg = any(r.get("precise_bn_all_training_images")
                     and r["precise_bn_images"] + r["global_batch"] <= PRECISE_BN_IMAGES for r in dec)
        L += ["", f"Precise BN over {min(r['precise_bn_images'] for r in dec)}-"
              f"{max(r['precise_bn_images'] for r in dec)} training-split images (whole global batches)"
              + (" (all the training images there are, fewer than 10,000)" if allimg else "")
              + "; batch statistics over test batches of the run's BN batch. Plot: `bn_decomposition.png`.", ""]
    return L
