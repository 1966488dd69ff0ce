"""The best-epoch view: where each net was best, what the last epoch lost, and how
long it took to reach given accuracies.

Everything is read on validation (the test set is scored once, after the last
epoch, so it cannot pick an epoch). Seeds are summarised as means.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

from cnnlab.reporting.analysis import Stat, describe, group_by_label
from cnnlab.studies.results import TrialResult

# Validation accuracies whose first crossing is timed: MNIST's good nets pass 98%
# in an epoch or two, and the notebook's best ones end near 99.3%.
THRESHOLDS = (0.98, 0.99, 0.993)


@dataclass(frozen=True)
class Reach:
    """When the seeds of a net first reached a validation accuracy."""

    threshold: float
    reached: int  # seeds that got there
    seeds: int
    epochs: Stat | None  # epochs until first reached, over the seeds that did
    seconds: Stat | None  # training seconds until then

    def text(self) -> str:
        if self.epochs is None or self.seconds is None:
            return "not reached"
        said = f"ep {self.epochs.mean:.1f}, {self.seconds.mean:.0f} s"
        if self.reached < self.seeds:
            said += f" ({self.reached}/{self.seeds} seeds)"
        return said


@dataclass(frozen=True)
class EpochView:
    """One net's best epoch (lowest validation loss) against its last."""

    label: str
    best_epoch: Stat
    best_val_loss: Stat
    best_val_acc: Stat | None
    last_epoch: Stat
    last_val_loss: Stat
    last_val_acc: Stat | None
    reaches: tuple[Reach, ...]

    @property
    def lost_by_going_on(self) -> float | None:
        """Validation accuracy given up by training past the best epoch (mean)."""
        if self.best_val_acc is None or self.last_val_acc is None:
            return None
        return self.best_val_acc.mean - self.last_val_acc.mean


def epoch_views(
    trials: Sequence[TrialResult], thresholds: Sequence[float] = THRESHOLDS
) -> list[EpochView]:
    """A view per label whose trials recorded validation; others are left out."""
    views = []
    for label, group in group_by_label(trials).items():
        validated = [t for t in group if _validated(t)]
        if validated:
            views.append(_view(label, validated, thresholds))
    return views


def _validated(trial: TrialResult) -> bool:
    return all(r.get("val_loss") is not None for r in trial.history)


def _view(
    label: str, trials: list[TrialResult], thresholds: Sequence[float]
) -> EpochView:
    best_rows = [min(t.history, key=lambda r: _finite(r["val_loss"])) for t in trials]
    last_rows = [t.history[-1] for t in trials]

    def stat(rows: list[dict], key: str) -> Stat | None:
        values = [r.get(key) for r in rows]
        return None if any(v is None for v in values) else describe(values)

    def required(rows: list[dict], key: str) -> Stat:
        value = stat(rows, key)
        assert value is not None  # every validated row has epoch and val_loss
        return value

    return EpochView(
        label=label,
        best_epoch=required(best_rows, "epoch"),
        best_val_loss=required(best_rows, "val_loss"),
        best_val_acc=stat(best_rows, "val_acc"),
        last_epoch=required(last_rows, "epoch"),
        last_val_loss=required(last_rows, "val_loss"),
        last_val_acc=stat(last_rows, "val_acc"),
        reaches=tuple(_reach(trials, t) for t in thresholds),
    )


def _finite(value: float) -> float:
    return value if math.isfinite(value) else math.inf


def first_reach(trial: TrialResult, threshold: float) -> tuple[int, float] | None:
    """(epoch, training seconds until then) at which validation accuracy first
    reached `threshold`; None if it never did."""
    seconds = 0.0
    for row in trial.history:
        seconds += row.get("seconds") or 0.0
        acc = row.get("val_acc")
        if acc is not None and acc >= threshold:
            return int(row["epoch"]), seconds
    return None


def _reach(trials: list[TrialResult], threshold: float) -> Reach:
    hits = [h for h in (first_reach(t, threshold) for t in trials) if h is not None]
    if not hits:
        return Reach(threshold, 0, len(trials), None, None)
    return Reach(
        threshold,
        len(hits),
        len(trials),
        describe([h[0] for h in hits]),
        describe([h[1] for h in hits]),
    )
