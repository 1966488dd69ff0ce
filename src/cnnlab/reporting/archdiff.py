"""What one architecture changes relative to another, layer by layer.

Layers are matched on their type sequence (difflib's longest matching blocks), so
a net that adds a Dropout or widens a Conv2D reads as exactly that: one layer
added, or one layer changed with its old and new arguments.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class LayerChange:
    kind: str  # "added" | "removed" | "changed"
    position: int  # 1-based index of the layer in the net it belongs to
    layer: str  # the layer written out, e.g. "Conv2D(filters=32, kernel_size=3x3)"
    changes: tuple[tuple[str, Any, Any], ...] = ()  # (argument, old, new)

    def text(self) -> str:
        if self.kind != "changed":
            sign = "+" if self.kind == "added" else "-"
            return f"{sign} {self.layer} (layer {self.position})"
        said = ", ".join(f"{k} {_value(a)} -> {_value(b)}" for k, a, b in self.changes)
        return f"~ {self.layer.split('(')[0]} (layer {self.position}): {said}"


def layer_text(layer: Mapping[str, Any]) -> str:
    args = ", ".join(f"{k}={_value(v)}" for k, v in layer.items() if k != "type")
    return f"{layer['type']}({args})" if args else str(layer["type"])


def _value(value: Any) -> str:
    if isinstance(value, (list, tuple)):
        return "x".join(str(v) for v in value)
    return str(value)


def diff_layers(
    base: Sequence[Mapping[str, Any]], other: Sequence[Mapping[str, Any]]
) -> list[LayerChange]:
    """The changes that turn `base`'s layers into `other`'s: identical layers are
    matched first, then, between them, layers of the same type pair up as changed."""
    outer = difflib.SequenceMatcher(
        a=[layer_text(x) for x in base],
        b=[layer_text(x) for x in other],
        autojunk=False,
    )
    changes: list[LayerChange] = []
    for op, i1, i2, j1, j2 in outer.get_opcodes():
        if op != "equal":
            changes += _by_type(base, other, i1, i2, j1, j2)
    return changes


def _by_type(
    base: Sequence[Mapping[str, Any]],
    other: Sequence[Mapping[str, Any]],
    i1: int,
    i2: int,
    j1: int,
    j2: int,
) -> list[LayerChange]:
    inner = difflib.SequenceMatcher(
        a=[x["type"] for x in base[i1:i2]],
        b=[x["type"] for x in other[j1:j2]],
        autojunk=False,
    )
    changes = []
    for op, a1, a2, b1, b2 in inner.get_opcodes():
        if op == "equal":
            for i, j in zip(
                range(i1 + a1, i1 + a2), range(j1 + b1, j1 + b2), strict=True
            ):
                changed = _changed_args(base[i], other[j])
                changes.append(
                    LayerChange("changed", j + 1, layer_text(other[j]), changed)
                )
            continue
        changes += [
            LayerChange("removed", i + 1, layer_text(base[i]))
            for i in range(i1 + a1, i1 + a2)
        ]
        changes += [
            LayerChange("added", j + 1, layer_text(other[j]))
            for j in range(j1 + b1, j1 + b2)
        ]
    return changes


def _changed_args(
    a: Mapping[str, Any], b: Mapping[str, Any]
) -> tuple[tuple[str, Any, Any], ...]:
    keys = [k for k in dict.fromkeys([*a, *b]) if k != "type"]
    return tuple((k, a.get(k), b.get(k)) for k in keys if a.get(k) != b.get(k))


def diff_text(base: Mapping[str, Any], other: Mapping[str, Any], limit: int = 8) -> str:
    """The layer changes of two architecture documents, '; '-joined (at most
    `limit`, then how many more)."""
    changes = diff_layers(base.get("layers", []), other.get("layers", []))
    if not changes:
        return "same layers"
    shown = [c.text() for c in changes[:limit]]
    if len(changes) > limit:
        shown.append(f"and {len(changes) - limit} more")
    return "; ".join(shown)
