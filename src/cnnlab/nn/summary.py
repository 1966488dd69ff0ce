"""Keras-style model summaries: facts first (`summary_rows`), then text."""

from __future__ import annotations

from dataclasses import dataclass

from cnnlab.nn.shapes import ModelInfo
from cnnlab.nn.spec import layer_type
from cnnlab.util.units import format_bytes_binary, format_flops


@dataclass(frozen=True)
class SummaryRow:
    """One line of the summary table."""

    name: str  # "conv2d_1 (Conv2D)"
    output_shape: str  # "(None, 26, 26, 16)", Keras's notation with the batch axis
    params: int
    flops: int


def format_shape(shape: tuple[int, ...]) -> str:
    return "(" + ", ".join(["None", *map(str, shape)]) + ")"


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
        ("Total params", f"{info.total:,} ({format_bytes_binary(4 * info.total)})"),
        (
            "Trainable params",
            f"{info.trainable:,} ({format_bytes_binary(4 * info.trainable)})",
        ),
        (
            "Non-trainable params",
            f"{info.non_trainable:,} ({format_bytes_binary(4 * info.non_trainable)})",
        ),
        ("Forward FLOPs per sample", format_flops(info.flops)),
        ("Training FLOPs per sample (~3x forward)", format_flops(info.train_flops)),
        ("Weight memory (float32)", format_bytes_binary(info.weight_bytes)),
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
