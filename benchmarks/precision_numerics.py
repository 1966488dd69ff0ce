"""Does bf16 mixed precision cost accuracy? Each preset trained in float32 and in
bf16 under the notebook's protocol, and the two compared as the report compares nets.

    python3 benchmarks/precision_numerics.py               # presets 2, 3, 4, 9
    python3 benchmarks/precision_numerics.py --presets conv5-tiny --epochs 1 \
        --limit 2000 --out /tmp/numerics

The protocol is the notebook's: 12 epochs, batch 128, Adam, the 10,000 test images
as the validation set after every epoch, seeds 1-3. Each preset becomes two labels
of one study, `P` (fp32) and `P-bf16`, trained by `cnnlab study` (resumable: run the
same command again to finish an interrupted run). The table gives, per preset, the
mean test accuracy over seeds in each precision, Welch's two-sided p on the per-seed
accuracies, and McNemar's exact test on the test images, per seed pair and pooled
over the seeds (the images only one of the two got right: fp32 / bf16).

The numbers, not the time, are the point here: on a CPU without native bf16 the
run sets CNNLAB_ALLOW_SLOW_BF16=1 so that autocast runs at all, and says so. Its
arithmetic is that of a bf16 CPU (bf16 operands, float32 accumulation), only slower.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from machine import machine_lines  # noqa: E402

from cnnlab.reporting.analysis import compare_to_best, test_set_checks  # noqa: E402
from cnnlab.reporting.paired import McNemar  # noqa: E402
from cnnlab.studies.layout import StudyLayout  # noqa: E402
from cnnlab.studies.store import Store  # noqa: E402
from cnnlab.training import precision  # noqa: E402

DEFAULT_PRESETS = "conv3-small,conv5-tiny,conv5-medium,conv7-dropout"


def study_text(
    name: str, presets: list[str], seeds: str, epochs: int, limit: int
) -> str:
    """The study file: each preset twice, the second in bf16."""
    train = f"epochs: {epochs}, batch_size: 128, optimizer: adam, validation: test"
    if limit:
        train += f", train_limit: {limit}"
    lines = [
        f"name: {name}",
        f"seeds: [{seeds}]",
        f"train: {{{train}}}",
        "architectures:",
    ]
    for preset in presets:
        lines.append(f"  - {{preset: {preset}, label: {preset}}}")
        bf16 = "train: {precision: bf16}"
        lines.append(f"  - {{preset: {preset}, label: {preset}-bf16, {bf16}}}")
    return "\n".join(lines) + "\n"


def table(store: Store, name: str, presets: list[str]) -> list[str]:
    trials = [t for t in store.trials(name) if t.status.finished]  # scored ones
    rows = [
        "| preset | fp32 test acc % (mean ± sd) | bf16 test acc % (mean ± sd) "
        "| bf16 - fp32 (points) | Welch p "
        "| McNemar per seed: fp32 only / bf16 only (p) "
        "| McNemar pooled: fp32 only / bf16 only (p) |",
        "|---|---|---|---|---|---|---|",
    ]
    for preset in presets:
        labels = (preset, f"{preset}-bf16")
        pair = [t for t in trials if t.label in labels]
        # only the seeds trained in both precisions: a run cut short compares like
        both = set.intersection(
            *({t.seed for t in pair if t.label == x} for x in labels)
        )
        pair = [t for t in pair if t.seed in both]
        if not both:
            rows.append(f"| {preset} | not trained yet | | | | | |")
            continue
        compared = {c.label: c for c in compare_to_best(pair, "test_acc")}
        fp32, bf16 = compared[preset], compared[f"{preset}-bf16"]
        tested = bf16 if fp32.label == fp32.best_label else fp32  # against the best
        (check,) = test_set_checks(pair, tested.best_label)
        fp32_first = check.label == preset  # McNemar's only_a belongs to check.label
        per_seed = "; ".join(
            f"s{seed}: {_counts(m, fp32_first)}" for seed, m in check.per_seed
        )
        pooled = _counts(check.pooled, fp32_first) if check.pooled else "n/a"
        p = "n/a" if tested.p_value is None else f"{tested.p_value:.3g}"
        rows.append(
            f"| {preset} | {_stat(pair, preset)} | {_stat(pair, preset + '-bf16')} "
            f"| {100 * (bf16.mean - fp32.mean):+.2f} | {p} | {per_seed} | {pooled} |"
        )
    return rows


def _counts(m: McNemar, fp32_first: bool) -> str:
    """Images only fp32 got right / only bf16 got right, and the exact p."""
    a, b = (m.only_a, m.only_b) if fp32_first else (m.only_b, m.only_a)
    return f"{a} / {b} ({m.p_value:.3g})"


def _stat(trials: list, label: str) -> str:
    accs = [100 * t.test_acc for t in trials if t.label == label]
    sd = statistics.stdev(accs) if len(accs) > 1 else 0.0
    return f"{statistics.fmean(accs):.2f} ± {sd:.2f} (n={len(accs)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--presets", default=DEFAULT_PRESETS)
    parser.add_argument("--seeds", default="1,2,3")
    parser.add_argument("--epochs", type=int, default=12)
    parser.add_argument("--limit", type=int, default=0, help="training images (0: all)")
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--name", default="bf16-numerics")
    parser.add_argument("--out", type=Path, default=Path("numerics"))
    parser.add_argument("--table", type=Path, help="also write the Markdown table here")
    args = parser.parse_args()
    presets = args.presets.split(",")
    for line in machine_lines():
        print(line)
    if not precision.native_bf16():
        os.environ[precision.ALLOW_SLOW_BF16] = "1"
        print("No native bf16 on this CPU: bf16 runs emulated (slow; same arithmetic).")
    args.out.mkdir(parents=True, exist_ok=True)
    study_file = args.out / f"{args.name}.yaml"
    text = study_text(args.name, presets, args.seeds, args.epochs, args.limit)
    if study_file.exists() and study_file.read_text() != text:
        sys.exit(
            f"{study_file} exists and is not this run's study file: pass another "
            "--name or --out (an earlier run with other settings is kept as it is)."
        )
    study_file.write_text(text)
    import cnnlab

    study = cnnlab.load_study(study_file)
    cnnlab.run_study(study, args.out, workers=args.workers)
    with Store(StudyLayout(args.out).store) as store:
        rows = table(store, args.name, presets)
    print("\n".join(rows))
    if args.table:
        args.table.write_text("\n".join(rows) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
