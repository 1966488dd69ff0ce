"""Training curves as PNG files, drawn without pyplot so no GUI state is touched.

matplotlib is imported by the functions that draw, not with the module.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError
from cnnlab.training.metrics import METRIC_NAMES
from cnnlab.util.fsio import save_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes

History = Mapping[str, Sequence[float | None] | None]

# Human names for the keys a history holds, used for axis labels.
_LABELS = METRIC_NAMES

# Beyond 50 epochs the markers merge into a thick line, so they are left off.
_MAX_MARKED_EPOCHS = 50

# 100 dpi keeps a 12x4.5 inch figure at 1200x450 px: sharp, and about 50 kB.


def plot_history(history: History, path: str | Path, title: str = "") -> Path:
    """Write loss and accuracy curves (train vs validation) side by side to a PNG."""
    from matplotlib.figure import Figure

    for key in ("loss", "acc"):
        if not _values(history, key):
            raise CnnlabError(
                f"training history has no {key!r} values; "
                "plot the history of a run that finished at least one epoch"
            )
    figure = Figure(figsize=(12, 4.5), layout="constrained")
    loss_axes, acc_axes = figure.subplots(1, 2)
    _draw_pair(loss_axes, history, "loss", "categorical cross-entropy")
    _draw_pair(acc_axes, history, "acc", "accuracy")
    if title:
        figure.suptitle(title)
    return save_figure(figure, Path(path))


def plot_histories(
    histories: Mapping[str, History],
    path: str | Path,
    key: str = "val_loss",
    title: str = "",
) -> Path:
    """Write one PNG overlaying the `key` curve of every named run."""
    from matplotlib.figure import Figure

    if not histories:
        raise CnnlabError("no runs to compare; give at least one run's history")
    if not any(_values(history, key) for history in histories.values()):
        raise CnnlabError(
            f"none of the runs {', '.join(histories)} has {key!r} values; "
            "pick another key, e.g. 'loss' or 'acc'"
        )
    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    epochs = max(_draw_run(axes, name, run, key) for name, run in histories.items())
    _style(axes, _LABELS.get(key, key), epochs)
    if title:
        axes.set_title(title)
    return save_figure(figure, Path(path))


def _values(history: History, key: str) -> list[float]:
    """The per-epoch values under key as floats, with gaps as NaN ([] if none)."""
    raw = history.get(key)
    if raw is None:
        return []
    values = [math.nan if value is None else float(value) for value in raw]
    # Infinite losses (a diverged run) would wreck autoscaling; show them as gaps.
    values = [value if math.isfinite(value) else math.nan for value in values]
    return values if any(not math.isnan(value) for value in values) else []


def _epochs(values: Sequence[float]) -> range:
    """Epoch numbers 1..n for n values."""
    return range(1, len(values) + 1)


def marker(values: Sequence[float]) -> str:
    """Dots on each epoch for short curves (a single epoch is only a dot)."""
    return "o" if len(values) <= _MAX_MARKED_EPOCHS else ""


def _draw_pair(axes: Axes, history: History, key: str, ylabel: str) -> None:
    """Draw the training curve for key and, if present, its validation curve."""
    epochs = 0
    for name in (key, f"val_{key}"):
        values = _values(history, name)
        if values:
            axes.plot(
                _epochs(values), values, marker=marker(values), label=_LABELS[name]
            )
            epochs = max(epochs, len(values))
    _style(axes, ylabel, epochs)
    axes.set_title(ylabel)


def _draw_run(axes: Axes, name: str, history: History, key: str) -> int:
    """Draw one run's curve (or a legend-only note) and return its epoch count."""
    values = _values(history, key)
    if not values:
        axes.plot([], [], linestyle="none", label=f"{name} (no {key})")
        return 0
    axes.plot(_epochs(values), values, marker=marker(values), markersize=3, label=name)
    return len(values)


def _style(axes: Axes, ylabel: str, epochs: int) -> None:
    """Label the axes, force whole-number epoch ticks, add grid and legend."""
    from matplotlib.ticker import MaxNLocator

    # Half an epoch of margin: otherwise a single epoch gets an axis 0.1 wide
    # with fractional ticks, as integer-only ticks need a span of at least 1.
    axes.set_xlim(0.5, epochs + 0.5)
    axes.set_xlabel("epoch")
    axes.set_ylabel(ylabel)
    # min_n_ticks=1 keeps the lone tick of a one-epoch run an integer; steps of
    # 1, 2, 5 or 10 (times a power of ten) give round epoch numbers like 25, 50.
    locator = MaxNLocator(integer=True, min_n_ticks=1, steps=[1, 2, 5, 10])
    axes.xaxis.set_major_locator(locator)
    axes.grid(True, alpha=0.3)
    axes.legend()
