"""Over- and underfitting diagnosis in words, each claim citing its numbers.

Reads only `TrialResult` records (seeds averaged epoch by epoch); the thresholds
below are named so a reader can see, and change, what each verdict rests on.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cnnlab.reporting.analysis import group_by_label, mean_of, metric_value
from cnnlab.studies.results import TrialResult

# Validation loss must end >10% above its minimum: on a 10,000-image set it wobbles
# by a few percent from epoch to epoch without any trend.
OVERFIT_RISE = 0.10
# Nets that fit MNIST end well under 0.1; the notebook's underfit 412-parameter net
# ends at 0.68. 0.2 sits between them with room on both sides.
UNDERFIT_LOSS = 0.2
# Seeds move MNIST accuracy by ~0.1-0.2 points, so 2 points below the best label is a
# different class of net, not noise.
UNDERFIT_ACC_GAP = 0.02
# Running train loss this far above validation loss: beyond the rounding of the
# 4-decimal numbers Keras logs, so the gap is real.
DROPOUT_GAP = 0.005
# Seeing a minimum before the end needs a fall and a rise: at least 3 points.
MIN_EPOCHS_FOR_TREND = 3
# The good-fit advice fits a line through the last 3 epochs: fewer is a single step,
# more reaches back into the steep early part of the curve.
TREND_EPOCHS = 3
# Loss falling by more than 1% of its value per epoch counts as still improving;
# slower than that is within epoch-to-epoch noise.
PLATEAU_SLOPE = 0.01
# Without validation, test loss this far above train loss counts as overfitting: the
# notebook's overfit 23M-parameter net ends 0.063 apart, its good nets within 0.015.
NO_VAL_GAP = 0.03

VERDICTS = (
    "overfitting",
    "underfitting",
    "dropout gap",
    "good fit",
    "too short to tell",
)


@dataclass(frozen=True)
class Diagnosis:
    """Whether a label over- or underfits, in sentences that cite their numbers."""

    label: str
    verdict: str  # one of VERDICTS
    findings: tuple[str, ...]
    advice: str
    text: str  # findings + advice as one paragraph
    overfit_from: int | None = None  # epoch of the validation minimum it rose from


@dataclass(frozen=True)
class _Fit:
    """What a diagnosis reads: per-epoch means across seeds, then final metrics."""

    epochs: tuple[int, ...]
    loss: tuple[float, ...]  # running means with dropout on, as Keras logs them
    acc: tuple[float, ...]
    val_loss: tuple[float, ...] | None  # None when validation was off
    val_acc: tuple[float, ...] | None
    lengths: tuple[int, ...]  # epochs each seed ran
    clean_loss: float | None  # means over the seeds that recorded them
    clean_acc: float | None
    test_loss: float | None
    test_acc: float | None
    dropout: bool | None = None  # the net has a Dropout layer; None: spec not kept

    @property
    def train_loss(self) -> tuple[float, str]:
        """The best measure of fit to the training data: clean if recorded."""
        if self.clean_loss is not None:
            return self.clean_loss, "clean training loss (dropout off)"
        return self.loss[-1], "running training loss"

    @property
    def heldout_loss(self) -> tuple[float, str] | None:
        """Final loss on unseen data: validation, else test, with its name."""
        if self.val_loss is not None:
            return self.val_loss[-1], "validation"
        return None if self.test_loss is None else (self.test_loss, "test")

    @property
    def heldout_acc(self) -> tuple[float, str] | None:
        """Accuracy on unseen data: validation (it chooses), else test."""
        if self.val_acc is not None:
            return self.val_acc[-1], "validation accuracy"
        if self.test_acc is not None:
            return self.test_acc, "test accuracy"
        return None


def diagnose(
    label: str, trials: Sequence[TrialResult], best_acc: float | None
) -> Diagnosis:
    """Diagnose one label from the per-epoch mean of its seeds' histories."""
    own = [t for t in trials if t.label == label and t.history]
    if not own:
        raise ValueError(f"no trial of label '{label}' has a history to diagnose")
    fit = _fit_of(own)
    verdict = _verdict(fit, best_acc)
    findings = tuple(_findings(fit, verdict, best_acc))
    advice = _advice(fit, verdict)
    i = _val_minimum(fit) if verdict == "overfitting" else None
    onset = None if i is None else fit.epochs[i]
    text = " ".join((*findings, advice))
    return Diagnosis(label, verdict, findings, advice, text, onset)


