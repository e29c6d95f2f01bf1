"""The dense tasks (detection, segmentation) in the harness: configs and their keys, the models by registry,
the training loop (per-worker BN in the heads, resume), evaluation, and the smoke presets end to end."""
import dataclasses
import hashlib
import json

import numpy as np
import pytest
import torch

from groupnorm.cli import main
from groupnorm.experiments import store
from groupnorm.experiments.data import load_run_data
from groupnorm.experiments.data.canvases import collate
from groupnorm.experiments.protocol import RunConfig, experiment_configs, get_preset, plan_task, plan_tasks
from groupnorm.experiments.training import build_run_model, train_run
from groupnorm.experiments.training.dense import TASK_METRICS, epoch_order, evaluate_dense
from groupnorm.nn.worker_bn import WorkerBatchNorm
from helpers import SAMPLE_DATA, smoke_args

TINY = dict(groups=4, workers=2, batch_per_worker=2, epochs=2, train_size=8, val_size=4, widths=(8, 16, 32),
            blocks=(1, 1, 1), stem_stride=2, first_stride=2, warmup_epochs=0.5, base_lr=0.2, augment=False)


def test_classification_keys_and_labels_are_unchanged():
    # the keys and labels of every classification preset's runs, as before the dense tasks existed
    cfgs = [c for p in ("smoke", "quick", "full") for c in experiment_configs("all", get_preset(p))]
    digest = lambda xs: hashlib.sha256("".join(xs).encode()).hexdigest()[:16]  # noqa: E731
    assert len(cfgs) == 321
    assert digest(c.key() for c in cfgs) == "c9e1f521b44bb57e"
    assert digest(c.label for c in cfgs) == "6d6f33c9dbc5b78a"
    assert RunConfig().key() == "581b47531f85f584" and "task" not in RunConfig().canonical()


def test_dense_fields_are_in_the_identity_only_when_set():
    base = RunConfig(task="detection", arch="centernet", **TINY)
    assert "head_norm" not in base.canonical() and "masked_stats" not in base.canonical()
    assert base.canonical()["task"] == "detection" and base.canonical()["arch"] == "centernet"
    keys = {base.key(), dataclasses.replace(base, head_norm="bn").key(),
            dataclasses.replace(base, masked_stats=True).key(), dataclasses.replace(base, arch="two_stage").key()}
    assert len(keys) == 4


@pytest.mark.parametrize("over, match", [
    (dict(task="detection"), "arch='resnet' is for the classification task"),
    (dict(task="segmentation", arch="centernet"), "arch='centernet' is for the detection task"),
    (dict(head_norm="bn"), "apply to the tasks detection, segmentation only"),
    (dict(task="detection", arch="centernet", head_norm="ws"), "head_norm='ws' must be one of"),
    (dict(task="detection", arch="centernet", groups=None, group_size=2), "group_size=2"),
])
def test_bad_dense_configs_name_the_field(over, match):
    with pytest.raises(ValueError, match=match):
        RunConfig(**over).validate()


