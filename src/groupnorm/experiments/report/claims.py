"""The report's verdicts: each claim of the paper (and of the experiments on BN's mechanism) tested on the rows.

A claim is a statement about a paired difference (per seed) and a rule from :mod:`.stats`:
``verdict_greater`` ("a is larger than b": the 95% interval of a − b lies above 0) or ``verdict_equal`` ("a and
b are about equal": the interval lies within ±``EQUAL_MARGIN`` points). A claim whose runs are missing, or have
fewer than 2 paired seeds, is "not testable here". Every verdict names its evidence; settings that failed the
convergence check are named beside the verdicts that use them.
"""
from __future__ import annotations

from .rows import bn_batch, ghost_rows, noniid_rows
from .stats import paired, verdict_equal, verdict_greater

EQUAL_MARGIN = 1.0  # points: "about equal" / "flat"


def _claim(text: str, paper: str, verdict: tuple[str, str]) -> dict:
    return dict(claim=text, paper=paper, verdict=verdict[0], evidence=verdict[1])


def claim_list(res, roles: dict, kind) -> list[dict]:
    """The claims that the rows of ``res`` (a report ``Results``) and ``roles`` allow to state."""
    out = []
    bs = sorted(set(res.batches("BN")) & set(res.batches("GN")))
    if len(bs) >= 2:
        lo, hi = bs[0], bs[-1]
        bn_lo, bn_hi = res.find("BN", lo), res.find("BN", hi)
        gn_lo, gn_hi = res.find("GN", lo, any_groups=True), res.find("GN", hi, any_groups=True)
        out.append(_claim(f"BN's error grows as images per worker fall from {hi} to {lo} (Table 2, Figure 1)",
                          "+11.1 points (23.6 → 34.7) from 32 to 2",
                          verdict_greater(paired(bn_lo, bn_hi), f"BN(b={lo}) − BN(b={hi})",
                                          paper=11.1 if (lo, hi) == (2, 32) else None)))
        out.append(_claim(f"GN's error does not depend on images per worker ({hi} vs {lo})",
                          "0.0 points (24.1 and 24.1)",
                          verdict_equal(paired(gn_lo, gn_hi), f"GN(b={lo}) − GN(b={hi})", EQUAL_MARGIN)))
        out.append(_claim(f"GN beats BN at {lo} images per worker", "BN − GN = +10.6 points at 2",
                          verdict_greater(paired(bn_lo, gn_lo), f"BN − GN at b={lo}",
                                          paper=10.6 if lo == 2 else None)))
        out.append(_claim(f"GN is close to BN at {hi} images per worker", "GN 0.5 points worse at 32",
                          verdict_equal(paired(gn_hi, bn_hi), f"GN − BN at b={hi}", EQUAL_MARGIN)))
    b1 = 32 if 32 in res.batches("GN") else None
    if b1 is not None:
        gn = res.find("GN", b1, any_groups=True)
        for k, p in (("LN", "+1.2 points (25.3 vs 24.1)"), ("IN", "+4.3 points (28.4 vs 24.1)")):
            other = res.find(k, b1, any_groups=True)
            if other:
                out.append(_claim(f"GN beats {k} at {b1} images per worker (Table 1)", f"{k} − GN = {p}",
                                  verdict_greater(paired(other, gn), f"{k} − GN")))
    non = noniid_rows(res.rows)
    cs = sorted({r["classes_per_worker"] for r in non})
    if len(cs) >= 2:
        lo, hi = cs[0], cs[-1]

        def sel(k, c):
            return [r for r in non if kind(r) == k and r["classes_per_worker"] == c]

        note = "not in the paper's tables: its argument for GN in detection heads (Sec. 1, 6)"
        out.append(_claim(f"BN fails when each worker's batch holds {lo} class(es) instead of {hi}",
                          note, verdict_greater(paired(sel("BN", lo), sel("BN", hi)), f"BN(c={lo}) − BN(c={hi})")))
        out.append(_claim(f"GN is unaffected by non-i.i.d. worker batches (c={lo} vs {hi})", note,
                          verdict_equal(paired(sel("GN", lo), sel("GN", hi)), f"GN(c={lo}) − GN(c={hi})",
                                        EQUAL_MARGIN)))
        out.append(_claim(f"GN beats BN with non-i.i.d. worker batches (c={lo})", note,
                          verdict_greater(paired(sel("BN", lo), sel("GN", lo)), f"BN − GN at c={lo}")))
        if sel("SyncBN", lo):
            out.append(_claim(f"synchronizing BN's statistics across workers removes the non-i.i.d. loss "
                              f"(SyncBN c={lo} vs c={hi})", "not in the paper (the usual BN fix)",
                              verdict_equal(paired(sel("SyncBN", lo), sel("SyncBN", hi)),
                                            f"SyncBN(c={lo}) − SyncBN(c={hi})", EQUAL_MARGIN)))
    ghost = [r for r in ghost_rows(res.rows) if kind(r) == "BN"]
    nbs = sorted({bn_batch(r) for r in ghost})
    if len(nbs) >= 2:
        lo, hi = nbs[0], nbs[-1]
        out.append(_claim(f"at a fixed global batch, steps and lr, BN's error grows as its statistics batch "
                          f"falls from {hi} to {lo} images (ghost BN)",
                          "the mechanism the paper names (Sec. 1, 3); Table 2 confounds it with step count",
                          verdict_greater(paired([r for r in ghost if bn_batch(r) == lo],
                                                 [r for r in ghost if bn_batch(r) == hi]),
                                          f"BN(nb={lo}) − BN(nb={hi})")))
    if len(bs) >= 1:
        lo = bs[0]
        dec = [r for r in res.find("BN", lo) if "val_error_precise_bn" in r]
        if dec:
            out.append(_claim(f"at b={lo}, part of BN's error comes from the EMA running statistics "
                              "(precise BN lowers it)", "Wu & Johnson 2021, not the GN paper",
                              verdict_greater([r["val_error"] - r["val_error_precise_bn"] for r in dec],
                                              "EMA − precise BN")))
    return out


def claims(res, roles: dict, kind, failed: list[str]) -> list[str]:
    """The "Verdicts" section: one line per claim (markdown), with the convergence caveat."""
    cl = claim_list(res, roles, kind)
    if not cl:
        return []
    L = ["## Verdicts", "",
         f"'About equal' means the 95% interval of the paired difference lies within ±{EQUAL_MARGIN:g} point; "
         "'larger' means it lies above 0.", "",
         "| claim | paper | verdict | evidence |", "|---|---|---|---|"]
    for c in cl:
        L.append(f"| {c['claim']} | {c['paper']} | **{c['verdict']}** | {c['evidence']} |")
    L += ["", "Convergence: " + ("every setting passes the check (section 'Convergence check')." if not failed
                                 else "these settings fail the check, so verdicts that use them compare fixed "
                                      "budgets rather than converged errors: " + ", ".join(failed) + "."), ""]
    return L
