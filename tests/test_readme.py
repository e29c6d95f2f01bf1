"""The README stays true: its model-surgery code runs as written, and the commands it names exist."""
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
README = (ROOT / "README.md").read_text()


@pytest.mark.slow  # runs the README block, ONNX export included
def test_surgery_section_runs(tmp_path):
    section = README[README.index("## Model surgery"):]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "convert_bn_to_gn" in code and "export_onnx" in code
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert "layers to GroupNorm" in r.stdout
    max_diff = float(r.stdout.strip().splitlines()[-1])  # verify_onnx's max |onnxruntime - torch|
    assert max_diff < 1e-4


def test_the_two_commands_exist():
    for script in ("scripts/reproduce.sh", "scripts/test.sh"):
        assert f"bash {script}" in README
        assert (ROOT / script).is_file()
    assert "bash scripts/test.sh" in (ROOT / ".ci" / "run").read_text()


def test_api_block_runs(tmp_path):
    """The README's "API at a glance" block runs as written (its names exist, its calls are valid)."""
    section = README[README.index("## API at a glance"):README.index("## Performance")]
    code = "\n".join(re.findall(r"```python\n(.*?)```", section, re.S))
    assert "GroupNorm(" in code and "convert_bn_to_gn" in code
    code += "\nassert out.shape == h.shape and y.shape == x.shape and y_np.shape == x_np.shape\nprint('ok')\n"
    r = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.strip().endswith("ok")


def test_readme_is_short_and_links_exist():
    assert len(README.encode()) <= 8 * 1024
    for target in re.findall(r"\]\(((?:docs/)[^)#]*)\)", README):
        assert (ROOT / target).exists(), target
