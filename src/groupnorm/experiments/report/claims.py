"""The report's verdicts: each claim of the paper (and of the mechanism experiments: non-i.i.d. worker batches,
ghost BN, precise BN) tested on the rows.

A claim is a statement about a paired difference d = a − b (per seed; :func:`.stats.paired`), judged by
where the 95% t interval [lo, hi] of d lies relative to 0 and to the band ±``EQUAL_MARGIN`` (1 point)
(:func:`interval_class`):

- ``above`` (lo > 0) or ``below`` (hi < 0): a difference is shown, with its sign;
- ``within``: the interval holds 0 and lies inside [−1, +1]: no difference larger than 1 point;
- ``wide``: the interval holds 0 and reaches beyond ±1: inconclusive.

A claim "a > b" (:func:`verdict_greater`) is reproduced on ``above``; ``below`` is the opposite, ``within``
"no difference (within ±1)", ``wide`` inconclusive. A claim "a ≈ b" (:func:`verdict_equal`) is reproduced when
the whole interval lies inside ±1 (``within``, or ``above`` / ``below`` with the interval inside the band);
``above`` or ``below`` reaching beyond the band is a difference of known sign "not shown within ±1" (or "by
more than 1" when the whole interval lies beyond it); ``wide`` is inconclusive.

A claim with a paper effect (points) also says whether the interval rules that effect out. Fewer than 2 paired
seeds: "not testable here". Every verdict names its evidence; settings that failed the convergence check are
named beside the verdicts that use them.
"""
from __future__ import annotations

from .rows import bn_batch, ghost_rows, noniid_rows
from .stats import ci95, paired

EQUAL_MARGIN = 1.0  # points: "about equal" / "no difference"
NOT_TESTABLE = "not testable here"


def interval_class(lo: float, hi: float, margin: float = EQUAL_MARGIN) -> str:
    """Where the interval [lo, hi] of a difference lies: ``above`` (lo > 0), ``below`` (hi < 0), ``within``
    (holds 0, inside [−margin, margin]) or ``wide`` (holds 0, reaches beyond ±margin)."""
    if not lo <= hi:
        raise ValueError(f"interval [{lo}, {hi}]: lo must not exceed hi")
    if margin <= 0:
        raise ValueError(f"margin={margin!r} must be positive")
    if lo > 0:
        return "above"
    if hi < 0:
        return "below"
    return "within" if -margin <= lo and hi <= margin else "wide"


def _interval(diffs: list[float]) -> tuple[float, float, float]:
    m, h, _ = ci95(diffs)
    return m, m - h, m + h


def _untestable(diffs: list[float], what: str) -> tuple[str, str]:
    return NOT_TESTABLE, f"{what}: {len(diffs)} paired seed(s), at least 2 needed for an interval"


def verdict_greater(diffs: list[float], what: str, paper: float | None = None,
                    margin: float = EQUAL_MARGIN) -> tuple[str, str]:
    """Claim "``what`` (a difference a − b) is positive", from its per-seed values: (verdict, evidence).

    ``above``: reproduced (when ``paper``, the paper's difference in points, is given and the interval lies
    below half of it: only the direction is); ``below``: the opposite holds; ``within``: no difference (within
    ±``margin``); ``wide``: inconclusive. Where the interval lies wholly below ``paper`` and holds 0, an effect
    as large as the paper's is ruled out (said in the verdict and the evidence)."""
    if len(diffs) < 2:
        return _untestable(diffs, what)
    m, lo, hi = _interval(diffs)
    ev = f"{what} = {m:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}] (n={len(diffs)} seeds)"
    cls = interval_class(lo, hi, margin)
    if cls == "above":
        if paper is not None and hi < paper / 2:
            return ("direction reproduced, less than half the paper's effect",
                    ev + f"; the paper's {paper:+.1f} lies far above the interval")
        return "reproduced", ev
    if cls == "below":
        return "not reproduced: the opposite holds", ev
    ruled_out = paper is not None and paper > hi
    if ruled_out:
        ev += f"; the paper's {paper:+.1f} lies above the interval"
    if cls == "within":
        return (f"not reproduced: no difference (within ±{margin:g})"
                + (", the paper's effect ruled out" if ruled_out else "")), ev
    return ("inconclusive" + (", but the paper's effect is ruled out" if ruled_out else "")
            + f" (the interval holds 0 and reaches beyond ±{margin:g})"), ev


def verdict_equal(diffs: list[float], what: str, margin: float = EQUAL_MARGIN) -> tuple[str, str]:
    """Claim "``what`` (a difference a − b) is about 0", i.e. within ±``margin`` points: (verdict, evidence).

    Reproduced when the whole 95% interval lies in [−margin, margin]. An interval that excludes 0 but is not
    inside the band shows a difference of known sign whose size is open: "a larger (smaller), not shown within
    ±margin", or "by more than margin" when the whole interval lies beyond it. An interval that holds 0 and
    reaches beyond the band is inconclusive."""
    if len(diffs) < 2:
        return _untestable(diffs, what)
    m, lo, hi = _interval(diffs)
    ev = f"{what} = {m:+.2f} points, 95% CI [{lo:+.2f}, {hi:+.2f}] (n={len(diffs)} seeds)"
    cls = interval_class(lo, hi, margin)
    if -margin <= lo and hi <= margin:
        return f"reproduced (within ±{margin:g})", ev
    if cls == "wide":
        return f"inconclusive (the interval holds 0 and reaches beyond ±{margin:g})", ev
    sign = "positive" if cls == "above" else "negative"
    if (lo > margin) if cls == "above" else (hi < -margin):
        return f"not reproduced: the difference is {sign}, by more than {margin:g}", ev
    return f"not shown: the difference is {sign}; whether within ±{margin:g} is open", ev


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


RULE = (
    "Each verdict follows where the 95% interval of the paired difference lies: above 0 or below 0 (a difference "
    f"is shown), inside ±{EQUAL_MARGIN:g} point while holding 0 (no difference larger than {EQUAL_MARGIN:g} point), "
    f"or holding 0 and reaching beyond ±{EQUAL_MARGIN:g} (inconclusive). A claim \"a beats b\" is reproduced when "
    "the difference is shown in its direction; a claim \"a is close to b\" when the whole interval lies inside "
    f"±{EQUAL_MARGIN:g}.",
)


def claims(res, roles: dict, kind, failed: list[str]) -> list[str]:
    """The "Verdicts" section: one line per claim (markdown), with the convergence caveat."""
    cl = claim_list(res, roles, kind)
    if not cl:
        return []
    L = ["## Verdicts", "",
         *RULE, "",
         "| claim | paper | verdict | evidence |", "|---|---|---|---|"]
    for c in cl:
        L.append(f"| {c['claim']} | {c['paper']} | **{c['verdict']}** | {c['evidence']} |")
    L += ["", "Convergence: " + ("every setting passes the check (section 'Convergence check')." if not failed
                                 else "these settings fail the check, so verdicts that use them compare fixed "
                                      "budgets rather than converged errors: " + ", ".join(failed) + "."), ""]
    return L
