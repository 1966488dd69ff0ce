"""What a data set holds, before anything trains on it (`cnnlab data`): classes,
images per class per split, size, colour mode, pixel statistics, and a PNG grid of
sample images per class."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.data.datasets import Dataset

# A split is called imbalanced when its largest class has at least this many
# times the images of its smallest.
IMBALANCE_RATIO = 1.5
GRID_SAMPLES = 8  # images per class in the sample grid
GRID_CLASSES = 20  # classes drawn in the grid (CIFAR-100 shows its first 20)


@dataclass
class DataSummary:
    """A data set described: everything `cnnlab data` prints."""

    name: str
    source: str
    kind: str  # idx | folder | npz | cifar
    shape: tuple[int, int, int]  # (H, W, C)
    class_names: tuple[str, ...]
    counts: dict[str, list[int]]  # split -> images per class
    mean: list[float]  # per channel, training images, in [0, 1]
    std: list[float]
    info: dict[str, Any] = field(default_factory=dict)
    grid: Path | None = None

    def imbalance(self) -> list[str]:
        """One line per split whose classes differ by IMBALANCE_RATIO or more."""
        lines = []
        for split, counts in self.counts.items():
            low, high = min(counts), max(counts)
            if high >= IMBALANCE_RATIO * max(low, 1) or low == 0:
                small = self.class_names[counts.index(low)]
                large = self.class_names[counts.index(high)]
                lines.append(
                    f"{split}: imbalanced - {large} has {high} images, {small} has "
                    f"{low}"
                )
        return lines

    def lines(self) -> list[str]:
        """The summary as printed."""
        h, w, c = self.shape
        mode = {1: "L (greyscale)", 3: "RGB"}.get(c, f"{c} channels")
        total = {s: sum(v) for s, v in self.counts.items()}
        out = [
            f"Data: {self.source} ({self.kind})",
            f"Images: {w}x{h} {mode}; "
            + ", ".join(f"{s} {n:,}" for s, n in total.items()),
            f"Classes: {len(self.class_names)}",
        ]
        width = max(len("class"), *(len(n) for n in self.class_names)) + 2
        splits = list(self.counts)
        out.append("  " + "class".ljust(width) + "".join(f"{s:>8}" for s in splits))
        for i, name in enumerate(self.class_names):
            row = "".join(f"{self.counts[s][i]:>8,}" for s in splits)
            out.append("  " + name.ljust(width) + row)
        out += self.imbalance()
        channels = ["L"] if c == 1 else ["R", "G", "B"][:c]
        stats = ", ".join(
            f"{ch} {m:.3f} ± {s:.3f}"
            for ch, m, s in zip(channels, self.mean, self.std, strict=True)
        )
        out.append(f"Pixels (training images, 0-1): mean ± std {stats}")
        stored = self.info.get("stored_as")
        if stored:
            out.append(
                "Stored as: " + ", ".join(f"{k}: {v:,}" for k, v in stored.items())
            )
        ignored = self.info.get("ignored_files")
        if ignored:
            out.append(
                "Ignored: "
                + ", ".join(f"{v:,} {k} file(s)" for k, v in ignored.items())
            )
        if self.info.get("skipped_bad_images"):
            out.append(f"Skipped unreadable: {self.info['skipped_bad_images']:,}")
        if self.info.get("test_fraction"):
            out.append(
                f"Test split: a stratified {self.info['test_fraction']:.0%} of each "
                "class (seeded by split_seed)"
            )
        if self.grid is not None:
            out.append(f"Sample grid: {self.grid}")
        return out


def summarize(dataset: Dataset) -> DataSummary:
    """Counts, shape and pixel statistics of a loaded data set."""
    classes = dataset.num_classes
    counts = {"train": _counts(dataset.y_train, classes)}
    if dataset.y_val is not None:
        counts["val"] = _counts(dataset.y_val, classes)
    counts["test"] = _counts(dataset.y_test, classes)
    x = dataset.x_train.numpy()
    h, w, c = dataset.image_shape
    pixels = x.reshape(-1, c)
    # float64 sums over uint8 values: exact, and no float copy of the whole set
    mean = pixels.mean(axis=0, dtype=np.float64) / 255
    std = pixels.std(axis=0, dtype=np.float64) / 255
    return DataSummary(
        name=dataset.name,
        source=dataset.source,
        kind=str(dataset.info.get("kind", "idx")),
        shape=(h, w, c),
        class_names=tuple(dataset.class_names),
        counts=counts,
        mean=[float(v) for v in mean],
        std=[float(v) for v in std],
        info=dict(dataset.info),
    )


def _counts(labels: Any, classes: int) -> list[int]:
    return np.bincount(labels.numpy(), minlength=classes)[:classes].tolist()


def sample_grid(dataset: Dataset, path: Path, seed: int = 0) -> Path:
    """A PNG with GRID_SAMPLES training images of each class, one row a class."""
    from matplotlib.figure import Figure

    from cnnlab.util.fsio import save_figure

    rng = np.random.default_rng(seed)
    labels = dataset.y_train.numpy()
    shown = list(range(min(dataset.num_classes, GRID_CLASSES)))
    figure = Figure(figsize=(GRID_SAMPLES * 0.9 + 1.5, len(shown) * 0.9 + 0.3))
    axes = figure.subplots(len(shown), GRID_SAMPLES, squeeze=False)
    for row, label in enumerate(shown):
        members = np.flatnonzero(labels == label)
        picked = rng.permutation(members)[:GRID_SAMPLES]
        for col in range(GRID_SAMPLES):
            ax = axes[row][col]
            ax.set_xticks([])
            ax.set_yticks([])
            for spine in ax.spines.values():
                spine.set_visible(False)
            if col < len(picked):
                image = dataset.x_train[int(picked[col])].numpy()
                grey = image.ndim == 2
                ax.imshow(image, cmap="gray" if grey else None, vmin=0, vmax=255)
        name = dataset.class_names[label]
        axes[row][0].set_ylabel(name, rotation=0, ha="right", va="center")
    figure.subplots_adjust(left=0.15, right=0.99, top=0.99, bottom=0.01)
    return save_figure(figure, path)
