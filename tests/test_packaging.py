"""The package as users install it, each documented way, into a fresh virtual environment outside the tree that
already has torch (as a user's own environment does), then its commands run from a directory outside the tree:

- ``pip install .`` (pip's default isolated build, which sees no torch): the package installs without the
  compiled library, the first use builds it into the cache and loads it;
- ``pip install --no-build-isolation .``: the library is compiled at install;
- ``pip install -e .`` (isolated): the kernels come from the cache, the code from the tree;
- the wheel of ``pip wheel --no-build-isolation .``, installed alone;
- the sdist (setuptools' PEP 517 ``build_sdist``, what ``python -m build --sdist`` calls), installed by pip.

The environments get torch and the package's dependencies without reinstalling them: a ``.pth`` file in each
points at a directory of links to this environment's installed distributions (torch, numpy, matplotlib, ...,
pip, setuptools, wheel). pip's isolated build hides that directory as it hides any site-packages. Every pip
call runs with ``--no-index``: nothing comes from a package index except setuptools and wheel for the isolated
builds, which come from a local directory filled once (the isolated cases are skipped where no index is
reachable). One kernel cache serves the module, so the library is compiled three times in all.

Slow: ``pytest -m "not slow"`` leaves it out.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
SAMPLE = ROOT / "tests" / "data" / "fashion-mnist-sample"
# what a checkout holds that a build must not see: environments, build outputs, caches, compiled objects
IGNORE = shutil.ignore_patterns(".git", ".venv", "venv", "build", "dist", "*.egg-info", "__pycache__", "*.so",
                                "*.o", ".setup-stamp", ".pytest_cache", ".hypothesis", "runs", "site", "tests")
# what a user's environment already holds: torch and the package's dependencies, and pip's own tools
PROVIDED = ["torch", "numpy", "pillow", "tqdm", "matplotlib", "pip", "setuptools", "wheel"]
COMPILING = "groupnorm: compiling the CPU kernels"

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env=None, timeout=1800, ok=True):
    r = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout,
                       stdin=subprocess.DEVNULL)
    if ok:
        assert r.returncode == 0, f"{cmd} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-5000:]}"
    return r


def _closure(names):
    """The installed distributions ``names`` need (their requirements, recursively, markers evaluated)."""
    seen, todo = {}, list(names)
    while todo:
        name = canonicalize_name(todo.pop())
        if name in seen:
            continue
        try:
            dist = metadata.distribution(name)
        except metadata.PackageNotFoundError:
            continue
        seen[name] = dist
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is None or req.marker.evaluate({"extra": ""}):
                todo.append(req.name)
    return seen


@pytest.fixture(scope="module")
def provided_site(tmp_path_factory):
    """A directory of links to this environment's torch, the package's dependencies, pip, setuptools, wheel."""
    site = tmp_path_factory.mktemp("provided-site")
    for dist in _closure(PROVIDED).values():
        base = Path(dist.locate_file(""))
        tops = {Path(f).parts[0] for f in dist.files or [] if not str(f).startswith("..")} - {"__pycache__"}
        assert tops, f"{dist.metadata['Name']}: no RECORD of its files"
        for top in tops:
            if (base / top).exists() and not (site / top).exists():
                (site / top).symlink_to(base / top)
    return site


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory):
    """setuptools and wheel for pip's isolated builds, fetched once (skip where no package index answers)."""
    house = tmp_path_factory.mktemp("wheelhouse")
    r = _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "-d", house,
              "setuptools>=64", "wheel"], cwd=house, ok=False, timeout=600)
    if r.returncode != 0:
        pytest.skip(f"pip's isolated build needs setuptools from a package index, and none answered: {r.stderr[-300:]}")
    return house


@pytest.fixture(scope="module")
def kernel_cache(tmp_path_factory):
    return tmp_path_factory.mktemp("kernel-cache")


