"""The dense tasks' report section on synthetic rows: settings, paired differences and verdicts."""
from groupnorm.experiments.report.dense import dense_sections, head_kind, setting


def _row(seed, ap, norm="gn", head=None, b=2, epochs=12, arch="centernet", masked=False, **extra):
    return dict(task="detection", arch=arch, norm=norm, groups=8 if norm == "gn" else None, group_size=None,
                norm_batch=extra.get("norm_batch"), global_batch=8 * b, batch_per_worker=b, epochs=epochs,
                seed=seed, head_norm=head, masked_stats=masked, box_ap=ap, box_ap50=ap + 10, box_ap75=ap - 5,
                train_size=512, val_size=256, workers=8, widths=[32, 64, 128], diverged=False)


def test_settings_name_backbone_and_head():
    assert head_kind(_row(0, 1.0)) == "GN" and head_kind(_row(0, 1.0, head="syncbn")) == "SyncBN"
    assert head_kind(_row(0, 1.0, head="bn")) == "BN"
    assert setting(_row(0, 1.0, norm="bn", norm_batch=16)) == ("centernet", "SyncBN", "SyncBN", 2, 12, False, 0)


def test_verdicts_follow_the_paired_differences():
    rows = ([_row(s, 30.0 + s) for s in range(3)]
            + [_row(s, 20.0 + s * 1.1, norm="bn") for s in range(3)]                      # GN − BN ≈ +10: shown
            + [_row(s, 30.0 + s + (0.1 if s == 1 else 0), norm="bn-frozen") for s in range(3)]  # ≈ 0
            + [_row(s, a, arch="two_stage", head=h) for s in range(3)
               for h, a in (("gn", 25.0 + s), ("bn", 16.0 + s * 0.9))])                   # head GN − BN ≈ 9
    text = "\n".join(dense_sections(rows))
    assert "## Detection" in text
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert "| reproduced |" in lines["centernet GN − BN at b=2, 12 ep"]
    assert "not reproduced: no difference" in lines["centernet GN − BN* at b=2, 1x"]
    assert "+1.1" in lines["centernet GN − BN* at b=2, 1x"]  # the paper's number beside it
    assert "| reproduced |" in lines["two_stage box head GN − BN (GN backbone), b=2"]
    assert "centernet GN b=2 12 ep | 31.00 ± 2.48 (n=3)" in text


def test_one_seed_gives_no_verdict():
    text = "\n".join(dense_sections([_row(0, 30.0), _row(0, 20.0, norm="bn")]))
    assert "not testable here" in text and "| reproduced |" not in text
    assert dense_sections([]) == []
