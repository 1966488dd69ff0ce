"""The notebook's own study (nine nets, 12 epochs, batch 128, Adam, validation on the
10,000 test images each epoch): its wall time in cnnlab and in Keras, side by side.

    python3 -m pip install -e ".[bench]"          # TensorFlow, Keras 3, tf_keras
    python3 benchmarks/seed_study.py --repeats 2 --out seed-study.md
    python3 benchmarks/seed_study.py --precision bf16 --out seed-study-bf16.md

Training the whole study takes hours, so each net's epoch is measured and scaled to
12 epochs. Nets under SMALL training FLOPs per sample train two whole epochs of the
60,000 images with the per-epoch evaluation, and the second is timed as it is
(boundary stalls included). The others time --steps steady-state training steps
after two warm-up steps, and the evaluation of EVAL_IMAGES test images; their epoch
is 469 steps plus 10,000 / EVAL_IMAGES evaluations. Every measurement is a fresh
process (benchmarks/stacks.py), the stacks interleaved per net and repeat. It
prints each net's epoch seconds per stack (median over repeats, min beside it),
cnnlab's time as a fraction of each peer's, and the study's estimated wall time in
each stack.

--precision bf16 runs cnnlab in mixed bf16 (`--precision bf16`: autocast, float32
weights) against Keras 3 + TF twice, in float32 and under its `mixed_bfloat16`
policy, side by side in one run. It pays only on a CPU with native bf16 (lscpu
flag avx512_bf16 or amx_bf16); elsewhere the run says so first, and its figures
show the cost of emulated bf16.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import statistics
import subprocess
import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

from bench import training_flops  # noqa: E402
from machine import machine_lines  # noqa: E402

STACKS = ("cnnlab", "keras3-tf", "tf-keras2")
# --precision bf16: cnnlab in bf16 against Keras 3 in float32 and in mixed_bfloat16
BF16_RUNS = (("cnnlab", "bf16"), ("keras3-tf", "fp32"), ("keras3-tf", "bf16"))
NEEDS = {"keras3-tf": "keras", "tf-keras2": "tf_keras"}
EPOCHS = 12
STEPS_PER_EPOCH = 469  # ceil(60000 / 128)
TEST_IMAGES = 10_000
EVAL_IMAGES = 2_000
SMALL = 50e6  # training FLOPs per sample below which whole epochs are timed


def measure_json(stack: str, preset: str, mode: str, **options: int | str) -> dict:
    """One fresh-process timing by benchmarks/stacks.py; a failure stops the run."""
    cmd = [sys.executable, str(HERE / "stacks.py"), "--stack", stack,
           "--preset", preset, "--mode", mode]  # fmt: skip
    for key, value in options.items():
        cmd += [f"--{key.replace('_', '-')}", str(value)]
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        sys.exit(f"{stack} on {preset} failed:\n{done.stderr.strip()[-2000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def seed_presets() -> list[str]:
    from cnnlab.studies.study import load_study

    return [a.arch.name for a in load_study("seed").archs]


def run_name(stack: str, precision: str) -> str:
    """'cnnlab', 'cnnlab bf16', 'keras3-tf mixed_bfloat16': a table column's name."""
    if precision == "fp32":
        return stack
    return f"{stack} {'bf16' if stack == 'cnnlab' else 'mixed_bfloat16'}"


def epoch_seconds(
    stack: str, preset: str, steps: int, precision: str = "fp32"
) -> tuple[float, str]:
    """One measurement of one net's epoch under the notebook protocol."""
    if training_flops(preset) < SMALL:
        result = measure_json(stack, preset, "epochs", epochs=2, precision=precision)
        return result["epoch_seconds"], "2 epochs, 2nd timed"
    options = {"steps": steps, "eval_images": EVAL_IMAGES, "precision": precision}
    result = measure_json(stack, preset, "steps", **options)
    seconds = STEPS_PER_EPOCH * result["step_seconds"]
    seconds += result["eval_seconds"] * TEST_IMAGES / EVAL_IMAGES
    return seconds, f"{steps} steps + eval"


