"""The build on first use (groupnorm.kernels._lib): where the library is looked for, the cache's key, the lock
that makes concurrent first uses build once, the failure record, and the torch version a library records.
The compile itself is replaced by a stand-in here (the install tests in test_packaging.py run the real one)."""
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
import torch

from groupnorm import cli, kernels
from groupnorm.kernels import _build, _lib


@pytest.fixture
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv(_lib.CACHE_ENV, str(tmp_path / "cache"))
    return tmp_path / "cache"


def _fake_build(calls):
    def build(out_path, build_dir, log=print):
        calls.append(Path(out_path))
        Path(out_path).write_bytes(b"\0" + _build.BUILD_INFO_TAG + torch.__version__.encode() + b";\0")
        return Path(out_path)
    return build


def test_cache_dir_is_keyed_by_torch_python_machine_and_sources(cache, monkeypatch):
    d = _lib.cache_dir()
    assert d.parent == cache
    assert d.name.startswith(f"torch{torch.__version__}-{sys.implementation.cache_tag}-")
    monkeypatch.setattr(torch, "__version__", "9.9.9")
    assert _lib.cache_dir().name.startswith("torch9.9.9-")
    monkeypatch.setattr(_build, "sources", lambda: [Path(_build.__file__)])
    other = _lib.cache_dir()
    assert other.name.split("-")[-1] != d.name.split("-")[-1]  # another source set, another hash


def test_build_cached_builds_once_then_finds_the_library(cache, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(_build, "build", _fake_build(calls))
    first = _lib.build_cached()
    assert "compiling the CPU kernels" in capsys.readouterr().err
    assert _lib.build_cached() == first and len(calls) == 1
    assert first.parent == _lib.cache_dir() and first.exists()
    assert _build.read_build_info(first) == torch.__version__
    # the compile wrote into a temporary directory, renamed into place and removed
    assert calls[0].parent != first.parent and not calls[0].parent.exists()
    _lib.build_cached(force=True)
    assert len(calls) == 2


def test_failed_build_is_recorded_and_not_retried_until_forced(cache, monkeypatch):
    calls = []

    def failing(out_path, build_dir, log=print):
        calls.append(1)
        raise _build.BuildError("compiling gn_dispatch.cpp failed: error: boom", "the whole log")

    monkeypatch.setattr(_build, "build", failing)
    with pytest.raises(_build.BuildError, match="boom") as first:
        _lib.build_cached(log=lambda m: None)
    assert "\n" not in str(first.value)  # one line
    assert (_lib.cache_dir() / "build-error.log").read_text() == "the whole log"
    with pytest.raises(_build.BuildError, match="boom"):
        _lib.build_cached(log=lambda m: None)
    assert len(calls) == 1  # recorded, not compiled again
    monkeypatch.setattr(_build, "build", _fake_build([]))
    assert _lib.build_cached(force=True, log=lambda m: None).exists()
    assert not (_lib.cache_dir() / _lib.ERROR_FILE).exists()


def test_concurrent_first_uses_build_once(cache, tmp_path):
    """Three processes ask for the library at once; the stand-in compile takes a second and counts its calls."""
    script = textwrap.dedent(f"""
        import sys, time
        from pathlib import Path
        import torch
        from groupnorm.kernels import _build, _lib
        def build(out_path, build_dir, log=print):
            with open({str(tmp_path / 'calls')!r}, "a") as f:
                f.write("x")
            time.sleep(1.0)
            Path(out_path).write_bytes(_build.BUILD_INFO_TAG + torch.__version__.encode() + b";")
        _build.build = build
        print(_lib.build_cached(log=lambda m: None))
    """)
    procs = [subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
             for _ in range(3)]
    outs = [p.communicate(timeout=300)[0].strip() for p in procs]
    assert all(p.returncode == 0 for p in procs)
    assert len(set(outs)) == 1 and Path(outs[0]).exists()
    assert (tmp_path / "calls").read_text() == "x"


def test_read_build_info(tmp_path):
    f = tmp_path / "lib.so"
    f.write_bytes(b"\x7fELF junk " + _build.BUILD_INFO_TAG + b"2.11.0+cu128;more")
    assert _build.read_build_info(f) == "2.11.0+cu128"
    f.write_bytes(b"no tag here")
    assert _build.read_build_info(f) is None
    assert _build.read_build_info(tmp_path / "missing.so") is None


def test_the_loaded_library_records_the_torch_it_was_built_against():
    if not kernels.is_available():
        pytest.skip(f"kernels not built: {kernels.load_error()}")
    path = Path(sys.modules[_lib.EXT_NAME].__file__)
    assert _build.read_build_info(path) in (torch.__version__, None)  # None: built before the record existed


def test_installed_library_for_another_torch_is_passed_over(cache, monkeypatch, tmp_path):
    """An installed library that records another torch is not loaded; the cache's is used, and with the build on
    first use turned off the reason and the command to run are given."""
    other = tmp_path / "_gn_kernels.so"
    other.write_bytes(_build.BUILD_INFO_TAG + b"1.0.0;")

    class Spec:
        origin = str(other)

    monkeypatch.setattr(_lib.importlib.util, "find_spec", lambda name: Spec())
    monkeypatch.setenv(_lib.BUILD_ENV, "0")
    with pytest.raises(_lib._NotLoaded) as exc:
        _lib._find_library()
    msg = str(exc.value)
    assert "built for torch 1.0.0" in msg and _lib.BUILD_COMMAND in msg and "\n" not in msg


def test_no_installed_library_and_no_build_on_first_use_names_the_command(cache, monkeypatch):
    monkeypatch.setattr(_lib.importlib.util, "find_spec", lambda name: None)
    monkeypatch.setenv(_lib.BUILD_ENV, "off")
    with pytest.raises(_lib._NotLoaded, match="installed without the compiled library.*groupnorm build-kernels"):
        _lib._find_library()
    # a failed build is reported as such, whatever the switch says
    monkeypatch.setattr(_build, "build", lambda *a, **k: (_ for _ in ()).throw(_build.BuildError("no C++ compiler")))
    monkeypatch.setenv(_lib.BUILD_ENV, "1")
    with pytest.raises(_lib._NotLoaded, match="did not build: no C\\+\\+ compiler.*groupnorm build-kernels"):
        _lib._find_library()


def test_missing_compiler_is_one_line(monkeypatch):
    monkeypatch.setenv("CXX", "no-such-compiler-here")
    with pytest.raises(_build.BuildError, match="no C\\+\\+ compiler: 'no-such-compiler-here' is not on PATH"):
        _build.compiler()


def test_build_kernels_command(cache, monkeypatch, capsys):
    calls = []
    monkeypatch.setattr(_build, "build", _fake_build(calls))
    if kernels.is_available():
        assert cli.main(["build-kernels"]) == 0
        assert "already loaded" in capsys.readouterr().out and not calls
    assert cli.main(["build-kernels", "--force"]) == 0
    assert len(calls) == 1 and str(_lib.cache_dir()) in capsys.readouterr().out
    monkeypatch.setattr(_build, "build", lambda *a, **k: (_ for _ in ()).throw(_build.BuildError("it broke")))
    assert cli.main(["build-kernels", "--force"]) == 1
    assert "build-kernels: error: it broke" in capsys.readouterr().err
