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
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import training_flops
from cnnlab.reporting.mistakes import (
    HardImage,
    Mistake,
    answers,
    confusion_matrix,
    data_of,
    hard_images,
    misclassified,
)
from cnnlab.studies.results import TrialResult
from cnnlab.training.curves import marker
from cnnlab.training.metrics import METRIC_NAMES
from cnnlab.training.status import Status
from cnnlab.util.fsio import save_figure
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

_NAMES = METRIC_NAMES

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
        (100.0 * t.test_acc, t.params if cost == "params" else training_flops(t.flops))
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


# ------------------------------------------- where each net goes wrong

# Images per gallery row: six keep a 28x28 image about 1.7 inches wide.
_GALLERY_COLUMNS = 6
# Images per gallery: five rows fit a report page.
_GALLERY_MAX = 30
# A gallery cell, in inches: its width, the image's longer side, a caption line,
# the title's line, and the gap between them.
_GALLERY_CELL, _GALLERY_SIDE = 1.7, 1.2
_CAPTION_LINE, _TITLE_LINE, _GAP = 0.17, 0.25, 0.08
# Confusion cells whose share is above this are dark enough for white counts.
_DARK_SHARE = 0.35


def confusion_figure(
    label: str,
    matrix: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    seeds: int = 1,
) -> Path:
    """Write a heatmap of a confusion matrix (rows true, columns predicted): counts
    in the cells, coloured by their share of the true class's images."""
    matrix = np.asarray(matrix)
    classes = len(class_names)
    if matrix.shape != (classes, classes):
        raise CnnlabError(
            f"a confusion matrix of {classes} class names must be {classes}x"
            f"{classes}, got shape {matrix.shape}; pass the data set's class_names"
        )
    total = int(matrix.sum())
    if total == 0:
        raise CnnlabError(f"the confusion matrix of {label!r} holds no answers")
    totals = matrix.sum(axis=1, keepdims=True)
    shares = np.divide(matrix, totals, out=np.zeros(matrix.shape), where=totals > 0)
    from matplotlib.colors import PowerNorm
    from matplotlib.figure import Figure

    side = max(6.0, 0.55 * classes + 2.5)
    figure = Figure(figsize=(side + 1.5, side), layout="constrained")
    axes = figure.subplots()
    # A square-root scale: a 5% confusion is visible next to a 95% diagonal.
    image = axes.imshow(shares, cmap="Blues", norm=PowerNorm(0.5, vmin=0, vmax=1))
    style = {"ha": "center", "va": "center", "fontsize": "small"}
    for (true, predicted), count in np.ndenumerate(matrix):
        if count:
            dark = shares[true, predicted] > _DARK_SHARE
            axes.text(
                predicted, true, count, color="white" if dark else "black", **style
            )
    names = [_verbatim(name, width=14) for name in class_names]
    if max(map(len, class_names)) > 2:
        axes.set_xticks(
            range(classes), names, rotation=40, ha="right", rotation_mode="anchor"
        )
    else:
        axes.set_xticks(range(classes), names)
    axes.set_yticks(range(classes), names)
    axes.set_xlabel("predicted class")
    axes.set_ylabel("true class")
    figure.colorbar(
        image, ax=axes, shrink=0.8, label="share of the true class (square-root scale)"
    )
    noun = "seed" if seeds == 1 else "seeds"
    accuracy = 100 * np.trace(matrix) / total
    title = (
        f"{label}: test-set confusion, {total} answers over {seeds} {noun}, "
        f"{accuracy:.1f}% right"
    )
    figure.suptitle(_verbatim(title, width=2 * _WRAP))
    return save_figure(figure, Path(path))


def gallery_figure(
    label: str,
    items: Sequence[Mistake],
    images: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
) -> Path:
    """Write a grid of misclassified test images, each titled true → predicted
    and the probability the net gave the true class."""
    if not items:
        raise CnnlabError(f"label {label!r} has no misclassified test images to show")
    cells = []
    for item in items:
        true, predicted = class_names[item.true], class_names[item.predicted]
        turn = " → " if len(true) + len(predicted) <= 12 else "\n→ "
        seeds = f", {item.wrong}/{item.seeds} seeds" if item.seeds > 1 else ""
        text = f"#{item.index}: {true}{turn}{predicted}\np(true) {item.true_prob:.2f}"
        cells.append((item.index, text + seeds))
    seeds = max(item.seeds for item in items)
    mean = f", mean over {seeds} seeds" if seeds > 1 else ""
    title = f"{label}: its {len(items)} most confident mistakes (lowest p(true){mean})"
    return _draw_gallery(title, cells, images, Path(path))


def hard_images_figure(
    items: Sequence[HardImage],
    images: np.ndarray,
    class_names: Sequence[str],
    path: str | Path,
    limit: int = _GALLERY_MAX,
) -> Path:
    """Write a grid of the test images every net got wrong, each titled with its
    true class and what the nets answered (how many trials gave each answer)."""
    if not items:
        raise CnnlabError("no test image was got wrong by every net: nothing to show")
    cells = []
    for item in items[:limit]:
        votes = Counter(p for said in item.predicted.values() for p in said)
        # A no-break space keeps each count on its class name's line.
        said = ", ".join(f"{class_names[p]}\u00a0×{n}" for p, n in votes.most_common())
        said = "\n".join(textwrap.wrap(f"→ {said}", 24, max_lines=2, placeholder=" …"))
        cells.append(
            (item.index, f"#{item.index}: true {class_names[item.true]}\n{said}")
        )
    nets = len(items[0].predicted)
    runs = sum(len(said) for said in items[0].predicted.values())
    shown = f"; the {limit} hardest shown" if len(items) > limit else ""
    title = (
        f"{len(items)} test images every net got wrong "
        f"({nets} nets, {runs} trials{shown})"
    )
    return _draw_gallery(title, cells, images, Path(path))


