"""The median of several ``groupnorm bench --json`` runs, case by case, and the case-measurements below a floor.

    .venv/bin/python scripts/bench_summary.py docs/bench/emr-2t-1.json docs/bench/emr-2t-2.json ... [--floor 0.97]

For every section present (``cases``: the default grid, ``plain``: ``--plain``, ``small``: ``--small``) and every
case (shape, dtype, layout, G) it takes each ratio (``speedup``: torch / ours, above 1 ours is faster) over the
runs that measured it and prints the median as a Markdown table, then the medians below ``--floor`` (the issue's
noise allowance is 0.97), with the runs' CPU models, commits, load averages and times. Nothing is timed here:
the ratios are the runs', each measured side by side within its run.
"""
from __future__ import annotations

import argparse
import json
import statistics
import sys

SECTIONS = {  # section: (title, ratio names in table order)
    "cases": ("default grid: kernels vs torch (fwd, fwd+bwd) and vs torch's eager composites",
              ("fwd", "fwd+bwd", "silu_vs_eager", "res_relu_vs_eager")),
    "plain": ("plain path (GROUPNORM_DISABLE_KERNELS=1) vs torch's composite, no grad", ("fwd", "silu", "res_relu")),
    "small": ("small inputs, one layer, groupnorm.nn.GroupNorm vs torch.nn.GroupNorm", ("fwd+bwd", "fwd")),
}


def case_key(r: dict) -> tuple:
    return tuple(r["shape"]), r.get("dtype"), r["layout"], r.get("groups")


def summarize(docs: list[dict], floor: float = 0.97) -> tuple[str, int, int]:
    """(Markdown text, number of median case-measurements, number below ``floor``) over the bench documents."""
    lines, total, below = [], 0, []
    metas = [d.get("meta", {}) for d in docs]
    lines.append(f"{len(docs)} run(s); CPU: {', '.join(sorted({m.get('cpu', '?') for m in metas}))}; commits: "
                 f"{', '.join(sorted({(m.get('commit') or 'unknown')[:12] for m in metas}))}; threads: "
                 f"{', '.join(sorted({str(m.get('threads')) for m in metas}))}; load average at start: "
                 f"{', '.join(str(m.get('load_average_start')) for m in metas)}; started (UTC): "
                 f"{', '.join(str(m.get('started_utc', '?')) for m in metas)}")
    for section, (title, names) in SECTIONS.items():
        runs = [d.get(section) or [] for d in docs]
        order, by_key = [], {}
        for rows in runs:
            for r in rows:
                k = case_key(r)
                if k not in by_key:
                    order.append(k)
                    by_key[k] = []
                by_key[k].append(r["speedup"])
        if not order:
            continue
        lines += ["", f"### {title}: median of {sum(1 for rows in runs if rows)} run(s), (x) = torch / ours", "",
                  "| (N,C,*S) | dtype | layout | G | " + " | ".join(names) + " | runs |",
                  "|" + " --- |" * (len(names) + 5)]
        for k in order:
            meds = []
            for n in names:
                vals = [sp[n] for sp in by_key[k] if n in sp]
                if not vals:
                    meds.append("-")
                    continue
                m = statistics.median(vals)
                total += 1
                if m < floor:
                    below.append(f"{k[0]} {k[1]} {k[2]} {section}:{n} {m:.2f}x")
                meds.append(f"{m:.2f}")
            lines.append(f"| {k[0]} | {k[1]} | {k[2]} | {k[3]} | " + " | ".join(meds) + f" | {len(by_key[k])} |")
    lines += ["", f"{len(below)} of {total} median case-measurements below {floor:g}x"
              + (":" if below else ".")] + [f"* {b}" for b in below]
    return "\n".join(lines), total, len(below)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("files", nargs="+", help="JSON files written by `groupnorm bench --json`")
    p.add_argument("--floor", type=float, default=0.97, help="list median ratios below this (default 0.97)")
    args = p.parse_args(argv)
    docs = []
    for f in args.files:
        try:
            with open(f) as fh:
                docs.append(json.load(fh))
        except (OSError, json.JSONDecodeError) as e:
            print(f"bench_summary: cannot read {f}: {e}", file=sys.stderr)
            return 2
    print(summarize(docs, args.floor)[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
