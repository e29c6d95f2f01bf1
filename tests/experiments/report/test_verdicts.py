"""Every verdict class of the report, on constructed rows: the label follows the rule the report states.

The rule (``report_claims``): the 95% interval of a paired difference lies above 0, below 0, inside ±1 point
while holding 0, or holds 0 and reaches beyond ±1. With 3 seeds the interval is mean ± 4.303 * sd / sqrt(3), so
each set of per-seed differences below is chosen with its interval written beside it.
"""
import pytest

from groupnorm.experiments import report
from groupnorm.experiments.report import claims as RC, rows as report_rows

# per-seed differences -> their 95% interval (t_{0.975,2} = 4.303)
ABOVE_IN_BAND = [0.5, 0.6, 0.7]      # [+0.35, +0.85]
ABOVE_ACROSS_BAND = [1.2, 1.5, 1.8]  # [+0.75, +2.25]: positive, within ±1 not shown
ABOVE_BEYOND_BAND = [3.0, 3.1, 3.2]  # [+2.85, +3.35]
WITHIN = [-0.2, 0.1, 0.4]            # [-0.65, +0.85]
WIDE = [-1.0, 0.5, 2.0]              # [-3.23, +4.23]


def _neg(d):
    return [-v for v in d]


@pytest.mark.parametrize("lo, hi, cls", [
    (0.1, 3.0, "above"), (-3.0, -0.1, "below"), (-1.0, 1.0, "within"), (0.0, 0.5, "within"),
    (-0.5, 1.01, "wide"), (-5.0, 0.0, "wide"), (0.0, 0.0, "within")])
def test_interval_classes(lo, hi, cls):
    assert RC.interval_class(lo, hi, 1.0) == cls


def test_interval_class_rejects_bad_intervals():
    with pytest.raises(ValueError, match=r"\[2.0, 1.0\]"):
        RC.interval_class(2.0, 1.0)
    with pytest.raises(ValueError, match="margin=0"):
        RC.interval_class(0.0, 1.0, margin=0)


@pytest.mark.parametrize("diffs, verdict", [
    (ABOVE_IN_BAND, "reproduced"),
    (ABOVE_ACROSS_BAND, "reproduced"),
    (ABOVE_BEYOND_BAND, "reproduced"),
    (_neg(ABOVE_ACROSS_BAND), "not reproduced: the opposite holds"),
    (WITHIN, "not reproduced: no difference (within ±1)"),
    (WIDE, "inconclusive (the interval holds 0 and reaches beyond ±1)"),
    ([3.0], "not testable here")])
def test_claim_a_greater_than_b(diffs, verdict):
    assert RC.verdict_greater(diffs, "d")[0] == verdict


@pytest.mark.parametrize("diffs, verdict", [
    (ABOVE_IN_BAND, "reproduced (within ±1)"),
    (_neg(ABOVE_IN_BAND), "reproduced (within ±1)"),
    (WITHIN, "reproduced (within ±1)"),
    (ABOVE_ACROSS_BAND, "not shown: the difference is positive; whether within ±1 is open"),
    (_neg(ABOVE_ACROSS_BAND), "not shown: the difference is negative; whether within ±1 is open"),
    (ABOVE_BEYOND_BAND, "not reproduced: the difference is positive, by more than 1"),
    (_neg(ABOVE_BEYOND_BAND), "not reproduced: the difference is negative, by more than 1"),
    (WIDE, "inconclusive (the interval holds 0 and reaches beyond ±1)"),
    ([], "not testable here")])
def test_claim_a_about_equal_to_b(diffs, verdict):
    assert RC.verdict_equal(diffs, "d")[0] == verdict


def test_the_papers_effect_is_ruled_out_only_below_the_interval():
    v, ev = RC.verdict_greater(WITHIN, "d", paper=11.1)
    assert v == "not reproduced: no difference (within ±1), the paper's effect ruled out"
    assert "the paper's +11.1 lies above the interval" in ev
    v, _ = RC.verdict_greater(WIDE, "d", paper=11.1)
    assert v == "inconclusive, but the paper's effect is ruled out (the interval holds 0 and reaches beyond ±1)"
    assert RC.verdict_greater(WIDE, "d", paper=3.0)[0].startswith("inconclusive (")  # 3.0 lies inside
    assert RC.verdict_greater(ABOVE_IN_BAND, "d", paper=11.1)[0] == \
        "direction reproduced, less than half the paper's effect"
    assert RC.verdict_greater([9.0, 11.0, 13.0], "d", paper=11.1)[0] == "reproduced"


