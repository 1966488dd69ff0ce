"""How to split CPU cores between a study's trials: measure, then set the policy.

    python3 benchmarks/parallel.py                  # both parts below
    python3 benchmarks/parallel.py --part threads   # per-process throughput only
    python3 benchmarks/parallel.py --part study     # the tiny study, 1x2 vs 2x1

Part `threads`: training samples/s of presets 2 and 4 (steady-state Adam steps on
MNIST, batch 128), each measurement in a fresh process: one process with 1 thread,
one with every CPU, and as many 1-thread processes as CPUs at once (their summed
samples/s). The ratios printed are what `cnnlab.studies.cpus`' constants rest on:
the speed-up from the 2nd thread of one process, and how much more the same cores do
as independent 1-thread processes.

Part `study`: wall time of a small study (2 nets x 2 seeds x 1 epoch on an MNIST
subset) through the CLI, `--workers 1 --threads CPUS` vs `--workers CPUS --threads 1`,
process start-up included. Figures on a shared machine are noisy: run it on a quiet
one, and look at the spread over --repeats.
"""

from __future__ import annotations

import argparse
import json
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

BATCH = 128  # the notebook's batch size
WARMUP_STEPS = 5  # allocator and oneDNN kernel selection settle in these


def _worker(preset: str, threads: int, steps: int) -> None:
    """Train `steps` steps of `preset` after a warm-up; print samples/s as JSON."""
    import torch

    torch.set_num_threads(threads)
    from cnnlab import load
    from cnnlab.data.datasets import load_dataset
    from cnnlab.nn.model import build_model
    from cnnlab.training.config import TrainConfig
    from cnnlab.training.loop import make_optimizer, train_epoch

    data = load_dataset("mnist")
    model = build_model(load(preset), data.num_classes, seed=0)
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    shuffle = torch.Generator().manual_seed(0)
    x, y = data.x_train, data.y_train
    warm = WARMUP_STEPS * BATCH
    train_epoch(model, optimizer, x[:warm], y[:warm], BATCH, shuffle)
    n = steps * BATCH
    started = time.perf_counter()
    train_epoch(
        model, optimizer, x[warm : warm + n], y[warm : warm + n], BATCH, shuffle
    )
    print(json.dumps({"rate": n / (time.perf_counter() - started)}))


def _spawn(preset: str, threads: int, steps: int) -> subprocess.Popen[str]:
    cmd = [sys.executable, __file__, "--worker", preset, "--threads", str(threads),
           "--steps", str(steps)]  # fmt: skip
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)


def _rates(procs: list[subprocess.Popen[str]]) -> float:
    """Summed samples/s of processes that ran at the same time."""
    total = 0.0
    for proc in procs:
        out, _ = proc.communicate()
        if proc.returncode != 0:
            raise SystemExit(f"a benchmark worker failed (exit {proc.returncode})")
        total += json.loads(out.splitlines()[-1])["rate"]
    return total


def part_threads(presets: list[str], cpus: int, steps: int, repeats: int) -> None:
    print(f"Training samples/s, batch {BATCH}, {steps} steps, {cpus} CPUs "
          f"(median of {repeats}; min-max)")  # fmt: skip
    print(f"{'preset':>8} {'1x1':>16} {f'1x{cpus}':>16} {f'{cpus}x1':>16} "
          f"{'thread gain':>11} {'proc gain':>9}")  # fmt: skip
    for preset in presets:
        runs: dict[str, list[float]] = {"one": [], "threads": [], "procs": []}
        for _ in range(repeats):  # interleaved: drifting load hits all three alike
            runs["one"].append(_rates([_spawn(preset, 1, steps)]))
            runs["threads"].append(_rates([_spawn(preset, cpus, steps)]))
            runs["procs"].append(
                _rates([_spawn(preset, 1, steps) for _ in range(cpus)])
            )
        med = {k: statistics.median(v) for k, v in runs.items()}
        cells = [f"{med[k]:>6,.0f} ({min(v):,.0f}-{max(v):,.0f})"
                 for k, v in runs.items()]  # fmt: skip
        print(f"{preset:>8} {cells[0]:>16} {cells[1]:>16} {cells[2]:>16} "
              f"{med['threads'] / med['one']:>10.2f}x "
              f"{med['procs'] / med['threads']:>8.2f}x")  # fmt: skip
    print(
        "thread gain: 1 process, all CPUs vs 1 thread; proc gain: "
        f"{cpus} 1-thread processes vs 1 process with {cpus} threads"
    )


STUDY = """\
name: parallel-bench
description: 2 small nets x 2 seeds x 1 epoch
seeds: [0, 1]
train: {epochs: 1, train_limit: 6000, val_size: 1000, test_limit: 1000}
architectures: [conv3-small, conv5-medium]
"""


def part_study(cpus: int, repeats: int) -> None:
    splits = [(1, cpus), (cpus, 1)]
    times: dict[tuple[int, int], list[float]] = {s: [] for s in splits}
    with tempfile.TemporaryDirectory() as tmp:
        study = Path(tmp) / "study.yaml"
        study.write_text(STUDY)
        for r in range(repeats):
            for workers, threads in splits:
                out = Path(tmp) / f"out-{workers}x{threads}-{r}"
                cmd = [sys.executable, "-m", "cnnlab", "study", str(study), "--out",
                       str(out), "--workers", str(workers), "--threads",
                       str(threads)]  # fmt: skip
                started = time.perf_counter()
                subprocess.run(cmd, check=True, capture_output=True)
                times[(workers, threads)].append(time.perf_counter() - started)
    print("Study wall time (4 trials, 1 epoch of 5,000 images each, report included)")
    for (workers, threads), values in times.items():
        shown = ", ".join(f"{v:.1f}" for v in values)
        print(f"  {workers} worker(s) x {threads} thread(s): median "
              f"{statistics.median(values):.1f} s ({shown})")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--part", choices=("threads", "study", "all"), default="all")
    parser.add_argument("--presets", default="2,4")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--threads", type=int, default=1, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.threads, args.steps)
        return
    from cnnlab.util.machine import usable_cpus

    cpus = usable_cpus()
    if args.part in ("threads", "all"):
        part_threads(args.presets.split(","), cpus, args.steps, args.repeats)
    if args.part in ("study", "all"):
        part_study(cpus, args.repeats)


if __name__ == "__main__":
    main()
