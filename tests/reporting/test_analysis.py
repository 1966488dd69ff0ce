"""Statistics, comparison rows and diagnoses on synthetic histories of known shape."""

import math
from collections.abc import Sequence
from typing import Any

import pytest
from scipy import stats

from cnnlab.errors import CnnlabError
from cnnlab.reporting.analysis import (
    ArchRow,
    Stat,
    compare_to_best,
    comparison_rows,
    describe,
    notebook_view,
)
from cnnlab.reporting.diagnosis import (
    DROPOUT_NOTE,
    OVERFIT_RISE,
    diagnose,
    diagnose_all,
    has_dropout,
    shared_notes,
)
from cnnlab.reporting.wording import comparison_text
from cnnlab.studies.results import TrialResult
from helpers import history, trial

# The notebook's section 3 net (412 parameters): its logged running train loss and
# accuracy for 12 epochs, and its test score. Its validation losses are cut off in
# the log, so the ones used with it here are made up, ending at the test loss.
TINY_LOSS = [
    1.9163,
    1.2467,
    1.0484,
    0.9283,
    0.8530,
    0.8090,
    0.7784,
    0.7546,
    0.7296,
    0.7143,
    0.6974,
    0.6839,
]
TINY_ACC = [
    0.3024,
    0.5540,
    0.6328,
    0.6795,
    0.7091,
    0.7254,
    0.7375,
    0.7474,
    0.7583,
    0.7627,
    0.7701,
    0.7731,
]
TINY_VAL_LOSS = [
    1.20,
    0.90,
    0.75,
    0.65,
    0.58,
    0.53,
    0.49,
    0.47,
    0.45,
    0.44,
    0.43,
    0.4243,
]
# The notebook's section 2 net (23M parameters, no dropout), validation not shown.
BIG_LOSS = [
    0.1386,
    0.0376,
    0.0194,
    0.0129,
    0.0094,
    0.0090,
    0.0074,
    0.0054,
    0.0061,
    0.0072,
    0.0029,
    0.0044,
]


def with_test_acc(label: str, values: Sequence[float]) -> list[TrialResult]:
    return [
        trial(label, seed, history([0.1]), test_acc=v) for seed, v in enumerate(values)
    ]


# ---------------------------------------------------------------- describe


def test_describe_three_values_matches_hand_computation() -> None:
    stat = describe([0.98, 0.99, 1.00])
    half = 4.302653 * 0.01 / math.sqrt(3)  # t_{0.975, 2} = 4.302653
    assert stat.n == 3
    assert stat.mean == pytest.approx(0.99, abs=1e-12)
    assert stat.std == pytest.approx(0.01, rel=1e-9)
    assert stat.ci_low == pytest.approx(0.99 - half, rel=1e-6)
    assert stat.ci_high == pytest.approx(0.99 + half, rel=1e-6)


def test_describe_one_value_has_no_spread() -> None:
    assert describe([0.9912]) == Stat(0.9912, None, 1, None, None)
    assert describe([0.9912]).format() == "0.9912"


def test_describe_ignores_none_and_refuses_empty() -> None:
    assert describe([None, 2.0, None, 4.0]).mean == 3.0
    assert describe([None, 2.0, None, 4.0]).n == 2
    with pytest.raises(ValueError, match="at least one value"):
        describe([])
    with pytest.raises(ValueError, match="at least one value"):
        describe([None])


def test_stat_format_mean_and_std_with_scale() -> None:
    stat = describe([0.98, 0.99, 1.00])
    assert stat.format() == "0.9900 ± 0.0100"
    assert stat.format(digits=2, scale=100) == "99.00 ± 1.00"


# ---------------------------------------------------------------- Welch's test


def test_welch_p_value_matches_hand_computation() -> None:
    # a: mean 0.98, variance 0.0001; b: mean 0.97, variance (4+1+1+4)e-4 / 3
    trials = with_test_acc("a", [0.97, 0.98, 0.99]) + with_test_acc(
        "b", [0.95, 0.96, 0.98, 0.99]
    )
    se2_a, se2_b = 0.0001 / 3, (0.001 / 3) / 4
    t = (0.97 - 0.98) / math.sqrt(se2_a + se2_b)
    df = (se2_a + se2_b) ** 2 / (se2_a**2 / 2 + se2_b**2 / 3)
    best, b = compare_to_best(trials)
    assert best.label == best.best_label == "a"
    assert b.difference == pytest.approx(-0.01)
    assert b.p_value == pytest.approx(2 * stats.t.sf(abs(t), df), rel=1e-9)
    assert b.significant is False
    assert comparison_text(b) == (
        f"b: 97.00% vs 98.00% for a, difference -1.00 points, Welch's t-test "
        f"p = {b.p_value:.2g} (n = 4 vs 3): "
        "within seed noise, not a ranking."
    )


