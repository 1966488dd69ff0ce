"""Where a net's training step goes, by kind of work: convolutions (forward and
backward, per input shape), dense layers, pooling, activations, dropout, the loss
and Adam's update.

    python3 benchmarks/layer_profile.py --presets 5,6,7,8,9 --steps 12

For each preset it trains, exactly as `cnnlab train` does (its model, conv path,
fused Adam, batch 128, channels_last input), a few warm-up steps and then --steps
steps under torch.profiler, and prints each kind's self CPU milliseconds per step and
share of the step, then the heaviest operators with their input shapes. The
profiler's own overhead inflates the per-step total a little; the step time measured
without it is printed beside it.
"""

from __future__ import annotations

import argparse
import sys
import time
from collections import defaultdict
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parent))

from machine import machine_lines  # noqa: E402

BATCH = 128
WARMUP = 3
# Operator name fragment -> kind of work (first match wins; the rest is "other").
KINDS = (
    ("convolution_backward", "conv backward"),
    ("nnpack", "conv forward"),
    ("mkldnn_convolution", "conv forward"),
    ("convolution", "conv forward"),
    ("addmm", "dense forward"),
    ("aten::mm", "dense backward"),
    ("max_pool2d_with_indices_backward", "pool backward"),
    ("max_pool2d", "pool forward"),
    ("threshold_backward", "activation backward"),
    ("relu", "activation forward"),
    ("fused_adam", "adam update"),
    ("rand", "dropout masks"),
    ("uniform_", "dropout masks"),
    ("aten::mul", "dropout (mask multiply)"),
    ("log_softmax", "loss"),
    ("nll_loss", "loss"),
    ("native_batch_norm", "batch norm"),
)


def kind_of(name: str) -> str:
    for fragment, kind in KINDS:
        if fragment in name:
            return kind
    return "other"


def profile_preset(preset: str, steps: int) -> None:
    import cnnlab
    from cnnlab.data.datasets import load_dataset
    from cnnlab.nn.model import build_model
    from cnnlab.training.config import TrainConfig
    from cnnlab.training.loop import as_input, make_optimizer
    from cnnlab.training.session import use_conv_path

    ds = load_dataset("mnist")
    model = build_model(cnnlab.load(preset), 10, seed=0)
    use_conv_path(model, torch.device("cpu"), BATCH)
    optimizer = make_optimizer(TrainConfig(), model.parameters())
    total = WARMUP + 2 * steps
    x, y = ds.x_train[: BATCH * total], ds.y_train[: BATCH * total]
    model.train()

    def step(i: int) -> None:
        xb = as_input(x[i * BATCH : (i + 1) * BATCH])
        loss = F.cross_entropy(model(xb), y[i * BATCH : (i + 1) * BATCH])
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for i in range(WARMUP):
        step(i)
    started = time.perf_counter()
    for i in range(WARMUP, WARMUP + steps):
        step(i)
    plain = (time.perf_counter() - started) / steps
    with profile(activities=[ProfilerActivity.CPU], record_shapes=True) as prof:
        for i in range(WARMUP + steps, total):
            step(i)
    by_kind: dict[str, float] = defaultdict(float)
    by_op = []
    for event in prof.key_averages(group_by_input_shape=True):
        ms = event.self_cpu_time_total / 1000 / steps
        if ms <= 0:
            continue
        by_kind[kind_of(event.key)] += ms
        by_op.append((ms, event.key, str(event.input_shapes)[:90]))
    profiled = sum(by_kind.values())
    params = sum(p.numel() for p in model.parameters())
    print(f"\n### preset {preset} ({model.arch.name}, {params:,} weights)\n")
    print(f"step without the profiler: {1000 * plain:.1f} ms; "
          f"self CPU time under it: {profiled:.1f} ms/step\n")  # fmt: skip
    print("| kind of work | ms/step | share |\n|---|---:|---:|")
    for kind, ms in sorted(by_kind.items(), key=lambda kv: -kv[1]):
        print(f"| {kind} | {ms:.1f} | {100 * ms / profiled:.1f}% |")
    print("\nheaviest operators (self CPU ms/step, input shapes):")
    for ms, name, shapes in sorted(by_op, reverse=True)[:8]:
        print(f"  {ms:7.1f}  {name}  {shapes}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default="5,6,7,8,9", help="comma-separated")
    parser.add_argument("--steps", type=int, default=12, help="profiled steps")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads")
    args = parser.parse_args()
    from cnnlab.util.machine import set_threads

    set_threads(args.threads)
    for line in machine_lines():
        print(line)
    print(f"threads: {args.threads}, batch {BATCH}, {args.steps} steps profiled")
    for preset in args.presets.split(","):
        profile_preset(preset.strip(), args.steps)


if __name__ == "__main__":
    main()
