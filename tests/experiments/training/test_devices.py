"""--device / --amp: resolution and backends, a bf16 autocast step on CPU, device/amp/throughput in the rows and
the progress bar, and a run's identity unaffected by the device and the AMP mode. (The CUDA path is the same
code with another device value; it cannot run on this machine.)"""
import dataclasses
import json
import os

import pytest
import torch

from groupnorm.cli import main
from groupnorm.experiments.training import devices
from groupnorm.experiments.protocol import get_preset
from groupnorm.experiments.data import load_data
from groupnorm.experiments.training import build_run_model, train_run
from helpers import SAMPLE_DATA, results_lines

TINY = dataclasses.replace(get_preset("smoke").base, epochs=1, train_size=32, val_size=16, batch_per_worker=4)


def test_resolve_device_and_backend():
    assert devices.resolve_device("cpu") == torch.device("cpu")
    assert devices.resolve_device("auto").type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(ValueError, match="device='gpu'"):
        devices.resolve_device("gpu")
    if not torch.cuda.is_available():
        with pytest.raises(RuntimeError, match="device='cuda' but torch.cuda.is_available"):
            devices.resolve_device("cuda", local_rank=0)
    assert devices.backend_for(torch.device("cpu")) == "gloo"
    assert devices.backend_for(torch.device("cuda", 3)) == "nccl"
    with pytest.raises(ValueError, match="amp='fp16'"):
        devices.check_amp("fp16")


@pytest.mark.slow
@pytest.mark.parametrize("norm", ["gn", "bn"])
def test_bf16_autocast_on_cpu_runs_convolutions_in_bfloat16(norm):
    model = build_run_model(dataclasses.replace(TINY, norm=norm))  # bn: 2 emulated workers (WorkerBatchNorm)
    seen = []
    model.stem[0].register_forward_hook(lambda m, i, o: seen.append(o.dtype))
    x = torch.randn(8, 1, 28, 28)
    with devices.autocast(torch.device("cpu"), "bf16"):
        logits = model(x)
        loss = torch.nn.functional.cross_entropy(logits, torch.arange(8) % 10)
    loss.backward()
    assert seen == [torch.bfloat16] and loss.dtype == torch.float32 and torch.isfinite(loss)
    assert all(p.grad is not None and p.grad.dtype == torch.float32 for p in model.parameters() if p.requires_grad)
    with devices.autocast(torch.device("cpu"), "none"):
        model(x)
    assert seen[-1] == torch.float32


@pytest.mark.slow
def test_rows_carry_device_amp_and_throughput_and_identity_ignores_them(tmp_path, capsys):
    out = str(tmp_path / "out")
    base = ["reproduce", "--preset", "smoke", "--experiment", "table1", "--data-dir", SAMPLE_DATA, "--jobs", "1",
            "--no-report", "--out", out, "--max-runs", "1"]
    assert main(base + ["--device", "cpu", "--amp", "bf16"]) == 0
    err = capsys.readouterr().err
    assert "device=cpu, amp=bf16" in err and "img/s" in err and "img_s=" in err  # throughput in the bars
    rows = results_lines(out)
    assert len(rows) == 1
    r = rows[0]
    assert r["device"] == "cpu" and r["amp"] == "bf16" and r["device_name"] and r["images_per_s"] > 0
    metrics = [json.loads(line) for line in open(os.path.join(out, "runs", r["config_key"], "metrics.jsonl"))]
    assert all(m["images_per_s"] > 0 for m in metrics)
    # the same run with other execution settings is the same run: found finished, not trained again (the
    # sweep trains table1's other run)
    assert main(base + ["--device", "auto", "--amp", "none", "--no-progress"]) == 0
    assert "2 runs, 1 already finished, 1 to train" in capsys.readouterr().err
    keys = [r["config_key"] for r in results_lines(out)]
    assert len(keys) == 2 and keys[0] == r["config_key"] != keys[1]


@pytest.mark.slow
def test_train_run_on_a_device_value_matches_the_default(tmp_path):
    """The device is a value passed through: torch.device('cpu') gives the numbers of the default."""
    cfg = dataclasses.replace(TINY, norm="bn")
    train, val = load_data(SAMPLE_DATA, cfg.train_size, cfg.val_size)
    a = train_run(cfg, train, val, str(tmp_path / "a"), progress=False)
    b = train_run(cfg, train, val, str(tmp_path / "b"), progress=False, device=torch.device("cpu"))
    for k in ("train_loss", "val_loss", "val_error", "val_error_precise_bn", "val_error_batch_stats"):
        assert a[k] == b[k], k
    assert a["config_key"] == b["config_key"] and a["amp"] == "none"


def test_small_cpu_batches_convolve_without_onednn_and_the_setting_is_restored():
    """conv_context turns oneDNN off for CPU calls of at most SMALL_CONV_BATCH images and only there, restores
    the previous setting (also after an error), and the two backends give the same convolution."""
    cpu, small = torch.device("cpu"), devices.SMALL_CONV_BATCH
    assert devices.conv_backend(cpu, small) == "native" and devices.conv_backend(cpu, small + 1) == "default"
    assert devices.conv_backend(torch.device("cuda", 0), 1) == "default"
    was = torch.backends.mkldnn.enabled
    seen = []
    with devices.conv_context(cpu, small + 1):
        seen.append(torch.backends.mkldnn.enabled)
    with pytest.raises(KeyError):
        with devices.conv_context(cpu, small):
            seen.append(torch.backends.mkldnn.enabled)
            raise KeyError("inside")
    assert seen == [was, False] and torch.backends.mkldnn.enabled == was
    conv = torch.nn.Conv2d(8, 16, 3, padding=1).to(memory_format=torch.channels_last)
    x = torch.randn(2, 8, 9, 9).to(memory_format=torch.channels_last)
    with devices.conv_context(cpu, 2):
        native = conv(x)
    torch.testing.assert_close(native, conv(x), rtol=1e-5, atol=1e-5)


@pytest.mark.slow
def test_rows_record_the_convolution_backend(tmp_path):
    for b, want in ((2, "native"), (8, "default")):
        cfg = dataclasses.replace(TINY, norm="gn", batch_per_worker=b, workers=1)
        train, val = load_data(SAMPLE_DATA, cfg.train_size, cfg.val_size)
        assert train_run(cfg, train, val, str(tmp_path / str(b)), progress=False)["conv_backend"] == want
