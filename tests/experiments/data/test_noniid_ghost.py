"""noniid and ghost experiments: the sampler, the configs, their errors, and a smoke run of each."""
import os

import pytest
import torch

from groupnorm.cli import main
from groupnorm.experiments.protocol import RunConfig, experiment_configs, get_preset
from groupnorm.experiments.data import Split, epoch_batches
from groupnorm.experiments.data.noniid import worker_class_order
from helpers import results_lines, smoke_args


def _split(n=200):
    g = torch.Generator().manual_seed(0)
    return Split(torch.randint(0, 256, (n, 28, 28), dtype=torch.uint8, generator=g),
                 torch.arange(n) % 10)


@pytest.mark.parametrize("c", [1, 2, 10])
def test_each_worker_draws_from_c_classes(c):
    sp = _split()
    seen = []
    for x, y in epoch_batches(sp, 4 * 8, seed=0, epoch=0, classes_per_worker=c, workers=4):
        for k in range(4):
            classes = set(y[k * 8:(k + 1) * 8].tolist())
            assert len(classes) <= c
            seen.append(len(classes))
    if c == 10:
        assert max(seen) >= 5  # i.i.d.-like: many classes per worker


@pytest.mark.parametrize("workers,c", [(10, 1), (5, 2), (4, 1), (3, 4), (7, 3), (6, 4), (10, 10)])
def test_classes_are_dealt_evenly_over_the_workers(workers, c):
    """Each worker holds c distinct classes and the global batch holds every class floor or ceil(W c / 10)
    times (W c = 10: each class exactly once), so the optimizer's step stays class-diverse at c = 1; W c
    beyond the deck (12, 21, 24 slots) deals whole decks first, so the bound holds there too."""
    from groupnorm.experiments.data.noniid import deal_classes

    g = torch.Generator().manual_seed(3)
    for _ in range(20):
        dealt = deal_classes(10, workers, c, g)
        assert len(dealt) == workers and all(len(set(d)) == c == len(d) for d in dealt)
        counts = torch.bincount(torch.tensor([cl for d in dealt for cl in d]), minlength=10)
        slots = workers * c
        assert counts.min() == slots // 10 and counts.max() == -(-slots // 10), (counts.tolist(), slots)


def test_one_class_per_worker_keeps_the_global_batch_diverse():
    sp = _split()
    for x, y in epoch_batches(sp, 10 * 4, seed=0, epoch=0, classes_per_worker=1, workers=10):
        per_worker = [set(y[k * 4:(k + 1) * 4].tolist()) for k in range(10)]
        assert all(len(s) == 1 for s in per_worker)
        assert set().union(*per_worker) == set(range(10))  # every class once in the step


def test_sampler_is_deterministic_and_checks_c():
    lab = torch.arange(50) % 5
    a = worker_class_order(lab, 3, 2, 4, 2, torch.Generator().manual_seed(1))
    b = worker_class_order(lab, 3, 2, 4, 2, torch.Generator().manual_seed(1))
    assert torch.equal(a, b) and a.numel() == 24
    with pytest.raises(ValueError, match="classes_per_worker=6 .* classes in the training data \\(5\\)"):
        worker_class_order(lab, 1, 1, 4, 6, torch.Generator())


def test_bad_values_are_named():
    with pytest.raises(ValueError, match="classes_per_worker=11"):
        RunConfig(classes_per_worker=11).validate()
    with pytest.raises(ValueError, match="norm_batch=3 does not divide the global batch of 256"):
        RunConfig(norm="bn", norm_batch=3).validate()
    with pytest.raises(ValueError, match="norm_batch=4 applies to BN only"):
        RunConfig(norm="gn", norm_batch=4).validate()


def test_configs_carry_the_fields_and_keep_old_keys():
    assert RunConfig(norm="bn").key() == RunConfig(norm="bn", norm_batch=32).key()  # = per-worker BN
    full = get_preset("full")
    ghost = experiment_configs("ghost", full, seeds=1)
    # 4 workers x 8 images: norm_batch 32 is the whole global batch (SyncBN), 8 is per-worker BN
    assert sorted((c.kind, c.bn_batch) for c in ghost) == sorted(
        [("BN", nb) for nb in (16, 8, 4, 2)] + [("GN", None), ("SyncBN", 32)])
    assert {c.workers for c in ghost} == {4}
    # one global batch; one lr for the BN runs (only norm_batch changes), GN's own tuned lr for its reference
    assert len({c.global_batch for c in ghost}) == 1 and len({c.lr for c in ghost if c.norm == "bn"}) == 1
    assert {c.base_lr for c in ghost if c.norm == "gn"} == {dict(full.lr_by_norm)["gn"]}
    non = experiment_configs("noniid", get_preset("full"), seeds=1)
    assert sorted({c.classes_per_worker for c in non}) == [1, 2, 10]
    assert {c.kind for c in non} == {"BN", "GN", "SyncBN"}


@pytest.mark.slow  # a smoke sweep of two experiments
def test_smoke_noniid_and_ghost_rows(tmp_path):
    out = str(tmp_path / "o")
    for exp in ("noniid", "ghost"):
        assert main(smoke_args(out, experiment=exp)) == 0
    rows = results_lines(out)
    non = [r for r in rows if r["classes_per_worker"] is not None]
    assert sorted({r["classes_per_worker"] for r in non}) == [1, 10] and len(non) == 6
    ghost = [r for r in rows if r["experiment"] == "ghost"]
    assert sorted(r["bn_batch"] or 0 for r in ghost) == [0, 2, 8, 16]
    for r in rows:
        if r["norm"] == "bn":
            assert 0 <= r["val_error_precise_bn"] <= 100 and 0 <= r["val_error_batch_stats"] <= 100
            # the pool: all 320 training-split images of the sample (more than the run's 128), whole global
            # batches of them
            assert r["precise_bn_images"] == 320 // r["global_batch"] * r["global_batch"] > r["train_size"]
            assert r["precise_bn_all_training_images"]
        else:
            assert "val_error_precise_bn" not in r
    text = open(os.path.join(out, "report.md")).read()
    assert "Non-i.i.d. worker batches" in text and "Ghost BN" in text and "precise BN" in text
