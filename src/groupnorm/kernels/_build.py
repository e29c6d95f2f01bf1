"""How the compiled kernel library is built: its sources, the flags of each, the compile and the link.

One recipe for the two builds: ``setup.py``'s, at install time where the build environment has torch
(``pip install --no-build-isolation``, ``scripts/setup.sh``), and the build on first use
(:mod:`groupnorm.kernels._lib`, into a cache per torch version) where it had not (pip's default isolated build
sees no torch). This module imports neither torch nor the package (``setup.py`` loads it by path); only
:func:`build` imports torch, for its include and library directories.

The kernels (``csrc/``) are plain C++ with no PyTorch headers, linked into one shared library that is also a
Python module (``gn_python.cpp``: ``forward`` / ``backward`` entry points taking data pointers), which
``groupnorm.kernels`` imports. On x86-64 the kernel source is compiled four times (baseline x86-64, x86-64-v3 =
AVX2/FMA/F16C, x86-64-v4 = AVX-512, and x86-64-v4 + AVX512_BF16 for bfloat16 data, left out if the compiler
lacks it) and the library picks the best level the CPU supports at run time, so one build serves every CPU of
the architecture. One unit (``gn_torch_ops.cpp``, the PyTorch operators) includes torch's headers and links
against libtorch: a library runs only with the torch release it was built against, which :func:`build` records
in the library (:func:`read_build_info`). The compilations run in parallel.
"""
from __future__ import annotations

import os
import platform
import shlex
import shutil
import subprocess
import sys
import sysconfig
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

CSRC = Path(__file__).resolve().parent / "csrc"
MODULE = "_gn_kernels"  # the library's Python module name (PyInit__gn_kernels in gn_python.cpp)
# -g0: no debug information: a third of the compile time, and a library 5x smaller. -DNDEBUG -fwrapv: what
# Python's own CFLAGS put on extension modules.
COMMON_FLAGS = ["-O3", "-g0", "-std=c++17", "-fPIC", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
                "-fvisibility=hidden", "-Wall", "-DNDEBUG", "-fwrapv"]
# -O2 with the vectorizer (dynamic cost model) for the baseline and AVX-512 levels, -O3 (COMMON_FLAGS) for the
# AVX2 level. The AVX-512 levels' inner loops are hand-written intrinsics: at -O2 the same outputs, bit for bit,
# and the same speed. The AVX2 level (CPUs without AVX-512) runs the portable loops as the compiler vectorizes
# them, and at -O2 it was 15-30% slower with SiLU, so it keeps -O3 (the longest compile).
O2_VEC = ["-O2", "-ftree-vectorize", "-fvect-cost-model=dynamic"]
X86_LEVELS = {  # source -> flags
    # the baseline level: CPUs without AVX2, and float64 everywhere (not a speed target)
    "gn_isa_base.cpp": ["-march=x86-64", "-mtune=generic", *O2_VEC],
    "gn_isa_avx2.cpp": ["-march=x86-64-v3", "-mtune=generic"],
    "gn_isa_avx512.cpp": ["-march=x86-64-v4", "-mtune=generic", "-mprefer-vector-width=512", *O2_VEC],
    "gn_isa_avx512bf16.cpp": ["-march=x86-64-v4", "-mavx512bf16", "-mtune=generic", "-mprefer-vector-width=512",
                              *O2_VEC],
}
# A compiler without -mavx512bf16 (GCC < 10) still builds the other levels: this one is then left out, and the
# dispatcher is told whether it is there.
OPTIONAL_LEVELS = {"gn_isa_avx512bf16.cpp": "-DGN_HAVE_AVX512BF16=1"}
# The thin unit that registers the kernels as PyTorch operators (TORCH_LIBRARY, autograd, Meta): the only source
# that includes PyTorch's headers, compiled with torch's include directories and C++ standard.
TORCH_UNIT = "gn_torch_ops.cpp"
# The dispatcher (levels and the C API) and the Python module, compiled with Python's headers.
MODULE_UNITS = ["gn_dispatch.cpp", "gn_python.cpp"]
TORCH_LIBS = ["c10", "torch", "torch_cpu", "torch_python"]
# The library records the torch it was built against as this string, followed by the version and a ';'.
BUILD_INFO_TAG = b"groupnorm-kernels-built-with-torch="