def diagnose_all(trials: Sequence[TrialResult]) -> list[Diagnosis]:
    """One diagnosis per label, each measured against the best label's accuracy."""
    groups = group_by_label(trials)
    accs = [_fit_of(group).heldout_acc for group in groups.values()]
    finite = [acc[0] for acc in accs if acc is not None and math.isfinite(acc[0])]
    best = max(finite) if finite else None
    return [diagnose(label, group, best) for label, group in groups.items()]


def _fit_of(trials: list[TrialResult]) -> _Fit:
    """Per-epoch means over the seeds that reached each epoch, and final metrics."""
    by_epoch: dict[int, list[dict[str, Any]]] = {}
    for trial in trials:
        for row in trial.history:
            by_epoch.setdefault(int(row["epoch"]), []).append(row)
    epochs = tuple(sorted(by_epoch))

    def series(key: str) -> tuple[float, ...] | None:
        means = [mean_of([row.get(key) for row in by_epoch[e]]) for e in epochs]
        return None if None in means else tuple(m for m in means if m is not None)

    loss, acc = series("loss"), series("acc")
    assert loss is not None and acc is not None  # every epoch records them

    def final(metric: str) -> float | None:
        return mean_of([metric_value(t, metric) for t in trials])

    return _Fit(
        epochs=epochs,
        loss=loss,
        acc=acc,
        val_loss=series("val_loss"),
        val_acc=series("val_acc"),
        lengths=tuple(len(t.history) for t in trials),
        clean_loss=final("train_clean_loss"),
        clean_acc=final("train_clean_acc"),
        test_loss=final("test_loss"),
        test_acc=final("test_acc"),
        dropout=has_dropout(trials[0].spec) if trials[0].spec else None,
    )


def has_dropout(spec: Any) -> bool:
    """Whether an architecture document holds a dropout layer anywhere."""
    if isinstance(spec, str):
        return "dropout" in spec.lower()
    if isinstance(spec, dict):  # layer names are keys or list items, never values
        return any(
            has_dropout(k) or has_dropout(v)
            for k, v in spec.items()
            if k not in ("name", "description", "label")
        )
    if isinstance(spec, list | tuple):
        return any(has_dropout(item) for item in spec)
    return False


def _verdict(fit: _Fit, best_acc: float | None) -> str:
    """The first rule that holds, from the most to the least specific."""
    if len(fit.epochs) < MIN_EPOCHS_FOR_TREND:
        return "too short to tell"
    if _overfits(fit):
        return "overfitting"
    if _underfits(fit, best_acc):
        return "underfitting"
    if _dropout_gap(fit) is not None and fit.dropout is not False:
        return "dropout gap"
    return "good fit"


def _findings(fit: _Fit, verdict: str, best_acc: float | None) -> list[str]:
    """The sentences behind the verdict, plus whatever else the numbers show."""
    underfit = _underfits(fit, best_acc)
    found = [_final_numbers(fit), _ragged_note(fit)]
    found.append(_overfit_finding(fit) if verdict == "overfitting" else _turn_note(fit))
    found.append(_underfit_finding(fit, best_acc) if underfit else None)
    found.append(_dropout_finding(fit, underfit))
    if verdict == "good fit":
        found.append(_trend_finding(fit))
    if verdict == "too short to tell":
        found.append(
            f"{_epochs_text(len(fit.epochs))} is too few to see a trend (at least "
            f"{MIN_EPOCHS_FOR_TREND})."
        )
    if fit.val_loss is None:
        found.append("Validation was off: this rests on training and test only.")
    return [f for f in found if f]


def _epochs_text(n: int) -> str:
    return f"{n} epoch" + ("" if n == 1 else "s")


def _final_numbers(fit: _Fit) -> str:
    """Where the curves ended, averaged over seeds."""
    who = "One seed" if len(fit.lengths) == 1 else f"Mean of {len(fit.lengths)} seeds"
    parts = [_loss_acc("running train", fit.loss[-1], fit.acc[-1])]
    if fit.clean_loss is not None:
        parts.append(_loss_acc("clean train", fit.clean_loss, fit.clean_acc))
    if fit.val_loss is not None:
        val_acc = fit.val_acc[-1] if fit.val_acc is not None else None
        parts.append(_loss_acc("validation", fit.val_loss[-1], val_acc))
    if fit.test_loss is not None:
        parts.append(_loss_acc("test", fit.test_loss, fit.test_acc))
    after = _epochs_text(fit.epochs[-1])
    return f"{who} after {after}, loss (accuracy): {', '.join(parts)}."


