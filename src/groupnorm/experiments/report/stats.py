"""The report's statistics: 95% intervals, paired differences and the convergence check.

Everything here is a pure function of results rows (dicts), so it is tested on synthetic rows.

- :func:`ci95`: mean and half-width of the Student-t 95% interval, ``t_{0.975, n-1} * sd / sqrt(n)``.
- :func:`paired`: the difference ``a - b`` per seed (only seeds present in both), as a list; its interval is the
  interval of the per-seed differences (a paired design: both runs of a seed share initialization and data
  order, so seed-to-seed variation common to both cancels).
- :func:`converged`: the report's criterion: the setting's mean validation error at 75% of training and at
  100% differ by at most ``CONVERGENCE_POINTS`` = 1 point; :func:`control_check`: a run trained ``k`` times
  longer changes the mean error by at most 1 point.

The verdicts drawn from these intervals are in :mod:`.claims`.
"""
from __future__ import annotations

import math
import statistics

CONVERGENCE_POINTS = 1.0
# t_{0.975, df} for df = 1..30; beyond, 1.96 (within 2.5% for df > 30)
_T975 = (12.706, 4.303, 3.182, 2.776, 2.571, 2.447, 2.365, 2.306, 2.262, 2.228, 2.201, 2.179, 2.160, 2.145,
         2.131, 2.120, 2.110, 2.101, 2.093, 2.086, 2.080, 2.074, 2.069, 2.064, 2.060, 2.056, 2.052, 2.048,
         2.045, 2.042)


def t975(df: int) -> float:
    return _T975[df - 1] if 1 <= df <= len(_T975) else 1.96


def ci95(vals: list[float]) -> tuple[float, float, int]:
    """(mean, half-width of the 95% t interval, n); half-width ``nan`` for one value (no interval)."""
    vals = [v for v in vals if v is not None]
    if not vals:
        raise ValueError("ci95 of no values")
    m = statistics.fmean(vals)
    n = len(vals)
    if n < 2:
        return m, math.nan, n
    return m, t975(n - 1) * statistics.stdev(vals) / math.sqrt(n), n


def error_bar(vals: list[float]) -> tuple[float, float, int]:
    """(mean, 95% half-width, n) for a plot's error bar: the half-width 0 for one value (no interval)."""
    m, h, n = ci95(vals)
    return m, (0.0 if n < 2 else h), n


def cell(vals: list[float] | None, signed: bool = False) -> str:
    """``12.34 ± 0.56 (n=3)`` (mean ± 95% half-width); one value: the number alone; none (or None): a dash."""
    vals = [v for v in (vals or []) if v is not None]
    if not vals:
        return "–"
    m, h, n = ci95(vals)
    f = "+.2f" if signed else ".2f"
    return f"{m:{f}} ± {h:.2f} (n={n})" if n > 1 else f"{m:{f}}"


def paired(a: list[dict], b: list[dict], field: str = "val_error") -> list[float]:
    """Per-seed differences ``a[seed][field] - b[seed][field]`` over the seeds both lists have (seed order)."""
    ba = {r["seed"]: r[field] for r in a if r.get(field) is not None}
    bb = {r["seed"]: r[field] for r in b if r.get(field) is not None}
    return [ba[s] - bb[s] for s in sorted(ba.keys() & bb.keys())]


def curve(row: dict, read_metrics=None) -> list[float]:
    """The row's per-epoch validation errors: ``val_error_curve``, else ``read_metrics(row)``'s (older rows)."""
    c = row.get("val_error_curve")
    if c is None and read_metrics is not None:
        c = [h["val_error"] for h in read_metrics(row)]
    return list(c or [])


def at_fraction(c: list[float], epochs: int, fraction: float) -> float | None:
    """Validation error after ``round(fraction * epochs)`` epochs (None if the curve is shorter)."""
    e = max(1, int(round(fraction * epochs)))
    return c[e - 1] if len(c) >= e else None


def converged(rows: list[dict], read_metrics=None, fraction: float = 0.75) -> dict:
    """The convergence check of one setting's rows (its seeds).

    Returns ``dict(at_75=[...], at_100=[...], change=mean(at_100) - mean(at_75), ok=|change| <= 1 point)``
    (``ok`` None when no row has a full curve). A run whose error still falls by more than a point over the last
    quarter of its training is not converged; one that rises by more is not a stable end point either."""
    a75, a100 = [], []
    for r in rows:
        c = curve(r, read_metrics)
        v = at_fraction(c, r["epochs"], fraction)
        if v is not None and len(c) >= r["epochs"]:
            a75.append(v)
            a100.append(c[r["epochs"] - 1])
    if not a100:
        return dict(at_75=[], at_100=[], change=None, ok=None)
    change = statistics.fmean(a100) - statistics.fmean(a75)
    return dict(at_75=a75, at_100=a100, change=change, ok=abs(change) <= CONVERGENCE_POINTS)


def control_check(main: list[dict], longer: list[dict]) -> dict:
    """The longer-training control: ``change`` = mean error of ``longer`` minus that of ``main`` over the seeds
    both have (paired), ``ok`` = |change| <= 1 point (None without a common seed)."""
    d = paired(longer, main)
    if not d:
        return dict(diffs=[], change=None, ok=None)
    change = statistics.fmean(d)
    return dict(diffs=d, change=change, ok=abs(change) <= CONVERGENCE_POINTS)

