"""What a study's analysis and reports read: plain records of finished trials.

The store (SQLite) produces these; analysis and reports consume them and never touch
the database or the run folders, so they can be tested on synthetic histories.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from cnnlab.training.status import Status


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
    status: Status  # `status.finished`: it needs no more training
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

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # from its text too

    def column(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.history]


@dataclass(frozen=True)
class StudyInfo:
    """The study as a whole: its name, config and the machine it ran on."""

    name: str
    description: str
    config: dict[str, Any]  # the resolved study document (architectures, train, seeds)
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""
