"""Run a study's trials in several worker processes, the CPU cores split between them.

The split (P workers x T threads, P*T <= usable CPUs) comes from `plan_split`: the
user's --workers / --threads where given, else `default_split`. The parent process
keeps the study-folder lock and the display; each worker trains one trial at a time
with the in-process executor's `run_trial`, writing the same run folder and the same
SQLite store (WAL, one transaction per write: concurrent writers are safe), so a
study run in parallel cannot be told from one run trial by trial.

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
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

from cnnlab.errors import CnnlabError
from cnnlab.studies.executors.local import TrialOutcome, run_trial
from cnnlab.studies.store import Store
from cnnlab.studies.study import STORE_FILE, Study, Trial
from cnnlab.util.machine import available_memory, usable_cpus

# The default split, from benchmarks/parallel.py on this project's 2-CPU machine
# (shared, so noisy; batch 128, steady-state Adam steps): one process's 2nd thread
# trains preset 2 1.71x and preset 4 1.53x faster (../shared/notes/cpu-benchmarks.md
# found 1.33-1.75x); two 1-thread processes do 1.12x (preset 2) and 1.28x (preset 4)
# more than one 2-thread process. So a 2nd thread is worth 53-71% of a core, and
# another worker more, but a worker costs a process start (torch and the data set,
# seconds: its 4-trial study took 11.1 s as 1x2 and 12.0 s as 2x1) and
# ~0.55 GiB, and hides the live per-epoch bars. Past 2 threads nothing could be
# measured here; the assumption (Amdahl's law fitted to the 2-thread gain: ~2x at
# 4 threads, ~2.4x at 8) is that small nets gain little from more. Hence: up to
# THREADS_PER_WORKER threads per worker, as many workers as that allows (never more
# than the trials), and the cores left over go to the workers' threads. On 2 CPUs
# that is 1 worker x 2 threads, as before; long studies there may gain 12-28% with
# --workers 2 --threads 1.
THREADS_PER_WORKER = 2
# Memory a default worker is allowed for: the peak RSS of a worker training presets
# 2 and 4 was 546-578 MiB here (torch itself, the whole MNIST, one net), doubled for
# bigger nets. The default never starts more workers than free memory holds this
# many times; a user's --workers is taken as given.
WORKER_MEMORY = 2**30
_ORPHAN_POLL_S = 1.0  # a worker checks this often that its parent still lives
_PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


@dataclass(frozen=True)
class CpuSplit:
    """P worker processes with T threads each."""

    workers: int
    threads: int

    @property
    def cpus(self) -> int:
        return self.workers * self.threads

    def describe(self) -> str:
        """'2 workers x 1 thread each (2 CPUs)', said once at study start."""
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        each = " each" if self.workers > 1 else ""
        cpus = f"{self.cpus} CPU{'s' if self.cpus > 1 else ''}"
        return f"{workers} x {threads}{each} ({cpus})"


def default_split(cpus: int, trials: int, memory: int | None = None) -> CpuSplit:
    """The split cnnlab picks for `trials` trials on `cpus` CPUs with `memory`
    bytes free (None: unknown), following the constants above."""
    cpus, trials = max(1, cpus), max(1, trials)
    workers = min(trials, cpus // THREADS_PER_WORKER)
    if memory is not None:
        workers = min(workers, memory // WORKER_MEMORY)
    workers = max(1, workers)
    return CpuSplit(workers, cpus // workers)


def _suggest(cpus: int) -> str:
    """Splits that fit `cpus` CPUs, for error messages: '--workers 2 --threads 1'."""
    pairs = [(w, cpus // w) for w in sorted({1, 2, cpus // 2, cpus}) if w >= 1]
    return " or ".join(f"--workers {w} --threads {t}" for w, t in pairs if t >= 1)


def plan_split(
    cpus: int,
    trials: int,
    workers: int | None = None,
    threads: int | None = None,
    memory: int | None = None,
) -> CpuSplit:
    """The split to use: `workers` and `threads` where given, the default otherwise.

    `threads` is the per-trial thread count the trials ask for (--threads, or the
    study file's `threads`). More workers than trials would sit idle: capped.
    """
    if workers is None and threads is None:
        return default_split(cpus, trials, memory)
    if workers is not None and threads is not None and workers * threads > cpus:
        raise CnnlabError(
            f"--workers {workers} x --threads {threads} needs {workers * threads} "
            f"CPUs, but {cpus} are usable here. Use {_suggest(cpus)}."
        )
    if workers is None:
        assert threads is not None
        if threads > cpus:
            raise CnnlabError(
                f"--threads {threads} is more than the {cpus} CPU(s) usable here. "
                f"Use --threads {cpus} or fewer."
            )
        return CpuSplit(max(1, min(trials, cpus // threads)), threads)
    if workers > cpus:
        raise CnnlabError(
            f"--workers {workers} needs at least {workers} CPUs (one thread each), "
            f"but {cpus} are usable here. Use --workers {cpus} or fewer."
        )
    workers = min(workers, max(1, trials))
    return CpuSplit(workers, threads if threads is not None else cpus // workers)


def study_split(study: Study, workers: int | None, device: str) -> CpuSplit:
    """The split for `study`: its trials' own `threads` setting counts as --threads.

    On a GPU the trials would share one device: one worker unless asked otherwise.
    """
    asked = {a.config.threads for a in study.archs} - {None}
    threads = max(asked) if asked else None  # type: ignore[type-var]
    trials = len(study.trials())
    if device != "cpu" and workers is None:
        workers = 1
    memory = available_memory(torch.device("cpu"))
    return plan_split(usable_cpus(), trials, workers, threads, memory)


# ------------------------------------------------------------------- the workers

_stopping = False  # set by the first SIGINT a worker gets: start no other trial
_in_trial = False  # a SIGINT between trials only sets _stopping
_stop_event: Any = None  # the parent's: set when the study stops


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


def _init_worker(parent: int, threads: int, stop: Any) -> None:
    global _stop_event
    _die_with_parent(parent)
    _stop_event = stop
    signal.signal(signal.SIGINT, _on_sigint)  # it started with SIGINT ignored
    torch.set_num_threads(threads)  # a trial's own `threads` setting overrides it


def _work(trial: Trial, study: Study, out: Path) -> dict[str, Any]:
    """Run one trial in a worker. The result is a plain dict, errors as text: some
    cnnlab errors take constructor arguments that unpickling would not supply."""
    global _in_trial
    started = time.perf_counter()
    _in_trial = True  # from here a SIGINT raises; checked after, so none is missed
    try:
        if _stopping or _stop_event.is_set():
            return {"status": "not started"}
        with Store(out / STORE_FILE) as store:
            outcome = run_trial(trial, study, store, out / study.name)
            rows = store.trial_rows(study.name, trial.label)
    except KeyboardInterrupt:
        return {"status": "interrupted"}
    except CnnlabError as err:
        return {"status": "error", "error": str(err)}
    except Exception:
        return {"status": "crashed", "error": traceback.format_exc()}
    finally:
        _in_trial = False
    acc = next((r["test_acc"] for r in rows if r["seed"] == trial.seed), None)
    return {
        "status": outcome.status,
        "test_acc": acc,
        "seconds": time.perf_counter() - started,
    }


# -------------------------------------------------------------------- the parent


class ParallelDisplay:
    """An overall bar (trials done of N, ETA) and one line per finished trial."""

    def __init__(self, console: Console, name: str, total: int) -> None:
        self.console, self.total = console, total
        self.progress = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TimeElapsedColumn(),
            TextColumn("{task.fields[eta]}"),
            console=console,
            transient=True,
        )
        self.task = self.progress.add_task(f"Study {name}", total=total, eta="")
        self.started = time.perf_counter()
        self.trained = 0  # trials that trained (skipped ones say nothing of speed)
        self.done = 0

    def __enter__(self) -> ParallelDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def finished(self, k: int, trial: Trial, result: dict[str, Any]) -> None:
        self.done += 1
        head = f"Trial {k}/{self.total}: {trial.label}, seed {trial.seed}"
        if result["status"] == "skipped":
            line = f"{head} - already complete: skipped"
        else:
            self.trained += 1
            acc = result.get("test_acc")
            score = "" if acc is None else f" - test acc {acc:.4f}"
            line = f"{head} - {result['status']} in {result['seconds']:.1f}s{score}"
        self.console.print(line, highlight=False, soft_wrap=True)
        self.progress.update(self.task, advance=1, eta=self._eta())

    def _eta(self) -> str:
        """Elapsed time per trained trial so far (the workers' overlap included)
        times the trials left; rich's own estimate needs updates every 30 s."""
        left = self.total - self.done
        if not self.trained or not left:
            return ""
        per_trial = (time.perf_counter() - self.started) / self.trained
        return f"eta ~{_duration(per_trial * left)}"


def _duration(seconds: float) -> str:
    minutes, secs = divmod(int(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes:02d}m" if hours else f"{minutes}m{secs:02d}s"


def run_pool(
    study: Study,
    trials: list[Trial],
    out: Path,
    split: CpuSplit,
    console: Console | None = None,
) -> list[TrialOutcome]:
    """Run `trials` in `split.workers` processes; the caller holds the folder lock.

    The first error (or Ctrl-C) stops every worker at its last checkpoint, then is
    raised here: a re-run resumes.
    """
    context = multiprocessing.get_context("spawn")
    stop = context.Event()
    before = set(multiprocessing.active_children())
    pool = cf.ProcessPoolExecutor(
        split.workers,
        mp_context=context,
        initializer=_init_worker,
        initargs=(os.getpid(), split.threads, stop),
    )
    display = ParallelDisplay(
        console or Console(stderr=True, quiet=True), study.name, len(trials)
    )
    with _sigint_ignored():  # inherited: a Ctrl-C while a worker imports is no crash
        futures = {
            pool.submit(_work, trial, study, out): k
            for k, trial in enumerate(trials, start=1)
        }
    workers = set(multiprocessing.active_children()) - before
    results: dict[int, dict[str, Any]] = {}
    try:
        with display:
            for future in cf.as_completed(futures):
                k = futures[future]
                results[k] = future.result()
                if results[k]["status"] not in ("trained", "resumed", "skipped"):
                    break  # an error or a worker's own Ctrl-C: stop the others
                display.finished(k, trials[k - 1], results[k])
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
    if len(results) < len(trials):  # the others stopped: as a Ctrl-C would
        raise KeyboardInterrupt
    return [TrialOutcome(trials[k - 1], results[k]["status"]) for k in sorted(results)]


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


def _raise_failure(result: dict[str, Any]) -> None:
    if result["status"] == "error":
        raise CnnlabError(result["error"])
    if result["status"] == "crashed":
        raise RuntimeError(f"a worker process failed:\n{result['error']}")