def test_plans_belong_to_their_task():
    with pytest.raises(ValueError, match="experiment 'head' is not one of task 'segmentation'"):
        experiment_configs("head", get_preset("smoke", "segmentation"))
    with pytest.raises(ValueError, match="experiment 'perworker' is not one of task 'classification'"):
        experiment_configs("perworker", get_preset("smoke"))
    with pytest.raises(ValueError, match="task 'detection' has no preset 'imagenet'"):
        get_preset("imagenet", "detection")
    with pytest.raises(ValueError, match=r"preset 'smoke' has no detection protocol.*get_preset\(name, 'detection'\)"):
        experiment_configs("all", get_preset("smoke"), task="detection")
    with pytest.raises(ValueError, match="experiment 'perworker' is of the detection / segmentation task, not "
                                         "task='video'"):
        experiment_configs("perworker", get_preset("smoke", "detection"), task="video")
    with pytest.raises(ValueError, match="unknown task 'bogus'"):
        get_preset("smoke", "bogus")
    assert plan_task("perworker") == "detection" and plan_tasks("masked") == ("detection", "segmentation")
    seg = experiment_configs("perworker", get_preset("smoke", "segmentation"), batches=(4,))
    assert {(c.task, c.batch_per_worker, c.workers) for c in seg} == {("segmentation", 4, 1)}
    with pytest.raises(ValueError, match=r"2 workers x 2 = 4 images; images per worker \[3\] do not divide it"):
        experiment_configs("perworker", get_preset("smoke", "segmentation"), batches=(3,))
    full = experiment_configs("all", get_preset("full", "detection"), seeds=1)
    head = [c for c in full if c.experiment == "head"]
    assert {(c.arch, c.norm, c.head_norm) for c in head} == {("two_stage", "gn", h)
                                                              for h in ("none", "bn", "gn", "syncbn")}
    sync = [c for c in full if c.kind == "SyncBN"]
    assert sync and all(c.norm_batch == c.global_batch and c.head_norm == "syncbn" for c in sync)
    assert {c.kind for c in full if c.experiment == "transfer"} == {"BN-FROZEN", "BN", "SyncBN", "GN"}
    assert {c.epochs for c in full if c.experiment == "scratch"} == {12, 36}
    assert {c.pretrain_epochs for c in full if c.experiment == "transfer"} == {16}
    assert {c.batch_per_worker for c in full if c.experiment == "perworker"} == {1, 4, 16}  # 2: transfer's
    assert {c.global_batch for c in full if c.experiment == "perworker"} == {16}  # workers = 16 / b
    assert all(c.task == "detection" for c in full)
    masked = [c for c in experiment_configs("masked", get_preset("full", "segmentation"), seeds=1)]
    assert [(c.kind, c.masked_stats, c.batch_per_worker) for c in masked] == [("GN", False, 2), ("GN", True, 2)]


@pytest.mark.parametrize("head, workers", [("bn", 2), ("syncbn", 1)])
def test_head_bn_statistics_are_per_worker_or_synchronized(head, workers):
    cfg = RunConfig(task="detection", arch="two_stage", norm="gn", head_norm=head, **TINY)
    model = build_run_model(cfg)
    bns = [m for m in model.box_head.modules() if isinstance(m, WorkerBatchNorm)]
    assert bns and all(m.workers == workers for m in bns)
    assert not any(isinstance(m, WorkerBatchNorm) for m in model.backbone.modules())
    # the heads follow a BN backbone's per-worker statistics when head_norm is not given
    seg = build_run_model(RunConfig(task="segmentation", arch="unet", norm="bn", **TINY))
    assert {m.workers for m in seg.modules() if isinstance(m, WorkerBatchNorm)} == {2}


def test_epoch_order_is_seeded_and_drops_the_rest():
    a, b = epoch_order(10, 4, seed=1, epoch=0), epoch_order(10, 4, seed=1, epoch=0)
    assert a == b and len(a) == 2 and all(len(x) == 4 for x in a) and len(set(sum(a, []))) == 8
    assert a != epoch_order(10, 4, seed=1, epoch=1)
    with pytest.raises(ValueError, match="global batch of 12 canvases is larger than the 10"):
        epoch_order(10, 12, 0, 0)


class _Oracle(torch.nn.Module):
    """detect() returns the ground truth (scores 1) and segment() the semantic mask: the metrics' maxima."""

    num_classes = 10

    def __init__(self, canvases):
        super().__init__()
        self.truth = {c.image.tobytes(): c for c in canvases}

    def detect(self, batch):
        out = []
        for img, (h, w) in zip(batch.images, batch.image_sizes):
            c = next(c for c in self.truth.values() if c.size == (h, w) and torch.allclose(
                collate([c]).images[0, :, :h, :w], img[:, :h, :w]))
            out.append({"boxes": torch.from_numpy(c.boxes).float(), "scores": torch.ones(len(c.boxes)),
                        "labels": torch.from_numpy(c.labels)})
        return out

    def segment(self, batch):
        return batch.semantic


