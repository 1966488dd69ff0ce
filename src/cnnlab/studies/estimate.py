"""How long a study will take, said before it starts: `estimate_study`.

FLOPs alone cannot say it: on one 2-core CPU the built-in nets train at 53 to 219
GFLOP/s (docs/benchmarks.md), small nets paying per-step costs that big ones do
not. So each distinct net is timed here, for a few real steps of the training loop
(`train_epoch`, the study's images, its batch size, optimizer and threads), and a
trial's seconds are its samples times that net's seconds per sample:

    trial = epochs left x (train + val / 3) + (train + test) / 3   samples, x s/sample
            + TRIAL_OVERHEAD_S

(a forward pass costs a third of a training step: training FLOPs are 3 x forward,
as the benchmarks count them). The probe times the nets in the order of their
share of the study (FLOPs x samples; a net's FLOPs as fitted to its data's image
shape and classes, as it trains), the first always, the others within
PROBE_SECONDS; a net left untimed when it runs out gets the speed per FLOP of the
timed net nearest in FLOPs, and the estimate says how many nets were timed.
Trials already complete cost nothing, and a study with nothing left to train is not
probed at all.

A tiny study gets its estimate too: past the process's one-time setup (which its
first trial would pay anyway), the probe costs what the nets' steps cost (a small
net's few steps take milliseconds), and the same lines every time are what make
them easy to read and to trust.
"""

from __future__ import annotations

import heapq
import json
import math
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.nn.adapt import adapt_to_data
from cnnlab.nn.model import Network, build_model
from cnnlab.nn.shapes import TRAINING_FACTOR, infer
from cnnlab.studies.cpus import CpuSplit, packing_for, side_by_side_saving, trial_work
from cnnlab.studies.study import Trial
from cnnlab.training.config import TrainConfig
from cnnlab.training.loop import epoch_plan, make_optimizer, train_epoch
from cnnlab.training.precision import FP32, make_scaler, native_bf16
from cnnlab.training.runs import RUN_FILE, open_run
from cnnlab.training.session import (
    batch_of,
    check_fits,
    fitted_arch,
    load_split,
    split_sizes,
    use_conv_path,
)
from cnnlab.util.machine import pick_device, usable_cpus
from cnnlab.util.terminal import shown
from cnnlab.util.units import format_duration

PROBE_SECONDS = 2.0  # the probe's budget after its first net, which is always timed
NET_SECONDS = 0.3  # timed steps per net: until this much time, or PROBE_STEPS
PROBE_STEPS = 5
# A net is first stepped on SMALL_BATCH images. When that step says a full batch
# would take over FULL_STEP_SECONDS (preset 1 takes 3.7 s at 128 on 2 cores), the
# net is timed on SMALL_BATCH and scaled per sample, which over-estimates nets whose
# cost is per step (large dense layers' optimizer updates): the safer error.
SMALL_BATCH = 16
FULL_STEP_SECONDS = 0.5
# What a trial costs beyond its epochs and scores: data split, model, run folder,
# curves PNG, predictions and store writes (0.4-0.7 s measured on this 2-core
# machine, for trials of a 7,850- and a 400,000-weight net).
TRIAL_OVERHEAD_S = 0.6
# A worker process's start and its first trial's one-time costs, measured here:
# spawn and import torch 1.7 s, decode MNIST 0.5 s, the first fused Adam 1.4 s,
# the first curves PNG (matplotlib) about 0.5 s. The parent process pays the same
# once too, mostly in this module's first probe step.
WORKER_START_S = 4.0
HOURS = 3600.0  # from this total on, the estimate says what dominates and what helps
# How much sooner a float32 study ends in bf16 on a CPU with native bf16, for the
# advice: the smaller of two whole-run gains measured on a 2-vCPU AMD EPYC with
# avx512_bf16 (conv5-medium 1.25x, conv3-small 1.35x; per step net 1 gained 1.7x),
# so a study led by net 1 should end sooner than it says (docs/benchmarks.md).
BF16_SPEEDUP = 1.25


@dataclass(frozen=True)
class NetTiming:
    """One distinct net's speed on this machine."""

    label: str
    flops: float  # training FLOPs per sample
    sample_seconds: float  # seconds per training sample
    timed: bool  # False: from its FLOPs, at a timed net's speed per FLOP