def _loss_acc(name: str, loss: float, acc: float | None) -> str:
    accuracy = "" if acc is None else f" ({acc:.2%})"
    return f"{name} {loss:.4f}{accuracy}"


def _ragged_note(fit: _Fit) -> str | None:
    """Say so when seeds ran different lengths, since late epochs then mean less."""
    if len(set(fit.lengths)) <= 1:
        return None
    ran = ", ".join(str(n) for n in fit.lengths[:-1]) + f" and {fit.lengths[-1]}"
    return (
        f"Seeds ran {ran} epochs; later epochs average only the seeds that got there."
    )


def _val_minimum(fit: _Fit) -> int | None:
    """Index of the lowest validation loss, when it lies before the last epoch."""
    if fit.val_loss is None or len(fit.epochs) < MIN_EPOCHS_FOR_TREND:
        return None
    i = int(np.argmin(fit.val_loss))
    return i if i < len(fit.epochs) - 1 else None


def _rise(fit: _Fit, i: int) -> float:
    """How far the final validation loss sits above the one at index i, relatively."""
    assert fit.val_loss is not None
    return fit.val_loss[-1] / max(fit.val_loss[i], 1e-12) - 1


def _overfits(fit: _Fit) -> bool:
    """Validation loss turned up while training loss kept falling (or, without
    validation, test loss ends far above training loss)."""
    i = _val_minimum(fit)
    if i is not None:
        return _rise(fit, i) > OVERFIT_RISE and fit.loss[-1] < fit.loss[i]
    if fit.val_loss is None and fit.test_loss is not None:
        return fit.test_loss - fit.train_loss[0] > NO_VAL_GAP
    return False


def _overfit_finding(fit: _Fit) -> str:
    """The numbers behind an overfitting verdict."""
    i = _val_minimum(fit)
    if i is None:  # judged on the train/test gap: validation was off
        assert fit.test_loss is not None
        train, name = fit.train_loss
        return (
            f"Test loss ends at {fit.test_loss:.4f}, {fit.test_loss - train:.4f} above "
            f"the {name} {train:.4f} (more than {NO_VAL_GAP}): the net fits the "
            "training data far better than unseen data."
        )
    assert fit.val_loss is not None
    last, final_loss = fit.val_loss[-1], fit.loss[-1]
    return (
        f"Validation loss bottomed at epoch {fit.epochs[i]} ({fit.val_loss[i]:.4f}) "
        f"and rose {_rise(fit, i):.0%} to {last:.4f} by epoch {fit.epochs[-1]} while "
        f"training loss fell to {final_loss:.4f}."
    )


def _turn_note(fit: _Fit) -> str | None:
    """A validation minimum before the end that the overfitting rule did not flag."""
    i = _val_minimum(fit)
    if i is None or fit.val_loss is None:
        return None
    low, rise = fit.val_loss[i], _rise(fit, i)
    where = f"Validation loss bottomed at epoch {fit.epochs[i]} ({low:.4f})"
    if rise <= OVERFIT_RISE:
        return (
            f"{where} and ends {rise:.0%} above it, within the {OVERFIT_RISE:.0%} "
            "that counts as overfitting."
        )
    return (
        f"{where} and ends {rise:.0%} above it while training loss did not fall: "
        "noisy training, not overfitting."
    )


def _underfits(fit: _Fit, best_acc: float | None) -> bool:
    """Training loss still high and accuracy far below the best label's."""
    held = fit.heldout_acc
    if held is None or best_acc is None:
        return False
    return fit.train_loss[0] > UNDERFIT_LOSS and best_acc - held[0] > UNDERFIT_ACC_GAP


def _underfit_finding(fit: _Fit, best_acc: float | None) -> str:
    """The numbers behind an underfitting verdict."""
    held = fit.heldout_acc
    assert held is not None and best_acc is not None
    (acc, name), (loss, loss_name) = held, fit.train_loss
    return (
        f"The {loss_name} is still {loss:.4f} (above {UNDERFIT_LOSS}) and {name} "
        f"{acc:.2%} is {(best_acc - acc) * 100:.2f} points below the best net's "
        f"{best_acc:.2%}."
    )


