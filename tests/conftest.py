"""Fixtures shared by the test files (helpers without fixtures live in helpers.py)."""
import os
import sys

import pytest
import torch

# Without a GPU the Triton kernels' tests run in Triton's interpreter, which must be on before anything imports
# Triton (test modules of other folders may, through torch's compiler stack, long before those tests run)
if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# tests/ on sys.path, so that test files in every subfolder import helpers (pytest's default import mode puts
# it there too; --import-mode=importlib does not)
if os.path.dirname(os.path.abspath(__file__)) not in sys.path:
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from helpers import STREAM_L2  # noqa: E402

# Two cores are shared by everything on this machine: keep torch from oversubscribing them.
torch.set_num_threads(max(1, min(2, os.cpu_count() or 1)))

# hypothesis draws the same examples on every run (derandomize: seeded from each test's name), so a failure
# replays; the failing example is printed with the blob that reproduces it
# (the GPU check runs the Triton tests on machines that may lack hypothesis: it is needed only by its own tests)
try:
    from hypothesis import settings
except ImportError:
    settings = None
if settings is not None:
    settings.register_profile("groupnorm", derandomize=True, print_blob=True, deadline=None)
    settings.load_profile("groupnorm")


@pytest.fixture(autouse=True)
def _seeded_global_rng():
    """torch's global generator seeded before every test: an unseeded torch.randn in a test (or in code it
    calls) draws the same values whatever ran before it."""
    torch.manual_seed(0)

# The compiled kernels' instruction-set levels (groupnorm.kernels.ISA_NAMES): 0 baseline, 1 AVX2, 2 AVX-512,
# 3 AVX-512 with AVX512_BF16 for bfloat16 data.
ISA_LEVELS = (0, 1, 2, 3)


@pytest.fixture(params=["dispatch", "plain"])
def gn_path(request, monkeypatch):
    """Run a test through the default dispatch (compiled kernels where they apply) and through the plain path."""
    if request.param == "plain":
        monkeypatch.setenv("GROUPNORM_DISABLE_KERNELS", "1")
    else:
        monkeypatch.delenv("GROUPNORM_DISABLE_KERNELS", raising=False)
    return request.param


@pytest.fixture(params=ISA_LEVELS, ids=["isa0-base", "isa1-avx2", "isa2-avx512", "isa3-avx512bf16"])
def isa_level(request):
    """Run a test once on every instruction-set level: the kernels forced to the level (skipped where the
    library was built without it or this CPU lacks it), the best level restored afterwards."""
    from groupnorm import kernels
    from groupnorm.kernels import _lib

    if not kernels.is_available():
        pytest.skip(f"kernels not built: {kernels.load_error()}")
    level = request.param
    if level > _lib.max_compiled_isa():
        pytest.skip(f"the library was built without level {level} ({kernels.ISA_NAMES[level]})")
    best = kernels.isa()
    if level > best:
        pytest.skip(f"this CPU lacks level {level} ({kernels.ISA_NAMES[level]})")
    try:
        kernels.set_isa(level)
        assert kernels.isa() == level
        yield level
    finally:
        kernels.set_isa(None)
    assert kernels.isa() == best


@pytest.fixture
def streaming_stores():
    """The kernels told the L2 is 256 KiB, so that the (few-MB) outputs of a test take the non-temporal store
    path on the AVX-512 levels whatever this CPU's caches (gn_runtime.h: stream an output larger than the
    threads' L2); the detected sizes again afterwards."""
    from groupnorm.kernels import _lib

    _lib.set_cache_sizes(0, STREAM_L2, 0)
    try:
        yield
    finally:
        _lib.set_cache_sizes(0, 0, 0)