def test_evaluate_dense_gives_the_maximum_on_the_truth():
    cfg = RunConfig(task="detection", arch="centernet", **TINY)
    _, val, _ = load_run_data(SAMPLE_DATA, cfg)
    canvases = list(val)
    oracle = _Oracle(canvases)
    assert evaluate_dense(oracle, "detection", canvases, "cpu") == pytest.approx(
        {"box_ap": 100.0, "box_ap50": 100.0, "box_ap75": 100.0})
    assert evaluate_dense(oracle, "segmentation", canvases, "cpu") == pytest.approx({"miou": 100.0})
    assert evaluate_dense(oracle, "detection", canvases, "cpu", batch=3)["box_ap"] == pytest.approx(100.0)
    with pytest.raises(ValueError, match="batch=0 must be a positive integer"):
        evaluate_dense(oracle, "detection", canvases, "cpu", batch=0)


def test_a_resumed_run_equals_an_uninterrupted_one(tmp_path, monkeypatch):
    torch.set_num_threads(1)
    cfg = RunConfig(task="segmentation", arch="unet", norm="bn", **TINY)
    train, val, _ = load_run_data(SAMPLE_DATA, cfg)
    whole = train_run(cfg, train, val, str(tmp_path / "a"), progress=False)
    save = store.save_checkpoint

    def save_then_stop(path, state):
        save(path, state)
        raise KeyboardInterrupt

    monkeypatch.setattr(store, "save_checkpoint", save_then_stop)
    with pytest.raises(KeyboardInterrupt):
        train_run(cfg, train, val, str(tmp_path / "b"), progress=False)
    monkeypatch.setattr(store, "save_checkpoint", save)
    resumed = train_run(cfg, train, val, str(tmp_path / "b"), progress=False)
    assert resumed["miou_curve"] == whole["miou_curve"] and resumed["train_loss"] == whole["train_loss"]
    assert whole["task"] == "segmentation" and 0 <= whole["miou"] <= 100 and len(whole["miou_curve"]) == 2
    assert np.isfinite(whole["train_loss"]) and whole["epochs_done"] == 2


@pytest.mark.slow
@pytest.mark.parametrize("task", ["detection", "segmentation"])
def test_smoke_preset_end_to_end(tmp_path, task):
    out = tmp_path / task
    assert main(smoke_args(out, "--task", task)) == 0
    rows = store.read_results(str(out))
    cfgs = experiment_configs("all", get_preset("smoke", task))
    assert sorted(r["config_key"] for r in rows) == sorted(c.key() for c in cfgs) and len(rows) == 4
    for r in rows:
        assert r["task"] == task and r["experiment"] == "perworker" and r["epochs_done"] == 2
        assert all(0.0 <= r[m] <= 100.0 for m in TASK_METRICS[task])
        assert json.dumps(r)  # JSON-clean
    report = (out / "report.md").read_text()
    title = {"detection": "## Detection", "segmentation": "## Semantic segmentation"}[task]
    assert title in report and "GN − BN at b=1" in report and "not testable here" in report
    assert "## Table 2" not in report  # no classification section without classification rows
    assert main(smoke_args(out, "--task", task)) == 0  # nothing left to train: the same rows
    assert len(store.read_results(str(out))) == 4


@pytest.mark.slow
def test_smoke_lrsweep_end_to_end(tmp_path):
    out = tmp_path / "sweep"
    assert main(smoke_args(out, "--task", "segmentation", experiment="dense-lrsweep")) == 0
    rows = store.read_results(str(out))
    p = get_preset("smoke", "segmentation")
    assert sorted((r["norm"], r["base_lr"]) for r in rows) == sorted((n, lr) for n in ("bn", "gn")
                                                                      for lr in p.dense_lrsweep_lrs)
    assert all(r["holdout"] and r["experiment"] == "dense-lrsweep" and 0 <= r["miou"] <= 100 for r in rows)
    assert all((r["train_size"], r["val_size"]) == (p.base.train_size, p.base.val_size) for r in rows)
    report = (out / "report.md").read_text()
    assert "Learning-rate sweep (`dense-lrsweep`" in report and "| claim" not in report


def test_dense_tasks_refuse_torchrun(tmp_path, capsys):
    assert main(smoke_args(tmp_path, "--task", "detection", "--launcher", "torchrun")) == 2
    assert "--task detection emulates its workers in one process" in capsys.readouterr().err
    assert not (tmp_path / "results.jsonl").exists()


