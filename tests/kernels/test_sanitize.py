"""The kernels built with -fsanitize=address,undefined run their test grid without a report.

Builds csrc/sanitize_driver.cpp with the baseline and the AVX-512 kernel levels (the AVX-512 ones are what this
machine runs; the baseline is what CPUs without AVX2 run; all compiled in parallel; an AVX-512 level the compiler
cannot build is left out, as setup.py does), runs it (every buffer an
exact-size heap allocation, so AddressSanitizer sees any out-of-bounds access; UBSan aborts on undefined
behaviour) and checks its exit status and output. The driver also compares every case with a naive float64
implementation and checks that invalid arguments return an error code.
"""
import os
import platform
import shutil
import subprocess

import pytest

from helpers import ROOT

pytestmark = pytest.mark.slow  # builds the kernels with ASan/UBSan: about a minute

CSRC = ROOT / "src" / "groupnorm" / "kernels" / "csrc"
FLAGS = ["-O1", "-g", "-std=c++17", "-fopenmp", "-fsanitize=address,undefined", "-fno-sanitize-recover=all",
         "-fno-omit-frame-pointer"]


def _compiler():
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("c++")
    if not cxx:
        return None
    probe = subprocess.run([cxx, "-fsanitize=address,undefined", "-x", "c++", "-", "-o", os.devnull],
                           input="int main(){return 0;}", capture_output=True, text=True)
    return cxx if probe.returncode == 0 else None


def _accepts(cxx, flags) -> bool:
    """Whether the compiler takes these target flags (an older GCC lacks -march=x86-64-v4 or -mavx512bf16)."""
    probe = subprocess.run([cxx, *flags, "-x", "c++", "-c", "-", "-o", os.devnull], input="int f(){return 0;}",
                           capture_output=True, text=True)
    return probe.returncode == 0


@pytest.mark.skipif(_compiler() is None, reason="no C++ compiler with AddressSanitizer / UBSan")
def test_sanitized_kernel_grid(tmp_path):
    cxx = _compiler()
    x86 = platform.machine().lower() in ("x86_64", "amd64")
    units = [("gn_isa_base.cpp", ["-march=x86-64"] if x86 else [])]
    macros = []
    v4 = ["-march=x86-64-v4", "-mprefer-vector-width=512"]
    if x86 and _accepts(cxx, v4):  # as setup.py, levels the compiler cannot build are left out
        units.append(("gn_isa_avx512.cpp", v4))
        macros.append("-DGN_HAVE_AVX512=1")
        if _accepts(cxx, [*v4, "-mavx512bf16"]):
            units.append(("gn_isa_avx512bf16.cpp", [*v4, "-mavx512bf16"]))
            macros.append("-DGN_HAVE_AVX512BF16=1")
    units += [("gn_dispatch.cpp", []), ("sanitize_driver.cpp", [])]
    procs = []
    for src, extra in units:
        obj = tmp_path / (src + ".o")
        procs.append((obj, subprocess.Popen([cxx, *FLAGS, *extra, *macros, f"-I{CSRC}", "-c", str(CSRC / src),
                                             "-o", str(obj)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                            text=True)))
    for obj, p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, f"compiling {obj.name} failed:\n{out}"
    exe = tmp_path / "driver"
    link = subprocess.run([cxx, "-fopenmp", "-fsanitize=address,undefined", *[str(o) for o, _ in procs], "-o",
                           str(exe), "-lm"], capture_output=True, text=True)
    assert link.returncode == 0, link.stderr
    env = dict(os.environ, ASAN_OPTIONS="detect_leaks=1:abort_on_error=0", UBSAN_OPTIONS="print_stacktrace=1",
               OMP_NUM_THREADS="2")
    env.pop("LD_PRELOAD", None)
    run = subprocess.run([str(exe)], capture_output=True, text=True, env=env, timeout=300)
    report = run.stdout + run.stderr
    assert run.returncode == 0, report[-5000:]
    assert "runtime error" not in report and "AddressSanitizer" not in report, report[-5000:]
    n_cases = int(run.stdout.split()[-1])
    assert run.stdout.startswith("OK") and n_cases >= 352, report[-2000:]
