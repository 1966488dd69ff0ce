"""How a study uses the CPUs: P trials at once (worker processes), T threads each.

The split (P x T <= usable CPUs) comes from `plan_split`: the user's --workers /
--threads where given, else `default_split`. Every executor on this machine asks here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import infer
from cnnlab.studies.study import Study, Trial
from cnnlab.training.session import fitted_arch, split_sizes
from cnnlab.util.machine import available_memory, usable_cpus
from cnnlab.util.terminal import shown

# The default split, from benchmarks/parallel.py (figures and machine in
# docs/benchmarks.md). A worker costs a process start (torch and the data set:
# seconds) and about half a GiB. Nets too large to pack (below) get up to
# THREADS_PER_WORKER threads per worker, as many workers as that allows (never more
# than the trials), and the cores left over go to the workers' threads.
THREADS_PER_WORKER = 2
# Memory a default worker is allowed for: about twice the peak RSS of a worker
# training the small presets (torch itself, the whole MNIST, one net). The default
# never starts more workers than free memory holds this many times; a user's
# --workers is taken as given.
WORKER_MEMORY = 2**30
# Packing. On the 2-core machines measured, two 1-thread processes trained 1.07-1.34x
# the samples/s of one process with both threads, on every preset: a second thread
# speeds one process up by about THREAD_GAIN. So the default runs trials one thread
# each, side by side, when that finishes the study sooner: when no trial is so large
# that, run alone on one thread, it outlasts all the trials at two (the trials'
# costs from their training FLOPs, scheduled as the workers take them). A study of
# fewer than PACK_WORK training FLOPs is not packed: a worker's start (seconds)
# costs more than packing saves there.
THREAD_GAIN = 1.5  # 1.46-1.64x measured on presets 1-5 and 9
PACK_WORK = 2e12


@dataclass(frozen=True)
class CpuSplit:
    """P worker processes with T threads each; `why`: the reason, when cnnlab chose."""

    workers: int
    threads: int
    why: str = field(default="", compare=False)

    @property
    def cpus(self) -> int:
        return self.workers * self.threads

    def describe(self) -> str:
        """'2 workers x 1 thread each (2 CPUs)', said once at study start."""
        workers = f"{self.workers} worker{'s' if self.workers > 1 else ''}"
        threads = f"{self.threads} thread{'s' if self.threads > 1 else ''}"
        each = " each" if self.workers > 1 else ""
        cpus = f"{self.cpus} CPU{'s' if self.cpus > 1 else ''}"
        why = f": {self.why}" if self.why else ""
        return f"{workers} x {threads}{each} ({cpus}){why}"


@dataclass(frozen=True)
class Packing:
    """Whether the default packs a study's trials one thread per worker, and why."""

    pack: bool = False
    why: str = ""


def default_split(
    cpus: int, trials: int, memory: int | None = None, packing: Packing = Packing()
) -> CpuSplit:
    """The split cnnlab picks for `trials` trials on `cpus` CPUs with `memory`
    bytes free (None: unknown), following the constants above; with
    `packing.pack` (see `packing_for`) one thread per worker. The split carries
    `packing.why` when that rule decided it."""
    cpus, trials = max(1, cpus), max(1, trials)
    workers = min(trials, cpus // (1 if packing.pack else THREADS_PER_WORKER))
    if memory is not None:
        workers = min(workers, memory // WORKER_MEMORY)
    workers = max(1, workers)
    threads = cpus // workers
    decided = (threads == 1) if packing.pack else (threads > 1 and trials > workers)
    return CpuSplit(workers, threads, packing.why if decided else "")


def packing_for(costs: Sequence[tuple[str, float]], cpus: int) -> Packing:
    """Whether `cpus` CPUs run trials of (label, training FLOPs) `costs`, in that
    order, sooner one thread each (`cpus` workers) than THREADS_PER_WORKER each."""
    work = sum(c for _, c in costs)
    if cpus < 2 or len(costs) < 2:
        return Packing()
    if work < PACK_WORK:
        return Packing(
            False,
            "a short study: starting worker processes would cost "
            "more than running trials side by side saves",
        )
    saving = side_by_side_saving([c for _, c in costs], cpus)
    if saving > 0:
        wide = max(1, cpus // THREADS_PER_WORKER)
        at_once = "one" if wide == 1 else str(wide)
        return Packing(
            True,
            "trials side by side, 1 thread each: by their FLOPs "
            f"about {saving:.0%} sooner than {at_once} at a time with "
            f"{cpus // wide} threads",
        )
    label, largest = max(costs, key=lambda c: c[1])
    share = largest / work
    return Packing(
        False,
        f"{shown(label)}'s trial is {share:.0%} of the work: alone "
        "on one thread it would outlast the rest side by side",
    )


def side_by_side_saving(costs: Sequence[float], cpus: int) -> float:
    """The share of the wall time that trials of `costs` (any unit of work, in the
    order they run) save on `cpus` CPUs one thread each, against THREADS_PER_WORKER
    threads each; negative when they would take longer."""
    wide = max(1, cpus // THREADS_PER_WORKER)
    apart = makespan(costs, cpus)
    together = makespan(costs, wide) / THREAD_GAIN ** (THREADS_PER_WORKER - 1)
    return 1 - apart / together if together > 0 else 0.0


def makespan(costs: Sequence[float], workers: int) -> float:
    """When the last of `costs` ends if `workers` take them in order, each the next
    one as it comes free (as the worker pool does)."""
    free = [0.0] * max(1, workers)
    for cost in costs:
        i = free.index(min(free))
        free[i] += cost
    return max(free)


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
    packing: Packing = Packing(),
) -> CpuSplit:
    """The split to use: `workers` and `threads` where given, the default otherwise.

    `threads` is the per-trial thread count the trials ask for (--threads, or the
    study file's `threads`). More workers than trials would sit idle: capped.
    """
    if workers is None and threads is None:
        return default_split(cpus, trials, memory, packing)
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
    cpus = usable_cpus()
    packing = Packing()
    if device == "cpu":
        packing = packing_for(trial_work(study.trials()), cpus)
    return plan_split(cpus, trials, workers, threads, memory, packing)


def trial_work(trials: Sequence[Trial]) -> list[tuple[str, float]]:
    """Each trial's (label, training FLOPs: every epoch, every training image), in
    the given order: what the default packing weighs."""
    per_label: dict[str, float] = {}
    for t in trials:
        if t.label not in per_label:
            train, _, _ = split_sizes(t.config)
            per_label[t.label] = float(
                infer(fitted_arch(t.arch, t.config)).train_flops
                * train
                * t.config.epochs
            )
    return [(t.label, per_label[t.label]) for t in trials]
