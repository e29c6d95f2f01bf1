"""Build script: everything declarative lives in pyproject.toml; this file only adds the compiled kernels.

The kernels (src/groupnorm/kernels/csrc) are plain C++ with no PyTorch headers (no ABI lock to one torch
release), linked into one shared library that is also a Python module (gn_python.cpp: ``forward`` /
``backward`` entry points taking data pointers, ~0.5 us a call), which ``groupnorm.kernels`` imports. On x86-64
the kernel source is compiled four times (baseline x86-64, x86-64-v3 = AVX2/FMA/F16C, x86-64-v4 = AVX-512, and
x86-64-v4 + AVX512_BF16 for bfloat16 data, left out if the compiler lacks it) and the library picks the best
level the CPU supports at run time, so a wheel built here also runs on CPUs without AVX-512. The compilations
run in parallel. The extension is optional: without a working C++ compiler (or OpenMP) the package installs
anyway and ``groupnorm.kernels.is_available()`` is False (the plain PyTorch path is used).
"""
import glob
import os
import platform
from concurrent.futures import ThreadPoolExecutor

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext
from setuptools.errors import CompileError

CSRC = "src/groupnorm/kernels/csrc"
KERNEL_EXT = "groupnorm.kernels._gn_kernels"
HEADERS = sorted(glob.glob(f"{CSRC}/*.h"))  # every level includes them all (gn_level.h)
# -g0: no debug information (Python's own CFLAGS carry -g): a third of the compile time, and a .so 5x smaller
COMMON_FLAGS = ["-O3", "-g0", "-std=c++17", "-fPIC", "-fopenmp", "-fno-math-errno", "-fno-trapping-math",
                "-fvisibility=hidden", "-Wall"]
# -O2 with the vectorizer (dynamic cost model) for the baseline and AVX-512 levels, -O3 (COMMON_FLAGS) for the
# AVX2 level. With every level at -O3 the build took ~59 s on 2 cores (the issue allows a minute). The AVX-512
# levels' inner loops are hand-written intrinsics: at -O2 the same outputs, bit for bit, and the same speed
# (alternating benchmark runs). The AVX2 level (CPUs without AVX-512: AMD Zen 2/3, recent Intel client chips)
# runs the portable loops as the compiler vectorizes them, and at -O2 it was 15-30% slower with SiLU; it keeps
# -O3 (the longest compile, ~37 s, in parallel with the two others).
O2_VEC = ["-O2", "-ftree-vectorize", "-fvect-cost-model=dynamic"]
X86_LEVELS = {  # source -> flags
    # the baseline level: CPUs without AVX2, and float64 everywhere (not a speed target)
    f"{CSRC}/gn_isa_base.cpp": ["-march=x86-64", "-mtune=generic", *O2_VEC],
    f"{CSRC}/gn_isa_avx2.cpp": ["-march=x86-64-v3", "-mtune=generic"],
    f"{CSRC}/gn_isa_avx512.cpp": ["-march=x86-64-v4", "-mtune=generic", "-mprefer-vector-width=512", *O2_VEC],
    f"{CSRC}/gn_isa_avx512bf16.cpp": ["-march=x86-64-v4", "-mavx512bf16", "-mtune=generic",
                                      "-mprefer-vector-width=512", *O2_VEC],
}
# A compiler without -mavx512bf16 (GCC < 10) still builds the other levels: this one is then left out.
OPTIONAL_LEVELS = {f"{CSRC}/gn_isa_avx512bf16.cpp": ("GN_HAVE_AVX512BF16", "1")}
# The thin unit that registers the kernels as PyTorch operators (TORCH_LIBRARY, autograd, Meta): the only source
# that includes PyTorch's headers, compiled with torch's include directories and C++ standard, in parallel with
# the levels (its ~40-90 s are the longest compile), and linked against libtorch / libc10 / libtorch_python (its
# CPython entry point, gn_py_group_norm).
TORCH_UNIT = f"{CSRC}/gn_torch_ops.cpp"


