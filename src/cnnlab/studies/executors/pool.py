"""The pool executor: a study's trials in several worker processes, the CPU cores
split between them (`cnnlab.studies.cpus`).

The parent process keeps the study-folder lock and the display; each worker trains
one trial at a time with the shared `run_trial`, writing the same run folder and
the same SQLite store (WAL, one transaction per write: concurrent writers are
safe), so a study run in parallel cannot be told from one run trial by trial.
Each worker sends its trial's progress (epoch, step) to the parent through one
queue, at most about once a second (`loop.REPORT_SECONDS`), and the parent shows a
line per running trial under the study bar.

Stopping: Ctrl-C reaches the workers with the parent (one process group), or the
parent forwards it; a worker stops its trial at the last checkpoint, as the serial
executor does, starts no other, and the parent waits for all of them before it
re-raises. A worker whose parent dies (even by SIGKILL) is killed by the kernel
(Linux's parent-death signal; elsewhere it notices within `_ORPHAN_POLL_S`), so no
orphan writes into a folder whose lock has been released.
"""

from __future__ import annotations

import concurrent.futures as cf
import multiprocessing
import os
import queue
import signal
import sys
import threading
import time
import traceback
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from rich.console import Console

from cnnlab.errors import CnnlabError
from cnnlab.studies.cpus import CpuSplit
from cnnlab.studies.executors import StudyRun
from cnnlab.studies.layout import StudyLayout
from cnnlab.studies.store import Store
from cnnlab.studies.study import Study, Trial
from cnnlab.studies.trial import TrialOutcome, run_trial
from cnnlab.training.loop import REPORT_SECONDS
from cnnlab.training.progress import ParallelDisplay
from cnnlab.training.status import Outcome

_ORPHAN_POLL_S = 1.0  # a worker checks this often that its parent still lives
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


# ------------------------------------------------------------------- the workers

_stopping = False  # set by the first SIGINT a worker gets: start no other trial
_in_trial = False  # a SIGINT between trials only sets _stopping
_stop_event: Any = None  # the parent's: set when the study stops
_updates: Any = None  # the parent's queue of progress updates


def _on_sigint(signum: int, frame: Any) -> None:
    """Stop the running trial at its last checkpoint, once; later SIGINTs are
    ignored, so a second Ctrl-C cannot interrupt the saving of the first."""
    global _stopping
    if _stopping:
        return
    _stopping = True
    if _in_trial:
        raise KeyboardInterrupt


def _die_with_parent(parent: int) -> None:
    """Be killed when the parent dies, so no orphan writes after its lock is gone."""
    if sys.platform.startswith("linux"):
        import ctypes

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL)

    def watch() -> None:  # the fallback, and the race before prctl took effect
        while os.getppid() == parent:
            time.sleep(_ORPHAN_POLL_S)
        os.kill(os.getpid(), signal.SIGKILL)

    if os.getppid() != parent:
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=watch, daemon=True).start()


def _init_worker(parent: int, threads: int, stop: Any, updates: Any) -> None:
    global _stop_event, _updates
    _die_with_parent(parent)
    _stop_event, _updates = stop, updates
    # Progress is worth losing, never worth waiting for: a worker that exits does
    # not block until a parent that stopped reading has taken its last updates.
    updates.cancel_join_thread()
    signal.signal(signal.SIGINT, _on_sigint)  # it started with SIGINT ignored
    signal.signal(signal.SIGTERM, _on_sigint)  # a SIGTERM to the whole group too
    torch.set_num_threads(threads)  # a trial's own `threads` setting overrides it


@dataclass(frozen=True)
class WorkerResult:
    """What a worker sends back for one trial: plain data, errors as text (some
    cnnlab errors take constructor arguments that unpickling would not supply)."""

    outcome: Outcome | None = None  # None: it did not finish
    stopped: bool = False  # Ctrl-C, or the study stopped before it started
    error: str = ""  # a CnnlabError's message (the user can fix it)
    crash: str = ""  # any other exception's traceback
    test_acc: float | None = None
    seconds: float = 0.0


class _QueueReporter:
    """A worker's training progress, sent to the parent as plain tuples
    (k, epoch, first epoch, epochs, step, steps): at the trial's first report and
    each epoch's last step, else at most once per REPORT_SECONDS (a tiny net's
    epochs come many a second)."""

    def __init__(self, k: int, updates: Any) -> None:
        self.k, self.updates = k, updates
        self.epoch = self.first = self.epochs = self.steps = 0
        self.sent = -REPORT_SECONDS

    def epoch_start(self, epoch: int, epochs: int, steps: int, samples: int) -> None:
        self.first = self.first or epoch
        self.epoch, self.epochs, self.steps = epoch, epochs, steps
        self._send(0)

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        self._send(step, last=step == self.steps)

    def epoch_end(self, row: dict[str, Any]) -> None:
        pass

    def _send(self, step: int, last: bool = False) -> None:
        """Send now if it is the first update, an epoch's last step (the line then
        shows a full bar while the epoch is scored), or REPORT_SECONDS passed."""
        now = time.monotonic()
        if last or now - self.sent >= REPORT_SECONDS:  # always, the first time
            self.sent = now
            update = (self.k, self.epoch, self.first, self.epochs, step, self.steps)
            self.updates.put(update)


