"""What a conversion replaced: :class:`ConvertedLayer` per layer, :class:`ConversionReport` for the model."""
from __future__ import annotations

from dataclasses import dataclass, field

__all__ = ["ConvertedLayer", "ConversionReport"]


@dataclass(frozen=True)
class ConvertedLayer:
    """One replaced layer. ``names`` are all its qualified names (more than one if it is shared)."""

    names: tuple[str, ...]
    source: str            # class name of the replaced layer, e.g. "BatchNorm2d"
    target: str            # class name of the new layer, e.g. "GroupNorm"
    channels: int
    groups: int | None = None            # GroupNorm only: the group count used
    requested: str | None = None         # GroupNorm only: what was asked, "num_groups=32" or "group_size=16"
    fallback: bool = False               # GroupNorm only: the request did not fit C, a fallback was used
    carried: tuple[str, ...] = ()        # what was copied over (weight, bias, eps, running stats, ...)
    dropped: tuple[str, ...] = ()        # what has no counterpart in the new layer
    fused: str | None = None             # convert_group_norm(fuse_activation=True): the activation folded in

    @property
    def name(self) -> str:
        """The first qualified name ("" for the root module)."""
        return self.names[0]


@dataclass
class ConversionReport:
    """What a conversion replaced, in traversal order; ``len(report) == 0`` if nothing matched."""

    layers: list[ConvertedLayer] = field(default_factory=list)

    def __len__(self) -> int:
        return len(self.layers)

    def __iter__(self):
        return iter(self.layers)

    @property
    def fallbacks(self) -> list[ConvertedLayer]:
        return [layer for layer in self.layers if layer.fallback]

    def summary(self) -> str:
        """One line, e.g. ``converted 20 layers to GroupNorm; 1 used a fallback: stem.bn (C=24, num_groups=16 -> 12 groups)``."""
        if not self.layers:
            return "converted 0 layers (no matching layer found)"
        targets = sorted({layer.target for layer in self.layers})
        line = f"converted {len(self.layers)} layer{'s' if len(self.layers) != 1 else ''} to {', '.join(targets)}"
        fb = self.fallbacks
        if fb:
            items = ", ".join(
                f"{layer.name or '<root>'} (C={layer.channels}, {layer.requested} -> {layer.groups} groups)"
                for layer in fb
            )
            line += f"; {len(fb)} used a fallback: {items}"
        fused = [layer for layer in self.layers if layer.fused]
        if fused:
            line += f"; {len(fused)} with the following activation fused"
        return line

    def table(self) -> str:
        """A plain-text table, one row per layer."""
        fused = any(layer.fused for layer in self.layers)
        rows = [("name", "from", "to", "C", "groups", "carried") + (("fused",) if fused else ())]
        for layer in self.layers:
            groups = "" if layer.groups is None else str(layer.groups) + (" (fallback)" if layer.fallback else "")
            rows.append((", ".join(n or "<root>" for n in layer.names), layer.source, layer.target,
                         str(layer.channels), groups, ", ".join(layer.carried))
                        + ((layer.fused or "",) if fused else ()))
        widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
        return "\n".join("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows)
