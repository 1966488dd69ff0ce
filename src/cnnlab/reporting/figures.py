"""Study figures: each architecture's curves over seeds, overlays, accuracy vs cost.

Drawn without pyplot, like training/curves.py, and saved with its atomic writer. Every
function computes plain series from the trials first, then renders them. matplotlib
is imported by the functions that draw, not with the module.
"""

from __future__ import annotations

import functools
import hashlib
import math
import statistics
import textwrap
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from cnnlab.errors import CnnlabError
from cnnlab.studies.results import TrialResult
from cnnlab.training.curves import marker, save_figure
from cnnlab.training.status import Status
from cnnlab.util.text import slug

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

_LINESTYLES = ("-", "--", ":")
_MARKERS = ("o", "s", "^")


@functools.cache
def _colours() -> tuple[tuple[float, ...], ...]:
    """Ten colours tell ten labels apart (the notebook has nine networks); beyond
    ten they repeat with another line style and marker. The first two are the
    training and validation colours."""
    from matplotlib import colormaps

    return colormaps["tab10"].colors


# With more labels than this an in-axes legend hides curves; it goes to the right.
_LEGEND_INSIDE_MAX = 4

_NAMES = {
    "loss": "training loss",
    "acc": "training accuracy",
    "val_loss": "validation loss",
    "val_acc": "validation accuracy",
}

_COSTS = {
    "params": "parameters (count, log scale)",
    "flops": "training FLOPs per sample (3 × forward, log scale)",
}

# Longest slug in a figure's file name (a hash may follow it).
_SLUG_MAX = 40

# Characters per line of a label in legends and annotations (twice that in titles).
_WRAP = 40


@dataclass(frozen=True)
class Band:
    """One metric over epochs across seeds: mean line and min..max envelope."""

    epochs: list[int]
    mean: list[float]
    low: list[float]
    high: list[float]
    seeds: int  # trials that have at least one value


@dataclass(frozen=True)
class CostPoint:
    """One label's test accuracy (percent) across seeds at its cost."""

    label: str
    cost: float
    mean: float
    std: float | None  # sample std across seeds; None for a single seed
    seeds: int


def arch_curves(label: str, trials: Sequence[TrialResult], path: str | Path) -> Path:
    """Write loss | accuracy panels (train vs validation) of one label's seeds."""
    own = _of_label(trials, label)
    if not own:
        raise CnnlabError(
            f"no trial has the label {label!r}; "
            f"labels present: {', '.join(map(repr, labels_of(trials))) or 'none'}"
        )
    if _band(own, "loss") is None:
        raise CnnlabError(
            f"label {label!r} has no training history yet; "
            "plot it once a trial has finished at least one epoch"
        )
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 4), layout="constrained")
    loss_axes, acc_axes = figure.subplots(1, 2)
    _draw_panel(loss_axes, own, "loss", "cross-entropy (nats)")
    _draw_panel(acc_axes, own, "acc", "accuracy (%)")
    seeds = ", ".join(str(trial.seed) for trial in own)
    noun = "seed" if len(own) == 1 else "seeds"
    versus = "vs validation" if _band(own, "val_loss") else "only, no validation"
    title = f"{label}: training {versus}, {noun} {seeds}"
    figure.suptitle(_verbatim(title, width=2 * _WRAP))
    return save_figure(figure, Path(path))


def overlay_validation(
    trials: Sequence[TrialResult], path: str | Path, key: str = "val_loss"
) -> Path:
    """Write every label's mean `key` curve over seeds on one axes."""
    if key not in _NAMES:
        raise CnnlabError(
            f"cannot overlay {key!r}; use one of {', '.join(map(repr, _NAMES))}"
        )
    bands = validation_bands(trials, key)
    if not any(bands.values()):
        raise CnnlabError(
            f"no trial has {key!r} values; train with validation, "
            "or overlay another key such as 'loss' or 'acc'"
        )
    from matplotlib.figure import Figure

    figure = Figure(figsize=(10, 5), layout="constrained")
    axes = figure.subplots()
    name = _NAMES[key]
    entries = [
        _draw_mean(axes, index, label, band, name)
        for index, (label, band) in enumerate(bands.items())
    ]
    _epoch_axis(axes, max(band.epochs[-1] for band in bands.values() if band))
    _value_axis(axes, key, [band for band in bands.values() if band])
    missing = sum(band is None for band in bands.values())
    note = f"; {missing} of {len(bands)} labels without {name}" if missing else ""
    axes.set_title(f"{name} per architecture, mean over seeds{note}")
    _legend(figure, axes, entries)
    return save_figure(figure, Path(path))


