"""The console script end to end: `groupnorm demo` and `python -m groupnorm demo`."""
import os
import subprocess
import sys
from pathlib import Path

import pytest

from groupnorm import demo
from groupnorm.cli import main

BIN = Path(sys.executable).parent / "groupnorm"


def test_demo_in_process(capsys):
    assert main(["demo"]) == 0
    out = capsys.readouterr().out
    assert "OK: every value matches the seed within 0.001" in out
    # The exact values are shown beside the seed's roundings, not hidden.
    assert "-0.773693" in out and "-0.773" in out
    assert "-0.632456" in out or "-0.632455" in out


def test_demo_fails_when_a_value_differs(capsys, monkeypatch):
    bad = {k: [row[:] for row in v] for k, v in demo.SEED_OUTPUT_A.items()}
    bad["GN"][0][0] = -1.180  # off by 0.008
    monkeypatch.setattr(demo, "SEED_OUTPUT_A", bad)
    assert main(["demo"]) == 1
    assert "differs by more than 0.001" in capsys.readouterr().out


@pytest.mark.parametrize("cmd", [[str(BIN), "demo"], [sys.executable, "-m", "groupnorm", "demo"]])
def test_demo_subprocess(cmd):
    if not Path(cmd[0]).exists():
        pytest.fail(f"console script {cmd[0]} is not installed")
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert r.returncode == 0, r.stderr
    assert "40 values compared" in r.stdout


def test_unknown_command_is_a_usage_error(capsys):
    with pytest.raises(SystemExit) as e:
        main(["frobnicate"])
    assert e.value.code == 2
