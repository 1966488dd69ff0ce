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
)

from cnnlab.training.status import Outcome
from cnnlab.util.units import format_duration

if TYPE_CHECKING:
    from cnnlab.training.loop import Reporter


def format_epoch_line(row: dict[str, Any], epochs: int) -> str:
    """'Epoch 3/12 - 4.1s - loss: 0.0898 - acc: 0.9718 - val_loss: ...' (Keras)."""
    parts = [f"Epoch {row['epoch']}/{epochs}", f"{row['seconds']:.1f}s"]
    for key in ("loss", "acc", "val_loss", "val_acc"):
        if row.get(key) is not None:
            parts.append(f"{key}: {row[key]:.4f}")
    return " - ".join(parts)


def eta_text(elapsed: float, fraction: float) -> str:
    """'eta 1m05s' for work `fraction` done in `elapsed` seconds; 'eta -' before
    anything is done. Every bar's ETA (epoch, trial, worker line) is this one."""
    if fraction <= 0:
        return "eta -"
    return f"eta {format_duration(elapsed / fraction * max(0.0, 1 - fraction))}"


def trial_fraction(epoch: int, first: int, epochs: int, step: int, steps: int) -> float:
    """How much of a trial's training is done at `step` of `steps` in `epoch`, for a
    trial that started (or resumed) at epoch `first` of `epochs`."""
    total = max(1, epochs - first + 1)
    return (epoch - first + step / max(1, steps)) / total


class StudyClock:
    """A study's ETA with each trial weighted by what it is expected to cost.

    `costs`: each trial's expected seconds (`cnnlab.studies.estimate`; 0 for one
    already complete), or None, when there is no estimate: every trial then weighs
    the same and only measured time says how long one takes. With costs, the ETA
    starts as the estimate and moves toward what the study measures as it goes: the
    estimate counts as PRIOR_SHARE of the study already run at the estimated speed.
    `workers`: trials that run at once. The clock runs from `begin` (the first
    trial's start: worker processes take seconds to start, and waiting for them
    says nothing of the trials' speed); before it, the ETA is the estimate.
    """

    PRIOR_SHARE = 0.1

    def __init__(self, trials: int, costs: list[float] | None, workers: int = 1):
        self.seconds = costs is not None and len(costs) == trials
        self.costs = list(costs or []) if self.seconds else [1.0] * trials
        self.done = [0.0] * trials  # fraction of each trial's training done
        self.workers = max(1, workers)
        self.started: float | None = None

    def begin(self) -> None:
        """Start the clock, once: the first trial has started."""
        if self.started is None:
            self.started = time.monotonic()

    def update(self, k: int, fraction: float) -> None:
        """Trial `k` (1-based) is `fraction` done."""
        self.done[k - 1] = min(1.0, max(0.0, fraction))

    def finish(self, k: int, skipped: bool = False) -> None:
        """Trial `k` ended; a skipped one did no work, so it weighs nothing."""
        if skipped:
            self.costs[k - 1] = 0.0
        self.done[k - 1] = 1.0

    def left(self) -> float | None:
        """Seconds until the study's last trial ends, or None before it can tell."""
        done = sum(c * f for c, f in zip(self.costs, self.done, strict=True))
        left = sum(c * (1 - f) for c, f in zip(self.costs, self.done, strict=True))
        if self.started is None:
            return left / self.workers if self.seconds else None
        elapsed = max(time.monotonic() - self.started, 1e-9)
        prior = self.PRIOR_SHARE * sum(self.costs) if self.seconds else 0.0
        # Work (in estimated seconds) done per second of wall time.
        speed = (done + prior) / (elapsed + prior / self.workers)
        return left / speed if speed > 0 else None

    def text(self) -> str:
        left = self.left()
        return "" if left is None else f"eta ~{format_duration(left)}"


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
            # Our own ETA, not rich's: rich's needs two updates, and a slow net
            # reports once a step.
            TextColumn("{task.fields[eta]}"),
            TextColumn("{task.fields[metrics]}"),
            console=self.console,
            transient=True,
        )
        self.task: Any = None
        self.epoch = self.first = self.epochs = self.steps = 0
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
        if self.task is None:  # a new run, or a study's next trial
            self.first = epoch
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.started = time.monotonic()
        if self.task is not None:
            self.progress.remove_task(self.task)
        self.task = self.progress.add_task(
            f"Epoch {epoch}/{epochs}", total=steps, rate="", eta="eta -", metrics=""
        )

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        self.progress.update(
            self.task,
            completed=step,
            rate=f"{seen / elapsed:,.0f} samples/s",
            eta=eta_text(elapsed, step / max(1, self.steps)),
            metrics=f"loss {loss:.4f} acc {acc:.4f}",
        )

    def epoch_end(self, row: dict[str, Any]) -> None:
        self.progress.console.print(
            format_epoch_line(row, self.epochs), highlight=False
        )

    def message(self, text: str) -> None:
        self.progress.console.print(text, highlight=False, soft_wrap=True)