def accuracy_vs_cost(
    trials: Sequence[TrialResult], path: str | Path, cost: str = "params"
) -> Path:
    """Write mean test accuracy (± std over seeds) per label against its cost."""
    points = cost_points(trials, cost)
    if not points:
        raise CnnlabError(
            "no trial has a test accuracy and a positive cost; "
            "evaluate the trials on the test set first"
        )
    from matplotlib.figure import Figure

    figure = Figure(figsize=(8, 5), layout="constrained")
    axes = figure.subplots()
    order = labels_of(trials)
    middle = math.sqrt(min(p.cost for p in points) * max(p.cost for p in points))
    for point in points:
        _draw_point(axes, order.index(point.label), point, point.cost > middle)
    axes.set_xscale("log")
    # Room for the annotations beside the outermost points.
    axes.margins(x=0.15, y=0.12)
    axes.set_xlabel(_COSTS[cost])
    axes.set_ylabel("test accuracy (%)")
    axes.grid(True, which="both", alpha=0.3)
    missing = len(order) - len(points)
    note = (
        f"; {missing} of {len(order)} labels without test accuracy" if missing else ""
    )
    noun = "parameters" if cost == "params" else "training FLOPs"
    axes.set_title(f"test accuracy vs {noun} (error bars: std over seeds){note}")
    return save_figure(figure, Path(path))


def study_figures(trials: Sequence[TrialResult], folder: str | Path) -> dict[str, Path]:
    """Write all study figures into folder; return {file stem: path}, in order."""
    folder = Path(folder)
    figures: dict[str, Path] = {}
    for label in labels_of(trials):
        if _band(_of_label(trials, label), "loss") is not None:
            name = f"curves-{safe_name(label)}"
            figures[name] = arch_curves(label, trials, folder / f"{name}.png")
    for key in ("val_loss", "val_acc"):
        if any(validation_bands(trials, key).values()):
            figures[key] = overlay_validation(trials, folder / f"{key}.png", key)
    for cost in _COSTS:
        if cost_points(trials, cost):
            name = f"acc_vs_{cost}"
            figures[name] = accuracy_vs_cost(trials, folder / f"{name}.png", cost)
    return figures


def labels_of(trials: Sequence[TrialResult]) -> list[str]:
    """Labels in order of first appearance: the order that fixes their colours."""
    return list(dict.fromkeys(trial.label for trial in trials))


def safe_name(label: str) -> str:
    """A file-name-safe form of label, distinct for distinct labels: its lower-case
    slug, plus a short hash of the label if that is not the label itself."""
    name = slug(label.lower())[:_SLUG_MAX].strip("-.")
    if name and name == label:
        return name
    # Lower-casing counts as a change, so 'A' and 'a' differ on case-blind disks.
    digest = hashlib.sha256(label.encode("utf-8")).hexdigest()[:8]
    return f"{name}-{digest}" if name else digest


def validation_bands(trials: Sequence[TrialResult], key: str) -> dict[str, Band | None]:
    """Each label's `key` band across its seeds (None where it has no values)."""
    return {label: _band(_of_label(trials, label), key) for label in labels_of(trials)}


def cost_points(trials: Sequence[TrialResult], cost: str = "params") -> list[CostPoint]:
    """Each label's test accuracy statistics at its cost, for labels that have both."""
    if cost not in _COSTS:
        raise CnnlabError(
            f"unknown cost {cost!r}; use one of {', '.join(map(repr, _COSTS))}"
        )
    points = []
    for label in labels_of(trials):
        point = _cost_point(label, _of_label(trials, label), cost)
        if point is not None:
            points.append(point)
    return points


def _of_label(trials: Sequence[TrialResult], label: str) -> list[TrialResult]:
    """The trials of one label, in the given order."""
    return [trial for trial in trials if trial.label == label]


def _scale(key: str) -> float:
    """Accuracies are fractions in the history and percent on the figures."""
    return 100.0 if key.endswith("acc") else 1.0


def _points(trial: TrialResult, key: str) -> dict[int, float]:
    """The trial's finite `key` values by epoch (1-based when rows lack 'epoch')."""
    points = {}
    for index, row in enumerate(trial.history):
        value = row.get(key)
        if value is not None and math.isfinite(value):
            points[int(row.get("epoch") or index + 1)] = float(value) * _scale(key)
    return points


