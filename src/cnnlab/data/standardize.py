"""Per-channel standardisation: (x - mean_c) / std_c on [0, 1] pixels.

The mean and std come from the training split alone (after the hold-out, before
augmentation) and are kept in the run's run.json, as
`"standardize": {"mean": [...], "std": [...]}`: every later use of the run
(validation, test, evaluate, predict, resume, export) applies those stored values
and never computes new ones from other images.

They are computed exactly, in float64, from each channel's histogram of its 256
uint8 values: no float copy of the images is made. A channel whose training
pixels are all equal has a std of 0; it is divided by 1 instead (only centred),
scikit-learn's StandardScaler rule for a zero scale.
"""

from __future__ import annotations

import math
from typing import Any

import torch

from cnnlab.errors import RunError
from cnnlab.util.text import is_number, show_value

KEY = "standardize"  # run.json's entry
CHUNK = 4096  # images per histogram pass: a bounded uint8 copy of one channel
LEVELS = 256
DESCRIPTION = "standardised per channel with the training split's mean and std"


def channel_stats(x: torch.Tensor) -> dict[str, list[float]]:
    """Mean and (population) std of each channel of uint8 images `x`, (N, H, W)
    or (N, H, W, C), on the [0, 1] scale; a zero std is stored as 1.0."""
    if x.dtype != torch.uint8 or x.dim() not in (3, 4) or len(x) == 0:
        raise ValueError(
            f"channel_stats expects uint8 (N, H, W[, C]) images, got {x.dtype} "
            f"{tuple(x.shape)}"
        )
    channels = 1 if x.dim() == 3 else x.shape[3]
    counts = torch.zeros(channels, LEVELS, dtype=torch.float64)
    for start in range(0, len(x), CHUNK):
        chunk = x[start : start + CHUNK].cpu()
        for c in range(channels):
            plane = chunk if x.dim() == 3 else chunk[..., c]
            counts[c] += torch.bincount(plane.reshape(-1), minlength=LEVELS)
    levels = torch.arange(LEVELS, dtype=torch.float64) / 255.0
    total = counts.sum(1)
    mean = (counts * levels).sum(1) / total
    var = (counts * (levels - mean[:, None]) ** 2).sum(1) / total
    std = var.sqrt()
    std = torch.where(std > 0, std, torch.ones_like(std))
    return {"mean": mean.tolist(), "std": std.tolist()}


def read_entry(entry: Any, where: str, channels: int) -> dict[str, list[float]]:
    """run.json's standardize entry, checked: a mapping of `mean` and `std`, each
    a list of `channels` finite numbers, every std positive."""
    fix = "Retrain the run, or restore run.json"
    if not isinstance(entry, dict) or set(entry) != {"mean", "std"}:
        raise _bad(where, "must be a mapping of mean and std", entry, fix)
    out = {}
    for key in ("mean", "std"):
        values = entry[key]
        ok = (
            isinstance(values, list)
            and len(values) == channels
            and all(is_number(v) and math.isfinite(v) for v in values)
        )
        if ok and key == "std":
            ok = all(v > 0 for v in values)
        if not ok:
            what = "finite positive numbers" if key == "std" else "finite numbers"
            raise _bad(
                where,
                f"{key} must be a list of {what}, one per channel ({channels})",
                values,
                fix,
                f"{KEY}.{key}",
            )
        out[key] = [float(v) for v in values]
    return out


def _bad(where: str, what: str, value: Any, fix: str, name: str = KEY) -> RunError:
    return RunError(
        f"{where}: {KEY} {what}. Received: {name}={show_value(value)}. {fix}."
    )
