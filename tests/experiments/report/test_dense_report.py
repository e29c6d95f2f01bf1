"""The dense tasks' report section on synthetic rows: settings, paired differences and verdicts."""
from groupnorm.experiments.report.dense import dense_sections, head_kind, setting


def _row(seed, ap, norm="gn", head=None, b=2, epochs=12, arch="centernet", masked=False, **extra):
    return dict(task="detection", arch=arch, norm=norm, groups=8 if norm == "gn" else None, group_size=None,
                norm_batch=extra.get("norm_batch"), global_batch=8 * b, batch_per_worker=b, epochs=epochs,
                seed=seed, head_norm=head, masked_stats=masked, box_ap=ap, box_ap50=ap + 10, box_ap75=ap - 5,
                train_size=512, val_size=256, workers=8, widths=[32, 64, 128], diverged=False,
                **{k: v for k, v in extra.items() if k != "norm_batch"})


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
    assert "emulated workers x canvases per worker: 8 x 2;" in text
    bn16 = [dict(_row(s, 20.0 + s * 1.1 + 3.0 + 0.1 * s, norm="bn", b=16), workers=1) for s in range(3)]
    lines16 = {line.split(" | ")[0].lstrip("| "): line for line in "\n".join(dense_sections(rows + bn16)).splitlines()
               if line.startswith("| ")}
    assert "| reproduced |" in lines16["centernet BN at b=16 − BN at b=2, 12 ep"]  # BN better with more per worker
    assert "= +3.10 points" in lines16["centernet BN at b=16 − BN at b=2, 12 ep"]
    one = "\n".join(dense_sections(rows + [dict(_row(0, 30.0, b=16), workers=1)]))
    assert "emulated workers x canvases per worker: 8 x 2, 1 x 16;" in one  # the splits of a fixed global batch


def test_one_seed_gives_no_verdict():
    text = "\n".join(dense_sections([_row(0, 30.0), _row(0, 20.0, norm="bn")]))
    assert "not testable here" in text and "| reproduced |" not in text
    assert dense_sections([]) == []


def test_sweep_rows_stay_out_of_the_tables_and_get_their_own():
    from groupnorm.experiments.report.dense import dense_roles

    main = [_row(s, 30.0 + s, base_lr=0.32) for s in range(2)] + [_row(s, 20.0, norm="bn", base_lr=0.32)
                                                                   for s in range(2)]
    sweep = [dict(_row(0, ap, norm=n, base_lr=lr), holdout=True)
             for n, aps in (("bn", (5.0, 12.5, 9.0)), ("gn", (7.0, 8.0, 14.25)))
             for lr, ap in zip((0.08, 0.32, 1.28), aps)]
    text = "\n".join(dense_sections(main + sweep))
    assert "4 finished runs" in text and "centernet GN b=2 12 ep | 30.50" in text  # sweep rows not averaged in
    lines = {line.split(" | ")[0].lstrip("| "): line for line in text.splitlines() if line.startswith("| ")}
    assert lines["BN"] == "| BN | 5.00 | **12.50** | 9.00 | 0.32 |"
    assert lines["GN"] == "| GN | 7.00 | 8.00 | **14.25** | 1.28 |"
    assert "held-out *training* items" in text
    only_sweep = "\n".join(dense_sections(sweep))  # the sweep alone: its table, no settings or claims
    assert "| BN | 5.00 | **12.50** |" in only_sweep and "| claim" not in only_sweep
    # rows at a rate the preset no longer uses (the setting re-run at the sweep's best) are counted, not averaged
    old = [dict(r, base_lr=0.16, finished_at="2000-01-01", box_ap=99.0) for r in main]
    new = [dict(r, finished_at="2001-01-01") for r in main]
    roles = dense_roles(old + new + sweep)
    assert roles["main"] == new and roles["superseded"] == old and len(roles["lrsweep"]) == 6
    text = "\n".join(dense_sections(old + new))
    assert "(4 rows at a learning rate the preset no longer uses are not shown.)" in text and "99.00" not in text


