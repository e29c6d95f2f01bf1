"""The harness's models by name (--arch): torchvision's parameter counts, one training step of each arch with BN
and GN, the paper's init and fusions, the shortcut variants, and the presets that name a data set and an arch."""
import dataclasses

import pytest
import torch
import torch.nn.functional as F

import groupnorm.nn as gnn
from groupnorm.experiments import models
from groupnorm.experiments.protocol import RunConfig, experiment_configs, get_preset
from groupnorm.experiments.training import build_run_model
from helpers import SAMPLE_DATA, results_lines, smoke_args


def norm_weight(m):
    return getattr(m, "weight", None)


def n_params(m: torch.nn.Module) -> int:
    return sum(p.numel() for p in m.parameters())


# torchvision's resnet18/34/50/101 (1000 classes); He et al.'s CIFAR ResNets and the 3x3-stem variants (10 classes)
COUNTS = {"resnet18": 11_689_512, "resnet34": 21_797_672, "resnet50": 25_557_032, "resnet101": 44_549_160,
          "resnet20": 269_722, "resnet32": 464_154, "resnet56": 853_018,
          "resnet18_cifar": 11_173_962, "resnet50_cifar": 23_520_842}


@pytest.mark.parametrize("arch", sorted(COUNTS))
def test_parameter_counts(arch):
    m = getattr(models, arch)(norm="bn")
    assert n_params(m) == COUNTS[arch]
    # GN has BN's parameters (a per-channel gamma and beta); only buffers differ
    assert n_params(getattr(models, arch)(norm="gn")) == COUNTS[arch]


def test_resnet50_named_as_the_issue_asks():
    assert n_params(models.resnet50(norm="bn", num_classes=1000)) == 25_557_032
    assert models.resnet50(norm="gn", num_classes=7, in_channels=1).fc.out_features == 7


# (arch, input side): ImageNet archs at 64x64 (the smallest where every stage keeps >= 2x2), CIFAR ones at 32x32
STEP_CASES = [("resnet20", 32), ("resnet32", 32), ("resnet56", 32), ("resnet18_cifar", 32),
              ("resnet50_cifar", 32), ("resnet18", 64), ("resnet34", 64), ("resnet50", 64), ("resnet101", 64)]
SLOW = {"resnet56", "resnet50_cifar", "resnet18_cifar", "resnet34", "resnet101"}


@pytest.mark.parametrize("norm", ["bn", "gn"])
@pytest.mark.parametrize("arch,side", [pytest.param(a, s, marks=[pytest.mark.slow] if a in SLOW else [])
                                       for a, s in STEP_CASES])
def test_one_training_step(arch, side, norm):
    torch.manual_seed(0)
    m = models.build_model(arch, norm, 3, 10, groups=32 if "resnet2" not in arch else 8).train()
    x, y = torch.randn(2, 3, side, side), torch.tensor([1, 7])
    before = {k: v.clone() for k, v in m.state_dict().items()}
    opt = torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9)
    logits = m(x)
    assert logits.shape == (2, 10)
    loss = F.cross_entropy(logits, y)
    loss.backward()
    opt.step()
    assert torch.isfinite(loss)
    after = m.state_dict()
    # every last norm's gamma starts at 0 and moves in the first step; so does the classifier
    for block in m.layers:
        assert torch.all(before[_name(m, norm_weight(block.last_norm))] == 0)
        assert not torch.equal(norm_weight(block.last_norm), torch.zeros_like(norm_weight(block.last_norm)))
    assert not torch.equal(before["fc.weight"], after["fc.weight"])
    assert all(torch.isfinite(v).all() for v in after.values() if v.is_floating_point())


def _name(model, param) -> str:
    return next(n for n, p in model.named_parameters() if p is param)


def test_paper_init_and_fusions():
    m = models.resnet50(norm="gn")
    for block in m.layers:  # GN with ReLU fused after the first norms; the block's end fused with the shortcut
        assert block.last_norm is block.norm3 and block.norm3.activation == "relu"
        assert isinstance(block.norm1, gnn.GroupNorm) and block.norm1.activation == "relu"
        assert torch.all(block.norm1.weight == 1) and torch.all(block.norm3.weight == 0)
    assert isinstance(m.stem[1], gnn.GroupNorm) and m.stem[1].activation == "relu"
    assert isinstance(m.stem[2], torch.nn.MaxPool2d) and m.stem[0].kernel_size == (7, 7)
    bn = models.resnet18(norm="bn")
    assert all(b.norm2.activation == "relu" for b in bn.layers)  # relu(bn(out) + shortcut) in one call
    assert all(torch.all(norm_weight(b.last_norm) == 0) and torch.all(norm_weight(b.norm1) == 1) for b in bn.layers)


def test_bottleneck_strides_like_torchvision_v1_5():
    m = models.resnet50(norm="bn")
    first_of_stage2 = m.layers[3]  # layer2.0
    assert first_of_stage2.conv1.stride == (1, 1) and first_of_stage2.conv2.stride == (2, 2)
    assert first_of_stage2.shortcut[0].stride == (2, 2) and first_of_stage2.conv3.out_channels == 512
    assert m.layers[0].shortcut is not None  # 64 -> 256 channels at stride 1: a projection, as torchvision


