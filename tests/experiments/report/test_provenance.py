"""Rows record the code that made them; the report never pools one setting's rows made by different code, and
says which legacy rows a fresh run would not reproduce; the committed reports are what `groupnorm report`
makes of the committed rows."""
import dataclasses
import json

import pytest

import groupnorm
from groupnorm.experiments import report
from groupnorm.experiments.report import rows as report_rows
from groupnorm.experiments.training import provenance as P

from helpers import ROOT, SAMPLE_DATA as SAMPLE


def _row(norm="bn", b=32, seed=0, err=10.0, **kw):
    r = dict(experiment="table2", norm=norm, groups=32 if norm == "gn" else None, group_size=None,
             batch_per_worker=b, workers=1, global_batch=b, processes=1, seed=seed, epochs=16, epochs_done=16,
             diverged=False, lr=0.1, base_lr=1.6, val_error=err, train_error=err, images_per_s=100.0, wall_s=10.0,
             config_key=f"{norm}-{b}-{seed}-{err}", train_size=3000, val_size=2000, widths=[64, 128],
             blocks=[1, 1], val_error_curve=[err] * 16, train_error_curve=[err] * 16, torch="2.13.0+cpu",
             gn_kernels=True, device="cpu", amp="none", finished_at="2000-01-01T00:00:00Z")
    r.update(kw)
    return r


NEW = dict(groupnorm_version="0.1.0", kernels_isa=2, conv_backend="native")


def test_a_training_run_records_its_code(tmp_path):
    from groupnorm.experiments.data import load_data
    from groupnorm.experiments.protocol import get_preset
    from groupnorm.experiments.training import train_run

    cfg = dataclasses.replace(get_preset("smoke").base, epochs=1, train_size=32, val_size=16, batch_per_worker=4,
                              workers=1, norm="gn")
    row = train_run(cfg, *load_data(SAMPLE, cfg.train_size, cfg.val_size), str(tmp_path), progress=False)
    assert set(P.CODE_FIELDS) <= set(row) and not P.is_legacy(row)
    assert row["groupnorm_version"] == groupnorm.__version__ and row["conv_backend"] == "native"
    if row["gn_kernels"]:
        from groupnorm import kernels

        assert row["kernels_isa"] == kernels.isa() in (0, 1, 2, 3)
    else:
        assert row["kernels_isa"] is None
    assert P.code_of(row) == tuple(row[f] for f in P.CODE_FIELDS)


def test_legacy_rows_and_the_convolution_path():
    legacy2, legacy32 = _row(b=2), _row(b=32)
    assert P.is_legacy(legacy2) and not P.is_legacy(_row(**NEW))
    assert P.predates_conv_backend(legacy2) and not P.predates_conv_backend(legacy32)
    assert not P.predates_conv_backend(_row(b=2, conv_backend="default"))  # recorded: known, not inferred
    assert not P.predates_conv_backend(_row(b=2, device="cuda:0"))  # GPUs never skip cuDNN
    # ten emulated workers of 4 images convolve 40 images per call: oneDNN then and now
    assert not P.predates_conv_backend(_row(b=4, workers=10, global_batch=40))
    assert P.predates_conv_backend(_row(b=4, workers=2, global_batch=8, processes=2))  # torchrun: 4 a process
    assert "legacy" in P.describe(P.code_of(legacy2)) and "oneDNN for every batch" in P.describe(P.code_of(legacy2))
    assert P.describe(P.code_of(_row(**NEW))).startswith("groupnorm 0.1.0, torch 2.13.0+cpu, conv native, "
                                                         "kernels ISA level 2, cpu, amp none")


def test_one_settings_rows_of_different_code_are_not_pooled(tmp_path):
    """BN at b=2: three legacy seeds, then the same three re-trained by the current code: the cell takes the
    newest code's rows only, and the report lists the others."""
    rows = [_row("bn", 32, s, 15.0, **NEW, finished_at="2000-01-02T00:00:00Z") for s in range(3)]
    rows += [_row("gn", 32, s, 16.0, **NEW, finished_at="2000-01-02T00:00:00Z") for s in range(3)]
    rows += [_row("bn", 2, s, 30.0) for s in range(3)]  # legacy
    rows += [_row("bn", 2, s, 17.0, **NEW, finished_at="2000-01-03T00:00:00Z") for s in range(3)]
    rows += [_row("gn", 2, s, 18.0, **NEW, finished_at="2000-01-03T00:00:00Z") for s in range(3)]
    roles = report_rows.split_roles(rows)
    assert len(roles["other_code"]) == 3 and all(r["val_error"] == 30.0 for r in roles["other_code"])
    res = report_rows.Results(roles["main"])
    assert [r["val_error"] for r in res.find("BN", 2)] == [17.0] * 3
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text, _ = report.build_report(str(tmp_path))
    sec = text.split("## Code that made these rows")[1].split("\n## ")[0]
    assert "| groupnorm 0.1.0, torch 2.13.0+cpu, conv native, kernels ISA level 2, cpu, amp none | 12 |" in sec
    assert "3 rows of settings that have newer rows made by other code are not shown" in sec
    assert "BN b=2 W=1 (legacy" in sec
    assert "| BN (ours) | 15.00 ± 0.00 (n=3) | 17.00 ± 0.00 (n=3) |" in text  # 30.0 is in no cell
    assert "legacy rows were trained when every CPU convolution used oneDNN" not in sec  # the kept rows are new


def test_legacy_rows_a_fresh_run_would_change_are_named(tmp_path):
    rows = [_row(n, b, s, 15.0) for n in ("bn", "gn") for b in (32, 2) for s in range(3)]
    (tmp_path / "results.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    text, _ = report.build_report(str(tmp_path))
    sec = text.split("## Code that made these rows")[1].split("\n## ")[0]
    assert "6 legacy rows were trained when every CPU convolution used oneDNN" in sec
    assert sec.rstrip().endswith(": BN b=2 W=1, GN G=32 b=2 W=1.")


@pytest.mark.parametrize("preset", ["quick", "full", "video"])
def test_committed_report_is_what_the_committed_rows_make(preset):
    """`groupnorm report docs/results/PRESET` rewrites report.md to the committed text (the plots' list, which
    write_report appends, aside)."""
    out = ROOT / "docs" / "results" / preset
    text, _ = report.build_report(str(out))
    committed = (out / "report.md").read_text()
    assert text == committed.split("\n## Plots\n")[0]
