"""Learning-rate schedules, as pure functions of the global step.

The learning rate of every step follows from (step, total steps, peak lr) alone, so
a resumed run sets exactly the rate an uninterrupted one would: there is no
scheduler state to checkpoint.

One-cycle (Smith & Topin, "Super-Convergence", 2017; the shape of PyTorch's
`torch.optim.lr_scheduler.OneCycleLR` with its defaults): a cosine warm-up from
peak / DIV_FACTOR to the peak over the first WARMUP_FRACTION of the steps, then a
cosine anneal down to peak / (DIV_FACTOR * FINAL_DIV_FACTOR) at the last step.
"""

from __future__ import annotations

import math

SCHEDULES = ("constant", "onecycle")
# OneCycleLR's defaults (PyTorch docs): pct_start=0.3, div_factor=25,
# final_div_factor=1e4.
WARMUP_FRACTION = 0.3
DIV_FACTOR = 25.0
FINAL_DIV_FACTOR = 1e4


def _cosine(start: float, end: float, fraction: float) -> float:
    """From `start` (fraction 0) to `end` (fraction 1) along half a cosine."""
    return end + (start - end) * (1 + math.cos(math.pi * fraction)) / 2


def onecycle_lr(step: int, total: int, peak: float) -> float:
    """The one-cycle rate of 0-based `step` out of `total` steps."""
    initial = peak / DIV_FACTOR
    final = initial / FINAL_DIV_FACTOR
    warmup = max(1, round(WARMUP_FRACTION * total))
    if step < warmup:
        return _cosine(initial, peak, step / warmup)
    rest = max(1, total - 1 - warmup)
    return _cosine(peak, final, min(1.0, (step - warmup) / rest))


def learning_rate(name: str, step: int, total: int, peak: float) -> float:
    """The rate of `step` under schedule `name` ('constant' is always the peak)."""
    if name == "constant":
        return peak
    if name == "onecycle":
        return onecycle_lr(step, total, peak)
    raise AssertionError(name)
