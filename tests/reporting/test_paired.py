"""Holm, McNemar, the binomial SE and Kendall's tau against hand-computed values,
and the protocol that chooses the best on validation whenever a hold-out exists."""

from __future__ import annotations

import math
from itertools import combinations

import numpy as np
import pytest

from cnnlab.reporting.analysis import compare_to_best, protocol
from cnnlab.reporting.paired import binomial_se, holm, kendall, mcnemar, mcnemar_p
from helpers import history, trial


def test_holm_matches_hand_computation() -> None:
    # sorted: 0.01, 0.02, 0.04 -> 3*0.01 = 0.03, 2*0.02 = 0.04, 1*0.04 = 0.04
    assert holm([0.04, 0.01, 0.02]) == pytest.approx([0.04, 0.03, 0.04])
    # monotone: 0.03*3 = 0.09; then 2*0.04 = 0.08 is raised to 0.09; capped at 1
    assert holm([0.03, 0.04, 0.9]) == pytest.approx([0.09, 0.09, 0.9])
    # 2*0.5 = 1.0; the next may not fall below it: 1.0
    assert holm([0.5, None, 0.6]) == pytest.approx([1.0, None, 1.0])
    assert holm([]) == []


def test_mcnemar_exact_matches_binomial_by_hand() -> None:
    # 2 vs 8 discordant: two-sided p = 2 * P(X <= 2), X ~ Bin(10, 1/2)
    by_hand = 2 * sum(math.comb(10, k) for k in range(3)) / 2**10
    assert mcnemar_p(2, 8) == pytest.approx(by_hand)  # 0.109375
    assert mcnemar_p(8, 2) == pytest.approx(by_hand)
    assert mcnemar_p(0, 0) == 1.0
    assert mcnemar_p(5, 5) == pytest.approx(1.0)
    a = np.array([1, 1, 1, 0, 0, 1, 1, 1, 1, 1, 0, 0], dtype=bool)
    b = np.array([1, 0, 0, 0, 1, 1, 1, 1, 1, 1, 1, 1], dtype=bool)
    result = mcnemar(a, b)
    assert (result.only_a, result.only_b, result.n) == (2, 3, 12)
    assert result.p_value == pytest.approx(1.0)  # 2 * P(X <= 2 | 5) = 1.0
    with pytest.raises(ValueError, match="images differ"):
        mcnemar(a, b[:5])


def test_binomial_se() -> None:
    assert binomial_se(0.99, 10_000) == pytest.approx(math.sqrt(0.99 * 0.01 / 1e4))
    assert binomial_se(1.0, 100) == 0.0


def test_kendall_tau_by_hand() -> None:
    a, b = [1.0, 2.0, 3.0, 4.0], [1.0, 3.0, 2.0, 4.0]
    pairs = list(combinations(range(4), 2))
    concordant = sum((a[i] - a[j]) * (b[i] - b[j]) > 0 for i, j in pairs)
    tau = (concordant - (len(pairs) - concordant)) / len(pairs)  # no ties: 4/6
    result = kendall(a, b)
    assert result.tau == pytest.approx(tau) == pytest.approx(2 / 3)
    assert result.p_value is not None and 0 < result.p_value <= 1
    # exact p for n = 4, tau = 2/3: 4 of the 24 orderings have S >= 4, two-sided
    assert result.p_value == pytest.approx(2 * 4 / 24)
    assert kendall([1.0], [2.0]).tau is None
    assert kendall([1.0, 1.0], [1.0, 2.0]).tau is None


def _val_test(label: str, val: float, test: float, seeds: int = 3, **extra):
    return [
        trial(label, s, history([0.1], val_loss=[0.05], val_acc=[val + 0.001 * s]), test_acc=test,
              config={"validation": "holdout"}, **extra)
        for s in range(seeds)
    ]  # fmt: skip


def test_best_is_chosen_on_validation_when_a_holdout_exists() -> None:
    # a wins on validation, b on test: the hold-out chooses, test only reports
    trials = _val_test("a", 0.990, 0.980) + _val_test("b", 0.985, 0.995)
    chosen = protocol(trials)
    assert chosen.metric == "val_acc" and chosen.warning is None
    best = compare_to_best(trials)[0]
    assert best.best_label == "a"


def test_the_test_set_chooses_only_with_a_warning() -> None:
    trials = [
        trial("a", s, history([0.1], val_loss=[0.05], val_acc=[0.99]), test_acc=0.99,
              config={"validation": "test"})
        for s in range(2)
    ]  # fmt: skip
    chosen = protocol(trials)
    assert chosen.metric == "test_acc"
    assert chosen.warning is not None and "chosen on the test set" in chosen.warning
    none = [trial("a", 0, history([0.1]), test_acc=0.9, config={"validation": "none"})]
    assert "no validation set" in (protocol(none).warning or "")