def test_welch_textbook_case_students_sleep_data() -> None:
    # R: t.test(extra ~ group, data = sleep) -> t = -1.8608, df = 17.776, p = 0.07939
    group1 = [0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0]
    group2 = [1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4]
    trials = [trial("g1", i, history([0.1]), test_loss=v) for i, v in enumerate(group1)]
    trials += [
        trial("g2", i, history([0.1]), test_loss=v) for i, v in enumerate(group2)
    ]
    _, g2 = compare_to_best(trials, metric="test_loss")
    assert g2.best_label == "g1"
    assert g2.p_value == pytest.approx(0.07939, abs=1e-5)
    assert g2.significant is False


# ---------------------------------------------------------------- compare_to_best


def test_clearly_different_label_is_significant() -> None:
    trials = with_test_acc("tiny", [0.8811, 0.8790, 0.8830]) + with_test_acc(
        "medium", [0.9916, 0.9910, 0.9921]
    )
    tiny, medium = compare_to_best(trials)
    assert (medium.label, medium.best_label, medium.difference) == (
        "medium",
        "medium",
        0.0,
    )
    assert comparison_text(medium) == "medium: 99.16% (n = 3), best test_acc."
    assert medium.p_value is None and medium.significant is None
    assert (
        tiny.significant is True and tiny.p_value is not None and tiny.p_value < 0.001
    )
    assert comparison_text(tiny).startswith(
        "tiny: 88.10% vs 99.16% for medium, difference -11.05 points, Welch's t-test p "
    )
    assert comparison_text(tiny).endswith(
        "(n = 3 vs 3): larger than seed-to-seed noise."
    )


def test_overlapping_noise_is_not_a_ranking() -> None:
    trials = with_test_acc("a", [0.9910, 0.9920, 0.9900]) + with_test_acc(
        "b", [0.9915, 0.9905, 0.9925]
    )
    a, b = compare_to_best(trials, alpha=0.05)
    assert comparison_text(b) == "b: 99.15% (n = 3), best test_acc."
    assert a.p_value is not None and a.p_value > 0.5
    assert a.significant is False
    assert comparison_text(a).endswith("within seed noise, not a ranking.")


def test_one_seed_gives_no_p_value() -> None:
    trials = with_test_acc("one", [0.9800]) + with_test_acc(
        "best", [0.9916, 0.9910, 0.9921]
    )
    one, _ = compare_to_best(trials)
    assert one.p_value is None and one.significant is None
    assert comparison_text(one) == (
        "one: 98.00% vs 99.16% for best, difference -1.16 points (n = 1 vs 3): "
        "only one seed: run more seeds to tell a difference from noise."
    )


def test_zero_variance_on_both_sides_gives_no_p_value() -> None:
    trials = with_test_acc("a", [0.99, 0.99]) + with_test_acc("b", [0.98, 0.98])
    _, b = compare_to_best(trials)
    assert b.p_value is None and b.significant is None
    assert "same value on both sides" in comparison_text(b)


def test_loss_metric_picks_the_lowest() -> None:
    low = [
        trial("low", s, history([0.1]), test_loss=v)
        for s, v in enumerate([0.030, 0.031, 0.029])
    ]
    high = [
        trial("high", s, history([0.1]), test_loss=v)
        for s, v in enumerate([0.050, 0.052, 0.048])
    ]
    high_cmp, low_cmp = compare_to_best(high + low, metric="test_loss")
    assert high_cmp.best_label == low_cmp.label == "low"
    assert high_cmp.difference == pytest.approx(0.02)
    assert comparison_text(high_cmp).startswith(
        "high: 0.0500 vs 0.0300 for low, difference +0.0200, "
    )