class StudyProgress(RichReporter):
    """RichReporter with an overall bar above: trial k of N, with the study's ETA
    weighted by each trial's expected cost (`StudyClock`)."""

    def __init__(self, console: Console | None = None, header: str = "") -> None:
        super().__init__(console, header)
        self.study_task: Any = None
        self.name = ""
        self.clock: StudyClock | None = None
        self.k = 0  # the running trial

    def study_start(
        self, name: str, trials: int, costs: list[float] | None = None
    ) -> None:
        """`costs`: each trial's expected seconds, in order, if estimated."""
        self.name = name
        self.clock = StudyClock(trials, costs)
        self.clock.begin()  # trials start right away, in this process
        if not self.progress.live.is_started:
            self.progress.start()
        self.study_task = self.progress.add_task(
            f"Study {name}", total=trials, rate="", eta=self.clock.text(), metrics=""
        )

    def trial_start(self, k: int, total: int, label: str, seed: int) -> None:
        self.k = k
        self.task_done()  # a new trial: its first epoch starts a new count
        self.progress.update(
            self.study_task,
            description=f"Trial {k}/{total}",
            metrics=f"{label} seed {seed}",
        )
        self.message(f"Trial {k}/{total}: {label}, seed {seed}")

    def task_done(self) -> None:
        """Forget the last trial's epoch bar, so the next trial's is its own."""
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        super().step(step, seen, loss, acc)
        if self.clock is not None and self.k:
            done = trial_fraction(self.epoch, self.first, self.epochs, step, self.steps)
            self.clock.update(self.k, done)
            self.progress.update(self.study_task, eta=self.clock.text())

    def trial_end(self, status: str) -> None:
        if status == Outcome.SKIPPED:
            self.message("  already complete: skipped")
        if self.clock is not None and self.k:
            self.clock.finish(self.k, skipped=status == Outcome.SKIPPED)
            self.progress.update(self.study_task, eta=self.clock.text())
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
    """Progress in a Jupyter cell, no ipywidgets: per epoch a line redrawn in place,
    each time the loop reports (about once a second, `loop.REPORT_SECONDS`)."""

    console = None  # no rich console: callers that want one get None

    def __init__(self, header: str = "") -> None:
        self.header = header  # printed when training starts, as RichReporter does
        self.prefix = ""  # what comes before "Epoch e/E" on the progress line
        self.handle: Any = None
        self.epoch = self.first = self.epochs = self.steps = 0
        self.started = 0.0

    def __enter__(self) -> NotebookReporter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.handle = None

    def epoch_start(self, epoch: int, epochs: int, steps: int, samples: int) -> None:
        from IPython.display import display

        if self.header:
            self.message(self.header)
            self.header = ""
        if self.handle is None:  # a new run, or a study's next trial
            self.first = epoch
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self.started = time.monotonic()
        self.handle = display(self._data(f"0/{steps}", 0), raw=True, display_id=True)

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        elapsed = max(time.monotonic() - self.started, 1e-9)
        when = (
            f"{elapsed:.1f}s"
            if step >= self.steps
            else eta_text(elapsed, step / max(1, self.steps))
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
    """NotebookReporter whose lines start with the trial number and the study's
    ETA, weighted by each trial's expected cost as in the terminal (`StudyClock`)."""

    def __init__(self, header: str = "") -> None:
        super().__init__(header)
        self.name = ""
        self.clock: StudyClock | None = None
        self.k = self.total = 0

    def study_start(
        self, name: str, trials: int, costs: list[float] | None = None
    ) -> None:
        self.name = name
        self.clock = StudyClock(trials, costs)
        self.clock.begin()
        self.message(f"Study {name}: {trials} trials")

    def trial_start(self, k: int, total: int, label: str, seed: int) -> None:
        self.k, self.total = k, total
        self.handle = None  # the next epoch starts this trial's own line
        self._set_prefix()
        self.message(f"Trial {k}/{total}: {label}, seed {seed}")

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        if self.clock is not None and self.k:
            done = trial_fraction(self.epoch, self.first, self.epochs, step, self.steps)
            self.clock.update(self.k, done)
            self._set_prefix()
        super().step(step, seen, loss, acc)

    def trial_end(self, status: str) -> None:
        if status == Outcome.SKIPPED:
            self.message("  already complete: skipped")
        if self.clock is not None and self.k:
            self.clock.finish(self.k, skipped=status == Outcome.SKIPPED)

    def _set_prefix(self) -> None:
        eta = self.clock.text() if self.clock is not None else ""
        self.prefix = f"Trial {self.k}/{self.total} - " + (
            f"study {eta} - " if eta else ""
        )