class Env:
    """A fresh virtual environment with the provided distributions, and the commands run in it."""

    def __init__(self, root: Path, site: Path, cache: Path, house: Path | None):
        self.root, self.venv, self.work = root, root / "venv", root / "work"
        _run([sys.executable, "-m", "venv", "--without-pip", self.venv], cwd=root)
        self.py, self.bin = self.venv / "bin" / "python", self.venv / "bin"
        purelib = _run([self.py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], cwd=root)
        (Path(purelib.stdout.strip()) / "provided.pth").write_text(f"{site}\n")
        env = {k: v for k, v in os.environ.items()
               if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME") and not k.startswith(("PIP_", "GROUPNORM_"))}
        env.update(PATH=f"{self.bin}{os.pathsep}{env.get('PATH', '')}", VIRTUAL_ENV=str(self.venv),
                   PYTHONUNBUFFERED="1", PIP_NO_INDEX="1", PIP_DISABLE_PIP_VERSION_CHECK="1",
                   GROUPNORM_KERNEL_CACHE=str(cache))
        if house is not None:
            env["PIP_FIND_LINKS"] = str(house)
        self.env = env
        self.work.mkdir()  # outside the source tree: nothing there can be imported by accident

    def pip(self, *args, cwd=None):
        r = _run([self.py, "-m", "pip", *args], cwd=cwd or self.root, env=self.env)
        out = r.stdout + r.stderr
        assert "Traceback" not in out, out[-5000:]
        return out

    def run(self, *cmd, **kw):
        return _run(cmd, cwd=self.work, env={**self.env, **kw.pop("env", {})}, **kw)

    def groupnorm(self, *args, **kw):
        return self.run(self.bin / "groupnorm", *args, **kw)

    def site_files(self):
        purelib = self.run(self.py, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])").stdout.strip()
        return [p.name for p in (Path(purelib) / "groupnorm" / "kernels").iterdir()]

    def check_commands(self, origin: str, compiles: bool):
        """``groupnorm info`` (the kernels loaded, from ``origin``; compiled now if ``compiles``), the path of a
        call, and ``groupnorm demo``."""
        where = self.run(self.py, "-c", "import groupnorm; print(groupnorm.__file__)").stdout.strip()
        r = self.groupnorm("info", "--input", "2,8,4,4", "--groups", "2")
        assert (COMPILING in r.stderr) == compiles, r.stderr
        assert "Traceback" not in r.stderr and "unavailable" not in r.stderr, r.stderr
        assert f"CPU kernels: loaded, {origin}" in r.stdout, r.stdout
        assert "2 groups: compiled CPU kernels" in r.stdout, r.stdout
        assert COMPILING not in self.groupnorm("info").stderr  # built once
        assert "OK: every value matches the seed" in self.groupnorm("demo").stdout
        return Path(where)


def _built_in(cache: Path) -> bool:
    """Whether ``cache`` holds the library of these sources for this torch (then a first use compiles nothing)."""
    from groupnorm.kernels import _lib

    key = _lib.cache_dir().relative_to(_lib.cache_dir().parent)
    return _lib._library_file(cache / key).exists()


def _source_copy(tmp_path):
    """The tracked sources without anything built (each install builds from its own copy: no stale build/)."""
    src = tmp_path / "src"
    shutil.copytree(ROOT, src, ignore=IGNORE)
    return src


def test_isolated_install_builds_the_kernels_on_first_use(tmp_path, provided_site, kernel_cache, wheelhouse):
    env = Env(tmp_path, provided_site, kernel_cache, wheelhouse)
    out = env.pip("install", "-v", ".", cwd=_source_copy(tmp_path))
    assert "torch is not importable in this build environment" in out  # pip's isolation hides the provided torch
    files = env.site_files()
    assert not [f for f in files if f.startswith("_gn_kernels")], files
    assert "csrc" in files  # the sources the first use compiles
    # with the build on first use off: a warning once, the reason and the command, the plain path
    r = env.groupnorm("info", "--input", "2,8,4,4", "--groups", "2", env={"GROUPNORM_BUILD_KERNELS": "0"})
    assert "CPU kernels: not loaded: the package was installed without the compiled library" in r.stdout
    assert "build them: groupnorm build-kernels" in r.stdout and "2 groups: plain PyTorch" in r.stdout
    assert r.stderr.count("compiled CPU kernels unavailable") == 1 and "Traceback" not in r.stderr, r.stderr
    assert env.check_commands("built on first use", compiles=True).is_relative_to(env.venv.resolve())
    assert "already loaded: built on first use" in env.groupnorm("build-kernels").stdout


