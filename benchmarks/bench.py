"""Side-by-side CPU training speed: cnnlab vs Keras 3 + TF, tf.keras 2, PyTorch.

    python3 -m pip install -e ".[bench]"          # TensorFlow, Keras 3, tf_keras
    python3 benchmarks/bench.py                   # presets 2, 4, 9 and 1
    python3 benchmarks/bench.py --presets 4,9 --repeats 2 --train-size 20000

Each measurement runs in a fresh process (benchmarks/stacks.py), stacks interleaved
within every repeat so drifting machine load hits all of them alike. Presets 2, 4 and 9
train whole epochs with the per-epoch evaluation (the last of --epochs is timed,
boundary stalls included); preset 1 (compute-bound, ~1 minute per epoch step batch)
times --steps steady-state steps. It prints samples/s (min and median over repeats),
cnnlab's ratio to each peer (median / median), achieved GFLOP/s as a fraction of
the fp32 GEMM peak measured in the same run, and the test accuracy each timed run
reached. A stack that did not learn (below --min-acc in any timed run) is not a
peer: the run names it and exits 1. Stacks that are not installed are reported as
missing, not skipped silently.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
STACK_ORDER = ("cnnlab", "keras3-tf", "tf-keras2", "torch-dataloader")
PEAK_SIZE = 4096  # GEMM side: large enough to reach the kernel's plateau


def gemm_peak(threads: int) -> float:
    """Median fp32 GFLOP/s of a 4096^3 torch.matmul over 5 runs."""
    import torch

    torch.set_num_threads(threads)
    a, b = torch.rand(PEAK_SIZE, PEAK_SIZE), torch.rand(PEAK_SIZE, PEAK_SIZE)
    a @ b  # warm-up
    rates = []
    for _ in range(5):
        started = time.perf_counter()
        a @ b
        rates.append(2 * PEAK_SIZE**3 / (time.perf_counter() - started) / 1e9)
    return statistics.median(rates)


def training_flops(preset: str) -> float:
    """Training FLOPs per sample (cnnlab.nn.shapes' count)."""
    import cnnlab
    from cnnlab.nn.shapes import infer

    return float(infer(cnnlab.load(preset)).train_flops)


def measure(stack: str, preset: str, mode: str, args: argparse.Namespace) -> dict:
    cmd = [sys.executable, str(HERE / "stacks.py"), "--stack", stack, "--preset",
           preset, "--mode", mode, "--epochs", str(args.epochs), "--steps",
           str(args.steps), "--train-size", str(args.train_size)]  # fmt: skip
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=3600)
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"stack": stack, "preset": preset, "error": last[:200]}
    return json.loads(done.stdout.strip().splitlines()[-1])


def _rates(results: list[dict], stack: str, preset: str) -> list[float]:
    return [
        r["samples_per_s"]
        for r in results
        if r["stack"] == stack and r["preset"] == preset and "error" not in r
    ]


