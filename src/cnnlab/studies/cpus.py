"""How a study uses the CPUs: P trials at once (worker processes), T threads each.

The split (P x T <= usable CPUs) comes from `plan_split`: the user's --workers /
--threads where given, else `default_split`. Every executor on this machine asks here.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import torch

from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import infer, training_flops
from cnnlab.studies.study import Study
from cnnlab.training.session import load_split
from cnnlab.util.machine import available_memory, usable_cpus
from cnnlab.util.units import format_flops

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
# Packing. Small nets train more samples/s as 1-thread processes side by side than
# as one process with every thread (benchmarks/parallel.py; figures and machine in
# docs/benchmarks.md), so the default gives each worker one thread when every net
# of the study costs at most PACK_FLOPS training FLOPs per sample (3 forward passes'
# worth) and its training adds up to at least PACK_WORK FLOPs: below that, a
# worker's start (seconds) costs more than packing saves.
PACK_FLOPS = 200e6
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
    `packing.pack` (small nets, see `packing_for`) one thread per worker. The
    split carries `packing.why` when that rule decided it."""
    cpus, trials = max(1, cpus), max(1, trials)
    workers = min(trials, cpus // (1 if packing.pack else THREADS_PER_WORKER))
    if memory is not None:
        workers = min(workers, memory // WORKER_MEMORY)
    workers = max(1, workers)
    threads = cpus // workers
    decided = (threads == 1) if packing.pack else (workers == 1 and trials > 1)
    return CpuSplit(workers, threads, packing.why if decided and cpus > 1 else "")


def packing_for(flops: Sequence[int], work: float) -> Packing:
    """The packing rule for trials of nets of `flops` forward FLOPs per sample and
    `work` training FLOPs in all."""
    largest = training_flops(max(flops, default=0))
    if largest > PACK_FLOPS:
        flops_text = format_flops(largest)
        return Packing(False, f"nets of up to {flops_text} training FLOPs per "
                       "sample use one trial's threads well")  # fmt: skip
    if work < PACK_WORK:
        return Packing(False, "a short study: starting worker processes would cost "
                       "more than running trials side by side saves")  # fmt: skip
    return Packing(True, "small nets train faster as 1-thread trials side by side")


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
    packing = packing_for(*_training_work(study)) if device == "cpu" else Packing()
    return plan_split(usable_cpus(), trials, workers, threads, memory, packing)


def _training_work(study: Study) -> tuple[list[int], float]:
    """The study's nets' forward FLOPs per sample, and its training FLOPs in all
    (every seed, every epoch, every training image)."""
    flops = [infer(a.arch).flops for a in study.archs]
    work = 0.0
    for a, net in zip(study.archs, flops, strict=True):
        _, split = load_split(a.config)
        work += training_flops(net) * len(split.x_train) * a.config.epochs
    return flops, work * len(study.seeds)