def test_history_metrics_and_missing_metrics() -> None:
    trials = [trial("a", 0, history([0.3, 0.2], val_loss=[0.2, 0.1]))]
    assert (
        comparison_text(compare_to_best(trials, metric="val_loss")[0])
        == "a: 0.1000 (n = 1), best val_loss."
    )
    assert compare_to_best(trials, metric="test_acc") == []


def test_unknown_metric_suggests_a_close_name() -> None:
    with pytest.raises(
        CnnlabError, match=r"unknown metric 'test_accuracy'\. Did you mean 'test_acc'\?"
    ):
        compare_to_best([], metric="test_accuracy")


# ---------------------------------------------------------------- comparison rows


def two_labels() -> list[TrialResult]:
    """Labels b then a, 3 seeds each, interleaved; plus trials with no epochs."""
    trials = [trial("c", 0)]  # still running, no epoch yet: no row
    for seed in range(3):
        val_b = [[0.09, 0.05, 0.06], [0.09, 0.06, 0.05], [0.09, 0.07, 0.05]][seed]
        trials.append(
            trial(
                "b",
                seed,
                history([0.3, 0.1, 0.05], val_loss=val_b, seconds=[1.0, 3.0, 2.0]),
                test_acc=0.99,
                test_loss=0.03,
            )
        )
        acc_a = [0.5, [0.98, 0.99, 1.00][seed]]
        status = "stopped_early" if seed == 1 else "completed"
        trials.append(
            trial(
                "a",
                seed,
                history([0.9, 0.5], acc=acc_a, seconds=[4.0, 4.0 + seed]),
                status=status,
                train_clean_loss=0.4 + seed / 10,
            )
        )
    return [*trials, trial("a", 9)]


def test_comparison_rows_order_and_statistics() -> None:
    b, a = comparison_rows(two_labels())
    assert isinstance(a, ArchRow)
    assert (b.label, a.label) == ("b", "a")
    assert (a.seeds, a.arch_name, a.params, a.stopped_early) == (3, "net-a", 412, 1)
    assert a.final_acc.mean == pytest.approx(0.99) and a.final_acc.std == pytest.approx(
        0.01
    )
    assert a.final_loss.mean == pytest.approx(
        0.5
    ) and a.final_loss.std == pytest.approx(0.0)
    assert a.seconds_per_epoch.mean == pytest.approx(4.5)  # per trial 4.0, 4.5, 5.0
    assert a.clean_loss is not None and a.clean_loss.mean == pytest.approx(0.5)
    assert a.best_epoch is None and a.val_loss is None and a.test_acc is None
    assert b.best_epoch is not None
    assert (b.best_epoch.mean, b.best_epoch.std) == (
        pytest.approx(8 / 3),
        pytest.approx(math.sqrt(1 / 3)),
    )
    assert b.val_loss is not None and b.val_loss.mean == pytest.approx(0.16 / 3)
    assert b.seconds_per_epoch == describe([2.0, 2.0, 2.0])
    assert b.clean_loss is None and b.clean_acc is None and b.stopped_early == 0
    assert b.test_acc is not None and b.test_acc.format() == "0.9900 ± 0.0000"


def test_notebook_view_keeps_the_notebook_columns() -> None:
    b, a = notebook_view(comparison_rows(two_labels()))
    assert b == {
        "label": "b",
        "Optimizer": "adam",
        "Train Accuracy": "0.9500",
        "Train Loss": "0.0500",
        "Test Accuracy": "0.9900",
        "Test Loss": "0.0300",
    }
    assert (a["Train Accuracy"], a["Test Accuracy"], a["Test Loss"]) == (
        "0.9900",
        "—",
        "—",
    )


# ---------------------------------------------------------------- diagnosis


def seeds_around(
    label: str, loss: list[float], val_loss: list[float] | None, **extra: Any
) -> list[TrialResult]:
    """Three seeds whose per-epoch mean is exactly the given curves."""
    trials = []
    for seed, shift in enumerate([-0.001, 0.0, 0.001]):
        val = None if val_loss is None else [v + shift for v in val_loss]
        trials.append(
            trial(
                label, seed, history([x - shift for x in loss], val_loss=val), **extra
            )
        )
    return trials


