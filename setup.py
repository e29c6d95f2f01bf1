"""Build script: everything declarative lives in pyproject.toml; this file only adds the compiled kernels.

The recipe (sources, flags, compile and link) is ``src/groupnorm/kernels/_build.py``, shared with the build on
first use. The kernels' PyTorch operators need torch's headers, so the library is built here only where the
build environment has torch (``pip install --no-build-isolation .``, ``scripts/setup.sh``). pip's default build
is isolated (only setuptools and wheel): then, and where the compile fails (no C++ compiler, no OpenMP), the
package installs without the library, with its sources, and builds it against the torch it runs with on first
use (cached per torch version; ``groupnorm build-kernels`` builds it ahead). Requiring torch at build time
instead would make pip's isolated build download a torch of its choosing (several GB) that need not match the
torch the package runs with.
"""
import importlib.util
import os
import sys

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

KERNEL_EXT = "groupnorm.kernels._gn_kernels"
_spec = importlib.util.spec_from_file_location(
    "_groupnorm_build", os.path.join(os.path.dirname(os.path.abspath(__file__)), "src/groupnorm/kernels/_build.py"))
_build = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_build)
HAVE_TORCH = importlib.util.find_spec("torch") is not None


def _say(msg):
    print(msg, file=sys.stderr, flush=True)


class BuildKernels(build_ext):
    """Builds the kernel library with groupnorm.kernels._build (not distutils' compiler: one recipe for both
    builds); a failure only leaves the library to the build on first use, with a warning."""

    def build_extension(self, ext):
        if ext.name != KERNEL_EXT:
            return super().build_extension(ext)
        try:
            _build.build(self.get_ext_fullpath(ext.name), os.path.join(self.build_temp, "groupnorm-kernels"),
                         log=_say)
        except _build.BuildError as exc:
            _say(f"warning: groupnorm's compiled CPU kernels did not build ({exc}); the package installs without "
                 "them and builds them on first use (`groupnorm build-kernels` builds them now)\n" + exc.details[-4000:])

    def get_export_symbols(self, ext):  # PyInit_ is exported by gn_python.cpp itself (PyMODINIT_FUNC)
        return [] if ext.name == KERNEL_EXT else super().get_export_symbols(ext)


if HAVE_TORCH:
    # sources listed for setuptools' bookkeeping (the sdist); BuildKernels compiles them all, every time
    ext_modules = [Extension(KERNEL_EXT, sources=[f"src/groupnorm/kernels/csrc/{p.name}" for p in _build.sources()
                                                  if p.suffix == ".cpp"], optional=True)]
else:
    ext_modules = []
    _say("groupnorm: torch is not importable in this build environment (pip builds in an isolated one unless given "
         "--no-build-isolation): the compiled CPU kernels are built on first use against the installed torch, or "
         "ahead with `groupnorm build-kernels`")

setup(ext_modules=ext_modules, cmdclass={"build_ext": BuildKernels})