def table(
    results: list[dict], peak: float, stacks: list[str], presets: list[str]
) -> str:
    lines = [
        "| preset | stack | samples/s min | samples/s median | epoch s (median) "
        "| cnnlab / stack | GFLOP/s | % of peak | test acc (min) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for preset in presets:
        flops = training_flops(preset)
        medians = {}
        for stack in stacks:
            rates = _rates(results, stack, preset)
            if rates:
                medians[stack] = statistics.median(rates)
        for stack in stacks:
            runs = [r for r in results if r["stack"] == stack and r["preset"] == preset]
            rates = _rates(results, stack, preset)
            if not rates:
                why = next((r["error"] for r in runs if "error" in r), "not run")
                lines.append(f"| {preset} | {stack} | - | - | - | - | - | {why} | - |")
                continue
            med = medians[stack]
            epochs = [r["epoch_seconds"] for r in runs if "epoch_seconds" in r]
            epoch = f"{statistics.median(epochs):.1f}" if epochs else "-"
            ratio = medians.get("cnnlab", float("nan")) / med
            gflops = med * flops / 1e9
            accs = [r["test_acc"] for r in runs if r.get("test_acc") is not None]
            acc = f"{100 * min(accs):.1f}%" if accs else "- (steps only)"
            lines.append(
                f"| {preset} | {stack} | {min(rates):,.0f} | {med:,.0f} | {epoch} | "
                f"{ratio:.2f}x | {gflops:.1f} | {100 * gflops / peak:.0f}% | {acc} |"
            )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument(
        "--presets", default="2,4,9,1", help="comma-separated preset numbers"
    )
    p.add_argument("--stacks", default=",".join(STACK_ORDER))
    p.add_argument("--repeats", type=int, default=3)
    p.add_argument(
        "--epochs", type=int, default=2, help="epochs per run; last is timed"
    )
    p.add_argument("--steps", type=int, default=5, help="timed steps for preset 1")
    p.add_argument("--train-size", type=int, default=60_000)
    p.add_argument("--out", type=Path, help="also write the Markdown table here")
    p.add_argument(
        "--min-acc",
        type=float,
        default=0.5,
        help="test accuracy below which a timed run did not learn (default 0.5)",
    )
    args = p.parse_args(argv)
    presets, stacks = args.presets.split(","), args.stacks.split(",")
    threads = os.cpu_count() or 1
    # The peak is probed before and after the runs and the higher kept: on a shared
    # machine one probe can land in a slow moment (140 vs 189 GFLOP/s seen here).
    peak = gemm_peak(threads)
    print(f"fp32 GEMM peak ({PEAK_SIZE}^3, {threads} threads): {peak:.0f} GFLOP/s",
          flush=True)  # fmt: skip
    results = []
    for repeat in range(args.repeats):
        for preset in presets:
            mode = "steps" if preset == "1" else "epochs"
            for stack in stacks:
                result = measure(stack, preset, mode, args)
                results.append(result)
                rate = result.get("samples_per_s")
                shown = f"{rate:,.0f} samples/s" if rate else result.get("error")
                print(
                    f"repeat {repeat + 1} preset {preset} {stack}: {shown}", flush=True
                )
    after = gemm_peak(threads)
    print(f"fp32 GEMM peak again after the runs: {after:.0f} GFLOP/s", flush=True)
    peak = max(peak, after)
    text = table(results, peak, stacks, presets)
    header = (
        f"Machine: {platform.machine()}, {threads} cores, {platform.platform()}; "
        f"Python {platform.python_version()}; fp32 GEMM peak {peak:.0f} GFLOP/s.\n"
        f"Settings: batch 128, Adam, presets {args.presets}, {args.repeats} repeats, "
        f"{args.epochs} epochs per run (last timed, per-epoch evaluation on 10,000 "
        f"test images included), {args.train_size:,} training images; preset 1: "
        f"{args.steps} steps after 2 warm-up steps.\n"
    )
    print("\n" + header + "\n" + text)
    failed = not_learned(results, args.min_acc)
    for line in failed:
        print(line, file=sys.stderr)
    if args.out:
        raw = "\n".join(json.dumps(r) for r in results)
        text += "".join(f"\n\n{line}" for line in failed)
        args.out.write_text(f"{header}\n{text}\n\nRaw results:\n\n```\n{raw}\n```\n")
    return 1 if failed else 0


def not_learned(results: list[dict], floor: float) -> list[str]:
    """A FAIL line for every timed run whose test accuracy is below `floor`."""
    return [
        f"FAIL: {r['stack']} on preset {r['preset']} reached "
        f"{100 * r['test_acc']:.1f}% test accuracy (below {100 * floor:.0f}%): "
        "it did not learn, so its speed is no comparison"
        for r in results
        if r.get("test_acc") is not None and r["test_acc"] < floor
    ]


if __name__ == "__main__":
    sys.exit(main())
