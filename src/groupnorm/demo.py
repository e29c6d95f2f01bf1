"""``groupnorm demo``: a published worked example (N=3, C=4, H=1, W=2) through BN, LN, IN and GN (G=2).

The tutorial "What is Group Normalization?" (the example this project's spec starts from; called "the seed"
below and in the demo's output) prints, to three decimals, the statistics of the first coefficient of sample
``a`` and the normalized sample ``a`` for each method, with eps = 1e-5. This module holds those numbers once;
the demo and the tests compare the reference against them.
"""
from __future__ import annotations

import numpy as np

from . import reference as R

TOLERANCE = 1e-3
EPS = 1e-5

#: The batch (a, b, c), shape (3, 4, 1, 2).
SEED_INPUT = np.array(
    [
        [[[2, 3]], [[5, 7]], [[11, 13]], [[17, 19]]],
        [[[0, 1]], [[1, 2]], [[3, 5]], [[8, 13]]],
        [[[1, 2]], [[3, 4]], [[5, 6]], [[7, 8]]],
    ],
    dtype=np.float64,
)

#: What the seed prints for sample a, shape (4, 2) per method (channel, width).
SEED_OUTPUT_A = {
    "BN": [[0.522, 1.567], [0.676, 1.690], [1.071, 1.630], [1.066, 1.492]],
    "LN": [[-1.276, -1.108], [-0.773, -0.439], [0.230, 0.565], [1.234, 1.568]],
    "IN": [[-1.000, 1.000], [-1.000, 1.000], [-1.000, 1.000], [-1.000, 1.000]],
    "GN": [[-1.172, -0.651], [0.391, 1.432], [-1.265, -0.633], [0.633, 1.265]],
}

#: The statistics the seed gives for the first coefficient of a: (mean, variance).
SEED_STATS = {"BN": (1.5, 0.917), "LN": (9.625, 35.734), "IN": (2.5, 0.25), "GN": (4.25, 3.687)}

_FORWARD = {
    "BN": lambda x: R.batch_norm(x, eps=EPS),
    "LN": lambda x: R.layer_norm(x, eps=EPS),
    "IN": lambda x: R.instance_norm(x, eps=EPS),
    "GN": lambda x: R.group_norm(x, 2, eps=EPS),
}

#: The set S_i of the first coefficient of a, as an index into SEED_INPUT.
_FIRST_SET = {
    "BN": (slice(None), 0),
    "LN": (0,),
    "IN": (0, 0),
    "GN": (0, slice(0, 2)),
}


def compute():
    """Rows (method, kind, index, ours, seed, |diff|) for every number the seed prints."""
    rows = []
    for method, fwd in _FORWARD.items():
        s = SEED_INPUT[_FIRST_SET[method]]
        ours_stats = (float(s.mean()), float(s.var()))
        for name, ours, seed in zip(("mean", "var"), ours_stats, SEED_STATS[method]):
            rows.append((method, name, "a[0,0,0]", ours, seed, abs(ours - seed)))
        y = fwd(SEED_INPUT)[0, :, 0, :]
        for c in range(4):
            for w in range(2):
                seed = SEED_OUTPUT_A[method][c][w]
                rows.append((method, "y", f"a[{c},0,{w}]", float(y[c, w]), seed, abs(float(y[c, w]) - seed)))
    return rows


def run(args) -> int:
    rows = compute()
    print("The seeds' worked example: a, b, c of shape (N, C, H, W) = (3, 4, 1, 2), eps = 1e-5, GN with G = 2")
    print("computed by groupnorm.reference (float64) beside the values the seed prints (3 decimals)\n")
    print(f"{'method':<6} {'value':<5} {'where':<9} {'ours (exact)':>14} {'seed':>8} {'|diff|':>9}")
    worst = 0.0
    for method, kind, where, ours, seed, diff in rows:
        flag = ""
        if diff > TOLERANCE:
            flag = "  <-- differs by more than 0.001"
        elif abs(round(ours, 3) - seed) > 1e-9:
            flag = "  (seed rounds differently)"
        worst = max(worst, diff)
        print(f"{method:<6} {kind:<5} {where:<9} {ours:>14.6f} {seed:>8.3f} {diff:>9.6f}{flag}")
    bad = sum(1 for r in rows if r[5] > TOLERANCE)
    print(f"\n{len(rows)} values compared, largest difference {worst:.6f}, tolerance {TOLERANCE}")
    if bad:
        print(f"FAIL: {bad} values differ from the seed by more than {TOLERANCE}")
        return 1
    print("OK: every value matches the seed within 0.001")
    return 0


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "demo",
        help="the seeds' worked example through BN, LN, IN and GN (exit 1 if any value is off by > 0.001)",
        description=__doc__.splitlines()[0],
    )
    p.set_defaults(func=run)
