"""Batch augmentation: random small translations as whole-batch tensor ops.

Each image of a batch moves by its own (dy, dx), drawn uniformly from
-max_shift..max_shift pixels; uncovered cells become 0 (MNIST's background). The
shift is one advanced-indexing gather on the zero-padded uint8 batch, so it costs
about as much as the batch gather itself and no Python runs per sample.

Randomness comes from a generator seeded by (seed, epoch) (`epoch_generator`), so an
epoch's shifts are a function of the run's seed and the epoch number alone: a run
resumed from a checkpoint draws the same shifts as an uninterrupted one without the
checkpoint having to store any augmentation state.

At test time (`test_augment: shift`) each image is scored as itself and its four
one-pixel moves (`shifted_views`), and the class probabilities are averaged.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

# shift: random translations; flip: horizontal mirror of half the images; crop: pad
# by CROP_PAD and crop back at a random place; crop+flip: both. Never on by default.
AUGMENTS = ("none", "shift", "flip", "crop", "crop+flip")
TEST_AUGMENTS = ("none", "shift")  # test_augment: the views scored at test time
# Pad 4 and crop 32x32 back: the standard CIFAR-10 augmentation (He et al., "Deep
# Residual Learning for Image Recognition", 2016, section 4.2). A zero-padded crop
# is a translation by -4..4 pixels with zeros filled in, so it is `random_shift`.
CROP_PAD = 4
# Default largest translation in pixels (TrainConfig.max_shift). MNIST digits sit in
# a 20x20 box centred by mass in the 28x28 frame (LeCun et al., the MNIST page), so
# 2 px keeps every digit inside.
MAX_SHIFT = 2
SHIFT_LIMIT = 16  # largest max_shift a config accepts (padding grows with it)
# The moves (dy, dx) of test-time shifts: the image itself and one pixel each way.
TEST_SHIFTS = ((0, 0), (1, 0), (-1, 0), (0, 1), (0, -1))
_EPOCH_BITS = 32  # epochs stay below 2**31 (config.MAX_COUNT): seed and epoch unique


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """The augmentation generator of one epoch, a pure function of (seed, epoch)."""
    return torch.Generator().manual_seed((seed << _EPOCH_BITS) | epoch)


def random_shift(
    images: torch.Tensor, generator: torch.Generator, max_shift: int = MAX_SHIFT
) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) images, each translated by its own random offset,
    zeros filled in.

    Works on any dtype (uint8 before scaling is the cheapest) and any device; the
    offsets are drawn on the CPU from `generator` so they do not depend on the device.
    """
    if max_shift == 0 or len(images) == 0:
        return images
    n, height, width = images.shape[:3]
    offsets = torch.randint(0, 2 * max_shift + 1, (2, n), generator=generator)
    offsets = offsets.to(images.device)
    channels = (0, 0) if images.dim() == 4 else ()  # colour: the last dim unpadded
    padded = F.pad(images, (*channels, max_shift, max_shift, max_shift, max_shift))
    # Output cell (r, c) of image i reads padded cell (r + dy_i, c + dx_i).
    rows = torch.arange(height, device=images.device) + offsets[0][:, None]
    cols = torch.arange(width, device=images.device) + offsets[1][:, None]
    batch = torch.arange(n, device=images.device)[:, None, None]
    return padded[batch, rows[:, :, None], cols[:, None, :]]


def random_flip(images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) images, each mirrored left-right with probability
    1/2 (drawn on the CPU from `generator`)."""
    if len(images) == 0:
        return images
    flips = (torch.rand(len(images), generator=generator) < 0.5).to(images.device)
    return torch.where(
        flips.view(-1, *[1] * (images.dim() - 1)), images.flip(2), images
    )


def augment_batch(
    images: torch.Tensor, augment: str, generator: torch.Generator, max_shift: int
) -> torch.Tensor:
    """A training batch of uint8 images under `augment` (one of AUGMENTS)."""
    if augment == "shift":
        return random_shift(images, generator, max_shift)
    if "crop" in augment:
        images = random_shift(images, generator, CROP_PAD)
    if "flip" in augment:
        images = random_flip(images, generator)
    return images


def shifted_views(images: torch.Tensor) -> list[torch.Tensor]:
    """`images` (..., H, W) moved by each of TEST_SHIFTS, zeros filled in; the
    first view is `images` itself. Memory format and dtype are kept."""
    height, width = images.shape[-2:]
    padded = F.pad(images, (1, 1, 1, 1))
    views = []
    for dy, dx in TEST_SHIFTS:
        # Output cell (r, c) reads input cell (r - dy, c - dx): a move by (dy, dx).
        view = padded[..., 1 - dy : 1 - dy + height, 1 - dx : 1 - dx + width]
        moved = view.contiguous(memory_format=_format_of(images))
        views.append(images if (dy, dx) == (0, 0) else moved)
    return views


def _format_of(images: torch.Tensor) -> torch.memory_format:
    if images.dim() == 4 and images.is_contiguous(memory_format=torch.channels_last):
        return torch.channels_last
    return torch.contiguous_format
