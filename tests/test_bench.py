"""``groupnorm bench`` end to end on tiny cases: table, JSON (written atomically per case, resumable, with the
run's commit, CPU, load and times), the --small and --plain sections, argument errors."""
import json

import pytest

from groupnorm import cli, kernels
from groupnorm.bench import naive_group_norm, parse_shapes

from helpers import needs_kernels

pytestmark = needs_kernels


def test_bench_writes_table_and_json(tmp_path, capsys):
    out = tmp_path / "bench.json"
    argv = ["bench", "--shapes", "2,8,5,5;1,16,3,3,3", "--groups", "4", "--dtypes", "fp32,bf16", "--repeats", "2",
            "--warmup", "0", "--no-compile", "--threads", "1", "--json", str(out)]
    assert cli.main(argv) == 0
    text = capsys.readouterr().out
    assert "| (2, 8, 5, 5) 4 | float32 | contiguous |" in text and "channels_last" in text
    doc = json.loads(out.read_text())
    assert len(doc["cases"]) == 8  # 2 shapes x 2 dtypes x 2 layouts
    case = doc["cases"][0]
    for key in ("copy", "ours_fwd", "torch_fwd", "ours_silu", "torch_silu", "naive_fwd", "ours_fb", "torch_fb",
                "ours_res", "torch_res"):
        assert case["ms"][key] > 0
    assert case["speedup"]["fwd"] == pytest.approx(case["ms"]["torch_fwd"] / case["ms"]["ours_fwd"])
    assert case["speedup"]["res_relu_vs_eager"] == pytest.approx(case["ms"]["torch_res"] / case["ms"]["ours_res"])
    _check_meta(doc["meta"], threads=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bench.json"]  # written atomically: no temporary left
    # --resume skips every case already measured
    assert cli.main(argv + ["--resume"]) == 0
    assert len(json.loads(out.read_text())["cases"]) == 8


def _check_meta(meta, threads):
    """The JSON's record of the run: the code (commit), the machine, the software, the times."""
    import subprocess
    from pathlib import Path

    import torch

    import groupnorm.bench
    from groupnorm.hostinfo import cpu_model

    assert meta["format"] == groupnorm.bench.JSON_FORMAT
    assert meta["cpu"] == cpu_model() and meta["torch"] == torch.__version__ and meta["threads"] == threads
    assert meta["load_average_start"] and meta["load_average_end"]
    assert meta["started_utc"].endswith("Z") and meta["finished_utc"] >= meta["started_utc"]
    src = Path(groupnorm.bench.__file__).resolve().parent
    head = subprocess.run(["git", "-C", str(src), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:
        assert meta["commit"] == head.stdout.strip() and isinstance(meta["dirty"], bool)
    else:
        assert meta["commit"] is None


@pytest.mark.parametrize("args, msg", [
    (["--shapes", "8,30,4,4", "--groups", "32"], "--groups=32 does not divide num_channels=30"),
    (["--shapes", "8,a,4"], "bad shape"),
    (["--dtypes", "int8"], "unknown dtype 'int8'"),
    (["--layouts", "nhwc"], "unknown layout 'nhwc'"),
])
def test_bench_bad_arguments(args, msg, capsys):
    assert cli.main(["bench", "--no-compile", *args]) == 2
    assert msg in capsys.readouterr().err


def test_naive_composite_and_shape_parser():
    import torch

    x = torch.randn(2, 8, 3, 3, dtype=torch.float64)
    w, b = torch.rand(8, dtype=torch.float64), torch.rand(8, dtype=torch.float64)
    # the seed's composite uses the unbiased variance: same as F.group_norm up to that factor
    m = 4 * 9
    ref = torch.nn.functional.group_norm(x, 2, w, b, eps=0.0) * (((m - 1) / m) ** 0.5)
    ref = ref + b.reshape(1, 8, 1, 1) * (1 - ((m - 1) / m) ** 0.5)
    torch.testing.assert_close(naive_group_norm(x, 2, w, b, eps=0.0), ref)
    assert parse_shapes("8,256,56,56; 1x320x64x64") == [(8, 256, 56, 56), (1, 320, 64, 64)]


def test_bench_e2e_both_memory_formats(tmp_path, capsys):
    out = tmp_path / "e2e.json"
    assert cli.main(["bench", "--e2e-only", "--repeats", "1", "--warmup", "0", "--threads", "1",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "contiguous:" in text and "channels_last:" in text and "fastest of each" in text
    e = json.loads(out.read_text())["e2e"]
    ms = e["ms"]
    assert set(ms) == {"kernels", "plain", "kernels_cl", "plain_cl"} and min(ms.values()) > 0
    assert e["speedup"] == pytest.approx(ms["plain"] / ms["kernels"])
    assert e["speedup_channels_last"] == pytest.approx(ms["plain_cl"] / ms["kernels_cl"])
    assert e["speedup_best"] == pytest.approx(min(ms["plain"], ms["plain_cl"]) / min(ms["kernels"], ms["kernels_cl"]))
    for k in ("kernels", "plain"):
        assert e["best"][k] == ("channels_last" if ms[k + "_cl"] < ms[k] else "contiguous")


def test_bench_small_grid_has_the_issues_eight_cases(tmp_path, capsys):
    from groupnorm.bench_small import SMALL_SHAPES

    out = tmp_path / "small.json"
    assert cli.main(["bench", "--small", "--repeats", "1", "--warmup", "0", "--inner", "2", "--threads", "1",
                     "--json", str(out)]) == 0
    text = capsys.readouterr().out
    assert "| (1, 64, 8, 8) 32 | channels_last |" in text
    doc = json.loads(out.read_text())
    assert doc["cases"] == [] and doc["plain"] == []  # --small replaces the default grid
    small = doc["small"]
    assert SMALL_SHAPES == [(1, 64, 8, 8), (2, 32, 14, 14), (8, 256, 7, 7), (32, 128, 4, 4)]
    assert sorted((tuple(r["shape"]), r["layout"]) for r in small) == sorted(
        (s, lay) for s in SMALL_SHAPES for lay in ("contiguous", "channels_last"))
    for r in small:
        assert r["groups"] == min(32, r["shape"][1]) and r["dtype"] == "float32"
        assert set(r["us"]) == {"ours_fb", "torch_fb", "ours_fwd", "torch_fwd"} and min(r["us"].values()) > 0
        assert r["speedup"]["fwd+bwd"] == pytest.approx(r["us"]["torch_fb"] / r["us"]["ours_fb"])
        assert r["speedup"]["fwd"] == pytest.approx(r["us"]["torch_fwd"] / r["us"]["ours_fwd"])
    assert doc["meta"]["inner"] == 2


def test_bench_plain_section_runs_the_plain_path(tmp_path, capsys, monkeypatch):
    import os

    from groupnorm import functional, kernels

    calls = []

    def counting(real, takes=lambda *a: False):
        def call(*a, **k):
            calls.append(takes(*a))
            return real(*a, **k)
        return call

    # the plain path: the C++ entry with the kernels declining (its predicate false at each call), or the Python
    # form where the library did not build
    if kernels.is_available():
        takes = lambda x, g, w, b, eps, act, r: kernels.kernel_takes(x, w, b, r)  # noqa: E731
        for name in ("_group_norm_call", "_group_norm_fast"):  # boxed (subclasses) and unboxed (plain tensors)
            monkeypatch.setattr(kernels, name, counting(getattr(kernels, name), takes))
    else:
        monkeypatch.setattr(functional, "group_norm_plain", counting(functional.group_norm_plain))
    monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    out = tmp_path / "plain.json"
    assert cli.main(["bench", "--plain", "--shapes", "2,8,4,4", "--groups", "4", "--repeats", "2", "--warmup", "0",
                     "--threads", "1", "--json", str(out)]) == 0
    assert "GROUPNORM_DISABLE_KERNELS" not in os.environ  # set for the section only
    # 3 pairs x (2 rounds) x 6 cases (fp32, bf16, fp16 by default; both layouts), all through the plain path
    assert calls == [False] * (3 * 2 * 6)
    assert "plain path (GROUPNORM_DISABLE_KERNELS=1)" in capsys.readouterr().out
    doc = json.loads(out.read_text())
    assert doc["cases"] == [] and doc["small"] == []
    assert sorted((r["dtype"], r["layout"]) for r in doc["plain"]) == sorted(
        (d, lay) for d in ("float32", "bfloat16", "float16") for lay in ("contiguous", "channels_last"))
    for r in doc["plain"]:
        ms, sp = r["ms"], r["speedup"]
        assert min(ms.values()) > 0 and min(sp.values()) > 0
        assert sp["fwd"] == pytest.approx(ms["torch_fwd"] / ms["plain_fwd"])
        assert sp["silu"] == pytest.approx(ms["torch_silu"] / ms["plain_silu"])
        assert sp["res_relu"] == pytest.approx(ms["torch_res"] / ms["plain_res"])
    _check_meta(doc["meta"], threads=1)



def test_git_commit_outside_a_checkout_is_none(tmp_path, monkeypatch):
    from groupnorm.bench import git_commit

    monkeypatch.setenv("GIT_CEILING_DIRECTORIES", str(tmp_path.parent))
    assert git_commit(tmp_path) == {"commit": None, "dirty": None}
    monkeypatch.setenv("PATH", str(tmp_path))  # no git at all
    assert git_commit() == {"commit": None, "dirty": None}


def test_bench_resume_refuses_a_file_of_another_format(tmp_path, capsys):
    out = tmp_path / "old.json"
    out.write_text(json.dumps({"meta": {"cpu": "x"}, "cases": [], "e2e": None}))
    assert cli.main(["bench", "--shapes", "2,8,4,4", "--groups", "4", "--repeats", "1", "--no-compile",
                     "--json", str(out), "--resume"]) == 2
    assert "written by another version of the bench" in capsys.readouterr().err