@dataclass(frozen=True)
class StudyEstimate:
    """Each trial's expected seconds (0: already complete), and how they run."""

    trials: list[Trial]
    costs: list[float]  # per trial, in order
    epochs_left: list[int]
    nets: list[NetTiming]
    split: CpuSplit
    device: str
    probe_seconds: float
    pool: bool  # trials in worker processes (each pays WORKER_START_S)

    @property
    def total(self) -> float:
        """Seconds of training, one trial after another."""
        return sum(self.costs)

    @property
    def wall(self) -> float:
        """Seconds until the last trial ends, with the split's workers taking the
        trials in order, each as soon as one is free (as the pool hands them out)."""
        start = WORKER_START_S if self.pool else 0.0
        free = [start] * self.split.workers
        for cost in self.costs:
            if cost > 0:
                heapq.heappush(free, heapq.heappop(free) + cost)
        return max(free) if any(self.costs) else 0.0

    def lines(self) -> list[str]:
        """What the study prints before its first trial (a few lines)."""
        left = [c for c in self.costs if c > 0]
        timed, nets = sum(n.timed for n in self.nets), len(self.nets)
        probe = f"timed here in {self.probe_seconds:.1f}s"
        how = f"{nets} net{'s' if nets > 1 else ''} {probe}"
        if timed < nets:
            how = f"{timed} of {nets} nets {probe}, the rest from their FLOPs"
        head = f"Estimate: {len(left)} trial{'s' if len(left) > 1 else ''} to train"
        lines = [f"{head}, ~{format_duration(self.wall)} ({how})"]
        per: dict[str, float] = {}  # a net's seeds cost the same, unless resumed
        for trial, cost in zip(self.trials, self.costs, strict=True):
            per[trial.label] = max(cost, per.get(trial.label, 0.0))
        lines.append(
            "  per trial: "
            + ", ".join(f"{shown(k)} ~{format_duration(c)}" for k, c in per.items())
        )
        if self.wall >= HOURS:
            lines.append(f"  {self._dominant()}; to shorten it: {self._helps()}")
        return lines

    def _dominant(self) -> str:
        """'conv3-512 is 83% of it, conv7-deep-dense 6%': the nets that matter."""
        share: dict[str, float] = {}
        for trial, cost in zip(self.trials, self.costs, strict=True):
            share[trial.label] = share.get(trial.label, 0.0) + cost / self.total
        ranked = sorted(share.items(), key=lambda kv: -kv[1])
        named, covered = [], 0.0
        for label, part in ranked[:3]:
            if named and (part < 0.1 or covered >= 0.8):
                break
            named.append((label, part))
            covered += part
        first, *rest = named
        text = f"{shown(first[0])} is {first[1]:.0%} of it"
        return ", ".join([text, *(f"{shown(k)} {p:.0%}" for k, p in rest)])

    def _helps(self) -> str:
        """What would shorten the study, of what this run does not already use."""
        helps = []
        if self.device == "cpu":
            helps.append("a GPU (used when PyTorch sees one)")
            fp32 = any(t.config.precision == FP32 for t in self.trials)
            if fp32 and native_bf16():  # never advised where bf16 would be slower
                bf16 = format_duration(self.wall / BF16_SPEEDUP)
                helps.append(f"--precision bf16 (this CPU has native bf16: ~{bf16})")
        cpus = usable_cpus()
        # The default split's rule (by training FLOPs), so the advice never
        # contradicts the study's first line; the saving shown is by the probe.
        packs = packing_for(trial_work(self.trials), cpus).pack
        saving = side_by_side_saving(self.costs, cpus)
        if self.split.threads > 1 and packs and saving > 0:
            helps.append(f"--workers {cpus} --threads 1 (trials side by side, "
                         f"~{saving:.0%} sooner)")  # fmt: skip
        epochs = max(self.epochs_left)
        if epochs > 1:
            epoch = format_duration(self.total / epochs / self.split.workers)
            helps.append(f"fewer --epochs (each epoch ~{epoch})")
        return ", ".join(helps) or "fewer or smaller nets"


def estimate_study(
    trials: Sequence[Trial], study_dir: Path, split: CpuSplit, pool: bool = False
) -> StudyEstimate | None:
    """Each trial's expected wall time on this machine, from FLOPs and a probe of
    real training steps (at most about PROBE_SECONDS); None when every trial is
    already complete (no probe then) or no net could be timed. `pool`: the trials
    run in worker processes."""
    trials = list(trials)
    epochs_left = [_epochs_left(t, t.run_dir(study_dir)) for t in trials]
    todo = [(t, e) for t, e in zip(trials, epochs_left, strict=True) if e is not None]
    if not todo:
        return None
    groups: dict[str, list[tuple[Trial, int]]] = {}
    for trial, epochs in todo:
        groups.setdefault(_speed_key(trial), []).append((trial, epochs))
    started = time.perf_counter()
    timings = _time_nets(groups, split.threads)
    probe = time.perf_counter() - started
    if not any(n.timed for n in timings.values()):
        return None  # no net would step here: nothing honest to say
    costs = [
        0.0 if e is None else _trial_seconds(t, e, timings[_speed_key(t)])
        for t, e in zip(trials, epochs_left, strict=True)
    ]
    device = pick_device(trials[0].config.device).type
    return StudyEstimate(
        trials,
        costs,
        [e or 0 for e in epochs_left],
        list(timings.values()),
        split,
        device,
        probe,
        pool,
    )


def _epochs_left(trial: Trial, run_dir: Path) -> int | None:
    """Epochs still to train (0: only the scoring), None: the trial is complete."""
    if not (run_dir / RUN_FILE).is_file():
        return trial.config.epochs
    try:
        record = open_run(run_dir)
    except Exception:  # a broken folder: the trial itself will say what is wrong
        return trial.config.epochs
    if record.is_complete(trial.config.epochs):  # as run_trial decides to skip
        return None
    if trial.config.changed_from(record.meta.get("config") or {}):
        return trial.config.epochs  # it will be refused; count it as a fresh one
    done = record.meta.get("epochs_done") or 0
    return max(0, trial.config.epochs - done)


