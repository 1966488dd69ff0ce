"""Training-step time with glibc's default malloc and with `keep_large_blocks`.

    python3 benchmarks/allocator.py                          # conv3-512 and conv3-small
    python3 benchmarks/allocator.py --presets conv3-512 --steps 3 --repeats 3

cnnlab.training.allocator turns off malloc's mmap of large blocks at the start of
training, so a wide net's activations reuse the same pages every step instead of
being mapped and page-faulted afresh. mallopt settings hold for a whole process, so
each measurement is a fresh process (this script with --one); the two settings
alternate within every repeat so drifting load hits both alike. Each process trains
--steps steps of batch --batch on MNIST images after one warm-up step, and reports
its median step; the table gives the min and median of those over --repeats, the
minor page faults per step, and the machine (lscpu model and flags).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
SETTINGS = ("default", "kept")


def one(preset: str, setting: str, steps: int, batch: int) -> dict:
    import torch
    import torch.nn.functional as F

    import cnnlab
    from cnnlab.data.datasets import load_dataset
    from cnnlab.nn.model import build_model
    from cnnlab.training.allocator import keep_large_blocks
    from cnnlab.training.config import TrainConfig
    from cnnlab.training.loop import as_input, make_optimizer
    from cnnlab.training.session import use_conv_path

    kept = keep_large_blocks() if setting == "kept" else False
    ds = load_dataset("mnist")
    model = build_model(cnnlab.load(preset), 10, seed=0)
    use_conv_path(model, torch.device("cpu"), batch)  # as `cnnlab train` would
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    times, faults = [], []
    for i in range(steps + 1):
        xb = as_input(ds.x_train[i * batch : (i + 1) * batch])
        yb = ds.y_train[i * batch : (i + 1) * batch]
        before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
        started = time.perf_counter()
        loss = F.cross_entropy(model(xb), yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        loss.item()
        if i:  # the first step is the warm-up
            times.append(time.perf_counter() - started)
            faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
    return {
        "seconds": statistics.median(times),
        "faults": statistics.median(faults),
        "kept": kept,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="conv3-512,conv3-small")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--one", nargs=2, metavar=("PRESET", "SETTING"))
    args = parser.parse_args()
    if args.one:
        print(json.dumps(one(*args.one, args.steps, args.batch)))
        return 0
    sys.path.insert(0, str(HERE))
    from machine import machine_lines

    for line in machine_lines():
        print(line)
    print(
        f"batch {args.batch}, {args.steps} steps after 1 warm-up, "
        f"{args.repeats} processes per setting"
    )
    print("| preset | malloc | s/step min | s/step median | page faults/step |")
    print("|---|---|---|---|---|")
    env = os.environ | {"CNNLAB_MALLOC": ""}
    for preset in args.presets.split(","):
        found: dict[str, list[dict]] = {s: [] for s in SETTINGS}
        for _ in range(args.repeats):
            for setting in SETTINGS:
                cmd = [sys.executable, __file__, "--one", preset, setting]
                cmd += ["--steps", str(args.steps), "--batch", str(args.batch)]
                out = subprocess.run(
                    cmd, capture_output=True, text=True, check=True, env=env
                )
                found[setting].append(json.loads(out.stdout.splitlines()[-1]))
        for setting, rows in found.items():
            secs = [r["seconds"] for r in rows]
            faults = statistics.median(r["faults"] for r in rows)
            name = "mmap off (keep_large_blocks)" if setting == "kept" else "default"
            median = statistics.median(secs)
            print(
                f"| {preset} | {name} | {min(secs):.3f} | {median:.3f} | "
                f"{faults:,.0f} |",
                flush=True,
            )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
