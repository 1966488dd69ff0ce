"""Seeds batched vs one seed alone: how long do K seeds of one net take together?

    python3 benchmarks/batched_seeds.py                       # preset 2, 5 seeds
    python3 benchmarks/batched_seeds.py --preset 4 --seeds 3 --repeats 3

Trains one epoch of --train-size images per seed (batch 128, no validation, so only
training is timed) with `train.fit` for one seed, then with `batched.fit_seeds` for
--seeds seeds, alternating within each repeat so machine load drifts hit both. Each
side starts from a freshly built model, so its first (slower) step is included,
as it is in a real run. Prints seconds, samples/s per seed and the ratio
time(K batched) / time(1 alone); the issue's target is <= 2.0 for 5 seeds of preset 2.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

import cnnlab
from cnnlab.batched import fit_seeds
from cnnlab.config import TrainConfig
from cnnlab.data import load_dataset, split_dataset
from cnnlab.model import build_model
from cnnlab.train import fit


def time_one(arch: cnnlab.Architecture, split, config: TrainConfig) -> float:
    model = build_model(arch, 10, seed=config.seed)
    started = time.perf_counter()
    fit(model, split, config)
    return time.perf_counter() - started


def time_batched(
    arch: cnnlab.Architecture, split, config: TrainConfig, seeds: int
) -> float:
    started = time.perf_counter()
    fit_seeds(arch, config, list(range(seeds)), split, 10)
    return time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="conv3-small")
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--train-size", type=int, default=20_000)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args()

    torch.set_num_threads(args.threads)
    arch = cnnlab.load(args.preset)
    config = TrainConfig(
        epochs=1,
        batch_size=args.batch_size,
        validation="none",
        train_limit=args.train_size,
        test_limit=1,
        device="cpu",
    )
    split = split_dataset(
        load_dataset("mnist"), validation="none", train_limit=args.train_size
    )
    ones, batches = [], []
    for repeat in range(1, args.repeats + 1):
        ones.append(time_one(arch, split, config))
        batches.append(time_batched(arch, split, config, args.seeds))
        print(
            f"repeat {repeat}: 1 seed {ones[-1]:.2f} s, "
            f"{args.seeds} seeds batched {batches[-1]:.2f} s"
        )
    one, batched = statistics.median(ones), statistics.median(batches)
    n = args.train_size
    print(f"\n{args.preset}, {n} images x 1 epoch, batch {args.batch_size}, "
          f"{args.threads} threads, torch {torch.__version__}")  # fmt: skip
    print(f"  1 seed alone      {one:8.2f} s  {n / one:8.0f} samples/s per seed")
    print(
        f"  {args.seeds} seeds batched  {batched:8.2f} s  "
        f"{n / batched:8.0f} samples/s per seed  "
        f"({args.seeds * n / batched:.0f} in all)"
    )
    ratio = batched / one
    print(f"  ratio time({args.seeds} batched) / time(1): {ratio:.2f} "
          f"(target <= 2.0; one by one would be {args.seeds:.1f})")  # fmt: skip


if __name__ == "__main__":
    main()
