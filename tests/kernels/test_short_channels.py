"""Contiguous channels of a few vectors (7x7 and 14x14 maps) against the NumPy reference.

On the AVX-512 levels, a group's channels of S values with S >= 16 and S % 16 != 0 are applied (forward) and
differentiated (the dx pass) as one stream of whole vectors across channel boundaries: a vector that crosses
a boundary takes each lane's coefficients from its own channel (``rows_apply`` / ``rows_dx`` in gn_v512.h).
Other S (whole vectors, or shorter than a vector) go channel by channel. Both kinds are checked here, forward
and every gradient, with each activation, with and without a residual, on every instruction-set level this
CPU runs, and with outputs large enough for non-temporal stores whose group blocks start unaligned.
"""
import pytest
import torch

from helpers import ACTS, check_against_reference, check_residual, make_case, make_residual, needs_kernels

pytestmark = needs_kernels

# S: shorter than a vector, whole vectors (16, 48: channel by channel), and one run across boundaries (17, 33:
# a vector spans two channels at almost every boundary; 49 = 7x7; 196 = 14x14). The backward's sums take channels
# four at a time up to S = 256 (16x16) and one at a time from 257 on (bwd_rows_sums_any).
SPATIAL = {5: (5,), 16: (4, 4), 17: (17,), 33: (3, 11), 48: (6, 8), 49: (7, 7), 196: (14, 14), 256: (16, 16),
           257: (257,)}


@pytest.mark.parametrize("s", sorted(SPATIAL))
@pytest.mark.parametrize("d", [1, 3, 8, 13])
def test_short_channels_against_reference(s, d):
    """Channels per group d (1: every vector of a group is one channel's; 8: up to 8 boundaries a group; 3 and
    13: a last set of fewer than four channels in the backward's sums, and 13 more than 8 channels in the group
    coefficients' sums)."""
    g = 2
    shape = (2, g * d) + SPATIAL[s]
    for dtype in (torch.float32, torch.bfloat16):
        for act in ACTS:
            x, w, b, dy = make_case(shape, dtype, cl=False, seed=s + d)
            check_against_reference(x, w, b, dy, g, act)
            if act is not None:  # a residual enters the backward only through the activation
                check_residual(x, w, b, dy, make_residual(x, s + d), g, act)


def test_short_channels_every_level(isa_level):
    for dtype in (torch.float32, torch.bfloat16, torch.float16):
        x, w, b, dy = make_case((3, 12, 7, 7), dtype, cl=False, seed=isa_level)
        check_against_reference(x, w, b, dy, 4, "silu")
        check_residual(x, w, b, dy, make_residual(x, isa_level), 4, "relu")


@pytest.mark.parametrize("act", [None, "gelu"])
def test_short_channels_with_non_temporal_stores(act, streaming_stores):
    """4.7 MB float32 output (non-temporal stores: streaming_stores): groups of 3 channels of 49 values start every 588
    bytes, so most groups' runs begin with a masked head before the first 64-byte-aligned vector."""
    x, w, b, dy = make_case((20, 1200, 7, 7), torch.float32, cl=False, seed=7)
    check_against_reference(x, w, b, dy, 400, act)