def test_u_shaped_validation_loss_is_overfitting_at_the_turning_epoch() -> None:
    loss = [0.2000, 0.0800, 0.0500, 0.0350, 0.0250, 0.0180, 0.0120]
    val_loss = [0.0600, 0.0450, 0.0360, 0.0312, 0.0340, 0.0400, 0.0480]
    d = diagnose(
        "wide", seeds_around("wide", loss, val_loss, test_acc=0.988), best_acc=0.99
    )
    assert d.verdict == "overfitting"
    assert (
        "Validation loss bottomed at epoch 4 (0.0312) and rose 54% to 0.0480 by epoch "
        "7 while training loss fell to 0.0120." in d.findings
    )
    assert d.text.startswith(
        "Mean of 3 seeds after 7 epochs, loss (accuracy): running train 0.0120"
    )
    assert d.advice.startswith("Stop at epoch 4,")
    assert d.text == " ".join((*d.findings, d.advice))


def test_high_flat_losses_and_low_accuracy_are_underfitting() -> None:
    trials = [
        trial(
            "tiny",
            0,
            history(TINY_LOSS, TINY_VAL_LOSS, acc=TINY_ACC),
            test_loss=0.4243,
            test_acc=0.8811,
        )
    ]
    d = diagnose("tiny", trials, best_acc=0.9916)
    assert d.verdict == "underfitting"
    assert "running training loss is still 0.6839 (above 0.2)" in d.text
    assert (
        "validation accuracy 57.57% is 41.59 points below the best net's 99.16%"
        in d.text
    )
    # its running loss is also above validation loss, but that is not the evidence
    assert "the accuracy, not this gap, shows the underfitting" in d.text
    assert "confirmed by" not in d.text
    assert "more filters" in d.advice


def test_train_loss_above_validation_with_clean_loss_below_is_dropout_gap() -> None:
    loss = [0.300, 0.120, 0.090, 0.075, 0.065]
    val_loss = [0.090, 0.060, 0.050, 0.045, 0.040]
    trials = seeds_around(
        "drop", loss, val_loss, train_clean_loss=0.025, test_acc=0.9905
    )
    d = diagnose("drop", trials, best_acc=0.9916)
    assert d.verdict == "dropout gap"
    assert (
        "Running training loss ends 0.0250 above validation loss (0.0650 vs 0.0400), "
        "the dropout gap, confirmed by the clean training loss 0.0250." in d.findings
    )
    # the explanation is the report's, once, not repeated per net
    assert "training mode (dropout on)" not in d.text
    assert shared_notes([d, d]) == [DROPOUT_NOTE]
    assert "training mode (dropout on)" in DROPOUT_NOTE
    assert d.advice == "Nothing to fix."


def test_without_dropout_the_gap_is_the_running_mean_not_dropout() -> None:
    loss = [0.300, 0.120, 0.090, 0.075, 0.065]
    val_loss = [0.090, 0.060, 0.050, 0.045, 0.040]
    dense = {"layers": [{"type": "Flatten"}, {"type": "Dense", "units": 10}]}
    trials = seeds_around("plain", loss, val_loss, train_clean_loss=0.025, spec=dense)
    d = diagnose("plain", trials, best_acc=None)
    assert d.verdict == "good fit"
    assert "dropout" not in d.text
    assert "the mean over an epoch in which the net was still improving" in d.text
    assert shared_notes([d]) == []
    with_dropout = {
        "name": "dropout-free name",
        "layers": [{"type": "Dense", "units": 10}, {"type": "Dropout", "rate": 0.5}],
    }
    trials = seeds_around("drop", loss, val_loss, spec=with_dropout)
    assert diagnose("drop", trials, best_acc=None).verdict == "dropout gap"
    assert not has_dropout({"name": "dropout", "layers": [{"type": "Dense"}]})


def test_dropout_gap_that_clean_loss_does_not_explain_says_so() -> None:
    trials = seeds_around(
        "drop",
        [0.30, 0.12, 0.09, 0.075, 0.065],
        [0.09, 0.06, 0.05, 0.045, 0.040],
        train_clean_loss=0.05,
    )
    d = diagnose("drop", trials, best_acc=None)
    assert d.verdict == "dropout gap"
    assert "clean training loss 0.0500 is not below it either" in d.text


