"""torch.compile (inductor, CPU) against eager on cnnlab's trainer: is it worth it?

    python3 benchmarks/compile.py                      # presets 2, 4, 9; 3 repeats
    python3 benchmarks/compile.py --presets 2 --steps 100 --repeats 5

Each measurement is a fresh process (no compile cache shared between runs; inductor's
on-disk cache is pointed at a new temporary folder each time): build the preset,
compile it or not, run FIRST_STEPS training steps (the compile happens in the first
one) and time them, then time --steps more steps. Eager and compiled runs are
interleaved within every repeat so drifting load hits both alike. Printed per preset:
the first steps' seconds (compile included), steady samples/s (median, min-max),
and the notebook's 12 epochs of 60,000 images estimated from both (first steps +
the rest at the steady rate), so compile time is counted against the gain.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

BATCH = 128  # the notebook's batch size
FIRST_STEPS = 3
EPOCH_STEPS = -(-60_000 // BATCH)
NOTEBOOK_EPOCHS = 12


def _worker(preset: str, compiled: bool, steps: int, threads: int) -> None:
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
    net = torch.compile(model) if compiled else model
    shuffle = torch.Generator().manual_seed(0)
    x, y = data.x_train, data.y_train
    first = FIRST_STEPS * BATCH
    started = time.perf_counter()
    train_epoch(net, optimizer, x[:first], y[:first], BATCH, shuffle)
    first_s = time.perf_counter() - started
    n = steps * BATCH
    xs, ys = x[first : first + n], y[first : first + n]
    started = time.perf_counter()
    train_epoch(net, optimizer, xs, ys, BATCH, shuffle)
    rate = n / (time.perf_counter() - started)
    print(json.dumps({"first": first_s, "rate": rate}))


def _run(preset: str, compiled: bool, steps: int, threads: int) -> dict:
    with tempfile.TemporaryDirectory() as cache:
        env = os.environ | {"TORCHINDUCTOR_CACHE_DIR": cache}
        cmd = [sys.executable, __file__, "--worker", preset, "--steps", str(steps),
               "--threads", str(threads)]  # fmt: skip
        cmd += ["--compiled"] if compiled else []
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if proc.returncode != 0:
        tail = proc.stderr.strip().splitlines()[-3:]
        raise SystemExit(f"preset {preset} compiled={compiled} failed: {tail}")
    return json.loads(proc.stdout.splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="2,4,9")
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    parser.add_argument("--compiled", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        _worker(args.worker, args.compiled, args.steps, args.threads)
        return
    import torch

    presets = args.presets.split(",")
    runs: dict[tuple[str, bool], list[dict]] = {
        (p, c): [] for p in presets for c in (False, True)
    }
    for _ in range(args.repeats):
        for preset in presets:
            for compiled in (False, True):
                runs[(preset, compiled)].append(
                    _run(preset, compiled, args.steps, args.threads)
                )
    print(f"torch {torch.__version__}, {args.threads} threads, batch {BATCH}, "
          f"{args.steps} steady steps, median of {args.repeats} (min-max)")  # fmt: skip
    print(f"{'preset':>6} {'mode':>8} {'first steps s':>15} {'samples/s':>22} "
          f"{'12 epochs':>10}")  # fmt: skip
    for preset in presets:
        totals = {}
        for compiled in (False, True):
            got = runs[(preset, compiled)]
            first = [g["first"] for g in got]
            rate = [g["rate"] for g in got]
            total = statistics.median(first) + (
                NOTEBOOK_EPOCHS * EPOCH_STEPS - FIRST_STEPS
            ) * BATCH / statistics.median(rate)
            totals[compiled] = total
            mode = "compiled" if compiled else "eager"
            med_first, med_rate = statistics.median(first), statistics.median(rate)
            print(f"{preset:>6} {mode:>8} {med_first:>7.1f} "
                  f"({min(first):.1f}-{max(first):.1f}) "
                  f"{med_rate:>8,.0f} ({min(rate):,.0f}-{max(rate):,.0f})"
                  f" {total:>9,.0f}s")  # fmt: skip
        print(f"{preset:>6} compiled / eager over 12 epochs: "
              f"{totals[True] / totals[False]:.2f}x")  # fmt: skip


if __name__ == "__main__":
    main()
