"""One place for a run's kind, label and image count (protocol/run_config.py), used by the runner, the report and train."""
import pytest

from groupnorm.experiments.report import rows as report_rows
from groupnorm.experiments.protocol import RunConfig, norm_kind


@pytest.mark.parametrize("cfg, kind, label", [
    (RunConfig(norm="bn", batch_per_worker=2, seed=1), "BN", "BN b=2 s=1"),
    (RunConfig(norm="gn", groups=32), "GN", "GN G=32 b=32 s=0"),
    (RunConfig(norm="gn", groups=None, group_size=4), "GN", "GN K=4 b=32 s=0"),
    (RunConfig(norm="gn", groups=None, group_size=1), "IN", "IN b=32 s=0"),
    (RunConfig(norm="in"), "IN", "IN b=32 s=0"),
    (RunConfig(norm="ln"), "LN", "LN b=32 s=0"),
    (RunConfig(norm="gn", groups=1), "LN", "LN b=32 s=0"),
    (RunConfig(norm="gn+ws"), "GN+WS", "GN+WS G=32 b=32 s=0"),
    (RunConfig(norm="bn-frozen"), "BN-FROZEN", "BN-FROZEN b=32 s=0"),
])
def test_kind_and_label_from_one_helper(cfg, kind, label):
    assert cfg.kind == kind and cfg.label == label
    g, k = cfg.canonical_groups()
    row = dict(norm=cfg.canonical()["norm"], groups=g, group_size=k)
    assert report_rows.kind(row) == kind == norm_kind(cfg.norm, cfg.groups, cfg.group_size)


def test_images_per_epoch_drops_the_last_partial_global_batch():
    cfg = RunConfig(workers=4, batch_per_worker=8, train_size=1000, epochs=3)  # global batch 32
    assert cfg.images_per_epoch() == 992
    assert cfg.images_per_epoch(500) == 480  # fewer images there than train_size
    assert cfg.images_per_run() == 3 * 992
    assert RunConfig(train_size=None, workers=1, batch_per_worker=7).images_per_epoch(100) == 98
    with pytest.raises(ValueError, match="train_size is None"):
        RunConfig(train_size=None).images_per_epoch()
