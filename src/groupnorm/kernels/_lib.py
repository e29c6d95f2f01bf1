"""Loading the compiled kernel library (csrc/, the Python module ``_gn_kernels``), building it on first use where
the install did not, and calling it on tensors.

Where the library comes from, in order: the one installed with the package (built by ``setup.py`` where the
build environment had torch), if it was built against the running torch; else the build cache
(``$GROUPNORM_KERNEL_CACHE``, default ``~/.cache/groupnorm/kernels``), one directory per torch version, Python,
machine architecture and hash of the sources (:func:`cache_dir`), where the first use builds it
(:func:`build_cached`: a message while it compiles, a file lock so that concurrent first uses build once, an
atomic rename so that none loads a half-written file). ``GROUPNORM_BUILD_KERNELS=0`` turns the build on first use
off (``groupnorm build-kernels`` builds ahead). A build that failed is recorded in the cache and not retried on
every import. When no library loads, a warning says once why and what to run, and the plain PyTorch path runs.
The library holds every instruction-set level and picks the CPU's at run time, so one build serves every CPU of
an architecture.

The library has a plain C API (``csrc/gn_api.h``); ``csrc/gn_python.cpp`` makes it a Python module whose
``forward`` / ``backward`` take the API's arguments as ints (data pointers) and floats. This module knows the
API's codes and turns tensors into (pointer, sizes, layout) arguments; it does not check user input beyond what
the C side needs (the operators of ``csrc/gn_torch_ops.cpp`` do that).
"""
from __future__ import annotations

import contextlib
import hashlib
import importlib
import importlib.util
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import warnings
from pathlib import Path

import torch

from ..layout import LAYOUT_NCS, LAYOUT_NSC, layout_of, to_layout  # noqa: F401 (the API's layout codes)
from . import _build

EXT_NAME = "groupnorm.kernels._gn_kernels"
# GN_ABI_VERSION of csrc/gn_api.h (its one definition; tests/kernels/test_kernels.py checks the two agree): the library
# must have been built from the sources this Python code belongs to
ABI_VERSION = 3
BUILD_COMMAND = "groupnorm build-kernels"
CACHE_ENV = "GROUPNORM_KERNEL_CACHE"
BUILD_ENV = "GROUPNORM_BUILD_KERNELS"
ERROR_FILE = "build-error.txt"  # in a cache directory: the one-line reason a build failed (not retried then)

DTYPES = {torch.float32: 0, torch.float64: 1, torch.bfloat16: 2, torch.float16: 3}
ISA_NAMES = {0: "baseline x86-64 / generic", 1: "AVX2+FMA (x86-64-v3)", 2: "AVX-512 (x86-64-v4)",
             3: "AVX-512 + AVX512_BF16 (bfloat16 data; other dtypes: AVX-512)"}
_ERRORS = {1: "invalid argument", 2: "out of memory"}

_lib = None
_load_error: str | None = None
_origin: str | None = None  # where the loaded library came from (library_origin)
_fwd_call = None  # the module's forward / backward, bound once loaded
_bwd_call = None


class _NotLoaded(Exception):
    pass


def build_on_first_use() -> bool:
    """False if ``GROUPNORM_BUILD_KERNELS`` is 0 / false / no / off (read now): then a missing library is not
    built on import."""
    return os.environ.get(BUILD_ENV, "").strip().lower() not in ("0", "false", "no", "off")