def _dropout_gap(fit: _Fit) -> float | None:
    """How far running train loss ends above held-out loss, if beyond DROPOUT_GAP
    (named the dropout gap only for a net with dropout)."""
    held = fit.heldout_loss
    if held is None or fit.loss[-1] - held[0] <= DROPOUT_GAP:
        return None
    return fit.loss[-1] - held[0]


def _dropout_finding(fit: _Fit, underfit: bool) -> str | None:
    """Explain a running train loss above held-out loss, which the notebook misread."""
    gap, held = _dropout_gap(fit), fit.heldout_loss
    if gap is None or held is None:
        return None
    loss, kind = held
    said = (
        f"Running training loss ends {gap:.4f} above {kind} loss ({fit.loss[-1]:.4f} "
        f"vs {loss:.4f}), the dropout gap"
    )
    if fit.dropout is False:  # no dropout: the epoch's running mean is the reason
        said = (
            f"Running training loss ends {gap:.4f} above {kind} loss "
            f"({fit.loss[-1]:.4f} vs {loss:.4f}): it is the mean over an epoch in "
            "which the net was still improving, while the held-out loss is measured "
            "after it"
        )
    if underfit:
        return f"{said}; the accuracy, not this gap, shows the underfitting."
    return f"{said}{_clean_check(fit, loss, kind)}."


# The dropout gap's explanation, given once per report however many nets show it.
DROPOUT_NOTE = (
    "The dropout gap: running training loss is measured in training mode (dropout "
    "on) and averaged over an epoch in which the net was still improving, so it can "
    "end above held-out loss without any underfitting; the clean training loss "
    "(dropout off, after the last epoch) is the one to compare."
)


def shared_notes(diagnoses: Sequence[Diagnosis]) -> list[str]:
    """Explanations that several diagnoses rest on, each given once."""
    gap = any("the dropout gap" in f for d in diagnoses for f in d.findings)
    return [DROPOUT_NOTE] if gap else []


def _clean_check(fit: _Fit, loss: float, kind: str) -> str:
    """Whether the clean (dropout off) training loss confirms the dropout reading."""
    if fit.clean_loss is None:
        return " (no clean training loss was recorded to confirm it)"
    if fit.clean_loss < loss:
        return f", confirmed by the clean training loss {fit.clean_loss:.4f}"
    return (
        f", but the clean training loss {fit.clean_loss:.4f} is not below it either: "
        f"the {kind} set may simply be easier"
    )


def _trend(fit: _Fit) -> tuple[float, float, str]:
    """Slope per epoch of the last TREND_EPOCHS losses (validation if recorded)."""
    series, kind = (
        (fit.val_loss, "validation")
        if fit.val_loss is not None
        else (fit.loss, "training")
    )
    last = series[-TREND_EPOCHS:]
    slope = float(np.polyfit(np.arange(len(last)), last, 1)[0])
    return slope, last[-1], kind


def _still_falling(fit: _Fit) -> bool:
    slope, level, _ = _trend(fit)
    return -slope > PLATEAU_SLOPE * level


def _trend_finding(fit: _Fit) -> str:
    """How the loss moved over the last epochs: still falling or levelled off."""
    slope, level, kind = _trend(fit)
    state = "still falling" if _still_falling(fit) else "levelled off"
    share = abs(slope) / level if level > 0 else 0.0
    return (
        f"Over the last {min(TREND_EPOCHS, len(fit.epochs))} epochs {kind} loss "
        f"changed by {slope:+.4f} per epoch ({share:.1%} of its final value): "
        f"{state}."
    )


def _advice(fit: _Fit, verdict: str) -> str:
    """What to try next, given the verdict."""
    if verdict == "overfitting":
        i = _val_minimum(fit)
        stop = (
            "Turn validation on to find where to stop"
            if i is None
            else f"Stop at epoch {fit.epochs[i]}, where validation loss was lowest"
        )
        return f"{stop}; or add dropout or data augmentation, or use fewer dense units."
    if verdict == "underfitting":
        return (
            "Give the net more capacity (more filters or dense units), train for "
            "more epochs, or raise the learning rate."
        )
    if verdict == "dropout gap":
        return "Nothing to fix."
    if verdict == "too short to tell":
        return f"Train at least {MIN_EPOCHS_FOR_TREND} epochs before judging the fit."
    if _still_falling(fit):
        return "Nothing to fix; the loss was still falling, so more epochs may help."
    return (
        "Nothing to fix; the loss has levelled off: more epochs are unlikely to help."
    )
