"""Image folders: the first read (decode every PNG and check it) and the cached read.

    python3 benchmarks/images.py                 # 50,000 32x32 RGB PNGs
    python3 benchmarks/images.py --count 5000    # a quicker look

Writes COUNT random 32x32 RGB PNGs into a temporary folder (10 class folders under
train/ and test/, 5/6 of each class in train/), then, in this process, times
`load_dataset` twice with an empty decode cache of its own: the first call scans,
decodes and checks every file (with a process pool over the cores) and writes the
cache; the second finds the cache. Prints both times, the peak resident memory of
this process and of the decoding workers, and the machine. Writing the PNGs is not
timed. The temporary folder and cache are removed at the end.
"""

from __future__ import annotations

import argparse
import os
import resource
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

sys.path.insert(0, str(Path(__file__).parent))
from machine import machine_lines  # noqa: E402

CLASSES = 10


def write_pngs(root: Path, count: int, side: int) -> None:
    rng = np.random.default_rng(0)
    per_class = count // CLASSES
    for label in range(CLASSES):
        for i in range(per_class):
            split = "train" if i % 6 else "test"
            folder = root / split / f"class{label}"
            folder.mkdir(parents=True, exist_ok=True)
            pixels = rng.integers(0, 256, (side, side, 3), dtype=np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")


def peak_mb(who: int) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--count", type=int, default=50_000)
    parser.add_argument("--size", type=int, default=32)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnlab-images-") as tmp:
        root, cache = Path(tmp) / "set", Path(tmp) / "cache"
        os.environ["CNNLAB_CACHE_DIR"] = str(cache)
        started = time.perf_counter()
        write_pngs(root, args.count, args.size)
        print(f"Wrote {args.count:,} PNGs in {time.perf_counter() - started:.1f} s")
        from cnnlab.data.datasets import load_dataset

        started = time.perf_counter()
        first = load_dataset(str(root))
        decode = time.perf_counter() - started
        started = time.perf_counter()
        second = load_dataset(str(root))
        cached = time.perf_counter() - started
        assert second.info["cached"] and np.array_equal(
            first.x_train.numpy(), second.x_train.numpy()
        )
        images = len(first.x_train) + len(first.x_test)
        print(f"Images: {images:,} of {first.image_shape}")
        print(f"First read (scan, decode, check, write cache): {decode:.2f} s")
        print(f"Cached read: {cached:.2f} s")
        print(
            f"Peak memory: this process {peak_mb(resource.RUSAGE_SELF):.0f} MB, "
            f"largest decoding worker {peak_mb(resource.RUSAGE_CHILDREN):.0f} MB"
        )
    for line in machine_lines():
        print(line)


if __name__ == "__main__":
    main()
