"""The report's computations on synthetic rows: intervals, paired differences, the convergence check, claims
(the verdict classes themselves: test_report_verdicts.py)."""
import json
import math
import os

import numpy as np
import pytest

from groupnorm.experiments.report import claims as report_claims, rows as report_rows, stats as S
from groupnorm.experiments.report import tables as report


def _row(norm="bn", b=32, seed=0, err=10.0, curve=None, epochs=8, **kw):
    curve = curve if curve is not None else [err + 5.0] * (epochs - 1) + [err]
    r = dict(experiment="table2", norm=norm, groups=32 if norm == "gn" else None, group_size=None,
             batch_per_worker=b, workers=1, global_batch=b, seed=seed, epochs=epochs, epochs_done=epochs,
             diverged=False, lr=0.1, base_lr=0.8, val_error=err, train_error=err, val_loss=0.3, train_loss=0.3,
             images_per_s=100.0, wall_s=10.0, config_key=f"{norm}-{b}-{seed}-{epochs}-{kw.get('tag', '')}",
             train_size=3000, val_size=2000, widths=[64, 128], blocks=[1, 1], val_error_curve=curve,
             train_error_curve=curve, finished_at="2026-12-02T18:00:00Z")
    r.update({k: v for k, v in kw.items() if k != "tag"})
    return r


def test_ci95_is_the_student_t_interval():
    vals = [1.0, 2.0, 4.0]
    m, h, n = S.ci95(vals)
    assert (m, n) == (pytest.approx(7 / 3), 3)
    assert h == pytest.approx(4.303 * np.std(vals, ddof=1) / math.sqrt(3), rel=1e-6)
    assert math.isnan(S.ci95([5.0])[1]) and S.t975(100) == 1.96
    assert S.cell([5.0]) == "5.00" and S.cell([]) == "–" and S.cell([1.0, 3.0], signed=True).startswith("+2.00 ± ")
    with pytest.raises(ValueError):
        S.ci95([])


def test_paired_differences_use_common_seeds_only():
    a = [_row(seed=s, err=e) for s, e in ((0, 10.0), (1, 12.0), (2, 11.0))]
    b = [_row(norm="gn", seed=s, err=e) for s, e in ((0, 9.0), (2, 10.5), (3, 1.0))]
    assert S.paired(a, b) == [1.0, 0.5]


def test_convergence_check_compares_75_and_100_percent_of_training():
    flat = [_row(seed=s, curve=[30, 20, 15, 12, 11, 10.6, 10.4, 10.0], err=10.0) for s in range(2)]
    c = S.converged(flat)
    assert c["at_75"] == [10.6, 10.6] and c["change"] == pytest.approx(-0.6) and c["ok"]
    falling = [_row(curve=[30, 25, 20, 18, 16, 14, 12, 10.0], err=10.0)]
    assert S.converged(falling)["ok"] is False and S.converged(falling)["change"] == pytest.approx(-4.0)
    rising = [_row(curve=[30, 20, 15, 12, 11, 9, 10, 10.5], err=10.5)]
    assert S.converged(rising)["ok"] is False  # |+1.5| > 1: not a stable end point either
    assert S.converged([_row(curve=[30, 20])])["ok"] is None  # an incomplete curve is not judged
    # older rows: the curve comes from metrics.jsonl through read_metrics
    old = _row(curve=None)
    old.pop("val_error_curve")
    c = S.converged([old], read_metrics=lambda r: [{"val_error": v} for v in [20] * 6 + [10.5, 10.0]])
    assert c["change"] == pytest.approx(-10.0)


def test_control_check_pairs_the_longer_runs_with_the_main_ones():
    main = [_row(seed=s, err=e) for s, e in ((0, 10.0), (1, 11.0))]
    longer = [_row(seed=s, err=e, epochs=16) for s, e in ((0, 9.5), (1, 10.0))]
    chk = S.control_check(main, longer)
    assert chk["diffs"] == [-0.5, -1.0] and chk["change"] == pytest.approx(-0.75) and chk["ok"]
    worse = [_row(seed=0, err=7.0, epochs=16)]
    assert S.control_check(main, worse)["ok"] is False
    assert S.control_check(main, [_row(seed=5, epochs=16)])["ok"] is None


def _results(rows):
    return report_rows.Results(report_rows.split_roles(rows)["main"])


def test_claims_from_synthetic_rows_say_what_the_numbers_say():
    rows = []
    for s in range(3):  # BN collapses at b=2, GN is flat: the paper's Table 2
        rows += [_row("bn", 32, s, 10.0 + 0.1 * s), _row("bn", 2, s, 20.0 + 0.2 * s),
                 _row("gn", 32, s, 10.5 + 0.1 * s), _row("gn", 2, s, 10.6 + 0.1 * s)]
    cl = {c["claim"]: c for c in report_claims.claim_list(_results(rows), {}, report_rows.kind)}
    grow = next(c for k, c in cl.items() if k.startswith("BN's error grows"))
    assert grow["verdict"] == "reproduced" and "+10.10" in grow["evidence"]
    assert next(c for k, c in cl.items() if k.startswith("GN's error does not"))["verdict"].startswith("reproduced")
    assert next(c for k, c in cl.items() if k.startswith("GN beats BN at 2"))["verdict"] == "reproduced"
    # BN flat too: the collapse is not reproduced
    flat = [dict(r, val_error=r["val_error"] - 10.0) if r["norm"] == "bn" and r["batch_per_worker"] == 2 else r
            for r in rows]
    cl = report_claims.claim_list(_results(flat), {}, report_rows.kind)
    assert next(c for c in cl if c["claim"].startswith("BN's error grows"))["verdict"].startswith("not reproduced")


