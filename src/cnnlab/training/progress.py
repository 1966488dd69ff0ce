"""Live training progress: a step bar per epoch and a log line per epoch, drawn
with rich in a terminal or with IPython displays in a Jupyter notebook; for a
study, the trial lines and a study ETA around them (`cnnlab.training.display`
says what every study display does: `StudyProgress` and `NotebookStudyProgress`
for trials run one by one, `ParallelDisplay` for trials in worker processes)."""

from __future__ import annotations

import html
import sys
import threading
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.markup import escape

from cnnlab.training.display import (
    ELAPSED,
    SKIPPED,
    StudyDisplay,
    bars,
    outcome_text,
    trial_line,
)
from cnnlab.training.metrics import EPOCH_METRICS
from cnnlab.training.status import Outcome
from cnnlab.util.terminal import shown
from cnnlab.util.units import format_duration

if TYPE_CHECKING:
    from cnnlab.training.loop import Reporter


def format_epoch_line(row: dict[str, Any], epochs: int) -> str:
    """'Epoch 3/12 - 4.1s - loss: 0.0898 - acc: 0.9718 - val_loss: ...' (Keras)."""
    parts = [f"Epoch {row['epoch']}/{epochs}", f"{row['seconds']:.1f}s"]
    for key in EPOCH_METRICS:
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
        # Our own ETA column, not rich's: rich's needs two updates, and a slow net
        # reports once a step.
        self.progress = bars(self.console, "rate", ELAPSED, "eta", "metrics")
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


class NotebookReporter:
    """Progress in a Jupyter cell, no ipywidgets: per epoch a line redrawn in place,
    each time the loop reports (about once a second, `loop.REPORT_SECONDS`)."""

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


class _SerialStudy:
    """The study part of the displays of trials run one by one, in this process
    (`StudyDisplay`): the trial lines, the study clock, the quiet setting. What
    draws it (a rich bar, a notebook line) is the `_show_*` methods' part."""

    quiet = False
    # The reporter's (RichReporter, NotebookReporter) part:
    epoch: int
    first: int
    epochs: int
    steps: int
    message: Callable[[str], None]

    def _study_init(self) -> None:
        self.name = ""
        self.clock: StudyClock | None = None
        self.k = self.total = 0  # the running trial; 0: none shown

    def study_start(
        self, name: str, trials: int, costs: list[float] | None = None
    ) -> None:
        """`costs`: each trial's expected seconds, in order, if estimated."""
        if self.quiet:
            return
        self.name, self.total = name, trials
        self.clock = StudyClock(trials, costs)
        self.clock.begin()  # trials start right away, in this process
        self._show_study(name, trials)

    def trial_start(self, k: int, total: int, label: str, seed: int) -> None:
        self._new_trial()  # its first epoch starts a new count
        self.k, self.total = (0, 0) if self.quiet else (k, total)
        if not self.quiet:
            self._show_trial(k, total, label, seed)
            self.message(trial_line(k, total, label, seed))

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        if self.clock is not None and self.k:
            done = trial_fraction(self.epoch, self.first, self.epochs, step, self.steps)
            self.clock.update(self.k, done)
            self._show_clock()
        super().step(step, seen, loss, acc)  # type: ignore[misc]

    def trial_end(
        self,
        k: int,
        outcome: Outcome,
        seconds: float | None = None,
        test_acc: float | None = None,
    ) -> None:
        if not self.k:  # quiet, or never started
            return
        if outcome is Outcome.SKIPPED:
            self.message(f"  {SKIPPED}")
        if self.clock is not None:
            self.clock.finish(self.k, skipped=outcome is Outcome.SKIPPED)
        self._show_clock(advance=1)

    def _show_study(self, name: str, trials: int) -> None:
        raise NotImplementedError

    def _show_trial(self, k: int, total: int, label: str, seed: int) -> None:
        raise NotImplementedError

    def _show_clock(self, advance: int = 0) -> None:
        raise NotImplementedError

    def _new_trial(self) -> None:
        raise NotImplementedError


class StudyProgress(_SerialStudy, RichReporter):
    """RichReporter with an overall bar above: trial k of N, with the study's ETA
    weighted by each trial's expected cost (`StudyClock`)."""

    def __init__(self, console: Console | None = None, header: str = "") -> None:
        super().__init__(console, header)
        self._study_init()
        self.study_task: Any = None

    def for_workers(self, workers: int) -> ParallelDisplay:
        return ParallelDisplay(self.console, workers, self.quiet)

    def _show_study(self, name: str, trials: int) -> None:
        if not self.progress.live.is_started:
            self.progress.start()
        eta = self.clock.text() if self.clock is not None else ""
        self.study_task = self.progress.add_task(
            f"Study {name}", total=trials, rate="", eta=eta, metrics=""
        )

    def _show_trial(self, k: int, total: int, label: str, seed: int) -> None:
        if self.study_task is not None:
            self.progress.update(
                self.study_task,
                description=f"Trial {k}/{total}",
                metrics=f"{label} seed {seed}",
            )

    def _show_clock(self, advance: int = 0) -> None:
        if self.study_task is not None and self.clock is not None:
            eta = self.clock.text()
            self.progress.update(self.study_task, advance=advance, eta=eta)

    def _new_trial(self) -> None:
        self.task_done()

    def task_done(self) -> None:
        """Forget the last trial's epoch bar, so the next trial's is its own."""
        if self.task is not None:
            self.progress.remove_task(self.task)
            self.task = None


