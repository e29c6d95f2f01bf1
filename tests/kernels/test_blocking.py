"""The kernels' cache-driven blocking (csrc/gn_runtime.h): detected cache sizes, and the blocking paths that
small caches select (many channels-last chunks of FLUSH rows, non-temporal stores for small outputs) give the
NumPy reference's values and gradients on every instruction-set level, and the same bits for any thread count."""
import os

import pytest
import torch

from groupnorm import kernels
from groupnorm.args import activation_code
from groupnorm.kernels import _lib

from helpers import check_against_reference, make_case, needs_kernels

pytestmark = needs_kernels

# small enough that the shapes below take every path: L2 / 2 of 8 KiB is 64 rows of 32 fp32 channels, so chunks
# of FLUSH rows, and outputs over 16 KiB per thread stream
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


@pytest.mark.parametrize("l2", [SMALL[1], 300 << 10])
@pytest.mark.parametrize("cl", [False, True])
def test_blocking_independent_of_thread_count(cl, l2):
    """420 KB outputs, the same bits forward and backward with 1 and 2 threads (gelu: the activation's vector
    code on every store path): with a 16 KiB L2 (chunks of FLUSH rows, streamed either way) and a 300 KiB L2
    (streamed by one thread, over its L2, but not by two)."""
    x, w, b, dy = make_case((2, 32, 40, 41), torch.float32, cl, seed=1)
    assert l2 != SMALL[1] or x.numel() * 4 > 2 * l2
    assert l2 == SMALL[1] or l2 < x.numel() * 4 <= 2 * l2
    _lib.set_cache_sizes(SMALL[0], l2, SMALL[2])
    try:
        outs = _outputs_by_thread_count(x, w, b, dy)
    finally:
        _lib.set_cache_sizes(0, 0, 0)
    for a, c in zip(*outs):
        assert torch.equal(a, c)


def _outputs_by_thread_count(x, w, b, dy):
    outs = []
    for nt in (1, 2):
        prev = torch.get_num_threads()
        torch.set_num_threads(nt)
        try:
            xg = x.detach().clone().requires_grad_(True)
            y, mean, rstd = torch.ops.groupnorm.gn_forward(xg, 8, w, b, 1e-5, activation_code("gelu"))
            (dx,) = torch.autograd.grad(y, (xg,), dy)
        finally:
            torch.set_num_threads(prev)
        outs.append((y, mean, rstd, dx))
    return outs