def _work(trial: Trial, study: Study, out: Path, k: int) -> WorkerResult:
    """Run one trial (the study's `k`-th) in a worker process."""
    global _in_trial
    started = time.perf_counter()
    _in_trial = True  # from here a SIGINT raises; checked after, so none is missed
    try:
        if _stopping or _stop_event.is_set():
            return WorkerResult(stopped=True)
        layout = StudyLayout(out)
        with Store(layout.store) as store:
            reporter = _QueueReporter(k, _updates)
            outcome = run_trial(trial, study, store, layout.study(study.name), reporter)
            rows = store.trial_rows(study.name, trial.label)
    except KeyboardInterrupt:
        return WorkerResult(stopped=True)
    except CnnlabError as err:
        return WorkerResult(error=str(err))
    except Exception:
        return WorkerResult(crash=traceback.format_exc())
    finally:
        _in_trial = False
    acc = next((r.test_acc for r in rows if r.seed == trial.seed), None)
    return WorkerResult(
        outcome.outcome, test_acc=acc, seconds=time.perf_counter() - started
    )


# -------------------------------------------------------------------- the parent


@contextmanager
def _listening(updates: Any, display: ParallelDisplay) -> Iterator[None]:
    """Hand the workers' progress updates to `display`, from a thread, meanwhile."""
    done = threading.Event()

    def drain() -> None:
        while not done.is_set():
            try:
                update = updates.get(timeout=0.2)
            except queue.Empty:
                continue
            except Exception:  # closed, or torn by a worker killed mid-write
                return  # nothing more to show; the study goes on without it
            display.trial_progress(*update)

    thread = threading.Thread(target=drain, name="cnnlab-progress", daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join(timeout=1.0)


class PoolExecutor:
    """Trials in `split.workers` processes of `split.threads` threads each."""

    def __init__(self, split: CpuSplit) -> None:
        self.split = split

    def describe(self) -> str:
        return self.split.describe()

    def environment(self) -> dict[str, Any]:
        return {"workers": self.split.workers, "threads": self.split.threads}

    def run(self, run: StudyRun) -> list[TrialOutcome]:
        """The first error (or Ctrl-C) stops every worker at its last checkpoint,
        then is raised here: a re-run resumes."""
        if run.progress is not None:
            display = run.progress.for_workers(self.split.workers)
        else:
            display = ParallelDisplay(Console(stderr=True, quiet=True))
        return _run_pool(run, self.split, display)


def _run_pool(
    run: StudyRun, split: CpuSplit, display: ParallelDisplay
) -> list[TrialOutcome]:
    study, trials, out = run.study, run.trials, run.out
    context = multiprocessing.get_context("spawn")
    stop, updates = context.Event(), context.Queue()
    before = set(multiprocessing.active_children())
    pool = cf.ProcessPoolExecutor(
        split.workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(os.getpid(), split.threads, stop, updates),
    )
    display.study_start(study.name, len(trials), run.costs)
    for k, trial in enumerate(trials, start=1):
        display.trial_start(k, len(trials), trial.label, trial.seed)
    with _sigint_ignored():  # inherited: a Ctrl-C while a worker imports is no crash
        futures = {
            pool.submit(_work, trial, study, out, k): k
            for k, trial in enumerate(trials, start=1)
        }
    workers = set(multiprocessing.active_children()) - before
    results: dict[int, WorkerResult] = {}
    try:
        with display, _listening(updates, display):
            for future in cf.as_completed(futures):
                k = futures[future]
                results[k] = future.result()
                if results[k].outcome is None:
                    break  # an error or a worker's own Ctrl-C: stop the others
                result = results[k]
                display.trial_end(k, result.outcome, result.seconds, result.test_acc)
                run.finished(TrialOutcome(trials[k - 1], results[k].outcome))
    except cf.process.BrokenProcessPool as err:
        _stop(pool, workers, stop)
        raise CnnlabError(
            "a worker process died (killed from outside, or out of memory?). "
            "Finished trials and epochs are saved: run the same command again to "
            "resume, with fewer --workers if memory is short."
        ) from err
    except BaseException:
        _stop(pool, workers, stop)
        raise
    if len(results) < len(trials):
        _stop(pool, workers, stop)
    else:
        pool.shutdown(wait=True)
    for k in sorted(results):
        _raise_failure(results[k])
    if len(results) < len(trials) or any(r.stopped for r in results.values()):
        raise KeyboardInterrupt  # the others stopped: as a Ctrl-C would
    return [TrialOutcome(trials[k - 1], results[k].outcome) for k in sorted(results)]


@contextmanager
def _sigint_ignored() -> Iterator[None]:
    """SIGINT ignored in this process, and so in the processes it starts meanwhile,
    until they install their handler (signal handlers: main thread only)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def _stop(pool: cf.ProcessPoolExecutor, workers: set[Any], stop: Any) -> None:
    """Stop every worker at its last checkpoint and wait for them to exit."""
    stop.set()  # queued trials a worker picks up now return at once
    for process in workers:
        if process.is_alive() and process.pid is not None:
            try:
                os.kill(process.pid, signal.SIGINT)
            except ProcessLookupError:
                pass  # it exited in between
    # One call: a second shutdown() would no longer wait for the processes.
    pool.shutdown(wait=True, cancel_futures=True)


def _raise_failure(result: WorkerResult) -> None:
    if result.error:
        raise CnnlabError(result.error)
    if result.crash:
        raise RuntimeError(f"a worker process failed:\n{result.crash}")
