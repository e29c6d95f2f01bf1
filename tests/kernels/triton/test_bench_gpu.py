"""``groupnorm bench --device cuda``'s case runner and table, run here on CPU tensors under Triton's
interpreter with a stand-in timer (no timing is measured: the rows' structure and the contenders are checked)."""
import pytest
import torch

from groupnorm import bench_gpu

pytestmark = pytest.mark.filterwarnings("ignore:overflow encountered:RuntimeWarning")  # interpreter's exp


def test_case_rows_and_table(device, triton_route, monkeypatch):
    ran = []

    def fake_ms(fn, rep_ms):
        fn()
        ran.append(fn)
        return 2.0 if len(ran) % 2 else 1.0

    monkeypatch.setattr(bench_gpu, "_ms", fake_ms)
    r = bench_gpu.bench_gpu_case((2, 8, 3, 5), torch.float32, "channels_last", 4, device, use_compile=False)
    assert [(row["composite"], row["pass"]) for row in r["rows"]] == [
        (c, p) for c in bench_gpu.COMPOSITES for p in bench_gpu.PASSES]
    for row in r["rows"]:
        assert set(row["ms"]) >= {"ours", "eager"} and row["speedup"]["eager"] == row["ms"]["eager"] / row["ms"]["ours"]
        assert ("ours_gbs" in row) == (row["pass"] == "fwd")
    gbs = [row["ours_gbs"] for row in r["rows"] if row["pass"] == "fwd"]
    nbytes = 2 * 8 * 15 * 4
    assert gbs[0] * 1e6 * r["rows"][0]["ms"]["ours"] == pytest.approx(2 * nbytes)  # gn: read x, write y
    assert gbs[2] * 1e6 * r["rows"][4]["ms"]["ours"] == pytest.approx(3 * nbytes)  # + read the residual
    table = bench_gpu.format_gpu_table([r])
    assert table.count("\n") == 2 + len(r["rows"]) and "gn+add+relu" in table and "copy" in table


def test_cli_refuses_without_cuda(capsys):
    from groupnorm.cli import main

    if torch.cuda.is_available():
        pytest.skip("a CUDA device is here")
    assert main(["bench", "--device", "cuda", "--no-compile"]) == 2
    assert "no CUDA device here" in capsys.readouterr().err
