"""The numbers a run records, by key, with the names figures and tables show.

A run's history has a row per epoch: `HISTORY_KEYS` (the epoch, the four
`EPOCH_METRICS`, its seconds); the test set is scored once, after the last epoch.
The keys are the files' and the store's column names, so they never change.
"""

from __future__ import annotations

from enum import StrEnum, unique


@unique
class Metric(StrEnum):
    LOSS = "loss"
    ACC = "acc"
    VAL_LOSS = "val_loss"
    VAL_ACC = "val_acc"
    TEST_LOSS = "test_loss"
    TEST_ACC = "test_acc"

    @property
    def label(self) -> str:
        """'validation accuracy': the metric's name in a figure or a table."""
        split, kind = self.value.split("_") if "_" in self.value else ("", self.value)
        where = {"": "training", "val": "validation", "test": "test"}[split]
        return f"{where} {'accuracy' if kind == 'acc' else 'loss'}"


EPOCH_METRICS = (Metric.LOSS, Metric.ACC, Metric.VAL_LOSS, Metric.VAL_ACC)
# As plain strings: they become a history's dict keys, CSV and JSON columns.
HISTORY_KEYS: tuple[str, ...] = ("epoch", *(m.value for m in EPOCH_METRICS), "seconds")
# key -> name, for the per-epoch metrics: 'val_loss' -> 'validation loss'
METRIC_NAMES: dict[str, str] = {m.value: m.label for m in EPOCH_METRICS}
