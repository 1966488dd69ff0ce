"""Keras-style model summaries: facts first (`summary_rows`), then text."""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.nn.shapes import ModelInfo
from cnnlab.nn.spec import layer_type


@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary table."""

    name: str  # "conv2d_1 (Conv2D)"
    output_shape: str  # "(None, 26, 26, 16)", Keras's notation with the batch axis
    params: int
    flops: int


def format_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["None", *map(str, shape)]) + ")"


def format_bytes(n: float) -> str:
    """Keras's size notation: 384.00 B, 59.16 KB, 89.03 MB (1 KB = 1024 B)."""
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1024 or unit == "GB":
            return f"{n:.2f} {unit}"
        n /= 1024
    raise AssertionError("unreachable")


def format_flops(n: float) -> str:
    """FLOPs with an SI prefix: 3.96 M, 2.47 G."""
    for unit in ("", "K", "M", "G", "T"):
        if abs(n) < 1000 or unit == "T":
            return f"{n:.0f}" if unit == "" else f"{n:.2f} {unit}"
        n /= 1000
    raise AssertionError("unreachable")


def summary_rows(info: ModelInfo) -> list[SummaryRow]:
    """One row per layer, in order."""
    return [
        SummaryRow(
            name=f"{layer.name} ({layer_type(layer.layer)})",
            output_shape=format_shape(layer.output_shape),
            params=layer.params,
            flops=layer.flops,
        )
        for layer in info.layers
    ]


def summary_totals(info: ModelInfo) -> list[tuple[str, str]]:
    """The lines under the table: Keras's three totals, then FLOPs and memory."""
    return [
        ("Total params", f"{info.total:,} ({format_bytes(4 * info.total)})"),
        (
            "Trainable params",
            f"{info.trainable:,} ({format_bytes(4 * info.trainable)})",
        ),
        (
            "Non-trainable params",
            f"{info.non_trainable:,} ({format_bytes(4 * info.non_trainable)})",
        ),
        ("Forward FLOPs per sample", format_flops(info.flops)),
        ("Training FLOPs per sample (~3x forward)", format_flops(3 * info.flops)),
        ("Weight memory (float32)", format_bytes(info.weight_bytes)),
    ]


def format_summary(info: ModelInfo) -> str:
    """The summary as plain text, laid out like Keras's `model.summary()`."""
    rows = summary_rows(info)
    header = ("Layer (type)", "Output Shape", "Param #", "FLOPs")
    cells = [
        (r.name, r.output_shape, f"{r.params:,}", format_flops(r.flops)) for r in rows
    ]
    widths = [max(len(h), *(len(c[i]) for c in cells)) for i, h in enumerate(header)]

    def line(values: tuple[str, ...]) -> str:
        left = [v.ljust(w) for v, w in zip(values[:2], widths[:2], strict=True)]
        right = [v.rjust(w) for v, w in zip(values[2:], widths[2:], strict=True)]
        return "  ".join(left + right).rstrip()

    rule = "-" * (sum(widths) + 2 * (len(widths) - 1))
    out = [f'Model: "{info.arch.name}"', rule, line(header), rule.replace("-", "=")]
    for cell in cells:
        out.append(line(cell))
    out.append(rule.replace("-", "="))
    out += [f"{label}: {value}" for label, value in summary_totals(info)]
    out.append(rule)
    return "\n".join(out)