def test_a_pretrained_bn_star_backbone_keeps_the_classifiers_statistics(tmp_path):
    from groupnorm.experiments.protocol.presets import pretrain_config

    torch.set_num_threads(1)
    cfg = RunConfig(task="detection", arch="centernet", norm="bn-frozen", pretrain_epochs=1, **TINY)
    train, val, _ = load_run_data(SAMPLE_DATA, cfg)
    row = train_run(cfg, train, val, str(tmp_path), progress=False)
    pre = pretrain_config(cfg)
    assert pre.task == "classification" and pre.norm == "bn" and pre.epochs == 1 and pre.widths == cfg.widths
    rows = {r["config_key"]: r for r in store.read_results(str(tmp_path))}
    assert set(rows) == {pre.key(), cfg.key()} and rows[pre.key()]["experiment"] == "pretrain"
    assert row["pretrain_epochs"] == 1 and row["task"] == "detection"
    load = lambda key: torch.load(str(tmp_path / "runs" / key / "model.pt"), weights_only=True)  # noqa: E731
    clf, det = load(pre.key()), load(cfg.key())
    stats = [k for k in clf if k.endswith(("running_mean", "running_var")) and not k.startswith("fc.")]
    assert stats and all(torch.equal(det["backbone." + k], clf[k]) for k in stats)  # BN*: frozen
    assert any(not torch.equal(clf[k], torch.zeros_like(clf[k])) for k in stats if k.endswith("running_mean"))
    with pytest.raises(ValueError, match="pretrain_epochs=1 apply to the tasks"):
        dataclasses.replace(pre, pretrain_epochs=1).validate()


def _bn_head_model():
    cfg = RunConfig(task="detection", arch="two_stage", norm="gn", head_norm="bn", **TINY)
    model = build_run_model(cfg)
    g = torch.Generator().manual_seed(5)
    for m in model.box_head.modules():  # running statistics far from any batch's
        if isinstance(m, WorkerBatchNorm):
            m.running_mean.copy_(torch.randn(m.num_features, generator=g) * 3)
            m.running_var.copy_(torch.rand(m.num_features, generator=g) * 5 + 0.1)
            m.weight.data.copy_(torch.rand(m.num_features, generator=g) + 0.5)
            m.bias.data.copy_(torch.randn(m.num_features, generator=g) * 0.1)
    return cfg, model


def test_head_batch_stats_normalizes_the_heads_with_their_input_statistics():
    from groupnorm.experiments.training.dense import head_batch_stats

    torch.manual_seed(0)
    cfg, model = _bn_head_model()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    bs = head_batch_stats(model)
    model.eval()
    bs.eval()
    x = torch.randn(6, 64, 7, 7)
    bn = bs.box_head.convs[1]
    w, b = bn.weight.detach().double(), bn.bias.detach().double()
    xd = x.double()
    mean, var = xd.mean((0, 2, 3), keepdim=True), xd.var((0, 2, 3), unbiased=False, keepdim=True)
    want = ((xd - mean) / torch.sqrt(var + bn.eps) * w.view(1, -1, 1, 1) + b.view(1, -1, 1, 1)).clamp(min=0)
    torch.testing.assert_close(bn(x).double(), want, rtol=1e-5, atol=1e-5)  # the float64 formula
    assert not torch.allclose(model.box_head.convs[1](x), bn(x), atol=1e-2)  # the run's: running statistics
    # the rest is the run's: the same backbone output; the heads' logits differ
    batch = collate(list(load_run_data(SAMPLE_DATA, cfg)[1])[:2])
    with torch.no_grad():
        torch.testing.assert_close(bs.backbone(batch.images), model.backbone(batch.images))
        feats = model.rpn(batch.images, batch.pad_mask)["features"]
        rois = model._pool(feats, [torch.tensor([[4.0, 4.0, 40.0, 40.0], [10.0, 20.0, 60.0, 50.0]])] * 2)
        assert not torch.allclose(model.box_head(rois)[0], bs.box_head(rois)[0], atol=1e-3)
        run, ctl = model.detect(batch), bs.detect(batch)  # eval mode: running vs batch statistics in the head
        assert [len(d["scores"]) for d in run] != [len(d["scores"]) for d in ctl] or not all(
            torch.allclose(a["scores"], c["scores"]) for a, c in zip(run, ctl))
    after = model.state_dict()
    assert after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before)  # no leak
    assert "box_head.convs.1.running_mean" not in bs.state_dict()
    with pytest.raises(ValueError, match="heads have no BatchNorm"):
        head_batch_stats(build_run_model(RunConfig(task="detection", arch="two_stage", norm="gn", **TINY)))