def hours(seconds: float) -> str:
    return f"{seconds / 3600:.2f} h"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=2)
    p.add_argument("--steps", type=int, default=10, help="timed steps, large nets")
    p.add_argument(
        "--presets",
        help="comma-separated subset, names or notebook numbers (default: all nine)",
    )
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    p.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        default="fp32",
        help="bf16: cnnlab in bf16 against Keras 3 in float32 and mixed_bfloat16",
    )
    args = p.parse_args(argv)
    asked = [(s, "fp32") for s in STACKS] if args.precision == "fp32" else BF16_RUNS
    runs = [r for r in asked if importlib.util.find_spec(NEEDS.get(r[0], "cnnlab"))]
    missing = sorted({run_name(*r) for r in asked} - {run_name(*r) for r in runs})
    stacks = [run_name(*r) for r in runs]
    if args.precision == "bf16":
        from cnnlab.training.precision import native_bf16

        if not native_bf16():
            print(
                "This CPU has no native bf16 (lscpu: no avx512_bf16, amx_bf16): "
                "bf16 is emulated here, slower than float32.",
                flush=True,
            )
    presets = seed_presets()
    number = {preset: k for k, preset in enumerate(presets, 1)}  # the notebook's
    if args.presets:
        asked = [a.strip() for a in args.presets.split(",")]
        by_number = {str(k): preset for preset, k in number.items()}
        unknown = [a for a in asked if a not in number and a not in by_number]
        if unknown:
            names = ", ".join(number)
            p.error(f"--presets: not in the seed study: {', '.join(unknown)}; use "
                    f"numbers 1-{len(number)} or names: {names}")  # fmt: skip
        wanted = {by_number.get(a, a) for a in asked}
        presets = [n for n in presets if n in wanted]
    times: dict[tuple[str, str], list[float]] = {}
    method: dict[str, str] = {}
    for repeat in range(args.repeats):
        for preset in presets:
            for (kind, precision), stack in zip(runs, stacks, strict=True):
                seconds, how = epoch_seconds(kind, preset, args.steps, precision)
                times.setdefault((preset, stack), []).append(seconds)
                method[preset] = how
                net = f"net {number[preset]} {preset:18}"
                print(f"repeat {repeat + 1}/{args.repeats}  {net} {stack:10} "
                      f"{seconds:8.1f} s/epoch ({how})", flush=True)  # fmt: skip
    lines = [*machine_lines(), "", table(presets, number, stacks, times, method)]
    if missing:
        lines.append(f"\nNot installed, so not measured: {', '.join(missing)}.")
    text = "\n".join(lines)
    print(text)
    if args.out:
        args.out.write_text(text + "\n")
    return 0


def table(
    presets: list[str],
    number: dict[str, int],
    stacks: list[str],
    times: dict[tuple[str, str], list[float]],
    method: dict[str, str],
) -> str:
    ours, *peers = stacks  # cnnlab's run comes first
    head = ["net", "preset", "train MFLOP/sample", "measured"]
    head += [f"{s} s/epoch (min)" for s in stacks]
    head += [f"{ours} / {s}" for s in peers]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    totals = dict.fromkeys(stacks, 0.0)
    for preset in presets:
        med = {s: statistics.median(times[preset, s]) for s in stacks}
        flops = f"{training_flops(preset) / 1e6:,.1f}"
        cells = [str(number[preset]), preset, flops, method[preset]]
        cells += [f"{med[s]:,.1f} ({min(times[preset, s]):,.1f})" for s in stacks]
        cells += [f"{med[ours] / med[s]:.2f}" for s in peers]
        rows.append("| " + " | ".join(cells) + " |")
        for s in stacks:
            totals[s] += EPOCHS * med[s]
    cells = ["all", f"study, {EPOCHS} epochs", "", ""]
    cells += [hours(totals[s]) for s in stacks]
    cells += [f"{totals[ours] / totals[s]:.2f}" for s in peers]
    rows.append("| " + " | ".join(f"**{c}**" if c else "" for c in cells) + " |")
    return "\n".join(rows)


if __name__ == "__main__":
    sys.exit(main())