def test_the_bn_head_control_shows_batch_beside_running_statistics():
    rows = ([dict(_row(s, 16.0 + s, arch="two_stage", head="bn"), box_ap_batchstats=19.0 + s * 1.5)
             for s in range(3)] + [_row(s, 25.0 + s, arch="two_stage", head="gn") for s in range(3)])
    text = "\n".join(dense_sections(rows))
    control = text.split("Table 5's control")[1]
    line = next(x for x in control.splitlines() if x.startswith("| two_stage GN head BN b=2 12 ep | 17.00"))
    cells = [c.strip() for c in line.strip("|").split("|")]
    assert cells[2].startswith("20.50 ± ") and cells[3].startswith("+3.50 ± ") and cells[4].startswith("26.00 ± ")
    assert "Table 5's control" in text and "not i.i.d." in text
    assert "Table 5's control" not in "\n".join(dense_sections(rows[3:]))  # no BN head rows: no control


def test_mask_head_rows_are_their_own_setting_with_a_mask_ap_column():
    rows = ([dict(_row(s, 20.0 + s, arch="two_stage", head="gn"), masks=True, mask_ap=15.0 + s) for s in range(2)]
            + [_row(s, 21.0 + s, arch="two_stage", head="gn") for s in range(2)])
    text = "\n".join(dense_sections(rows))
    assert "| setting | box_ap | box_ap50 | box_ap75 | mask_ap |" in text
    assert "| two_stage+masks GN b=2 12 ep | 20.50 ± " in text and "| 15.50 ± 6.35 (n=2) |" in text
    assert "| two_stage GN b=2 12 ep | 21.50 ± " in text and text.count("| – |") == 1  # no mask AP without masks
    assert "mask_ap" not in "\n".join(dense_sections(rows[2:]))


def _perworker_rows(task="detection"):
    metric = {"detection": "box_ap", "segmentation": "miou"}[task]
    arch = {"detection": "centernet", "segmentation": "unet"}[task]
    rows = []
    for s in range(2):
        for norm, b, v in (("bn", 1, 5.0), ("bn", 2, 10.0), ("bn", 16, 30.0), ("gn", 1, 28.0), ("gn", 2, 29.0),
                           ("gn", 16, 30.0)):
            r = dict(_row(s, 0.0, norm=norm, b=b, arch=arch), task=task, base_lr=0.32, finished_at="2001")
            r.pop("box_ap")
            r[metric] = v + s
            r[f"{metric}_curve"] = [v / 4 + s, v / 2 + s, v + s]
            rows.append(r)
    return rows


def test_plot_series_are_bn_and_gn_of_the_main_rows():
    from groupnorm.experiments.report.dense import curve_series, perworker_series

    rows = _perworker_rows()
    extra = [dict(_row(0, 99.0, norm="bn", base_lr=0.08), holdout=True),           # the sweep: not plotted
             _row(0, 99.0, arch="two_stage", head="bn"),                            # another head: not plotted
             _row(0, 99.0, norm="bn", masked=False, epochs=24),                     # another epoch count
             _row(0, 99.0, norm="gn", masked=True)]
    pw = perworker_series(rows + extra, "detection")
    assert pw == {"BN": {1: [5.0, 6.0], 2: [10.0, 11.0], 16: [30.0, 31.0]},
                  "GN": {1: [28.0, 29.0], 2: [29.0, 30.0], 16: [30.0, 31.0]}}
    assert curve_series(rows + extra, "detection") == {"BN": [3.0, 5.5, 10.5], "GN": [7.75, 15.0, 29.5]}
    assert perworker_series(rows, "segmentation") == {} and curve_series(rows[:3], "detection") == {}
    gn_only = [_row(s, 20.0, arch="two_stage", head=None, b=2) for s in range(3)]  # the head runs alone
    assert perworker_series(gn_only, "detection") == {} and perworker_series(rows[:3], "detection") == {}
    # the (arch, epochs) with both norms wins over one with more rows of GN alone
    assert perworker_series(rows + gn_only * 3, "detection") == pw
    seg = _perworker_rows("segmentation")
    assert perworker_series(seg, "segmentation")["GN"][16] == [30.0, 31.0]


def test_write_report_plots_the_dense_tasks(tmp_path):
    from groupnorm.experiments import store
    from groupnorm.experiments.report.tables import write_report

    for i, r in enumerate(_perworker_rows() + _perworker_rows("segmentation")):
        store.append_result(str(tmp_path), dict(r, config_key=f"k{i}", wall_s=1.0))
    text = open(write_report(str(tmp_path))).read()
    for task in ("detection", "segmentation"):
        for kind_ in ("perworker", "curves"):
            name = f"{task}_{kind_}.png"
            assert f"![{name}]({name})" in text and (tmp_path / name).stat().st_size > 1000