class BuildError(RuntimeError):
    """The library did not build. ``str()`` is one line (what failed and the compiler's first error);
    ``details`` holds the compiler's output."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


def is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


def sources() -> list[Path]:
    """Every file the library is built from (what a build cache's key hashes), this recipe included."""
    return sorted(CSRC.glob("*.h")) + sorted(CSRC.glob("gn_*.cpp")) + [Path(__file__).resolve()]


def compiler() -> list[str]:
    """The C++ compiler command: ``$CXX`` if set (as distutils and torch's extension builder read it), else
    ``c++``. Raises BuildError if it is not on PATH."""
    cmd = shlex.split(os.environ.get("CXX", "") or "c++")
    if not cmd or shutil.which(cmd[0]) is None:
        raise BuildError(f"no C++ compiler: {cmd[0] if cmd else '$CXX'!r} is not on PATH (install g++ or clang++, "
                         "or set CXX)")
    return cmd


def _first_error(output: str) -> str:
    lines = [ln.strip() for ln in output.splitlines() if ln.strip()]
    for ln in lines:
        if "error" in ln.lower():
            return ln[:300]
    return (lines[-1] if lines else "no output")[:300]


def _run(cmd: list[str], what: str) -> None:
    r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL)
    if r.returncode != 0:
        out = r.stdout + r.stderr
        raise BuildError(f"{what} failed: {_first_error(out)}", f"$ {shlex.join(cmd)}\n{out}")


def torch_version() -> str:
    import torch

    return torch.__version__


def build(out_path: str | os.PathLike, build_dir: str | os.PathLike, log=print) -> Path:
    """Compile every unit (in parallel) into ``build_dir`` and link the library at ``out_path``.

    Needs torch importable (its headers and libraries). Raises BuildError (one line) if a required unit does not
    compile or the link fails; an optional level that does not compile is left out with a line to ``log``.
    """
    try:
        import torch
        from torch.utils import cpp_extension
    except ImportError as exc:
        raise BuildError(f"torch did not import ({exc}): the kernels build against it") from None
    cxx = compiler()
    out_path, build_dir = Path(out_path), Path(build_dir)
    build_dir.mkdir(parents=True, exist_ok=True)
    out_path.parent.mkdir(parents=True, exist_ok=True)
    x86 = is_x86_64()
    levels = X86_LEVELS if x86 else {"gn_isa_base.cpp": []}
    level_macros = ["-DGN_WITH_X86_LEVELS=1"] if x86 else []
    inc = [f"-I{CSRC}"]
    abi = int(torch.compiled_with_cxx11_abi())
    torch_flags = ["-O2", "-g0", "-std=c++20", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wno-unused-parameter",
                   "-DNDEBUG", f"-D_GLIBCXX_USE_CXX11_ABI={abi}", f"-DTORCH_EXTENSION_NAME={MODULE}"]
    torch_inc = [f"-I{d}" for d in cpp_extension.include_paths()]
    # the torch release the library is built against, readable without loading it (read_build_info)
    info_src = build_dir / "gn_build_info.cpp"
    tag = BUILD_INFO_TAG.decode()
    info_src.write_text('extern "C" __attribute__((used, visibility("default"))) const char gn_build_info[] = '
                        f'"{tag}{torch.__version__};";\n')

    def compile_one(job):
        src, flags = job
        obj = build_dir / (Path(src).stem + ".o")
        try:
            _run(cxx + ["-c", str(src), "-o", str(obj)] + flags, f"compiling {Path(src).name}")
        except BuildError as exc:
            if Path(src).name in OPTIONAL_LEVELS:
                log(f"groupnorm: {Path(src).name} did not compile, its instruction-set level is left out ({exc})")
                return src, None
            raise
        return src, obj

    # the torch unit first: its compile is the longest
    py_inc = [f"-I{sysconfig.get_paths()['include']}"]
    jobs = [(CSRC / TORCH_UNIT, torch_inc + py_inc + inc + torch_flags), (info_src, ["-fPIC", "-O1"])]
    jobs += [(CSRC / name, inc + COMMON_FLAGS + flags + level_macros) for name, flags in levels.items()]
    with ThreadPoolExecutor(max_workers=max(1, min(len(jobs), os.cpu_count() or 1))) as pool:
        built = list(pool.map(compile_one, jobs))
    objects = [obj for _, obj in built if obj is not None]
    macros = level_macros + [OPTIONAL_LEVELS[Path(src).name] for src, obj in built
                             if obj is not None and Path(src).name in OPTIONAL_LEVELS]
    module_jobs = [(CSRC / name, inc + py_inc + COMMON_FLAGS + macros) for name in MODULE_UNITS]
    with ThreadPoolExecutor(max_workers=2) as pool:
        objects += [obj for _, obj in pool.map(compile_one, module_jobs)]

    link = cxx + ["-shared", *map(str, objects), "-o", str(out_path), "-fopenmp"]
    link += [f"-L{d}" for d in cpp_extension.library_paths()] + [f"-l{lib}" for lib in TORCH_LIBS]
    if sys.platform == "darwin":  # Python's symbols come from the interpreter that loads the module
        link += ["-undefined", "dynamic_lookup"]
    _run(link, "linking the kernel library")
    return out_path


def read_build_info(path: str | os.PathLike) -> str | None:
    """The torch version a library file was built against (recorded by :func:`build`), read from the file
    without loading it; None if the file records none."""
    import mmap

    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as m:
            at = m.find(BUILD_INFO_TAG)
            if at < 0:
                return None
            end = m.find(b";", at, at + 200)
            return m[at + len(BUILD_INFO_TAG):end].decode("ascii", "replace") if end > 0 else None
    except (OSError, ValueError):
        return None
