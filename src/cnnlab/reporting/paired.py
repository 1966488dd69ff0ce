"""Tests that match the questions a comparison asks, on plain numbers.

- Holm's step-down correction: the best label is compared with each of the k-1
  others, and k-1 tests at 5% each would call one of them "different" far more
  often than 1 time in 20.
- McNemar's exact test: two nets scored on the *same* test images disagree on
  some of them; only those discordant images say which net is better.
- The binomial standard error of an accuracy on n images: the test set's own
  sampling error, present even with a single seed.
- Kendall's tau: do two data sets rank the same nets in the same order?

scipy is imported by the functions that need it (it takes ~0.6 s to import).
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np


def holm(p_values: Sequence[float | None]) -> list[float | None]:
    """Holm-adjusted p-values in the input order; None stays None (no test ran).

    Sorted ascending, the i-th smallest of m p-values becomes
    max over j <= i of min(1, (m - j) * p_(j)) (j from 0), so that rejecting
    every adjusted p below alpha keeps the family-wise error rate at alpha.
    """
    tested = [(p, i) for i, p in enumerate(p_values) if p is not None]
    m = len(tested)
    adjusted: list[float | None] = [None] * len(p_values)
    running = 0.0
    for rank, (p, i) in enumerate(sorted(tested)):
        running = max(running, min(1.0, (m - rank) * p))
        adjusted[i] = running
    return adjusted


@dataclass(frozen=True)
class McNemar:
    """Two nets on the same images: how often each alone was right."""

    only_a: int  # images net A got right and net B wrong
    only_b: int
    n: int  # images compared
    p_value: float  # exact two-sided (binomial on the discordant images)

    @property
    def discordant(self) -> int:
        return self.only_a + self.only_b


def mcnemar(a_correct: np.ndarray, b_correct: np.ndarray) -> McNemar:
    """McNemar's exact test of two boolean 'was right' arrays over the same images."""
    a = np.asarray(a_correct, dtype=bool)
    b = np.asarray(b_correct, dtype=bool)
    if a.shape != b.shape:
        raise ValueError(f"images differ: {a.shape} vs {b.shape}")
    only_a = int(np.sum(a & ~b))
    only_b = int(np.sum(~a & b))
    return McNemar(only_a, only_b, int(a.size), mcnemar_p(only_a, only_b))


def mcnemar_p(only_a: int, only_b: int) -> float:
    """Exact two-sided p of discordant counts: under 'no difference' each discordant
    image is a fair coin toss between the two nets."""
    n = only_a + only_b
    if n == 0:
        return 1.0
    from scipy import stats

    return float(stats.binomtest(min(only_a, only_b), n, 0.5).pvalue)


def binomial_se(accuracy: float, n: int) -> float:
    """Standard error of an accuracy measured on n independent images."""
    if n <= 0:
        raise ValueError("binomial_se needs at least one image")
    return math.sqrt(max(0.0, accuracy * (1.0 - accuracy)) / n)


@dataclass(frozen=True)
class RankAgreement:
    """Kendall's tau-b between two rankings of the same items."""

    tau: float | None  # None with fewer than 2 items or no variation
    p_value: float | None
    n: int


def kendall(a: Sequence[float], b: Sequence[float]) -> RankAgreement:
    """Kendall's tau-b of paired scores (ties handled), with its two-sided p."""
    if len(a) != len(b):
        raise ValueError("kendall needs paired scores")
    if len(a) < 2 or len(set(a)) < 2 or len(set(b)) < 2:
        return RankAgreement(None, None, len(a))
    from scipy import stats

    result = stats.kendalltau(a, b)
    return RankAgreement(float(result.statistic), float(result.pvalue), len(a))
