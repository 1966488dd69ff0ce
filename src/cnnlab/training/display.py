"""What a study tells its display, and the words every display shows.

One protocol (`StudyDisplay`), three implementations in `cnnlab.training.progress`:
the terminal's (rich bars), the notebook's (a line redrawn in a Jupyter cell) and
the worker pool's (a live line per trial running in a worker process). The trial
lines they print are made here, once.

Quiet is a setting of a display, not another display: a quiet one draws epoch
progress only, without a study bar or trial lines (a search says itself which
candidate runs: `quieted`).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, Protocol

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    TextColumn,
    TimeElapsedColumn,
)

from cnnlab.training.status import Outcome

SKIPPED = "already complete: skipped"
ELAPSED = "elapsed"  # in `bars`: the time-elapsed column, not a field


class StudyDisplay(Protocol):
    """What a study's executor tells a display, whatever draws it."""

    quiet: bool  # epoch progress only: no study bar, no trial lines

    def message(self, text: str) -> None:
        """A line that stays (the executor, the estimate, a warning)."""
        ...

    def study_start(
        self, name: str, trials: int, costs: list[float] | None = None
    ) -> None:
        """`trials` to run; `costs`: each one's expected seconds, if estimated."""
        ...

    def trial_start(self, k: int, total: int, label: str, seed: int) -> None:
        """Trial `k` of `total` is handed to whatever trains it."""
        ...

    def trial_end(
        self,
        k: int,
        outcome: Outcome,
        seconds: float | None = None,
        test_acc: float | None = None,
    ) -> None:
        """Trial `k` is finished and recorded."""
        ...

    def for_workers(self, workers: int) -> Any:
        """The display for trials run in `workers` worker processes at once (a
        `ParallelDisplay`) drawing where this one draws."""
        ...


def trial_line(k: int, total: int, label: str, seed: int) -> str:
    """'Trial 3/6: conv5-tiny, seed 2'."""
    return f"Trial {k}/{total}: {label}, seed {seed}"


def outcome_text(
    outcome: Outcome, seconds: float | None = None, test_acc: float | None = None
) -> str:
    """'already complete: skipped', or 'trained in 4.2s - test acc 0.9812'."""
    if outcome is Outcome.SKIPPED:
        return SKIPPED
    text = str(outcome) if seconds is None else f"{outcome} in {seconds:.1f}s"
    return text if test_acc is None else f"{text} - test acc {test_acc:.4f}"


def bars(console: Console, *fields: str) -> Progress:
    """Rich progress bars: the task's description, a bar, 'done/total', then a text
    column per task field in `fields` (ELAPSED: the time since the task began).
    Transient: gone when they stop, the lines printed meanwhile stay."""
    columns: list[ProgressColumn] = [
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
    ]
    for name in fields:
        columns.append(
            TimeElapsedColumn()
            if name == ELAPSED
            else TextColumn(f"{{task.fields[{name}]}}")
        )
    return Progress(*columns, console=console, transient=True)


@contextmanager
def quieted(display: StudyDisplay | None) -> Iterator[None]:
    """`display` quiet meanwhile (epoch progress only), as it was after."""
    if display is None:
        yield
        return
    before, display.quiet = display.quiet, True
    try:
        yield
    finally:
        display.quiet = before