def cache_dir() -> Path:
    """The build cache's directory for this torch version, Python, architecture and these sources."""
    root = os.environ.get(CACHE_ENV) or os.path.join(
        os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache"), "groupnorm", "kernels")
    h = hashlib.sha256()
    for src in _build.sources():
        h.update(src.name.encode() + b"\0" + src.read_bytes())
    key = f"torch{torch.__version__}-{sys.implementation.cache_tag}-{platform.machine()}-{h.hexdigest()[:12]}"
    return Path(root) / key


def _library_file(directory: Path) -> Path:
    return directory / (_build.MODULE + (sysconfig.get_config_var("EXT_SUFFIX") or ".so"))


@contextlib.contextmanager
def _file_lock(path: Path):
    try:
        import fcntl
    except ImportError:  # no POSIX locks (Windows, where this library does not build): no lock
        yield
        return
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _stderr(msg: str) -> None:
    print(msg, file=sys.stderr, flush=True)


def build_cached(force: bool = False, log=_stderr) -> Path:
    """Build the library for the running torch into :func:`cache_dir` unless it is there; return its path.

    Concurrent callers (processes) build once: the first holds a file lock while it compiles, the others wait and
    find the library. The library is compiled in a temporary directory and renamed into place. A failed build
    leaves its reason in the cache directory (later calls raise it again without compiling) unless ``force``.
    Raises ``groupnorm.kernels._build.BuildError`` with a one-line message.
    """
    target = cache_dir()
    lib = _library_file(target)
    target.parent.mkdir(parents=True, exist_ok=True)
    with _file_lock(target.parent / (target.name + ".lock")):
        failed = target / ERROR_FILE
        if lib.exists() and not force:
            return lib
        if failed.exists() and not force:
            raise _build.BuildError(failed.read_text().strip())
        tmp = Path(tempfile.mkdtemp(prefix=target.name + ".tmp-", dir=target.parent))
        try:
            log(f"groupnorm: compiling the CPU kernels for torch {torch.__version__} into {target} (once per "
                "torch version; a minute or two)")
            try:
                _build.build(tmp / lib.name, tmp / "obj", log=log)
            except _build.BuildError as exc:
                target.mkdir(exist_ok=True)
                (target / "build-error.log").write_text(exc.details)
                msg = f"{exc} (compiler output: {target / 'build-error.log'})"
                (tmp / ERROR_FILE).write_text(msg + "\n")
                os.replace(tmp / ERROR_FILE, failed)
                raise _build.BuildError(msg, exc.details) from None
            target.mkdir(exist_ok=True)
            os.replace(tmp / lib.name, lib)
            with contextlib.suppress(FileNotFoundError):
                failed.unlink()
            log("groupnorm: CPU kernels built")
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return lib


def _import_file(path: Path):
    spec = importlib.util.spec_from_file_location(EXT_NAME, path)
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    sys.modules[EXT_NAME] = mod
    return mod


def _find_library():
    """(module, origin): the installed library if it matches the running torch, else the cached one (built
    now if missing and allowed). Raises _NotLoaded with the reason and what to run."""
    spec = importlib.util.find_spec(EXT_NAME)
    if spec is not None and spec.origin:
        built_for = _build.read_build_info(spec.origin)
        if built_for is None or built_for == torch.__version__:
            try:
                return importlib.import_module(EXT_NAME), f"installed with the package ({spec.origin})"
            except ImportError as exc:  # did not load (nothing registered then): the cache's may
                why = f"the installed library did not load ({exc})"
        else:
            why = f"the installed library was built for torch {built_for}, this is torch {torch.__version__}"
    else:
        why = "the package was installed without the compiled library"
    lib = _library_file(cache_dir())
    if not lib.exists():
        if not build_on_first_use() and not (lib.parent / ERROR_FILE).exists():
            raise _NotLoaded(f"{why}, and {BUILD_ENV}=0 turns the build on first use off: run "
                             f"`{BUILD_COMMAND}`")
        try:
            build_cached()
        except _build.BuildError as exc:
            raise _NotLoaded(f"the kernels did not build: {exc}; fix that, then run `{BUILD_COMMAND}`") from None
    built_for = _build.read_build_info(lib)
    if built_for != torch.__version__:
        raise _NotLoaded(f"{lib} was built for torch {built_for}; run `{BUILD_COMMAND} --force`")
    try:
        return _import_file(lib), f"built on first use ({lib})"
    except ImportError as exc:
        raise _NotLoaded(f"{lib} did not load ({exc}); run `{BUILD_COMMAND} --force`") from None


def _load():
    global _lib, _load_error, _fwd_call, _bwd_call, _origin
    if _lib is not None or _load_error is not None:
        return _lib
    try:
        mod, origin = _find_library()
        got = mod.abi_version()
        if got != ABI_VERSION:
            raise ImportError(f"kernel library ABI version {got} != {ABI_VERSION}; re-install the package")
        _fwd_call, _bwd_call = mod.forward, mod.backward
        _lib, _origin = mod, origin
    except _NotLoaded as exc:
        _load_error = str(exc)
    except ImportError as exc:  # a stale library (built from other sources)
        _load_error = f"the compiled kernels did not load: {exc}"
    except AttributeError as exc:  # a library from before the module entry points
        _load_error = f"the compiled kernel library is stale ({exc}); re-install the package"
    if _load_error is not None:
        warnings.warn(f"groupnorm: compiled CPU kernels unavailable, the plain PyTorch path runs: {_load_error}",
                      RuntimeWarning, stacklevel=3)
    return _lib


def library_origin() -> str | None:
    """Where the loaded library came from (installed with the package, or built on first use) and its path;
    None if none loaded."""
    _load()
    return _origin


def load_error() -> str | None:
    """Why the library did not load (None if it loaded)."""
    _load()
    return _load_error


def is_loaded() -> bool:
    return _load() is not None


def isa() -> int:
    """Instruction-set level in use: 0 baseline, 1 AVX2, 2 AVX-512, 3 AVX-512 + AVX512_BF16."""
    return _require().get_isa()


def set_isa(level: int | None) -> int:
    """Force an instruction-set level (None: the best this CPU runs). Raises ValueError if the CPU lacks it."""
    lib = _require()
    got = lib.set_isa(-1 if level is None else int(level))
    if got < 0:
        raise ValueError(f"instruction-set level {level} is not supported on this CPU "
                         f"(best: {lib.set_isa(-1)}: {ISA_NAMES[lib.get_isa()]})")
    return got


def max_compiled_isa() -> int:
    return _require().max_compiled_isa()


def cache_sizes() -> tuple[int, int, int]:
    """(L1 data, L2, last-level) cache sizes in bytes that the kernels' blocking is chosen from."""
    return tuple(_require().cache_sizes())


def set_cache_sizes(l1: int = 0, l2: int = 0, l3: int = 0) -> None:
    """Override the cache sizes the blocking uses (0: the detected size), e.g. to test the tiled paths."""
    _require().set_cache_sizes(int(l1), int(l2), int(l3))


def _require():
    lib = _load()
    if lib is None:
        raise RuntimeError(f"groupnorm compiled kernels are not available: {_load_error}")
    return lib


def _check(rc: int, what: str) -> None:
    if rc != 0:
        msg = _ERRORS.get(rc, f"error code {rc}")
        if rc == 2:
            raise MemoryError(f"groupnorm kernel {what}: {msg}")
        raise RuntimeError(f"groupnorm kernel {what}: {msg}")


def forward(x, num_groups, weight, bias, eps, act, y, mean, rstd, layout, nthreads, residual=None) -> None:
    """Raw call (act: the activation's code): all tensors on CPU, x / y / residual in ``layout``; mean / rstd float64 contiguous (N * G)
    tensors or raw pointers (int) to N * G doubles, or both None (statistics not returned); residual (x's
    shape and dtype) or None: ``y = act(GN(x) + residual)``."""
    shape = x.shape
    n, c = shape[0], shape[1]
    s = x.numel() // (n * c)
    if _fwd_call is None:
        _require()
    # pointers written out (no helper call per pointer): this runs once per GN call
    rc = _fwd_call(DTYPES[x.dtype], layout, n, c, s, num_groups, x.data_ptr(),
                   None if weight is None else weight.data_ptr(), None if bias is None else bias.data_ptr(),
                   None if residual is None else residual.data_ptr(), eps, act, y.data_ptr(),
                   mean if mean is None or mean.__class__ is int else mean.data_ptr(),
                   rstd if rstd is None or rstd.__class__ is int else rstd.data_ptr(), nthreads)
    if rc:
        _check(rc, "forward")


def backward(dy, x, mean, rstd, num_groups, weight, bias, act, dx, dw, db, layout, nthreads, residual=None,
             dresidual=None) -> None:
    """Raw call: dy / x / dx / residual / dresidual in ``layout``; dx, dw, db may be None (not computed); mean /
    rstd as in forward (tensors or raw pointers, not None). With a residual and an activation, ``dresidual``
    (required then) receives dv = dy * act'(v), the residual's gradient; with no activation both are ignored
    (the residual's gradient is dy)."""
    n, c = x.shape[0], x.shape[1]
    s = x.numel() // (n * c)
    if _bwd_call is None:
        _require()
    # pointers written out (no helper call per pointer): this runs once per GN call
    rc = _bwd_call(DTYPES[x.dtype], layout, n, c, s, num_groups, dy.data_ptr(), x.data_ptr(),
                   None if residual is None else residual.data_ptr(),
                   None if dresidual is None else dresidual.data_ptr(),
                   mean if mean.__class__ is int else mean.data_ptr(), rstd if rstd.__class__ is int else rstd.data_ptr(),
                   None if weight is None else weight.data_ptr(), None if bias is None else bias.data_ptr(),
                   act, None if dx is None else dx.data_ptr(), None if dw is None else dw.data_ptr(),
                   None if db is None else db.data_ptr(), nthreads)
    if rc:
        _check(rc, "backward")
