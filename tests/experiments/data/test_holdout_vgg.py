"""The held-out split (lr sweep), the VGG of Figure 3 and its percentiles, and smoke runs of lrsweep, vgg, control."""
import os

import numpy as np
import pytest
import torch

from groupnorm.cli import main
from groupnorm.experiments.data import loading
from groupnorm.experiments.data import load_split
from groupnorm.experiments.data.holdout import holdout_split, make_holdout
from groupnorm.experiments.models.vgg import VGG, response_percentiles
from helpers import SAMPLE_DATA, results_lines, smoke_args


def _keys(split):
    return {bytes(x.numpy().tobytes()) for x in split.images}


def test_holdout_split_is_disjoint_seeded_and_checks_its_size():
    train = load_split(SAMPLE_DATA, "train")
    rest, held = holdout_split(train, 100, seed=3)
    assert len(rest) + len(held) == len(train) and len(held) == 100
    assert not (_keys(rest) & _keys(held))
    again, held2 = holdout_split(train, 100, seed=3)
    assert torch.equal(held.images, held2.images) and torch.equal(held.labels, held2.labels)
    assert not torch.equal(holdout_split(train, 100, seed=4)[1].images, held.images)
    assert len(holdout_split(train)[1]) == len(train) // 2  # the default on a split smaller than 20,000
    for bad in (0, len(train), -1, 2.5, True):
        with pytest.raises(ValueError, match=f"holdout={bad!r} must be an integer from 1 to {len(train) - 1}"):
            holdout_split(train, bad)


def test_make_holdout_writes_the_same_split_as_an_mnist_directory(tmp_path):
    n_rest, n_held = make_holdout(SAMPLE_DATA, str(tmp_path), holdout=64, seed=0)
    rest, held = holdout_split(load_split(SAMPLE_DATA, "train"), 64, seed=0)
    assert (n_rest, n_held) == (len(rest), len(held))
    got = load_split(str(tmp_path), "test")
    assert torch.equal(got.images, held.images) and torch.equal(got.labels, held.labels)
    assert torch.equal(load_split(str(tmp_path), "train").images, rest.images)


def test_load_data_with_holdout_never_touches_the_test_split():
    loading._cache.clear()
    train, val = loading.load_data(SAMPLE_DATA, 100, 50, holdout=True)
    test = load_split(SAMPLE_DATA, "test")
    all_train = load_split(SAMPLE_DATA, "train")
    assert not (_keys(val) & _keys(test)) and _keys(val) <= _keys(all_train)
    assert not (_keys(train) & _keys(val))
    plain_train, plain_val = loading.load_data(SAMPLE_DATA, 100, 50)
    assert _keys(plain_val) <= _keys(test)


def test_response_percentiles_match_numpy():
    y = torch.randn(4, 3, 5, 5, generator=torch.Generator().manual_seed(0))
    np.testing.assert_allclose(response_percentiles(y), np.percentile(y.numpy().astype(np.float64),
                                                                      [1, 20, 80, 99]), rtol=1e-12)


@pytest.mark.parametrize("norm", ["none", "bn", "gn"])
def test_vgg_shapes_and_probe_is_the_last_conv(norm):
    m = VGG(norm, widths=(8, 16), blocks=(1, 2), groups=4)
    assert m(torch.randn(3, 1, 28, 28)).shape == (3, 10)
    convs = [x for x in m.modules() if isinstance(x, torch.nn.Conv2d)]
    assert m.probe is convs[-1] and len(convs) == 3 and (convs[0].bias is not None) == (norm == "none")
    with pytest.raises(ValueError, match="widths=\\(8,\\) and blocks=\\(1, 1\\)"):
        VGG(norm, widths=(8,), blocks=(1, 1))


def test_smoke_lrsweep_vgg_control_rows(tmp_path):
    out = str(tmp_path / "o")
    for exp in ("lrsweep", "vgg", "control"):
        assert main(smoke_args(out, experiment=exp)) == 0
    rows = results_lines(out)
    sweep = [r for r in rows if r["experiment"] == "lrsweep"]
    assert len(sweep) == 4 and all(r["holdout"] for r in sweep)
    assert sorted({r["base_lr"] for r in sweep}) == [0.1, 0.4]
    vgg = [r for r in rows if r["arch"] == "vgg"]
    assert sorted(r["norm"] for r in vgg) == ["bn", "gn", "none"]
    for r in vgg:
        fp = r["feature_percentiles"]
        assert len(fp) >= 2 and all(len(p) == 5 and p[1] <= p[2] <= p[3] <= p[4] for p in fp)
        assert [p[0] for p in fp] == sorted(p[0] for p in fp)
    control = [r for r in rows if r["experiment"] == "control"]
    assert sorted((r["batch_per_worker"], r["epochs"]) for r in control) == [(2, 4), (8, 4)]
    for r in rows:
        assert len(r["val_error_curve"]) == r["epochs"] and r["val_error_curve"][-1] == r["val_error"]
    text = open(os.path.join(out, "report.md")).read()
    assert "## Learning-rate sweep" in text and "## Figure 3" in text and "## Convergence check" in text
    assert os.path.getsize(os.path.join(out, "fig3_vgg.png")) > 5000
