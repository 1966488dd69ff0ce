"""Waiting that informs: progress redrawn by time (the first report after the first
step, then about once a second, still without a host sync per step), a study's
time estimate before its first trial, a study ETA weighted by each trial's expected
cost, and a live line per running trial when trials run in worker processes."""

from __future__ import annotations

import io
import json
import os
import pty
import re
import select
import subprocess
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from rich.console import Console

from cnnlab.data.datasets import load_dataset, split_dataset
from cnnlab.nn.model import build_model
from cnnlab.nn.shapes import infer
from cnnlab.nn.spec import parse_architecture
from cnnlab.studies import estimate
from cnnlab.studies.cpus import CpuSplit
from cnnlab.studies.estimate import HOURS, estimate_study
from cnnlab.studies.study import load_study
from cnnlab.training import loop, progress
from cnnlab.training.config import TrainConfig
from cnnlab.training.loop import REPORT_SECONDS, fit
from cnnlab.training.progress import (
    NotebookStudyProgress,
    RichReporter,
    StudyClock,
    StudyProgress,
)
from cnnlab.training.status import Outcome
from cnnlab.util.units import format_duration
from helpers import CLI_ENV, TINY_NET, cli_command

# A net whose CPU step takes a good fraction of a second at batch 128: two 48-filter
# 3x3 convolutions at full resolution (~100 MFLOP per sample to train).
SLOW_NET = {
    "name": "slow",
    "layers": [
        {"Conv2D": {"filters": 48, "kernel_size": 3, "padding": "same"}},
        {"Conv2D": {"filters": 48, "kernel_size": 3, "padding": "same"}},
        "Flatten",
        {"Dense": {"units": 10, "activation": "softmax"}},
    ],
}
ANSI = re.compile(r"\x1b(\[[0-9;?]*[ -/]*[@-~]|\][^\x07]*\x07|[()][0-9A-B]|[=>78])")


class Clock:
    """An injected `time.monotonic`: each reading `tick` seconds after the last, so
    what the loop and the displays decide does not depend on the machine's speed."""

    def __init__(self, tick: float = 0.0) -> None:
        self.tick, self.now, self.last = tick, 0.0, 0.0

    def monotonic(self) -> float:
        self.last = self.now
        self.now += self.tick
        return self.last


def inject(monkeypatch: pytest.MonkeyPatch, module: Any, clock: Clock) -> None:
    """`module` reads `clock` as its time.monotonic (perf_counter stays real)."""
    fake = SimpleNamespace(monotonic=clock.monotonic, perf_counter=time.perf_counter)
    monkeypatch.setattr(module, "time", fake)


class Recorder(RichReporter):
    """The terminal reporter, drawing into a string, with the loop's time (the
    injected clock's) of each report."""

    def __init__(self, clock: Clock) -> None:
        self.stream = io.StringIO()
        console = Console(file=self.stream, force_terminal=True, width=160)
        super().__init__(console)
        self.clock = clock
        self.reports: list[tuple[float, int]] = []  # (the loop's time, step)

    def step(self, step: int, seen: int, loss: float, acc: float) -> None:
        super().step(step, seen, loss, acc)
        self.progress.refresh()  # draw each report now, not at rich's next tick
        self.reports.append((self.clock.last, step))


def train_with(reporter: Recorder, images: int) -> None:
    arch = parse_architecture({"name": "net", **TINY_NET})
    split = split_dataset(load_dataset("mnist"), "none", train_limit=images)
    config = TrainConfig(epochs=1, batch_size=128, validation="none")
    with reporter:
        fit(build_model(arch, 10, seed=0), split, config, reporter=reporter)


