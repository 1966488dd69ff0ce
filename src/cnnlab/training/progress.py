"""Live training progress with rich: a step bar per epoch and a log line per epoch."""

from __future__ import annotations

import time
from typing import Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)


def format_epoch_line(row: dict[str, Any], epochs: int) -> str:
    """'Epoch 3/12 - 4.1s - loss: 0.0898 - acc: 0.9718 - val_loss: ...' (Keras)."""
    parts = [f"Epoch {row['epoch']}/{epochs}", f"{row['seconds']:.1f}s"]
    for key in ("loss", "acc", "val_loss", "val_acc"):
        if row.get(key) is not None:
            parts.append(f"{key}: {row[key]:.4f}")
    return " - ".join(parts)


class RichReporter:
    """Draws the step bar (samples/s, ETA, running loss/acc) and epoch lines."""

    def __init__(self, console: Console | None = None, header: str = "") -> None:
        self.console = console or Console(stderr=True, soft_wrap=True)
        self.header = header  # printed when training starts, i.e. once inputs are valid
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.epochs = 0
        self.started = 0.0

    def __enter__(self) -> RichReporter:
        return self  # the live display starts with the first epoch, not before

    def __exit__(self, *exc: object) -> None:
        if self.progress.live.is_started:
            self.progress.stop()

    def epoch_start(self, epoch: int, epochs: int, steps: int, samples: int) -> None:
        if not self.progress.live.is_started:
            self.progress.start()
        if self.header:
            self.message(self.header)
            self.header = ""
        self.epochs = epochs
        self.started = time.perf_counter()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"Epoch {epoch}/{epochs}", total=steps, rate="", metrics=""
        )

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        self.progress.update(
            self.task,
            completed=step,
            rate=f"{seen / elapsed:,.0f} samples/s",
            metrics=f"loss {loss:.4f} acc {acc:.4f}",
        )

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.console.print(
            format_epoch_line(row, self.epochs), highlight=False
        )

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, soft_wrap=True)


class StudyProgress(RichReporter):
    """RichReporter with an overall bar above: trial k of N, with its ETA."""

    def __init__(self, console: Console | None = None, header: str = "") -> None:
        super().__init__(console, header)
        self.study_task: Any = None
        self.name = ""

    def study_start(self, name: str, trials: int) -> None:
        self.name = name
        if not self.progress.live.is_started:
            self.progress.start()
        self.study_task = self.progress.add_task(
            f"Study {name}", total=trials, rate="", metrics=""
        )

    def trial_start(self, k: int, total: int, label: str, seed: int) -> None:
        self.progress.update(
            self.study_task,
            description=f"Trial {k}/{total}",
            metrics=f"{label} seed {seed}",
        )
        self.message(f"Trial {k}/{total}: {label}, seed {seed}")

    def trial_end(self, status: str) -> None:
        if status == "skipped":
            self.message("  already complete: skipped")
        self.progress.advance(self.study_task)
