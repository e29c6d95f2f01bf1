"""``groupnorm info`` and groupnorm.info: the versions, the kernels' view of the CPU, and the path a call takes,
checked against what the library itself reports and against the dispatch."""
import json
import platform
import sys
import types

import pytest
import torch

import groupnorm
from groupnorm import cli, info, kernels
from groupnorm.hostinfo import cpu_model
from groupnorm.kernels import _lib

needs_kernels = pytest.mark.skipif(not kernels.is_available(), reason=f"kernels not built: {kernels.load_error()}")


def _spec(shape="2,8,4,4", dtype="fp32", layout="contiguous", device="cpu", groups=2):
    return info.parse_input(shape, dtype, layout, device, groups)


def test_collect_reports_versions_and_cpu():
    got = info.collect()
    assert got["versions"]["groupnorm"] == groupnorm.__version__
    assert got["versions"]["torch"] == torch.__version__
    assert got["versions"]["python"] == platform.python_version()
    assert got["cpu"]["model"] == cpu_model()
    assert got["cuda"]["available"] == torch.cuda.is_available()
    json.dumps(got)  # a bug report can carry it as JSON


@needs_kernels
def test_collect_reports_the_kernels_isa_and_cache_sizes():
    k = info.collect()["cpu_kernels"]
    assert k["loaded"] is True
    assert k["isa_level"] == kernels.isa() and k["isa"] == kernels.ISA_NAMES[kernels.isa()]
    assert tuple(k["cache_bytes"].values()) == _lib.cache_sizes()
    assert k["origin"] == _lib.library_origin() and k["origin"].startswith(("installed with", "built on first use"))
    text = info.format_text(info.collect())
    assert f"level {kernels.isa()}" in text and "CPU kernels: loaded" in text


@needs_kernels
@pytest.mark.parametrize("dtype, layout", [("fp32", "contiguous"), ("bf16", "channels_last"), ("fp64", "contiguous"),
                                           ("fp16", "channels_last")])
def test_cpu_input_takes_the_kernels(dtype, layout, monkeypatch):
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    call = info.call_path(_spec(dtype=dtype, layout=layout))
    assert call["path"] == info.PATH_KERNELS, call
    level = kernels.isa() if dtype == "bf16" or kernels.isa() < 3 else 2
    assert kernels.ISA_NAMES[level] in call["why"]


@needs_kernels
def test_agrees_with_the_dispatch(monkeypatch):
    """What info says for an input is what kernels.kernel_takes says for that tensor, with the switch on and off."""
    x = torch.randn(2, 8, 4, 4).to(memory_format=torch.channels_last)
    w, b = torch.ones(8), torch.zeros(8)
    for off in ("0", "1"):
        monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", off)
        call = info.call_path(_spec(layout="channels_last"))
        assert (call["path"] == info.PATH_KERNELS) == kernels.kernel_takes(x, w, b) == (off == "0")


def test_kernels_switched_off(monkeypatch):
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    call = info.call_path(_spec())
    assert call["path"] == info.PATH_PLAIN and "GROUPNORM_DISABLE_KERNELS" in call["why"]
    assert "GROUPNORM_DISABLE_KERNELS is set" in info.format_text(info.collect())


def test_kernels_not_loaded_gives_the_reason_and_the_command(monkeypatch):
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    monkeypatch.setattr(kernels, "is_available", lambda: False)
    monkeypatch.setattr(kernels, "load_error", lambda: "the package was installed without the compiled library")
    call = info.call_path(_spec())
    assert call["path"] == info.PATH_PLAIN and "installed without the compiled library" in call["why"]
    text = info.format_text(info.collect())
    assert "CPU kernels: not loaded: the package was installed without" in text
    assert "build them: groupnorm build-kernels" in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the report where there is no CUDA device")
