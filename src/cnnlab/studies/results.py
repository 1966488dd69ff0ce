"""What a study's analysis and reports read: plain records of finished trials.

The store (SQLite) produces these; analysis and reports consume them and never touch
the database or the run folders, so they can be tested on synthetic histories.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class TrialResult:
    """One architecture trained with one seed, as recorded in the store."""

    study: str
    label: str  # the architecture's label in the study (often the preset name)
    seed: int
    arch_name: str
    optimizer: str
    params: int  # total parameters, Keras's count
    flops: int  # forward FLOPs per sample (training is ~3x)
    history: tuple[dict[str, Any], ...]  # epoch, loss, acc, val_loss, val_acc, seconds
    status: str  # completed | interrupted | running | stopped_early
    test_loss: float | None = None
    test_acc: float | None = None
    train_clean_loss: float | None = None  # after the last epoch, dropout off
    train_clean_acc: float | None = None
    stopped_epoch: int | None = None  # set when a scheduler stopped the trial early
    run_path: str = ""
    test_reads: int | None = None  # times the test set was scored; None: not kept
    # per split ("test", "val"): labels, predicted, true_prob arrays, one per image;
    # empty for trials recorded before predictions were kept
    predictions: dict[str, dict[str, Any]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)  # the training config
    spec: dict[str, Any] = field(default_factory=dict)  # the architecture document
    precision: str = "fp32"  # fp32 | bf16 | fp16 (training.precision)

    def column(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.history]


def precision_note(trials: Sequence[TrialResult]) -> str | None:
    """For a study whose nets trained in different precisions, the sentence that
    says so next to its comparison table; None when they all share one."""
    labels: dict[str, list[str]] = {}
    for trial in trials:
        found = labels.setdefault(trial.precision, [])
        if trial.label not in found:
            found.append(trial.label)
    if len(labels) < 2:
        return None
    parts = "; ".join(f"{p}: {', '.join(names)}" for p, names in labels.items())
    return (
        f"Mixed precisions ({parts}): accuracies and times of nets trained in "
        "different precisions compare the precision as well as the nets."
    )


@dataclass(frozen=True)
class StudyInfo:
    """The study as a whole: its name, config and the machine it ran on."""

    name: str
    description: str
    config: dict[str, Any]  # the resolved study document (architectures, train, seeds)
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