def test_a_slow_step_is_reported_when_it_ends_then_about_once_a_second(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(tick=0.375)  # steps of about 0.4 s: 12 of them take ~5 s
    inject(monkeypatch, loop, clock)
    reporter = Recorder(clock)
    train_with(reporter, images=128 * 12)
    times = [t for t, _ in reporter.reports]
    steps = [s for _, s in reporter.reports]
    assert steps[0] == 1  # after the first step, not after ten
    assert steps[-1] == 12 and steps == sorted(steps)
    # Between two reports at least REPORT_SECONDS passed (the last, at the end of
    # the epoch, may come sooner): fewer reports than steps, each one a sync.
    gaps = [b - a for a, b in zip(times, times[1:-1], strict=False)]
    assert gaps and all(gap >= REPORT_SECONDS for gap in gaps), gaps
    assert len(steps) < 12
    drawn = ANSI.sub("", reporter.stream.getvalue())
    assert "Epoch 1/1" in drawn and "1/12" in drawn and "samples/s" in drawn
    assert re.search(r"eta \d+m\d\ds", drawn)  # an ETA from the first step on


def test_fast_steps_are_not_reported_each_nor_every_ten(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock(tick=0.125)  # eight steps a second
    inject(monkeypatch, loop, clock)
    reporter = Recorder(clock)
    train_with(reporter, images=128 * 40)  # 40 steps, 5 s by the clock
    steps = [s for _, s in reporter.reports]
    assert steps[0] == 1 and steps[-1] == 40
    # The first, one a second, the last: never one per step, nor one per ten.
    elapsed = reporter.reports[-1][0] - reporter.reports[0][0]
    assert 3 <= len(steps) <= 2 + elapsed / REPORT_SECONDS, (steps, elapsed)
    assert steps != [1, 10, 20, 30, 40]


def test_the_study_eta_weighs_trials_by_their_expected_cost(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    clock = Clock()  # stands still until moved
    inject(monkeypatch, progress, clock)
    costs = [0.5, 0.05, 0.05]  # seconds: one expensive trial, two cheap ones
    by_cost, by_count = StudyClock(3, costs), StudyClock(3, None)
    assert by_cost.left() == pytest.approx(0.6)  # before the first trial starts
    for study in (by_cost, by_count):
        study.begin()
    assert by_cost.left() == pytest.approx(0.6)  # the estimate at first
    assert by_count.left() is None  # nothing measured, nothing estimated
    clock.now = 0.5
    for study in (by_cost, by_count):
        study.finish(1)  # the expensive one took as long as estimated
    # By count, two trials of the three are left: twice what one took (1 s). By
    # cost, a sixth of the work is left: a tenth of a second.
    assert by_count.left() == pytest.approx(1.0)
    assert by_cost.left() == pytest.approx(0.1)
    clock.now = 0.7
    by_cost.update(2, 0.5)  # half of a cheap trial done meanwhile
    assert by_count.left() == pytest.approx(1.4)
    assert by_cost.left() < 0.1  # the work left shrank more than the speed
    assert by_cost.text() == "eta ~0m00s"


def test_skipped_trials_weigh_nothing_in_the_study_eta() -> None:
    clock = StudyClock(2, None)
    clock.begin()
    clock.finish(1, skipped=True)  # no work done, none measured
    assert clock.left() is None


def probed_at(speed: float) -> Any:
    """A stand-in for the probe's timing of a net: its training FLOPs per sample
    at `speed` FLOP/s, whatever the machine's load."""

    def seconds_per_sample(trial: Any, threads: int) -> float:
        return infer(trial.arch).train_flops / speed

    return seconds_per_sample


def test_the_seed_study_estimate_names_what_dominates_and_what_helps(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 100 GFLOP/s: within what the built-in nets train at on one 2-core CPU (53 to
    # 219 GFLOP/s, docs/benchmarks.md).
    monkeypatch.setattr(estimate, "_time_net", probed_at(100e9))
    study = load_study("seed")
    found = estimate_study(study.trials(), tmp_path / "seed", CpuSplit(1, 2))
    assert found is not None and all(net.timed for net in found.nets)
    assert found.wall >= HOURS  # preset 1 alone trains for hours on a CPU
    head, per, advice = found.lines()
    assert head.startswith("Estimate: 9 trials to train, ~") and "h" in head
    assert "timed here" in head
    assert per.startswith("  per trial: conv3-512 ~") and "conv5-tiny ~" in per
    assert re.match(r"  conv3-512 is \d+% of it", advice), advice
    share = int(re.match(r"  conv3-512 is (\d+)%", advice).group(1))
    assert share >= 50
    assert "to shorten it: a GPU" in advice
    assert (
        "--workers" not in advice
    )  # conv3-512 alone on one thread: longer, not shorter
    assert "fewer --epochs (each epoch ~" in advice


def test_a_complete_study_is_not_probed(tmp_path: Path, cli: Any) -> None:
    study = tiny_study("s", seeds=[0])
    study["architectures"] = study["architectures"][:1]  # the tiny net only
    (tmp_path / "s.yaml").write_text(json.dumps(study))
    first = cli("study", "s.yaml", "--out", "ST")
    assert first.code == 0 and "Estimate: 1 trial to train, ~" in first.err
    lines = first.err.splitlines()  # said before the first trial starts
    estimated = next(i for i, x in enumerate(lines) if x.startswith("Estimate: "))
    assert estimated < lines.index("Trial 1/1: tiny, seed 0")
    again = cli("study", "s.yaml", "--out", "ST")
    assert again.code == 0 and "already complete: skipped" in again.err
    assert "Estimate" not in again.err


def tiny_study(name: str, seeds: list[int], **train: Any) -> dict[str, Any]:
    """A study of the tiny net and the slow net on a few MNIST images."""
    settings = {"epochs": 1, "train_limit": 1000, "val_size": 200, "test_limit": 200}
    return {
        "name": name,
        "seeds": seeds,
        "train": settings | train,
        "architectures": [
            {"label": "tiny", "spec": TINY_NET},
            {"label": "slow", "spec": {"layers": SLOW_NET["layers"]}},
        ],
    }


def test_a_trial_is_estimated_as_its_samples_at_the_probed_speed(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    speed = {"tiny": 2e-5, "slow": 0.06}  # seconds per training sample, as probed
    monkeypatch.setattr(estimate, "_time_net", lambda t, _: speed[t.label])
    (tmp_path / "s.yaml").write_text(json.dumps(tiny_study("s", seeds=[0, 1])))
    study = load_study(tmp_path / "s.yaml")
    found = estimate_study(study.trials(), tmp_path / "s", CpuSplit(1, 2))
    assert found is not None
    train, val, test = 1000, 200, 200  # train_limit; val_size held out beside it
    for trial, cost in zip(found.trials, found.costs, strict=True):
        # one epoch of training and validation, then train and test scored; a
        # forward pass costs a third of a training step
        samples = train + (val + train + test) / 3
        expected = samples * speed[trial.label] + estimate.TRIAL_OVERHEAD_S
        assert cost == pytest.approx(expected)
    head, per = found.lines()
    assert head == (
        f"Estimate: 4 trials to train, ~{format_duration(found.wall)} "
        "(2 nets timed here in " + f"{found.probe_seconds:.1f}s)"
    )
    assert per == "  per trial: tiny ~0m00s, slow ~1m28s"
    assert found.wall == pytest.approx(sum(found.costs))  # one worker: in a row


def run_in_terminal(args: list[str], cwd: Path, timeout: float = 120) -> str:
    """`cnnlab ARGS` in a pseudo-terminal, as a user sees it: everything it wrote,
    terminal control sequences removed."""
    parent, child = pty.openpty()
    env = os.environ | CLI_ENV | {"TERM": "xterm-256color"}
    proc = subprocess.Popen(cli_command(*args), cwd=cwd, env=env, stdin=child,
                            stdout=child, stderr=child, close_fds=True)  # fmt: skip
    os.close(child)
    chunks, deadline = [], time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            ready, _, _ = select.select([parent], [], [], 0.5)
            if not ready:
                if proc.poll() is not None:
                    break
                continue
            try:
                data = os.read(parent, 65536)
            except OSError:  # the child closed the terminal
                break
            if not data:
                break
            chunks.append(data)
        assert proc.wait(timeout=30) == 0, b"".join(chunks).decode(errors="replace")
    finally:
        if proc.poll() is None:
            proc.kill()
        os.close(parent)
    return ANSI.sub("", b"".join(chunks).decode(errors="replace")).replace("\r", "\n")


def test_parallel_workers_show_a_live_line_per_running_trial(tmp_path: Path) -> None:
    study = tiny_study("w", seeds=[0, 1], epochs=2)
    study["architectures"] = study["architectures"][1:]  # the slow net: lines last
    (tmp_path / "w.yaml").write_text(json.dumps(study))
    args = ["study", "w.yaml", "--out", "ST", "--workers", "2", "--threads", "1"]
    shown = run_in_terminal(args, tmp_path)
    assert "2 workers x 1 thread each" in shown
    assert "Estimate: 2 trials to train, ~" in shown
    for seed in (0, 1):  # both trials drawn live, each on its own line
        line = rf"slow seed {seed} epoch [12]/2 .* \d+/\d+ .*eta "
        assert re.search(line, shown), shown
    assert re.search(r"Study w .* 0/2 .*eta ~\d+m\d\ds", shown)  # the cost ETA
    assert "Trial 1/2: slow, seed 0 - trained in" in shown


def test_every_display_says_a_trial_the_same_way(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    console = Console(file=stream, width=200)
    terminal, notebook = StudyProgress(console), NotebookStudyProgress()
    pool = terminal.for_workers(2)
    for display in (terminal, notebook, pool):
        with display:
            display.study_start("s", 2)
            display.trial_start(1, 2, "conv5-tiny", 0)
            display.trial_end(1, Outcome.TRAINED, 1.25, 0.5)
            display.trial_start(2, 2, "conv5-tiny", 1)
            display.trial_end(2, Outcome.SKIPPED)
    lines = [x for x in stream.getvalue().splitlines() if x]  # bars start, stop
    first, second = "Trial 1/2: conv5-tiny, seed 0", "Trial 2/2: conv5-tiny, seed 1"
    serial = [first, second, "  already complete: skipped"]
    assert lines[:3] == serial  # the terminal's
    assert capsys.readouterr().out.splitlines() == ["Study s: 2 trials", *serial]
    assert lines[3:] == [  # the pool's: a line per trial once it is finished
        "Trial 1/2: conv5-tiny, seed 0 - trained in 1.2s - test acc 0.5000",
        "Trial 2/2: conv5-tiny, seed 1 - already complete: skipped",
    ]


def test_a_quiet_display_says_no_trial_lines(
    capsys: pytest.CaptureFixture[str],
) -> None:
    stream = io.StringIO()
    terminal = StudyProgress(Console(file=stream, width=200))
    notebook = NotebookStudyProgress()
    for display in (terminal, notebook, terminal.for_workers(2)):
        display.quiet = True
        with display:
            display.study_start("s", 1)
            display.trial_start(1, 1, "net", 0)
            display.trial_end(1, Outcome.SKIPPED)
            display.message("Candidate 1/1 ...")  # what the search says
    lines = [x for x in stream.getvalue().splitlines() if x]  # bars start, stop
    assert lines == ["Candidate 1/1 ..."] * 2
    assert capsys.readouterr().out.splitlines() == ["Candidate 1/1 ..."]
