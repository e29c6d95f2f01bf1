"""The package as a user gets it: ``pip wheel .`` on a copy of the source tree, the wheel installed alone (with
torch 2.13.0) into a fresh virtual environment, and its commands run outside the source tree.

Slow (a wheel build compiles the kernels; a venv install of torch): ``pytest -m "not slow"`` leaves it out.
"""
import json
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "fashion-mnist-sample"
# what a checkout holds that a build must not see: environments, build outputs, caches, compiled objects
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.so",
                                "*.o", ".setup-stamp", ".pytest_cache", ".hypothesis", "runs", "site")

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env=None, timeout=1800):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    assert r.returncode == 0, f"{cmd} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r.stdout + r.stderr


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip wheel .` builds from a copy of the tracked sources (nothing built in the checkout)."""
    tmp = tmp_path_factory.mktemp("wheel")
    src = tmp / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    shutil.rmtree(src / "tests")  # not part of the package; their data would only slow the copy down
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", tmp / "dist"],
         cwd=src)
    (whl,) = (tmp / "dist").glob("groupnorm-*.whl")
    return whl


def test_wheel_holds_the_package_its_kernels_and_its_metadata(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "groupnorm/py.typed" in names
    assert "groupnorm/reference.py" in names and "groupnorm/bn_stats.py" in names
    assert [n for n in names if n.startswith("groupnorm/kernels/_gn_kernels") and n.endswith(".so")], names
    assert not [n for n in names if n.startswith("tests/")]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r.replace(" ", "") for r in requires if "extra ==" not in r]
    assert "torch>=2.4" in core, requires  # torch.library.custom_op
    assert any(r.startswith("matplotlib") for r in core), requires  # the report's figures


def test_fresh_venv_with_only_the_wheel_runs_every_command(wheel, tmp_path):
    venv = tmp_path / "venv"
    _run([sys.executable, "-m", "venv", venv], cwd=tmp_path)
    py, bindir = venv / "bin" / "python", venv / "bin"
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env.update(PATH=f"{bindir}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(venv), PYTHONUNBUFFERED="1")
    pip = [py, "-m", "pip", "install", "-q", "--disable-pip-version-check"]
    _run(pip + ["torch==2.13.0"], cwd=tmp_path, env=env)  # the CPU build on this machine's disk
    _run(pip + [wheel], cwd=tmp_path, env=env)

    work = tmp_path / "work"  # outside the source tree: nothing there can be imported by accident
    work.mkdir()
    where = _run([py, "-c", "import groupnorm, groupnorm.kernels as k; print(groupnorm.__file__); "
                            "print(k.is_available(), k.load_error())"], cwd=work, env=env).split()
    assert Path(where[0]).resolve().is_relative_to(venv.resolve()), where
    assert where[1] == "True", where  # the compiled library came with the wheel

    gn = bindir / "groupnorm"
    assert "OK: every value matches the seed" in _run([gn, "demo"], cwd=work, env=env)
    out = work / "smoke"
    _run([gn, "reproduce", "--preset", "smoke", "--data-dir", SAMPLE, "--out", out, "--jobs", "1",
          "--no-progress"], cwd=work, env=env)
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    assert rows and all("val_error" in r for r in rows)
    report = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and all(f"({name})" in report for name in pngs), pngs
    _run([gn, "bench", "--shapes", "2,8,4,4", "--groups", "2", "--dtypes", "fp32", "--layouts", "contiguous",
          "--repeats", "2", "--warmup", "1", "--no-compile"], cwd=work, env=env)