class NotebookStudyProgress(_SerialStudy, NotebookReporter):
    """NotebookReporter whose lines start with the trial number and the study's
    ETA, weighted by each trial's expected cost as in the terminal (`StudyClock`)."""

    def __init__(self, header: str = "") -> None:
        super().__init__(header)
        self._study_init()

    def for_workers(self, workers: int) -> ParallelDisplay:
        # The pool's printed lines reach the cell as this display's messages.
        console = Console(file=_Lines(self.message), width=200)
        return ParallelDisplay(console, workers, self.quiet)

    def _show_study(self, name: str, trials: int) -> None:
        self.message(f"Study {name}: {trials} trials")

    def _show_trial(self, k: int, total: int, label: str, seed: int) -> None:
        self._show_clock()

    def _show_clock(self, advance: int = 0) -> None:
        eta = self.clock.text() if self.clock is not None else ""
        self.prefix = f"Trial {self.k}/{self.total} - " + (
            f"study {eta} - " if eta else ""
        )

    def _new_trial(self) -> None:
        self.handle = None  # the next epoch starts this trial's own line
        self.prefix = ""


class ParallelDisplay:
    """The study display of trials in worker processes: an overall bar (trials done
    of N, ETA weighted by each trial's expected cost), under it a live line per
    running trial (epoch, steps, its own ETA), and a printed line per finished
    trial. Updates come from the pool's queue thread (`trial_progress`)."""

    def __init__(self, console: Console, workers: int = 1, quiet: bool = False):
        self.console, self.workers, self.quiet = console, max(1, workers), quiet
        self.progress = bars(console, ELAPSED, "eta")
        self.clock = StudyClock(0, None, workers)
        self.task: Any = None
        self.total = 0
        self.trials: dict[int, tuple[str, int]] = {}  # k -> (label, seed)
        self.running: dict[int, tuple[Any, float]] = {}  # k -> (task, started)
        self.ended: set[int] = set()  # late updates of these are dropped
        self.lock = threading.Lock()

    def __enter__(self) -> ParallelDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def for_workers(self, workers: int) -> ParallelDisplay:
        return self

    def message(self, text: str) -> None:
        self.console.print(text, highlight=False, soft_wrap=True)

    def study_start(
        self, name: str, trials: int, costs: list[float] | None = None
    ) -> None:
        self.total = trials
        self.clock = StudyClock(trials, costs, self.workers)
        if not self.quiet:
            self.task = self.progress.add_task(
                f"Study {name}", total=trials, eta=self.clock.text()
            )

    def trial_start(self, k: int, total: int, label: str, seed: int) -> None:
        """Trial `k` is queued for a worker; its line shows from its first report."""
        self.trials[k] = (label, seed)

    def trial_progress(
        self, k: int, epoch: int, first: int, epochs: int, step: int, steps: int
    ) -> None:
        """A worker's report: trial `k` is at `step` of `steps` in `epoch`."""
        label, seed = self.trials[k]
        head = f"  {escape(shown(label))} seed {seed} epoch {epoch}/{epochs}"
        done = trial_fraction(epoch, first, epochs, step, steps)
        with self.lock:
            if k in self.ended:
                return
            self.clock.begin()
            self.clock.update(k, done)
            if k not in self.running:
                task = self.progress.add_task(head, total=steps, eta=eta_text(0, 0))
                self.running[k] = (task, time.monotonic())
            task, started = self.running[k]
            eta = eta_text(time.monotonic() - started, done)
            self.progress.update(
                task, description=head, total=steps, completed=step, eta=eta
            )
            self._show_clock()

    def trial_end(
        self,
        k: int,
        outcome: Outcome,
        seconds: float | None = None,
        test_acc: float | None = None,
    ) -> None:
        with self.lock:
            self.ended.add(k)
            task, _ = self.running.pop(k, (None, 0.0))
            if task is not None:
                self.progress.remove_task(task)
            self.clock.finish(k, outcome is Outcome.SKIPPED)
        if not self.quiet:
            line = trial_line(k, self.total, *self.trials[k])
            self.message(f"{line} - {outcome_text(outcome, seconds, test_acc)}")
        self._show_clock(advance=1)

    def _show_clock(self, advance: int = 0) -> None:
        if self.task is not None:
            self.progress.update(self.task, advance=advance, eta=self.clock.text())


class _Lines:
    """A text stream that hands each finished line to `say` (a notebook display's
    `message`), so the pool's trial lines reach displays that are not consoles."""

    def __init__(self, say: Callable[[str], None]) -> None:
        self.say, self.buffer = say, ""

    def write(self, text: str) -> int:
        self.buffer += text
        *lines, self.buffer = self.buffer.split("\n")
        for line in lines:
            if line.strip():
                self.say(line)
        return len(text)

    def flush(self) -> None:
        pass


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


def default_study_progress() -> StudyDisplay | None:
    """Study progress for where we run, like `default_reporter`."""
    if in_notebook():
        return NotebookStudyProgress()
    return StudyProgress() if sys.stderr.isatty() else None