def test_cuda_input_without_a_device_says_so_and_takes_plain_without_triton(monkeypatch):
    monkeypatch.setitem(sys.modules, "groupnorm.kernels.triton", None)  # no Triton path: `import` raises
    call = info.call_path(_spec(device="cuda"))
    assert call["path"] == info.PATH_PLAIN
    assert "Triton path is not in this version" in call["why"]
    assert call["note"].startswith("no CUDA device here")
    text = info.format_text(info.collect(_spec(device="cuda")))
    assert "on cuda, 2 groups: plain PyTorch" in text and "note: no CUDA device here" in text


def _fake_triton(takes: bool, available: bool = True):
    mod = types.ModuleType("groupnorm.kernels.triton")
    mod.DTYPES = (torch.float32, torch.bfloat16, torch.float16)
    mod.is_available = lambda: available
    mod.load_error = lambda: None if available else "ModuleNotFoundError: No module named 'triton'"
    mod.seen = []

    def _takes(x, weight=None, bias=None, residual=None):
        mod.seen.append((x.device.type, x.dtype, tuple(x.shape), weight.dtype))
        return takes and x.device.type == "cuda" and x.dtype in mod.DTYPES
    mod.takes = _takes
    return mod


@pytest.mark.parametrize("installed", [True, False])
def test_cuda_input_reported_as_triton_path_or_plain(monkeypatch, installed):
    """With a Triton path that takes CUDA tensors, a CUDA input is reported as taking it (decided on tensors
    without storage when there is no device); with Triton absent, as plain, with the reason."""
    fake = _fake_triton(takes=True, available=installed)
    monkeypatch.setitem(sys.modules, "groupnorm.kernels.triton", fake)
    monkeypatch.setattr(info, "_version", lambda dist: "3.6.0" if installed and dist == "triton" else None)
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    call = info.call_path(_spec(shape="8,256,56,56", dtype="bf16", layout="channels_last", device="cuda", groups=32))
    if installed:
        assert call["path"] == info.PATH_TRITON, call
        assert fake.seen == [("cuda", torch.bfloat16, (8, 256, 56, 56), torch.bfloat16)]
        fp64 = info.call_path(_spec(dtype="fp64", device="cuda"))
        assert fp64["path"] == info.PATH_PLAIN and "do not cover fp64" in fp64["why"]
    else:
        assert call["path"] == info.PATH_PLAIN and call["why"] == "Triton is not installed"
        assert not fake.seen
    monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    assert info.call_path(_spec(device="cuda"))["path"] == info.PATH_PLAIN


def test_cli_info_text_and_json(capsys):
    assert cli.main(["info", "--input", "2,8,4,4", "--groups", "4", "--dtype", "bf16", "--layout", "channels_last"]) == 0
    out = capsys.readouterr().out
    assert f"torch {torch.__version__}" in out and f"CPU: {cpu_model()}" in out
    assert "group_norm on (2, 8, 4, 4) bf16 channels_last on cpu, 4 groups: " in out
    assert cli.main(["info", "--json", "--input", "1,64,3,3"]) == 0
    got = json.loads(capsys.readouterr().out)
    assert got["call"]["input"]["groups"] == 32 and got["call"]["path"] in (info.PATH_KERNELS, info.PATH_PLAIN)


@pytest.mark.parametrize("args, bad", [(["--input", "2,q,4"], "'2,q,4'"), (["--input", "2,8,4", "--dtype", "int8"], "'int8'"),
                                       (["--input", "2,8,4", "--layout", "nhwc"], "'nhwc'"),
                                       (["--input", "2,8,4", "--device", "gpu0"], "'gpu0'"),
                                       (["--input", "2,8,4", "--groups", "3"], "num_groups=3")])
def test_cli_info_bad_input_is_one_line_naming_it(args, bad, capsys):
    assert cli.main(["info", *args]) == 2
    err = capsys.readouterr().err
    assert err.startswith("groupnorm info: error: ") and bad in err and err.count("\n") == 1