def _speed_key(trial: Trial) -> str:
    """What a trial's speed depends on (not its seed, nor its learning rate)."""
    c = trial.config
    parts: dict[str, Any] = {"arch": trial.arch.to_dict(), "batch": c.batch_size}
    parts |= {"opt": c.optimizer, "aug": c.augment, "data": c.data}
    parts |= {"threads": c.threads, "device": c.device, "precision": c.precision}
    return json.dumps(parts, sort_keys=True, default=str)


def _trial_seconds(trial: Trial, epochs: int, net: NetTiming) -> float:
    train, val, test = split_sizes(trial.config)
    scored = train + (test if trial.score_test else 0)  # after the last epoch
    forward = (epochs * val + scored) / TRAINING_FACTOR
    return (epochs * train + forward) * net.sample_seconds + TRIAL_OVERHEAD_S


def _time_nets(
    groups: dict[str, list[tuple[Trial, int]]], threads: int
) -> dict[str, NetTiming]:
    """Time the nets that weigh most first, until PROBE_SECONDS are spent."""
    flops = {}
    for key, members in groups.items():
        trial = members[0][0]
        flops[key] = float(infer(fitted_arch(trial.arch, trial.config)).train_flops)
    weight = {k: flops[k] * sum(max(e, 1) for _, e in m) for k, m in groups.items()}
    timed: dict[str, float] = {}
    started = None  # the budget counts from the first net's end: that one also
    # pays the process's one-time setup (the first fused Adam: 1.4 s here), which
    # the first trial would pay otherwise
    for key in sorted(groups, key=lambda k: -weight[k]):
        if started is not None and time.perf_counter() - started > PROBE_SECONDS:
            break
        trial = groups[key][0][0]
        try:
            timed[key] = _time_net(trial, trial.config.threads or threads)
        except Exception:  # cannot step (diverged at once, out of memory): the
            continue  # trial will say why; its estimate comes from its FLOPs
        finally:
            started = time.perf_counter() if started is None else started
    result = {}
    for key, members in groups.items():
        label = members[0][0].label
        if key in timed:
            result[key] = NetTiming(label, flops[key], timed[key], True)
            continue
        near = min(timed, key=lambda k: _distance(flops[k], flops[key]), default=None)
        per_flop = 1e-10 if near is None else timed[near] / max(flops[near], 1.0)
        result[key] = NetTiming(label, flops[key], per_flop * flops[key], False)
    return result


def _distance(a: float, b: float) -> float:
    """How far apart two FLOP counts are, as a ratio."""
    return abs(math.log((a + 1) / (b + 1)))


def _time_net(trial: Trial, threads: int) -> float:
    """Seconds per training sample of the trial's net: a few real steps of the
    loop, after a warm-up step (its one-time setup is not timed)."""
    config = trial.config
    device = pick_device(config.device)
    dataset, split = load_split(config)
    # A net the trial would refuse (too big for memory, wrong input) is refused
    # here too, with an error, before its weights could exhaust the memory.
    arch = adapt_to_data(trial.arch, dataset.image_shape, dataset.num_classes)
    check_fits(arch, dataset, split, config, device)
    before = torch.get_num_threads()
    forked = [torch.cuda.current_device()] if device.type == "cuda" else []
    with torch.random.fork_rng(devices=forked):  # the trials' dropout is untouched
        torch.set_num_threads(threads)
        try:
            model = build_model(arch, dataset.num_classes, seed=0).to(device)
            batch = batch_of(config, split)
            # the path the trial will take
            use_conv_path(model, device, batch, precision=config.precision)
            optimizer = make_optimizer(config, model.parameters())
            x, y = split.x_train[:batch].to(device), split.y_train[:batch].to(device)
            small = min(batch, SMALL_BATCH)
            step = _stepper(model, optimizer, x, y, config)
            if step(small) * batch / small > FULL_STEP_SECONDS:
                batch = small  # too slow for a full batch: time the small one
            elif batch != small:
                step(batch)  # the warm-up at the trial's own batch shape
            seconds, steps = 0.0, 0
            while steps < PROBE_STEPS and (steps == 0 or seconds < NET_SECONDS):
                seconds += step(batch)
                steps += 1
        finally:
            torch.set_num_threads(before)
    return seconds / (steps * batch)


def _stepper(
    model: Network,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    config: TrainConfig,
) -> Callable[[int], float]:
    """A function that runs one training step on `n` images and returns its
    seconds: `train_epoch` on exactly one batch (its final read syncs a GPU)."""
    plan = epoch_plan(config, 1, 1)
    shuffle = torch.Generator().manual_seed(0)
    precision = config.precision
    scaler = make_scaler(precision, x.device)

    def step(n: int) -> float:
        started = time.perf_counter()
        xs, ys = x[:n], y[:n]
        train_epoch(model, optimizer, xs, ys, n, shuffle, None, plan, precision, scaler)
        return time.perf_counter() - started

    return step