def test_a_bn_head_run_records_box_ap_with_batch_statistics(tmp_path):
    torch.set_num_threads(1)
    rows = {}
    for head in ("bn", "gn"):
        cfg = RunConfig(task="detection", arch="two_stage", norm="gn", head_norm=head, **dict(TINY, epochs=1))
        train, val, _ = load_run_data(SAMPLE_DATA, cfg)
        rows[head] = train_run(cfg, train, val, str(tmp_path / head), progress=False)
    assert 0.0 <= rows["bn"]["box_ap_batchstats"] <= 100.0 and "box_ap_batchstats" not in rows["gn"]
    # the number is the evaluation of the saved weights with the heads' batch statistics, one worker's b per batch
    from groupnorm.experiments.training.dense import head_batch_stats

    cfg = RunConfig(task="detection", arch="two_stage", norm="gn", head_norm="bn", **dict(TINY, epochs=1))
    model = build_run_model(cfg)
    model.load_state_dict(torch.load(str(tmp_path / "bn" / "runs" / cfg.key() / "model.pt"), weights_only=True))
    val = list(load_run_data(SAMPLE_DATA, cfg)[1])
    assert evaluate_dense(head_batch_stats(model), "detection", val, "cpu", batch=2)["box_ap"] == pytest.approx(
        rows["bn"]["box_ap_batchstats"])
    assert evaluate_dense(model, "detection", val, "cpu")["box_ap"] == pytest.approx(rows["bn"]["box_ap"])


def test_mask_head_runs_record_mask_ap():
    torch.set_num_threads(1)
    cfg = RunConfig(task="detection", arch="two_stage", norm="gn", masks=True, **dict(TINY, epochs=1))
    assert cfg.key() != dataclasses.replace(cfg, masks=False).key() and cfg.label.endswith(" masks")
    assert "masks" not in dataclasses.replace(cfg, masks=False).canonical()  # old keys hold
    with pytest.raises(ValueError, match="masks=True: the mask head is the two-stage detector's"):
        dataclasses.replace(cfg, arch="centernet").validate()
    assert build_run_model(cfg).mask_head is not None
    assert build_run_model(dataclasses.replace(cfg, masks=False)).mask_head is None
    # the evaluation's mask AP is 100 for the true masks, and the row carries it
    _, val, _ = load_run_data(SAMPLE_DATA, cfg)
    canvases = list(val)

    class Masks(_Oracle):
        def detect(self, batch):
            out = super().detect(batch)
            for d, (h, w) in zip(out, batch.image_sizes):
                c = next(c for c in self.truth.values() if len(c.boxes) == len(d["boxes"]) and c.size == (h, w)
                         and np.array_equal(c.boxes, d["boxes"].numpy()))
                d["masks"] = torch.from_numpy(c.masks).float()
            return out

    assert evaluate_dense(Masks(canvases), "detection", canvases, "cpu")["mask_ap"] == pytest.approx(100.0)
    assert "mask_ap" not in evaluate_dense(_Oracle(canvases), "detection", canvases, "cpu")


def test_a_mask_head_run_row(tmp_path):
    torch.set_num_threads(1)
    cfg = RunConfig(task="detection", arch="two_stage", norm="gn", masks=True, **dict(TINY, epochs=1))
    train, val, _ = load_run_data(SAMPLE_DATA, cfg)
    row = train_run(cfg, train, val, str(tmp_path), progress=False)
    assert row["masks"] is True and 0.0 <= row["mask_ap"] <= 100.0 and 0.0 <= row["box_ap"] <= 100.0
    hist = store.read_jsonl(str(tmp_path / "runs" / cfg.key() / "metrics.jsonl"))
    assert [h["mask_ap"] for h in hist] == [row["mask_ap"]]