def test_evidence_states_the_interval():
    v, ev = RC.verdict_equal(ABOVE_ACROSS_BAND, "GN − BN")
    assert ev == "GN − BN = +1.50 points, 95% CI [+0.75, +2.25] (n=3 seeds)"


def _row(norm, b, seed, err):
    return dict(experiment="table2", norm=norm, groups=32 if norm == "gn" else None, group_size=None,
                batch_per_worker=b, workers=1, global_batch=b, seed=seed, epochs=16, epochs_done=16,
                diverged=False, lr=0.1, base_lr=1.6, val_error=err, train_error=err, images_per_s=100.0,
                wall_s=10.0, config_key=f"{norm}-{b}-{seed}", train_size=3000, val_size=2000, widths=[64, 128],
                blocks=[1, 1], val_error_curve=[err] * 16, train_error_curve=[err] * 16,
                finished_at="2000-01-01T00:00:00Z")


def _claims(gn_minus_bn_32, bn_minus_gn_2):
    """Rows of Table 2 at b = 32 and 2 whose paired differences are the given per-seed values."""
    rows = []
    for s, (d32, d2) in enumerate(zip(gn_minus_bn_32, bn_minus_gn_2)):
        rows += [_row("bn", 32, s, 15.0), _row("gn", 32, s, 15.0 + d32),
                 _row("gn", 2, s, 16.0), _row("bn", 2, s, 16.0 + d2)]
    res = report_rows.Results(report_rows.split_roles(rows)["main"])
    return {c["claim"]: c for c in RC.claim_list(res, {}, report_rows.kind)}


@pytest.mark.parametrize("gn_minus_bn, verdict", [
    (WITHIN, "reproduced (within ±1)"),
    (ABOVE_ACROSS_BAND, "not shown: the difference is positive; whether within ±1 is open"),
    (ABOVE_BEYOND_BAND, "not reproduced: the difference is positive, by more than 1"),
    (WIDE, "inconclusive (the interval holds 0 and reaches beyond ±1)")])
def test_closeness_claim_on_rows(gn_minus_bn, verdict):
    c = _claims(gn_minus_bn, WITHIN)["GN is close to BN at 32 images per worker"]
    assert c["verdict"] == verdict and c["evidence"].startswith("GN − BN at b=32 = ")


@pytest.mark.parametrize("bn_minus_gn, verdict", [
    (ABOVE_BEYOND_BAND, "direction reproduced, less than half the paper's effect"),
    ([9.0, 11.0, 13.0], "reproduced"),
    (_neg(ABOVE_ACROSS_BAND), "not reproduced: the opposite holds"),
    (WITHIN, "not reproduced: no difference (within ±1), the paper's effect ruled out"),
    ([-1.0, 5.0, 11.0], "inconclusive (the interval holds 0 and reaches beyond ±1)")])
def test_beats_claim_on_rows(bn_minus_gn, verdict):
    assert _claims(WITHIN, bn_minus_gn)["GN beats BN at 2 images per worker"]["verdict"] == verdict


def test_report_states_the_rule_its_verdicts_follow(tmp_path):
    import json

    rows = []
    for s, d in enumerate(ABOVE_ACROSS_BAND):
        rows += [_row("bn", 32, s, 15.0), _row("gn", 32, s, 15.0 + d), _row("bn", 2, s, 15.5),
                 _row("gn", 2, s, 15.5)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text, _ = report.build_report(str(tmp_path))
    verdicts = text.split("## Verdicts")[1].split("\n## ")[0]
    assert " ".join(RC.RULE) in verdicts
    assert ("| GN is close to BN at 32 images per worker | GN 0.5 points worse at 32 | **not shown: the difference "
            "is positive; whether within ±1 is open** |") in verdicts