def _band(trials: Sequence[TrialResult], key: str) -> Band | None:
    """Mean and min..max of `key` per epoch over the trials that reached it."""
    series = [points for points in (_points(t, key) for t in trials) if points]
    if not series:
        return None
    epochs = sorted({epoch for points in series for epoch in points})
    columns = [[p[epoch] for p in series if epoch in p] for epoch in epochs]
    return Band(
        epochs=epochs,
        mean=[statistics.fmean(column) for column in columns],
        low=[min(column) for column in columns],
        high=[max(column) for column in columns],
        seeds=len(series),
    )


def _cost_point(
    label: str, trials: Sequence[TrialResult], cost: str
) -> CostPoint | None:
    """One label's accuracy statistics, or None without test accuracy or cost."""
    pairs = [
        (100.0 * t.test_acc, t.params if cost == "params" else 3 * t.flops)
        for t in trials
        if t.test_acc is not None and math.isfinite(t.test_acc)
    ]
    accs, costs = [acc for acc, _ in pairs], [price for _, price in pairs]
    if not pairs or min(costs) <= 0:
        return None
    return CostPoint(
        label=label,
        cost=statistics.fmean(costs),
        mean=statistics.fmean(accs),
        std=statistics.stdev(accs) if len(accs) > 1 else None,
        seeds=len(accs),
    )


def _draw_panel(
    axes: Axes, trials: Sequence[TrialResult], key: str, ylabel: str
) -> None:
    """Draw training and validation bands of one metric, then early-stop marks."""
    entries: list[tuple[Artist | tuple[Artist, ...], str]] = []
    epochs = 0
    train_colour, val_colour = _colours()[:2]
    for name, colour in ((key, train_colour), (f"val_{key}", val_colour)):
        band = _band(trials, name)
        if band is not None:
            entries.append(_draw_band(axes, band, colour, name, trials))
            epochs = max(epochs, band.epochs[-1])
    stop = _draw_stops(axes, trials, key)
    if stop is not None:
        entries.append(stop)
    _epoch_axis(axes, epochs)
    axes.set_ylabel(ylabel)
    axes.set_title(key if key == "loss" else "accuracy")
    axes.legend(*zip(*entries, strict=True), loc="best", fontsize="small")


def _draw_band(
    axes: Axes,
    band: Band,
    colour: tuple[float, ...],
    key: str,
    trials: Sequence[TrialResult],
) -> tuple[Artist | tuple[Artist, ...], str]:
    """Draw a mean line with its min..max shading; return its legend entry."""
    (line,) = axes.plot(
        band.epochs, band.mean, color=colour, marker=marker(band.epochs), markersize=4
    )
    name = _NAMES[key].split()[0]
    if band.seeds == 1:
        seed = next(t.seed for t in trials if _points(t, key))
        return line, f"{name} (seed {seed})"
    shade = axes.fill_between(band.epochs, band.low, band.high, color=colour, alpha=0.2)
    return (shade, line), f"{name}: mean, min–max of {band.seeds} seeds"


def _stopped(trial: TrialResult) -> bool:
    """Whether a scheduler ended the trial before its planned epochs."""
    return trial.status == Status.STOPPED_EARLY or trial.stopped_epoch is not None


def _draw_stops(
    axes: Axes, trials: Sequence[TrialResult], key: str
) -> tuple[Artist, str] | None:
    """Put an 'x' at the last point of each early-stopped trial's curves."""
    from matplotlib.lines import Line2D

    notes = []
    for trial in filter(_stopped, trials):
        for name in (key, f"val_{key}"):
            points = _points(trial, name)
            if points:
                last = max(points)
                axes.plot(last, points[last], "x", color="black", markersize=9, mew=2)
        epoch = trial.stopped_epoch or len(trial.history)
        notes.append(f"seed {trial.seed} at epoch {epoch}")
    if not notes:
        return None
    mark = Line2D(
        [], [], linestyle="none", marker="x", color="black", markersize=9, mew=2
    )
    text = "; ".join(notes) if len(notes) <= 2 else f"{len(notes)} seeds"
    return mark, f"stopped early: {text}"


