"""scripts/bench_onnx.py (our kernel against onnxruntime's GroupNormalization) runs end to end on a tiny shape."""
import re
import subprocess
import sys

import pytest

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("onnxscript")

from helpers import ROOT, needs_kernels  # noqa: E402

SCRIPT = ROOT / "scripts" / "bench_onnx.py"
pytestmark = needs_kernels


def _run(*args):
    return subprocess.run([sys.executable, str(SCRIPT), *args], capture_output=True, text=True, timeout=300)


@pytest.mark.slow  # ONNX export + onnxruntime in a fresh process
def test_bench_onnx_smoke():
    r = _run("--shapes", "1,64,8,8", "--groups", "32", "--repeats", "1", "--warmup", "0", "--inner", "1",
             "--threads", "1")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert "CPU: " in r.stdout and "onnxruntime " in r.stdout
    assert re.search(r"exported graph \(\(1, 64, 8, 8\)\): .*GroupNormalization", r.stdout), r.stdout
    row = re.search(r"\| \(1, 64, 8, 8\) \| ([\d.]+) \| ([\d.]+) \| ([\d.]+)x \| ([\d.e+-]+) \|", r.stdout)
    assert row, r.stdout
    ours, ort, ratio, diff = map(float, row.groups())
    assert ours > 0 and ort > 0 and ratio == pytest.approx(ort / ours, rel=0.05) and diff < 1e-4


def test_bench_onnx_rejects_groups_that_do_not_divide():
    r = _run("--shapes", "1,30,4,4", "--groups", "32", "--repeats", "1")
    assert r.returncode != 0 and "does not divide num_channels=30" in r.stderr
