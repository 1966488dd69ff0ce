"""What a study's analysis and reports read: plain records of finished trials.

The store (SQLite) produces these; analysis and reports consume them and never touch
the database or the run folders, so they can be tested on synthetic histories.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field, fields
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
    precision: str = "fp32"  # fp32 | bf16 | fp16 (training.precision)

    def __post_init__(self) -> None:
        object.__setattr__(self, "status", Status(self.status))  # from its text too

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


def standardize_note(trials: Sequence[TrialResult]) -> str | None:
    """For a study whose nets standardised their inputs (--standardize), the
    sentence that says so, naming them when not all did; None when none did."""
    from cnnlab.data.standardize import DESCRIPTION

    labels = [t.label for t in trials if t.config.get("standardize")]
    if not labels:
        return None
    named = dict.fromkeys(labels)
    which = "" if len(labels) == len(trials) else f" ({', '.join(named)} only)"
    return f"Inputs {DESCRIPTION}, each run its own{which}."


@dataclass(frozen=True)
class StudyInfo:
    """The study as a whole: its name, config and the machine it ran on."""

    name: str
    description: str
    config: dict[str, Any]  # the resolved study document (architectures, train, seeds)
    environment: dict[str, Any] = field(default_factory=dict)
    created: str = ""


@dataclass(frozen=True)
class TrialRow:
    """One trial's row of the store, without its epochs: what `cnnlab runs` lists
    and what `Store.trials` builds each TrialResult from."""

    id: int
    study: str
    label: str
    seed: int
    arch_name: str
    optimizer: str
    params: int
    flops: int
    spec: dict[str, Any]  # the architecture document
    config: dict[str, Any]  # the training config
    run_path: str
    status: Status
    test_loss: float | None
    test_acc: float | None
    train_clean_loss: float | None
    train_clean_acc: float | None
    stopped_epoch: int | None
    updated: str
    test_reads: int | None
    precision: str | None = None  # None: a row from before precisions, in fp32

    @classmethod
    def from_columns(cls, columns: dict[str, Any]) -> TrialRow:
        """The row from the store's columns (spec and config as JSON text)."""
        values = {f.name: columns.get(f.name) for f in fields(cls)}
        values["spec"] = json.loads(values["spec"] or "{}")
        values["config"] = json.loads(values["config"] or "{}")
        values["status"] = Status(values["status"])
        return cls(**values)

    def as_dict(self) -> dict[str, Any]:
        """The columns as stored: spec and config as JSON text, status as text."""
        columns = {f.name: getattr(self, f.name) for f in fields(self)}
        columns |= {"spec": json.dumps(self.spec), "config": json.dumps(self.config)}
        return columns | {"status": self.status.value}

    def result(
        self,
        history: tuple[dict[str, Any], ...],
        predictions: dict[str, dict[str, Any]],
    ) -> TrialResult:
        """The trial as analysis and reports read it, with its epochs."""
        return TrialResult(
            study=self.study,
            label=self.label,
            seed=self.seed,
            arch_name=self.arch_name,
            optimizer=self.optimizer,
            params=self.params,
            flops=self.flops,
            history=history,
            status=self.status,
            test_loss=self.test_loss,
            test_acc=self.test_acc,
            train_clean_loss=self.train_clean_loss,
            train_clean_acc=self.train_clean_acc,
            stopped_epoch=self.stopped_epoch,
            run_path=self.run_path,
            test_reads=self.test_reads,
            precision=self.precision or "fp32",  # older rows: float32
            predictions=predictions,
            config=self.config,
            spec=self.spec,
        )