def test_option_a_shortcut_is_parameter_free_zero_padding():
    m = models.resnet20(norm="gn", groups=8)
    assert not any(isinstance(mod, torch.nn.Conv2d) and mod.kernel_size == (1, 1) for mod in m.modules())
    block = m.layers[3]  # first block of stage 2: 16 -> 32 channels, stride 2
    assert block.shortcut is None and block.pad_shortcut == (2, 16)
    x = torch.randn(2, 16, 8, 8)
    sc = block._short(x)
    assert sc.shape == (2, 32, 4, 4)
    assert torch.equal(sc[:, :16], x[:, :, ::2, ::2]) and torch.all(sc[:, 16:] == 0)
    assert m.stem[0].stride == (1, 1) and m.fc.in_features == 64


def test_cifar_variants_keep_the_resolution_in_the_first_stage():
    m = models.resnet18_cifar(norm="bn")
    assert m.stem[0].kernel_size == (3, 3) and m.stem[0].stride == (1, 1) and len(m.stem) == 2
    feats = m.layers[:2](m.stem(torch.randn(2, 3, 32, 32)))
    assert feats.shape == (2, 64, 32, 32)


def test_build_model_errors_name_the_bad_value():
    with pytest.raises(ValueError, match="unknown arch 'resnet9'.*resnet50"):
        models.build_model("resnet9", "gn", 3, 10)
    with pytest.raises(ValueError, match="arch 'resnet50' fixes widths"):
        models.build_model("resnet50", "gn", 3, 10, widths=(8, 16))
    with pytest.raises(ValueError, match="arch 'resnet' needs widths, blocks, stem_stride, first_stride"):
        models.build_model("resnet", "gn", 1, 10)
    with pytest.raises(ValueError, match="num_classes=0"):
        models.build_model("resnet20", "gn", 3, 0)
    with pytest.raises(ValueError, match="arch='vgg99'"):
        RunConfig(arch="vgg99").validate()
    with pytest.raises(ValueError, match="widths apply to 'resnet' only"):
        RunConfig(arch="resnet20", widths=(8, 16), blocks=(1, 1, 1)).validate()


def test_default_arch_keeps_the_old_model_and_keys():
    cfg = RunConfig()
    # the key of the default config before --arch existed: old results and checkpoints stay valid
    assert cfg.key() == "581b47531f85f584"
    assert "arch" not in cfg.canonical()
    m = build_run_model(cfg)
    assert isinstance(m, models.ResNet) and len(m.layers) == 3 and m.stem[0].stride == (2, 2)
    named = dataclasses.replace(cfg, arch="resnet20")
    assert named.key() != cfg.key() and "widths" not in named.canonical() and named.canonical()["arch"] == "resnet20"


def test_arch_override_on_a_preset():
    smoke = get_preset("smoke")
    cfgs = experiment_configs("table2", smoke, arch="resnet20")
    assert {c.arch for c in cfgs} == {"resnet20"} and all(c.widths == RunConfig().widths for c in cfgs)
    plain = experiment_configs("table2", smoke)
    assert {c.key() for c in cfgs}.isdisjoint(c.key() for c in plain)
    m = build_run_model(cfgs[0])  # IDX data: 1 channel, 10 classes
    assert n_params(m) == COUNTS["resnet20"] - 16 * 2 * 9  # a 1-channel stem: 2 input channels of 3x3 less


@pytest.mark.parametrize("name,arch,dataset", [("cifar10", "resnet18_cifar", "CIFAR-10"),
                                               ("cifar10-resnet20", "resnet20", "CIFAR-10"),
                                               ("imagenet", "resnet50", "ImageNet")])
def test_gpu_presets_name_data_set_and_arch_and_the_paper_protocol(name, arch, dataset):
    p = get_preset(name)
    assert p.base.arch == arch and p.dataset == dataset and p.needs_data_dir
    cfgs = experiment_configs("table2", p, seeds=1)
    assert {c.batch_per_worker for c in cfgs} == {32, 16, 8, 4, 2} and {c.workers for c in cfgs} == {8}
    assert all(c.epochs == 100 and c.schedule == "step" and c.weight_decay == 1e-4 for c in cfgs)
    assert [c.lr for c in cfgs if c.norm == "bn"] == pytest.approx([0.1, 0.05, 0.025, 0.0125, 0.00625])
    experiment_configs("all", p)  # every run of the preset validates


@pytest.mark.parametrize("name", ["cifar10", "imagenet"])
def test_presets_that_need_a_data_dir_fail_clearly(name, capsys, monkeypatch, tmp_path):
    from groupnorm.cli import main

    monkeypatch.setenv("GROUPNORM_DATA", "/usr/share/datasets/fashion-mnist")  # not a substitute
    assert main(["reproduce", "--preset", name, "--out", str(tmp_path / "o"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert f"preset {name!r}" in err and "--data-dir" in err
    assert not (tmp_path / "o").exists()


@pytest.mark.slow
def test_reproduce_trains_a_named_arch_and_records_it(tmp_path):
    from groupnorm.cli import main

    out = tmp_path / "o"
    assert main(smoke_args(out, "--arch", "resnet20", "--max-runs", "1", "--no-report", experiment="table2")) == 0
    rows = results_lines(out)
    assert len(rows) == 1 and rows[0]["arch"] == "resnet20"
    assert rows[0]["widths"] == [16, 32, 64] and rows[0]["blocks"] == [3, 3, 3]


def test_a_preset_reads_its_own_format(capsys, tmp_path):
    from groupnorm.cli import main

    sample = SAMPLE_DATA  # IDX, not CIFAR-10
    assert main(["reproduce", "--preset", "cifar10", "--experiment", "table2", "--data-dir", sample,
                 "--out", str(tmp_path / "o"), "--no-progress", "--max-runs", "1"]) == 2
    assert "CIFAR file not found" in capsys.readouterr().err