def test_both_losses_falling_is_a_good_fit_that_may_want_more_epochs() -> None:
    loss = [0.300, 0.100, 0.060, 0.045, 0.035]
    val_loss = [0.120, 0.070, 0.050, 0.042, 0.036]
    d = diagnose(
        "ok", seeds_around("ok", loss, val_loss, test_acc=0.9910), best_acc=0.9916
    )
    assert d.verdict == "good fit"
    assert "validation 0.0360 (96.40%)" in d.text
    assert (
        "Over the last 3 epochs validation loss changed by -0.0070 per epoch (19.4% of its final value): still falling."
        in d.text
    )
    assert "more epochs may help" in d.advice


def test_levelled_off_curve_with_a_small_rise_is_still_a_good_fit() -> None:
    loss = [0.300, 0.100, 0.060, 0.045, 0.035, 0.030]
    val_loss = [0.120, 0.070, 0.050, 0.0300, 0.0310, 0.0305]
    d = diagnose("flat", seeds_around("flat", loss, val_loss), best_acc=None)
    assert d.verdict == "good fit"
    assert (
        f"Validation loss bottomed at epoch 4 (0.0300) and ends 2% above it, within "
        f"the {OVERFIT_RISE:.0%} that counts as overfitting." in d.findings
    )
    assert "levelled off" in d.text and "unlikely" in d.advice


def test_two_epochs_are_too_short_to_tell() -> None:
    d = diagnose(
        "short", seeds_around("short", [0.30, 0.10], [0.09, 0.12]), best_acc=None
    )
    assert d.verdict == "too short to tell"
    assert "after 2 epochs" in d.text and "2 epochs is too few to see a trend" in d.text
    assert "Validation loss bottomed" not in d.text
    assert "at least 3 epochs" in d.advice


def test_without_validation_the_train_test_gap_decides() -> None:
    big = [trial("big", 0, history(BIG_LOSS), test_loss=0.0672, test_acc=0.987)]
    d = diagnose("big", big, best_acc=0.9919)
    assert d.verdict == "overfitting"
    assert (
        "Test loss ends at 0.0672, 0.0628 above the running training loss 0.0044"
        in d.text
    )
    assert "Validation was off" in d.text and d.text.startswith(
        "One seed after 12 epochs"
    )
    assert d.advice.startswith("Turn validation on")

    fine = [
        trial(
            "fine",
            0,
            history([0.2, 0.05, 0.03, 0.0174]),
            test_loss=0.0304,
            test_acc=0.9919,
        )
    ]
    d = diagnose("fine", fine, best_acc=0.9919)
    assert d.verdict == "good fit"
    assert "test 0.0304 (99.19%)" in d.text and "Validation was off" in d.text
    assert "training loss changed by" in d.text


def test_seeds_of_different_lengths_are_averaged_by_epoch() -> None:
    trials = [
        trial("r", 0, history([0.3, 0.1, 0.05], val_loss=[0.1, 0.06, 0.05])),
        trial("r", 1, history([0.5, 0.2], val_loss=[0.2, 0.08])),
        trial("other", 0, history([9.0, 9.0, 9.0])),
    ]
    d = diagnose("r", trials, best_acc=None)
    assert "Mean of 2 seeds after 3 epochs" in d.text
    assert "Seeds ran 3 and 2 epochs" in d.text
    with pytest.raises(ValueError, match="no trial of label 'missing'"):
        diagnose("missing", trials, best_acc=None)


def test_diagnose_all_measures_against_the_best_label() -> None:
    tiny = [
        trial(
            "tiny", 0, history(TINY_LOSS, TINY_VAL_LOSS, acc=TINY_ACC), test_acc=0.8811
        )
    ]
    medium = seeds_around(
        "medium",
        [0.3, 0.1, 0.06, 0.045, 0.035],
        [0.12, 0.07, 0.05, 0.042, 0.036],
        test_acc=0.9916,
    )
    tiny_d, medium_d = diagnose_all(tiny + medium + [trial("empty", 0)])
    assert (tiny_d.label, tiny_d.verdict) == ("tiny", "underfitting")
    # measured on validation, which chooses: the best is medium's validation mean
    best_val = sum(t.history[-1]["val_acc"] for t in medium) / len(medium)
    assert f"below the best net's {best_val:.2%}" in tiny_d.text
    assert (medium_d.label, medium_d.verdict) == ("medium", "good fit")