def test_report_of_synthetic_rows_has_intervals_convergence_and_verdicts(tmp_path):
    rows = []
    for s in range(3):
        rows += [_row("bn", 32, s, 10.0 + s), _row("gn", 32, s, 11.0 + s), _row("bn", 2, s, 12.0 + s),
                 _row("gn", 2, s, 11.5 + s),
                 _row("bn", 32, s, 10.2 + s, epochs=16, experiment="control", tag="c")]
    rows.append(_row("bn", 32, 0, 14.0, holdout=True, base_lr=0.4, experiment="lrsweep", tag="h"))
    with open(tmp_path / "results.jsonl", "w") as f:
        f.writelines(json.dumps(r) + "\n" for r in rows)
    text, res = report.build_report(str(tmp_path))
    assert len(res.rows) == 12  # the control and sweep rows are kept out of the tables
    t2 = text.split("## Table 2")[1].split("\n## ")[0]
    assert "| BN (ours) | 11.00 ± 2.48 (n=3) | 13.00 ± 2.48 (n=3) |" in t2  # t_{0.975,2} * 1 / sqrt(3)
    assert "| BN − GN (ours, paired) | -1.00 ± 0.00 (n=3) | +0.50 ± 0.00 (n=3) |" in t2
    conv = text.split("## Convergence check")[1].split("\n## ")[0]
    assert "**no**" in conv  # the synthetic curves fall by 5 points over the last quarter
    assert "| BN b=32 W=1 | 8 → 16 | 11.00 ± 2.48 (n=3) | 11.20 ± 2.48 (n=3) | +0.20 ± 0.00 (n=3) | yes |" in conv
    assert "## Verdicts" in text and "## Learning-rate sweep" in text
    sweep = text.split("## Learning-rate sweep")[1].split("\n## ")[0]
    assert "| BN | 14.00 | 0.4 | 0.8 |" in sweep
    assert os.path.basename(report.write_report(str(tmp_path))) == "report.md"
    assert (tmp_path / "fig1_batch_size.png").stat().st_size > 5000


def test_table_cells_take_the_protocols_workers_only():
    """A ghost run with per-worker BN at 4 workers x 8 (norm_batch = b) is another setting than Table 2's b=8 at
    one worker: the table's cell keeps its 3 seeds instead of mixing in the ghost runs."""
    rows = [_row("bn", 8, s, 10.0) for s in range(3)] + [_row("bn", 32, s, 9.0) for s in range(3)]
    rows += [_row("bn", 8, s, 30.0, workers=4, global_batch=32, norm_batch=8, experiment="ghost", tag="g")
             for s in range(3)]
    res = _results(rows)
    assert res.workers == 1 and [r["val_error"] for r in res.find("BN", 8)] == [10.0] * 3


def test_rows_at_a_superseded_learning_rate_leave_the_tables():
    """A preset whose lr for a setting changed re-runs it into the same directory: the tables take the rows of the
    most recent rate and the report names the ones left out; the sweep table lists each variant with the rates
    the main runs used."""
    old = [_row("gn", 32, s, 20.0, groups=1, base_lr=6.4, experiment="table1", tag="o",
                finished_at="2026-12-01T10:00:00Z") for s in range(3)]
    new = [_row("gn", 32, s, 12.0, groups=1, base_lr=1.6, experiment="table1", tag="n",
                finished_at="2026-12-07T10:00:00Z") for s in range(3)]
    gn = [_row("gn", 32, s, 11.0) for s in range(3)]
    sweep = [_row("gn", 32, 0, e, groups=1, holdout=True, base_lr=lr, experiment="lrsweep", tag=f"h{lr}")
             for lr, e in ((1.6, 13.0), (6.4, 18.0))]
    kept, superseded = report_rows.current_lr(old + new + gn)
    assert {r["base_lr"] for r in kept if r["groups"] == 1} == {1.6} and superseded == old
    assert len(kept) == 6
    rows = old + new + gn + sweep
    roles = report_rows.split_roles(rows)
    assert roles["superseded"] == old and len(roles["main"]) == 6
    table = report._lrsweep(roles["lrsweep"], roles["main"])
    assert "| LN | 13.00 | 18.00 | 1.6 | 1.6 |" in table
    assert report_rows.row_variant(gn[0]) == "GN G=32"
    assert report_rows.row_variant(_row("gn", 32, group_size=4)) == "GN K=4"