def error_figures(
    trials: Sequence[TrialResult],
    images_by_data: Mapping[str, np.ndarray],
    class_names_by_data: Mapping[str, Sequence[str]],
    folder: str | Path,
) -> dict[str, Path]:
    """Write each label's confusion matrix and gallery of mistakes (labels with test
    predictions only), then the images every net of a data set got wrong (with two
    or more labels); return {file stem: path}, in that order.

    Args:
        images_by_data: a trial's `config["data"]` -> that data set's (N, 28, 28)
            uint8 test images; class_names_by_data: the same keys -> class names.
    """
    folder = Path(folder)
    scored = [trial for trial in trials if answers(trial) is not None]
    for data in dict.fromkeys(map(data_of, scored)):  # before any file is written
        _check_given(class_names_by_data, data, "class_names_by_data", "class_names")
        _check_given(images_by_data, data, "images_by_data", "x_test")
    matrices, galleries = {}, {}
    for label in labels_of(scored):
        own = _of_label(scored, label)
        data, name = data_of(own[0]), safe_name(label)
        names = class_names_by_data[data]
        matrix = confusion_matrix(own, classes=len(names))
        path = folder / f"confusion-{name}.png"
        matrices[f"confusion-{name}"] = confusion_figure(
            label, matrix, names, path, seeds=len(own)
        )
        mistakes = misclassified(own, limit=_GALLERY_MAX)
        if mistakes:
            path = folder / f"mistakes-{name}.png"
            galleries[f"mistakes-{name}"] = gallery_figure(
                label, mistakes, images_by_data[data], names, path
            )
    hard = _hard_figures(scored, images_by_data, class_names_by_data, folder)
    return matrices | galleries | hard


def _hard_figures(
    scored: Sequence[TrialResult],
    images_by_data: Mapping[str, np.ndarray],
    class_names_by_data: Mapping[str, Sequence[str]],
    folder: Path,
) -> dict[str, Path]:
    """The hard-images figure of each data set scored by two labels or more."""
    figures = {}
    datasets = list(dict.fromkeys(map(data_of, scored)))
    for data in datasets:
        group = [trial for trial in scored if data_of(trial) == data]
        hard = hard_images(group) if len(labels_of(group)) > 1 else []
        if hard:
            name = "hard-images"
            if len(datasets) > 1:
                name += f"-{safe_name(data)}"
            figures[name] = hard_images_figure(
                hard,
                images_by_data[data],
                class_names_by_data[data],
                folder / f"{name}.png",
            )
    return figures


def _check_given(
    table: Mapping[str, object], data: str, argument: str, field: str
) -> None:
    """Refuse a mapping without data set `data`, saying what to pass."""
    if data not in table:
        raise CnnlabError(
            f"{argument} has no entry for the data set {data!r} (it has "
            f"{', '.join(map(repr, table)) or 'none'}); pass "
            f"{argument}[{data!r}] = load_dataset({data!r}).{field}"
        )


def _draw_gallery(
    title: str, cells: Sequence[tuple[int, str]], images: np.ndarray, path: Path
) -> Path:
    """Draw test images by index in a grid, each with its caption."""
    images = np.asarray(images)
    highest = max(index for index, _ in cells)
    if images.ndim not in (3, 4) or highest >= len(images):
        raise CnnlabError(
            f"expected the (N, H, W) or (N, H, W, C) test images of the trials' data "
            f"set with N > "
            f"{highest}, got shape {images.shape}; pass load_dataset(data).x_test"
        )
    from matplotlib.figure import Figure

    # One axes for the whole grid, measured in inches from the top left: a grid of
    # 30 axes under a layout engine took seconds to draw, this a fraction of that.
    columns = min(_GALLERY_COLUMNS, len(cells))
    rows = math.ceil(len(cells) / columns)
    lines = max(caption.count("\n") + 1 for _, caption in cells)
    caption = _CAPTION_LINE * lines + _GAP
    cell_w, cell_h = _GALLERY_CELL, _GALLERY_SIDE + caption + 2 * _GAP
    title = _verbatim(title, width=2 * _WRAP)
    top = _TITLE_LINE * (title.count("\n") + 1) + 2 * _GAP
    width, height = cell_w * columns, top + cell_h * rows
    figure = Figure(figsize=(width, height))
    axes = figure.add_axes((0, 0, 1, 1))
    axes.set_axis_off()
    axes.set_xlim(0, width)
    axes.set_ylim(height, 0)
    axes.text(width / 2, _GAP, title, ha="center", va="top", fontsize="large")
    for number, (index, text) in enumerate(cells):
        row, column = divmod(number, columns)
        left, y = column * cell_w, top + row * cell_h
        axes.text(
            left + cell_w / 2,
            y,
            text.replace("$", r"\$"),
            ha="center",
            va="top",
            fontsize="small",
        )
        image = images[index]
        scale = _GALLERY_SIDE / max(image.shape[:2])
        w, h = image.shape[1] * scale, image.shape[0] * scale
        x0, y0 = left + (cell_w - w) / 2, y + caption + (_GALLERY_SIDE - h) / 2
        # Ink is bright in MNIST-family images; reversed grey draws it dark on white.
        # Colour images are drawn as they are.
        grey = {"cmap": "gray_r", "vmin": 0, "vmax": 255} if image.ndim == 2 else {}
        axes.imshow(
            image,
            extent=(x0, x0 + w, y0 + h, y0),
            aspect="auto",
            interpolation="nearest",
            **grey,
        )
    axes.set_xlim(0, width)  # imshow widened the limits to its image
    axes.set_ylim(height, 0)
    return save_figure(figure, Path(path))
