"""Training throughput from an image folder against the same images from an .npz.

    python3 benchmarks/folder_throughput.py                 # ~5,000 PNGs, 3 rounds
    python3 benchmarks/folder_throughput.py --count 600 --epochs 1 --rounds 1  # smoke

Writes a 32x32 RGB image folder of about COUNT PNGs with examples/make_shapes.py
(3 classes, 4/5 of each in train/), reads it once with `load_dataset` (which
decodes it and fills a decode cache of its own, in a temporary folder), and saves
the same arrays as an .npz. Then it trains the same net (a preset, fitted to
32x32x3 and 3 classes as `cnnlab train NET --data ...` fits it) with
`cnnlab.train`, once from the folder (A) and once from the .npz (B), A/B/A/B
for ROUNDS rounds, each run 1 + EPOCHS epochs of the whole training set with
validation off. The first epoch of every run is a warm-up and is not counted; each
later epoch gives one throughput, training images / the epoch's seconds (the
`seconds` the run records for it). Prints every run's epochs, the min and median
per source, the folder/.npz ratio of the medians, and the machine. Writing the
PNGs and decoding them are not timed. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_lines  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
MAKE_SHAPES = ROOT / "examples" / "make_shapes.py"
SHAPES = 3  # classes examples/make_shapes.py draws
TARGET = 0.10  # the folder should train within 10% of the .npz


def make_folder(folder: Path, count: int) -> None:
    per_class = count // SHAPES
    test = per_class // 5
    subprocess.run(
        [sys.executable, str(MAKE_SHAPES), str(folder),
         "--train", str(per_class - test), "--test", str(test)],
        check=True,
        stdout=subprocess.DEVNULL,
    )  # fmt: skip


def save_npz(dataset, path: Path) -> None:  # noqa: ANN001
    np.savez(
        path,
        x_train=dataset.x_train.numpy(),
        y_train=dataset.y_train.numpy(),
        x_test=dataset.x_test.numpy(),
        y_test=dataset.y_test.numpy(),
        class_names=np.array(dataset.class_names, dtype=str),
    )


def epoch_rates(net: str, data: Path, args: argparse.Namespace, out: Path) -> list:
    """Training images per second of each epoch after the first."""
    import cnnlab
    from cnnlab.training.config import TrainConfig
    from cnnlab.training.session import Hooks

    config = TrainConfig(
        data=str(data),
        epochs=1 + args.epochs,
        batch_size=args.batch_size,
        validation="none",
        threads=args.threads,
    )
    result = cnnlab.train(net, config, out=out, hooks=Hooks())  # no progress lines
    images = result.meta["environment"]["train_samples"]
    return [images / row["seconds"] for row in result.history.epochs[1:]]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=5_000, help="PNGs to write")
    parser.add_argument("--net", default="conv5-medium", help="a preset")
    parser.add_argument("--epochs", type=int, default=3, help="timed, per run")
    parser.add_argument("--rounds", type=int, default=3, help="A/B pairs")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnlab-throughput-") as tmp:
        work = Path(tmp)
        os.environ["CNNLAB_CACHE_DIR"] = str(work / "cache")
        folder, npz = work / "shapes", work / "shapes.npz"
        make_folder(folder, args.count)
        from cnnlab.data.datasets import load_dataset

        dataset = load_dataset(str(folder))
        save_npz(dataset, npz)
        same = load_dataset(str(npz))
        assert np.array_equal(dataset.x_train.numpy(), same.x_train.numpy())
        print(
            f"{len(dataset.x_train):,} training images of {dataset.image_shape}, "
            f"{dataset.num_classes} classes; {args.net}, batch {args.batch_size}, "
            f"{args.epochs} timed epoch(s) after 1 warm-up, {args.rounds} round(s)"
        )
        rates: dict[str, list[float]] = {"folder": [], "npz": []}
        for round_ in range(1, args.rounds + 1):
            for name, data in (("folder", folder), ("npz", npz)):
                out = work / f"run-{name}-{round_}"
                got = epoch_rates(args.net, data, args, out)
                rates[name] += got
                shown = ", ".join(f"{r:,.0f}" for r in got)
                print(f"round {round_} {name:>6}: {shown} images/s")
    for name, values in rates.items():
        print(
            f"{name:>6}: min {min(values):,.0f}, median "
            f"{statistics.median(values):,.0f} images/s over {len(values)} epochs"
        )
    ratio = statistics.median(rates["folder"]) / statistics.median(rates["npz"])
    verdict = "within" if ratio >= 1 - TARGET else "NOT within"
    print(f"folder / npz (medians): {ratio:.3f}, {verdict} {TARGET:.0%} of the .npz")
    for line in machine_lines():
        print(line)


if __name__ == "__main__":
    main()
