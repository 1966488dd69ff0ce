"""Training-step time of cnnlab's networks in float32 and under bf16 autocast.

    python3 benchmarks/precision.py                        # conv3-small, conv5-medium
    python3 benchmarks/precision.py --presets conv3-512 --steps 3 --batch 128

Whole training steps (forward, cross-entropy, backward, Adam step) of each preset
on random MNIST-shaped uint8 images, the two precisions interleaved step by step in
one process so drifting load hits both alike, after one warm-up step each. Prints
seconds per step (min and median) and bf16's time as a multiple of float32's, and
the machine (lscpu model and flags). On a CPU without native bf16 instructions
(avx512_bf16 / amx_bf16) autocast bf16 is the slow one: the evidence behind
`--precision bf16` being refused there.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_lines  # noqa: E402

import cnnlab  # noqa: E402
from cnnlab.nn.model import build_model  # noqa: E402
from cnnlab.training.config import TrainConfig  # noqa: E402
from cnnlab.training.loop import as_input, make_optimizer  # noqa: E402


def step_seconds(model, optimizer, x, y, bf16: bool) -> float:
    started = time.perf_counter()
    with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
        logits = model(as_input(x))
    loss = F.cross_entropy(logits.float(), y)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    loss.item()
    return time.perf_counter() - started


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="conv3-small,conv5-medium")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--batch", type=int, default=128)
    args = parser.parse_args()
    for line in machine_lines():
        print(line)
    print(f"threads {torch.get_num_threads()}, batch {args.batch}, {args.steps} steps")
    print(
        "| preset | fp32 s/step min / median | bf16 s/step min / median | bf16/fp32 |"
    )
    print("|---|---|---|---|")
    gen = torch.Generator().manual_seed(0)
    for preset in args.presets.split(","):
        arch = cnnlab.load(preset)
        models = {}
        for bf16 in (False, True):
            model = build_model(arch, 10, seed=0)
            model.set_conv_path("onednn") if model.wide_convs() else None
            models[bf16] = (model, make_optimizer(TrainConfig(), model.parameters()))
        x = torch.randint(
            0, 256, (args.batch, 28, 28), dtype=torch.uint8, generator=gen
        )
        y = torch.randint(0, 10, (args.batch,), generator=gen)
        times: dict[bool, list[float]] = {False: [], True: []}
        for repeat in range(args.steps + 1):
            for bf16, (model, opt) in models.items():
                seconds = step_seconds(model, opt, x, y, bf16)
                if repeat:
                    times[bf16].append(seconds)
        f, b = times[False], times[True]
        ratio = statistics.median(b) / statistics.median(f)
        print(
            f"| {preset} | {min(f):.3f} / {statistics.median(f):.3f} | "
            f"{min(b):.3f} / {statistics.median(b):.3f} | {ratio:.1f}x |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
