"""The results rows as the report reads them: each row's kind and variant, the rows of each role and experiment,
the settings (all but the seed) and the main protocol's rows indexed by setting (:class:`Results`).

Rows written before a field existed read as its default (``ROW_DEFAULTS``; ``task``: classification).
"""
from __future__ import annotations

from collections import Counter, defaultdict

from ..models.archs import DEFAULT_ARCH
from ..protocol import norm_kind, variant_label
from ..training.provenance import separate_by_code

PROTOCOL_FIELDS = ("task", "train_size", "val_size", "arch", "widths", "blocks", "augment", "schedule")
ROW_DEFAULTS = {"arch": DEFAULT_ARCH, "augment": True, "schedule": "cosine", "task": "classification"}


def kind(row: dict) -> str:
    """A results row's kind (BN, GN, LN, IN, GN+WS, ...): :func:`groupnorm.experiments.protocol.run_config.norm_kind`."""
    return norm_kind(row["norm"], row.get("groups"), row.get("group_size"), norm_batch=row.get("norm_batch"),
                     global_batch=row.get("global_batch"))


def protocol_of(row: dict) -> tuple:
    return tuple(str(row.get(f, ROW_DEFAULTS.get(f))) for f in PROTOCOL_FIELDS)


def row_variant(row: dict) -> str:
    """A results row's normalization variant (``GN G=4``, ``LN``, ...: :func:`config.variant_label`)."""
    return variant_label(kind(row), (row.get("groups"), row.get("group_size")))


def is_standard(row: dict) -> bool:
    """A run of the paper's protocol: i.i.d. worker batches and BN statistics per worker."""
    nb = row.get("norm_batch")
    return row.get("classes_per_worker") is None and (nb is None or nb == row["batch_per_worker"])


def noniid_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("classes_per_worker") is not None]


def ghost_rows(rows: list[dict]) -> list[dict]:
    return [r for r in rows if r.get("experiment") == "ghost" or (
        r.get("norm_batch") is not None and r.get("classes_per_worker") is None)]


def bn_batch(row: dict) -> int:
    return row.get("bn_batch") or row["batch_per_worker"]


def split_roles(rows: list[dict]) -> dict:
    """Rows by role: ``main`` (ResNet, test-split validation, the most common epoch count), ``control`` (ResNet
    at other epoch counts), ``lrsweep`` (``holdout`` rows) and ``vgg``; ``superseded`` (another learning rate)
    and ``other_code`` (made by other code than the setting's newest rows: :mod:`..training.provenance`) are
    kept apart."""
    rows, other_code = separate_by_code(rows, lambda r: (protocol_of(r), r.get("arch"), bool(r.get("holdout")),
                                                           setting(r)))
    sweep = [r for r in rows if r.get("holdout")]
    rows, superseded = current_lr(r for r in rows if not r.get("holdout"))
    vgg = [r for r in rows if r.get("arch", "resnet") == "vgg"]
    res = [r for r in rows if r.get("arch", "resnet") != "vgg"]
    counts = Counter(r["epochs"] for r in res if r.get("experiment") != "control") or Counter(r["epochs"] for r in res)
    epochs = counts.most_common(1)[0][0] if counts else None
    return dict(main=[r for r in res if r["epochs"] == epochs], control=[r for r in res if r["epochs"] != epochs],
                lrsweep=sweep, vgg=vgg, superseded=superseded, other_code=other_code)


def current_lr(rows, setting_of=None) -> tuple[list[dict], list[dict]]:
    """(kept, superseded): where one setting (all but seed and learning rate, in one protocol) has rows at several
    base learning rates, only those at the rate of its most recently finished run are kept. A preset whose
    learning rate for a setting changed (a new lr sweep) re-runs it at the new rate into the same directory; the
    old rows are another experiment, not more seeds of this one. ``setting_of``: a row's setting without its
    learning rate (default: the classification setting's, :func:`setting`, with protocol and arch)."""
    if setting_of is None:
        setting_of = lambda r: (protocol_of(r), r.get("arch"), setting(r)[:-1])  # noqa: E731
    keyed = [(setting_of(r), r) for r in rows]
    latest: dict = {}  # setting -> {base lr: its most recent finished_at}
    for key, r in keyed:
        lr_seen = latest.setdefault(key, {})
        lr_seen[r.get("base_lr")] = max(lr_seen.get(r.get("base_lr"), ""), r.get("finished_at", ""))
    keep = {key: max(lrs, key=lrs.get) for key, lrs in latest.items()}
    kept, superseded = [], []
    for key, r in keyed:
        (kept if keep[key] == r.get("base_lr") else superseded).append(r)
    return kept, superseded


class Results:
    """Rows of one protocol, indexed by setting."""

    def __init__(self, rows: list[dict]):
        protos = Counter(protocol_of(r) for r in rows)
        self.protocol = protos.most_common(1)[0][0] if protos else None
        self.other_protocols = sum(c for p, c in protos.items() if p != self.protocol)
        self.rows = [r for r in rows if protocol_of(r) == self.protocol]
        self.by = defaultdict(list)
        standard = [r for r in self.rows if is_standard(r)]  # noniid / ghost rows have their own sections
        # Tables 1-3 at the protocol's worker count: a ghost run with per-worker BN (norm_batch = b) at other
        # workers is another setting (global batch, lr, steps), not a second sample of the table's cell
        counts = Counter(r["workers"] for r in standard)
        self.workers = counts.most_common(1)[0][0] if counts else None
        for r in standard:
            if r["workers"] == self.workers:
                self.by[(kind(r), r["batch_per_worker"], r.get("groups"), r.get("group_size"))].append(r)

    def find(self, k: str, b: int, groups=None, group_size=None, any_groups: bool = False) -> list[dict]:
        if any_groups:
            out = []
            for (kk, bb, g, gs), rs in self.by.items():
                if kk == k and bb == b and (k != "GN" or (g == 32 and gs is None)):
                    out.extend(rs)
            return out
        return self.by.get((k, b, groups, group_size), [])

    def errors(self, rows: list[dict]) -> list[float]:
        return [r["val_error"] for r in rows]

    def batches(self, k: str) -> list[int]:
        return sorted({b for (kk, b, g, gs) in self.by if kk == k}, reverse=True)


def t3_rows(res: Results, b: int, groups=None, group_size=None) -> list[dict]:
    if group_size == 1:
        return res.find("IN", b, None, 1)
    if groups == 1:
        return res.find("LN", b, 1, None)
    return res.find("GN", b, groups, group_size)


def setting(r: dict) -> tuple:
    """What distinguishes a setting (all but the seed)."""
    return (kind(r), r["batch_per_worker"], r["workers"], r.get("groups"), r.get("group_size"),
            r.get("bn_batch"), r.get("classes_per_worker"), r["epochs"], r.get("base_lr"))


def setting_name(r: dict) -> str:
    g, k = r.get("groups"), r.get("group_size")
    gk = f" K={k}" if k not in (None, 1) else (f" G={g}" if kind(r) == "GN" and g is not None else "")
    extra = (f" norm_batch={r['bn_batch']}" if r.get("norm_batch") is not None and kind(r) == "BN" else "") \
        + (f" c={r['classes_per_worker']}" if r.get("classes_per_worker") is not None else "")
    return f"{kind(r)}{gk} b={r['batch_per_worker']} W={r['workers']}{extra}"


def by_setting(rows: list[dict]) -> dict:
    out: dict = defaultdict(list)
    for r in rows:
        out[setting(r)].append(r)
    return out