def _torch_build_args():
    """(include dirs, compile flags, library dirs, libraries) for TORCH_UNIT, from the installed torch."""
    import torch
    from torch.utils import cpp_extension

    abi = int(torch.compiled_with_cxx11_abi())
    flags = ["-O2", "-g0", "-std=c++20", "-fPIC", "-fvisibility=hidden", "-Wall", "-Wno-unused-parameter",
             f"-D_GLIBCXX_USE_CXX11_ABI={abi}", "-DTORCH_EXTENSION_NAME=_gn_kernels"]
    return (cpp_extension.include_paths() + [CSRC], flags, cpp_extension.library_paths(),
            ["c10", "torch", "torch_cpu", "torch_python"])


def _is_x86_64() -> bool:
    return platform.machine().lower() in ("x86_64", "amd64")


class BuildKernels(build_ext):
    """Compiles each kernel source with its own flags (in parallel), then links them with the dispatcher."""

    def build_extension(self, ext):
        if ext.name != KERNEL_EXT or self.compiler.compiler_type != "unix":
            if ext.name == KERNEL_EXT:  # optional extension: this error only skips it, with a warning
                raise CompileError("the groupnorm kernels build only with a GCC/Clang-style compiler")
            return super().build_extension(ext)
        x86 = _is_x86_64()
        levels = X86_LEVELS if x86 else {f"{CSRC}/gn_isa_base.cpp": []}
        macros = [("GN_WITH_X86_LEVELS", "1")] if x86 else []
        os.makedirs(self.build_temp, exist_ok=True)

        torch_incs, torch_flags, torch_libdirs, torch_libs = _torch_build_args()

        def compile_one(item):
            src, flags = item
            if src == TORCH_UNIT:
                return src, self.compiler.compile([src], output_dir=self.build_temp, include_dirs=torch_incs,
                                                  extra_postargs=torch_flags, depends=HEADERS)
            try:
                return src, self.compiler.compile([src], output_dir=self.build_temp, include_dirs=[CSRC],
                                                  extra_postargs=COMMON_FLAGS + flags, depends=HEADERS,
                                                  macros=macros)
            except CompileError:
                if src in OPTIONAL_LEVELS:
                    print(f"warning: {src} did not compile; that instruction-set level is left out")
                    return src, []
                raise

        with ThreadPoolExecutor(max_workers=min(5, os.cpu_count() or 1)) as pool:
            built = list(pool.map(compile_one, [(TORCH_UNIT, [])] + list(levels.items())))
        objects = [o for _, objs in built for o in objs]
        macros = macros + [OPTIONAL_LEVELS[src] for src, objs in built if objs and src in OPTIONAL_LEVELS]
        ext.extra_objects = objects
        ext.define_macros = macros
        ext.extra_compile_args = COMMON_FLAGS
        ext.extra_link_args = ["-fopenmp"]
        ext.library_dirs = torch_libdirs
        ext.libraries = torch_libs
        ext.language = "c++"
        super().build_extension(ext)

    def get_export_symbols(self, ext):  # PyInit_ is exported by gn_python.cpp itself (PyMODINIT_FUNC)
        return [] if ext.name == KERNEL_EXT else super().get_export_symbols(ext)


setup(
    ext_modules=[
        # every unit BuildKernels compiles and setup.py among the dependencies: a change of one of them or of the
        # flags here relinks the library (distutils skips the link when the library is newer than the sources
        # and depends, even though the objects were recompiled)
        Extension(KERNEL_EXT, sources=[f"{CSRC}/gn_dispatch.cpp", f"{CSRC}/gn_python.cpp"],
                  depends=HEADERS + [TORCH_UNIT, *X86_LEVELS, "setup.py"], optional=True),
    ],
    cmdclass={"build_ext": BuildKernels},
)
