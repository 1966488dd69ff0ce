"""A small colour image folder to try cnnlab's own-images path on, made here.

    python3 examples/make_shapes.py shapes/            # 3 classes, 400 + 100 each
    cnnlab data shapes/                                 # what is there, a sample grid
    cnnlab train conv3-small --data shapes/ --epochs 3  # the preset takes 32x32x3

Writes `DIR/train/<class>/*.png` and `DIR/test/<class>/*.png`: 32x32 RGB images of a
circle, a square or a triangle, each at a random place and size, in a random
colour, on a random background with noise, so that colour says nothing about the
class and the shape says everything. Seeded: the same folder every time.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
from PIL import Image, ImageDraw

CLASSES = ("circle", "square", "triangle")


def draw(shape: str, rng: np.random.Generator, side: int) -> Image.Image:
    background = tuple(int(v) for v in rng.integers(0, 256, 3))
    colour = tuple(int(v) for v in rng.integers(0, 256, 3))
    image = Image.new("RGB", (side, side), background)
    pen = ImageDraw.Draw(image)
    size = int(rng.integers(side // 3, side * 3 // 4))
    x, y = (int(v) for v in rng.integers(0, side - size, 2))
    box = (x, y, x + size, y + size)
    if shape == "circle":
        pen.ellipse(box, fill=colour)
    elif shape == "square":
        pen.rectangle(box, fill=colour)
    else:
        pen.polygon([(x + size // 2, y), (x, y + size), (x + size, y + size)], colour)
    noise = rng.normal(0, 12, (side, side, 3))
    pixels = np.clip(np.asarray(image, dtype=np.float64) + noise, 0, 255)
    return Image.fromarray(pixels.astype(np.uint8))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("folder", type=Path)
    parser.add_argument("--train", type=int, default=400, help="images per class")
    parser.add_argument("--test", type=int, default=100, help="images per class")
    parser.add_argument("--size", type=int, default=32, help="side in pixels")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.folder.exists() and any(args.folder.iterdir()):
        parser.error(f"{args.folder} exists and is not empty; name a new folder")
    rng = np.random.default_rng(args.seed)
    for split, count in (("train", args.train), ("test", args.test)):
        for shape in CLASSES:
            folder = args.folder / split / shape
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                draw(shape, rng, args.size).save(folder / f"{shape}-{i:04d}.png")
    total = (args.train + args.test) * len(CLASSES)
    print(f"Wrote {total:,} images of {args.size}x{args.size} RGB into {args.folder}")


if __name__ == "__main__":
    main()