def test_editable_isolated_install_uses_the_tree_and_the_cache(tmp_path, provided_site, kernel_cache, wheelhouse):
    env = Env(tmp_path, provided_site, kernel_cache, wheelhouse)
    src = _source_copy(tmp_path)
    env.pip("install", "-e", ".", cwd=src)
    where = env.check_commands("built on first use", compiles=not _built_in(kernel_cache))
    assert where.resolve().is_relative_to(src.resolve()), where


def test_no_build_isolation_install_compiles_at_install(tmp_path, provided_site, kernel_cache):
    env = Env(tmp_path, provided_site, kernel_cache, None)
    env.pip("install", "--no-build-isolation", ".", cwd=_source_copy(tmp_path))
    assert [f for f in env.site_files() if f.startswith("_gn_kernels")]
    env.check_commands("installed with the package", compiles=False)


@pytest.fixture(scope="module")
def wheel(tmp_path_factory):
    """The wheel `pip wheel --no-build-isolation .` builds from a copy of the tracked sources."""
    tmp = tmp_path_factory.mktemp("wheel")
    _run([sys.executable, "-m", "pip", "wheel", ".", "--no-deps", "--no-build-isolation", "-w", tmp / "dist"],
         cwd=_source_copy(tmp))
    (whl,) = (tmp / "dist").glob("groupnorm-*.whl")
    return whl


def test_wheel_holds_the_package_its_kernels_sources_license_and_metadata(wheel):
    names = zipfile.ZipFile(wheel).namelist()
    assert "groupnorm/py.typed" in names and "groupnorm/info.py" in names
    assert [n for n in names if n.startswith("groupnorm/kernels/_gn_kernels") and n.endswith(".so")], names
    assert "groupnorm/kernels/csrc/gn_torch_ops.cpp" in names and "groupnorm/kernels/csrc/gn_api.h" in names
    assert [n for n in names if n.endswith(".dist-info/LICENSE") or "/licenses/LICENSE" in n], names
    assert not [n for n in names if n.startswith("tests/")]
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith(".dist-info/METADATA"))).decode()
    requires = [line.split(":", 1)[1].strip() for line in meta.splitlines() if line.startswith("Requires-Dist:")]
    core = [r.replace(" ", "") for r in requires if "extra ==" not in r]
    assert "torch>=2.4" in core, requires  # torch.library.custom_op
    assert any(r.startswith("matplotlib") for r in core), requires  # the report's figures
    extras = set(re.findall(r"^Provides-Extra: (\S+)", meta, re.M))
    assert {"onnx", "cluster", "test"} <= extras, extras


def test_wheel_alone_in_a_fresh_environment_runs_every_command(wheel, tmp_path, provided_site, kernel_cache):
    env = Env(tmp_path, provided_site, kernel_cache, None)
    env.pip("install", wheel)
    env.check_commands("installed with the package", compiles=False)
    out = env.work / "smoke"
    env.groupnorm("reproduce", "--preset", "smoke", "--data-dir", SAMPLE, "--out", out, "--jobs", "1", "--no-progress")
    rows = [json.loads(line) for line in (out / "results.jsonl").read_text().splitlines() if line.strip()]
    assert rows and all("val_error" in r for r in rows)
    report = (out / "report.md").read_text()
    pngs = sorted(p.name for p in out.glob("*.png"))
    assert pngs and all(f"({name})" in report for name in pngs), pngs
    env.groupnorm("bench", "--shapes", "2,8,4,4", "--groups", "2", "--dtypes", "fp32", "--layouts", "contiguous",
                  "--repeats", "2", "--warmup", "1", "--no-compile")


def test_sdist_installs(tmp_path, provided_site, kernel_cache, wheelhouse):
    src = _source_copy(tmp_path)
    _run([sys.executable, "-c", "from setuptools import build_meta as b; print(b.build_sdist('dist'))"], cwd=src)
    (sdist,) = (src / "dist").glob("groupnorm-*.tar.gz")
    names = tarfile.open(sdist).getnames()
    for need in ("LICENSE", "pyproject.toml", "setup.py", "src/groupnorm/kernels/_build.py",
                 "src/groupnorm/kernels/csrc/gn_torch_ops.cpp", "src/groupnorm/kernels/csrc/gn_api.h"):
        assert any(n.endswith("/" + need) for n in names), need
    env = Env(tmp_path, provided_site, kernel_cache, wheelhouse)
    env.pip("install", sdist)
    env.check_commands("built on first use", compiles=not _built_in(kernel_cache))