def _draw_mean(
    axes: Axes, index: int, label: str, band: Band | None, name: str
) -> tuple[Artist, str]:
    """Draw one label's mean curve in its fixed style; return its legend entry."""
    from matplotlib.lines import Line2D

    if band is None:
        return Line2D([], [], linestyle="none"), _verbatim(f"{label} (no {name})")
    (line,) = axes.plot(
        band.epochs,
        band.mean,
        color=_colour(index),
        linestyle=_LINESTYLES[_round(index)],
        marker=_MARKERS[_round(index)] if marker(band.epochs) else "",
        markersize=4,
    )
    seeds = "seed" if band.seeds == 1 else "seeds"
    return line, _verbatim(f"{label} ({band.seeds} {seeds})")


def _draw_point(axes: Axes, index: int, point: CostPoint, text_left: bool) -> None:
    """Draw one label's accuracy with its error bar and annotate it with the label."""
    axes.errorbar(
        [point.cost],
        [point.mean],
        yerr=None if point.std is None else [point.std],
        fmt=_MARKERS[_round(index)],
        color=_colour(index),
        capsize=4,
        markersize=7,
    )
    # Text on the inner side of the point, so that it stays inside the figure.
    axes.annotate(
        _verbatim(point.label, width=_WRAP // 2),
        (point.cost, point.mean),
        xytext=(-7 if text_left else 7, 5),
        textcoords="offset points",
        horizontalalignment="right" if text_left else "left",
        fontsize="small",
    )


def _colour(index: int) -> tuple[float, ...]:
    """The fixed colour of the label at index in study order."""
    return _colours()[index % len(_colours())]


def _round(index: int) -> int:
    """Which pass through the colours a label is in: picks its line style, marker."""
    return index // len(_colours()) % len(_LINESTYLES)


def _epoch_axis(axes: Axes, epochs: int) -> None:
    """Label the x axis in whole epochs with half an epoch of margin, and add a grid."""
    from matplotlib.ticker import MaxNLocator

    # Half an epoch of margin: integer-only ticks need a span of at least 1.
    axes.set_xlim(0.5, epochs + 0.5)
    axes.set_xlabel("epoch")
    axes.xaxis.set_major_locator(
        MaxNLocator(integer=True, min_n_ticks=1, steps=[1, 2, 5, 10])
    )
    axes.grid(True, alpha=0.3)


def _legend(figure: Figure, axes: Axes, entries: list[tuple[Artist, str]]) -> None:
    """A legend inside the axes for a few entries, else outside to the right."""
    handles, texts = zip(*entries, strict=True)
    if len(entries) <= _LEGEND_INSIDE_MAX:
        axes.legend(handles, texts, loc="best", fontsize="small")
    else:
        figure.legend(handles, texts, loc="outside right upper", fontsize="small")


def _value_axis(axes: Axes, key: str, bands: Sequence[Band]) -> None:
    """Label the y axis; a loss spanning a decade or more goes on a log scale."""
    from matplotlib.ticker import FuncFormatter

    name = _NAMES[key]
    if key.endswith("acc"):
        axes.set_ylabel(f"{name} (%)")
        return
    values = [value for band in bands for value in band.mean if value > 0]
    decades = math.log10(max(values) / min(values)) if values else 0.0
    if decades < 1:
        # Within a decade a log axis looks linear yet gets only one or two ticks.
        axes.set_ylabel(f"{name} (cross-entropy, nats)")
        return
    axes.set_yscale("log", nonpositive="mask")
    # Plain numbers (0.5, not 5×10⁻¹): 1-2-5 per decade, only powers when many.
    shown = (1, 2, 5) if decades < 2.5 else (1,)
    tick = FuncFormatter(lambda value, _: _plain_tick(value, shown))
    axes.yaxis.set_major_formatter(tick)
    axes.yaxis.set_minor_formatter(tick)
    axes.set_ylabel(f"{name} (cross-entropy, nats, log scale)")


def _plain_tick(value: float, shown: Sequence[int]) -> str:
    """The tick's value as a plain number if its leading digit is shown, else ''."""
    leading = round(value / 10 ** math.floor(math.log10(value) + 1e-9), 6)
    return f"{value:g}" if leading in shown else ""


def _verbatim(text: str, width: int = _WRAP) -> str:
    """Text that matplotlib shows as is, wrapped to at most three lines."""
    # A 200-character label on one line squeezes the axes to nothing.
    lines = textwrap.wrap(
        text, width, max_lines=3, placeholder=" …", break_on_hyphens=False
    )
    # Paired '$' would otherwise start mathtext.
    return "\n".join(lines).replace("$", r"\$")
