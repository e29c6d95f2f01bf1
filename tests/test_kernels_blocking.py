"""The kernels' cache-driven blocking (csrc/gn_runtime.h): detected cache sizes, and the blocking paths that
small caches select (many channels-last chunks of FLUSH rows, non-temporal stores for small outputs) give the
NumPy reference's values and gradients on every instruction-set level, and the same bits for any thread count."""
import os

import pytest
import torch

from groupnorm import kernels
from groupnorm.args import activation_code
from groupnorm.kernels import _lib

from test_kernels import check_against_reference, make_case

pytestmark = pytest.mark.skipif(not kernels.is_available(), reason=f"kernels not built: {kernels.load_error()}")

# small enough that the shapes below take every path: L2 / 2 of 8 KiB is 64 rows of 32 fp32 channels, so chunks
# of FLUSH rows; an L3 of 64 KiB streams any output of 32 KiB or more
SMALL = (4096, 16384, 65536)


@pytest.fixture
def small_caches():
    _lib.set_cache_sizes(*SMALL)
    try:
        yield
    finally:
        _lib.set_cache_sizes(0, 0, 0)


def _sysfs_size(level):
    base = "/sys/devices/system/cpu/cpu0/cache"
    for d in sorted(os.listdir(base)) if os.path.isdir(base) else []:
        p = os.path.join(base, d)
        try:
            lv, typ, size = (open(os.path.join(p, f)).read().strip() for f in ("level", "type", "size"))
        except OSError:
            continue
        if int(lv) == level and typ != "Instruction":
            mult = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(size[-1], 1)
            return int(size.rstrip("KMG")) * mult
    return None


def test_detected_cache_sizes():
    l1, l2, l3 = _lib.cache_sizes()
    assert 4096 <= l1 <= l2 <= l3
    for level, got in ((1, l1), (2, l2), (3, l3)):
        want = _sysfs_size(level)
        if want is not None:
            assert got == want, f"L{level}: {got} bytes, the OS reports {want}"


def test_override_and_restore():
    before = _lib.cache_sizes()
    _lib.set_cache_sizes(*SMALL)
    try:
        assert _lib.cache_sizes() == SMALL
    finally:
        _lib.set_cache_sizes(0, 0, 0)
    assert _lib.cache_sizes() == before


@pytest.mark.parametrize("level", [lvl for lvl in (0, 1, 2, 3) if lvl <= _lib.max_compiled_isa()])
@pytest.mark.parametrize("cl", [False, True])
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_small_cache_paths_against_reference(small_caches, level, cl, dtype):
    best = kernels.isa()
    if level > best:
        pytest.skip(f"this CPU lacks level {level}")
    kernels.set_isa(level)
    try:
        # N = 1 (three-phase chunks) and N = 8 (whole samples per thread); 300 rows: 5 chunks and a partial one
        for shape, groups, act in (((1, 32, 15, 20), 8, "silu"), ((8, 32, 300), 4, None), ((2, 48, 7, 9), 16, "relu")):
            x, w, b, dy = make_case(shape, dtype, cl, seed=3)
            check_against_reference(x, w, b, dy, groups, act)
    finally:
        kernels.set_isa(best)


def test_small_cache_paths_independent_of_thread_count(small_caches):
    x, w, b, _ = make_case((2, 32, 40, 41), torch.float32, True, seed=1)
    outs = []
    for nt in (1, 2):
        prev = torch.get_num_threads()
        torch.set_num_threads(nt)
        try:
            y, mean, rstd = torch.ops.groupnorm.gn_forward(x, 8, w, b, 1e-5, activation_code("gelu"))
        finally:
            torch.set_num_threads(prev)
        outs.append((y, mean, rstd))
    for a, c in zip(*outs):
        assert torch.equal(a, c)
