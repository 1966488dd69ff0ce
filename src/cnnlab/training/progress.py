"""Live training progress: a step bar per epoch and a log line per epoch, drawn
with rich in a terminal or with IPython displays in a Jupyter notebook."""

from __future__ import annotations

import html
import sys
import time
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
    TimeRemainingColumn,
)

from cnnlab.training.status import Outcome
from cnnlab.util.units import format_duration

if TYPE_CHECKING:
    from cnnlab.training.loop import Reporter

# Seconds between two in-place redraws of a notebook's progress line.
NOTEBOOK_REFRESH = 0.5


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
        if status == Outcome.SKIPPED:
            self.message("  already complete: skipped")
        self.progress.advance(self.study_task)


def in_notebook() -> bool:
    """True inside a Jupyter kernel; IPython is never imported to find out."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    if shell is None:
        return False
    # Kernels whose shell subclasses it (Colab's) count too.
    return any(c.__name__ == "ZMQInteractiveShell" for c in type(shell).__mro__)


def default_reporter(header: str = "") -> Reporter | None:
    """Progress for where we run: a notebook, a terminal, or nothing (pipes)."""
    if in_notebook():
        return NotebookReporter(header)
    return RichReporter(header=header) if sys.stderr.isatty() else None


def default_study_progress() -> NotebookStudyProgress | StudyProgress | None:
    """Study progress for where we run, like `default_reporter`."""
    if in_notebook():
        return NotebookStudyProgress()
    return StudyProgress() if sys.stderr.isatty() else None


class NotebookReporter:
    """Progress in a Jupyter cell, no ipywidgets: per epoch a line redrawn in place."""

    console = None  # no rich console: callers that want one get None

    def __init__(self, header: str = "") -> None:
        self.header = header  # printed when training starts, as RichReporter does
        self.prefix = ""  # what comes before "Epoch e/E" on the progress line
        self.handle: Any = None
        self.epoch = self.epochs = self.steps = 0
        self.started = self.shown = 0.0

    def __enter__(self) -> NotebookReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle = None

    def epoch_start(self, epoch: int, epochs: int, steps: int, samples: int) -> None:
        from IPython.display import display

        if self.header:
            self.message(self.header)
            self.header = ""
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.started = self.shown = time.perf_counter()
        self.handle = display(self._data(f"0/{steps}", 0), raw=True, display_id=True)

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        now = time.perf_counter()
        if now - self.shown < NOTEBOOK_REFRESH and step < self.steps:
            return
        self.shown = now
        elapsed = max(now - self.started, 1e-9)
        left = elapsed / step * (self.steps - step)
        when = (
            f"{elapsed:.1f}s" if step >= self.steps else f"eta {format_duration(left)}"
        )
        text = (
            f"{step}/{self.steps} - {seen / elapsed:,.0f} samples/s - {when} - "
            f"loss {loss:.4f} - acc {acc:.4f}"
        )
        self.handle.update(self._data(text, step), raw=True)

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.message(format_epoch_line(row, self.epochs))

    def message(self, text: str) -> None:
        print(text, flush=True)  # a stream output: it stays in the cell

    def _data(self, text: str, step: int) -> dict[str, str]:
        """The progress line as text/plain (with a text bar) and text/html."""
        head = f"{self.prefix}Epoch {self.epoch}/{self.epochs}"
        done = round(20 * step / max(self.steps, 1))
        bar = "=" * done + "." * (20 - done)
        meter = f'<progress value="{step}" max="{self.steps}"></progress>'
        return {
            "text/plain": f"{head} [{bar}] {text}",
            "text/html": f"<code>{html.escape(head)}</code> {meter} "
            f"<code>{html.escape(text)}</code>",
        }


class NotebookStudyProgress(NotebookReporter):
    """NotebookReporter whose lines start with the trial number and the study's ETA."""

    def __init__(self, header: str = "") -> None:
        super().__init__(header)
        self.name = ""
        self.study_started = 0.0
        self.trained = 0  # trials that ran (not skipped), for the study's ETA

    def study_start(self, name: str, trials: int) -> None:
        self.name = name
        self.study_started = time.perf_counter()
        self.message(f"Study {name}: {trials} trials")

    def trial_start(self, k: int, total: int, label: str, seed: int) -> None:
        self.prefix = f"Trial {k}/{total} - "
        if self.trained:
            per_trial = (time.perf_counter() - self.study_started) / self.trained
            left = per_trial * (total - k + 1)
            self.prefix += f"study eta {format_duration(left)} - "
        self.message(f"Trial {k}/{total}: {label}, seed {seed}")

    def trial_end(self, status: str) -> None:
        if status == Outcome.SKIPPED:
            self.message("  already complete: skipped")
        else:
            self.trained += 1
