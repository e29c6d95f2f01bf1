"""A run's identity (its key) and the runs each experiment of the presets plans."""
import dataclasses

import pytest

from groupnorm.experiments.protocol import RunConfig, experiment_configs, get_preset


def test_config_identity_and_experiment_plans():
    base = RunConfig()
    assert base.key() == dataclasses.replace(base, experiment="other").key()
    assert RunConfig(norm="ln").key() == RunConfig(norm="gn", groups=1).key()
    assert RunConfig(norm="in").key() == RunConfig(norm="gn", groups=None, group_size=1).key()
    assert RunConfig(norm="bn", groups=8).key() == RunConfig(norm="bn", groups=32).key()
    assert base.key() != dataclasses.replace(base, seed=1).key()
    assert RunConfig(workers=8, batch_per_worker=2, base_lr=0.8).lr == pytest.approx(0.05)
    full = get_preset("full")
    cfgs = experiment_configs("all", full, seeds=1)
    # 24 settings of Tables 1-3; noniid adds 3 norms x 3 class counts; ghost (4 workers x 8 images) 4 BN norm
    # batches, SyncBN and GN; the lr sweep 2 norms x 6 rates and 14 variants (LN, IN, GN+WS, G and K of Table 3
    # but GN G=32 itself, LN and IN) x 5 rates; the control BN at b=32 and b=2; Figure 3's 3 VGGs
    assert len(cfgs) == len({c.key() for c in cfgs}) == 24 + 9 + 6 + 12 + 14 * 5 + 2 + 3
    tables = [c for c in cfgs if c.experiment in ("table1", "table2", "table3")]
    assert len(tables) == 24 and all(c.norm_batch is None and c.classes_per_worker is None for c in tables)
    assert all(c.workers == 1 and min(c.widths) >= 64 for c in tables)  # G=32: >= 2 channels per group
    assert [c.seed for c in experiment_configs("all", full)].count(2) == 54 - 10 - 3  # lr sweep (2), VGG (1)
    sweep = [c for c in cfgs if c.experiment == "lrsweep"]
    assert all(c.holdout for c in sweep) and not any(c.holdout for c in cfgs if c.experiment != "lrsweep")
    assert sorted({c.base_lr for c in sweep if c.variant in ("BN", "GN G=32")}) == sorted(full.lrsweep_lrs)
    assert len({c.variant for c in sweep}) == 16 and len({c.key() for c in sweep}) == 2 * 6 + 14 * 5
    # every variant of Tables 1 and 3 is swept (so its lr is its own argmin), at b=32 like the tables
    tables_variants = {c.variant for c in tables if c.experiment != "table2"}
    assert tables_variants <= {c.variant for c in sweep} and {c.batch_per_worker for c in sweep} == {32}
    control = [c for c in cfgs if c.experiment == "control"]
    assert sorted((c.batch_per_worker, c.epochs) for c in control) == [(2, 32), (32, 32)]
    quick = experiment_configs("all", get_preset("quick"))
    # Table 2's ends and noniid (BN, GN) at 1 and 10 classes per worker, 3 seeds; every quick run is a full run
    assert len(quick) == 3 * (4 + 4) and {c.key() for c in quick} <= {c.key() for c in experiment_configs("all", full)}
    t2 = experiment_configs("table2", full, seeds=2)
    assert sorted({(c.norm, c.batch_per_worker) for c in t2}) == sorted(
        (n, b) for n in ("bn", "gn") for b in (32, 16, 8, 4, 2))
    assert [c.seed for c in t2] == [0] * 10 + [1] * 10
    with pytest.raises(ValueError, match="unknown experiment 'table9'"):
        experiment_configs("table9", full)
    with pytest.raises(ValueError, match="smaller than one global batch"):
        RunConfig(train_size=100, workers=8, batch_per_worker=32).validate()
