"""Comparison rows and seed statistics: means, intervals, Welch's t-tests with
Holm's correction, and the protocol that says what chose the best.

The best architecture is chosen on validation whenever a hold-out exists; test
metrics are reported beside it and choose nothing. Only when validation *is* the
test set (or there is none) does the test set choose, and `Protocol.warning` says so.

Reads only `TrialResult` records, so every number here can be checked on synthetic
histories; report.py renders what this module computes and decides nothing itself.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass, replace
from enum import StrEnum
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.reporting.paired import McNemar, binomial_se, holm, mcnemar, mcnemar_p
from cnnlab.studies.results import TrialResult
from cnnlab.training.status import Status
from cnnlab.util.text import did_you_mean

# 95% is the convention; with 3 seeds t = 4.30, so the intervals are honestly wide.
CONFIDENCE = 0.95
# Welch's test at the usual 1-in-20 false-alarm rate per comparison.
ALPHA = 0.05
# Metrics a comparison can rank on; test_* and train_clean_* come from the trial,
# the others from its last epoch.
METRICS = (
    "test_acc",
    "test_loss",
    "val_acc",
    "val_loss",
    "acc",
    "loss",
    "train_clean_acc",
    "train_clean_loss",
)
_FROM_TRIAL = ("test_acc", "test_loss", "train_clean_acc", "train_clean_loss")


# ---------------------------------------------------------------- statistics


@dataclass(frozen=True)
class Stat:
    """Mean of a metric over seeds, with its sample spread and 95% t interval."""

    mean: float
    std: float | None  # sample std (ddof=1); None when n == 1
    n: int
    ci_low: float | None  # 95% t interval of the mean; None when n == 1
    ci_high: float | None

    def format(self, digits: int = 4, scale: float = 1.0) -> str:
        """'mean ± std' (or just the mean for one seed); scale=100 gives percents."""
        mean = f"{self.mean * scale:.{digits}f}"
        if self.std is None:
            return mean
        return f"{mean} ± {self.std * scale:.{digits}f}"


def describe(values: Sequence[float | None]) -> Stat:
    """Mean, sample std and 95% t interval of the values, ignoring None."""
    xs = [float(v) for v in values if v is not None]
    if not xs:
        raise ValueError("describe() needs at least one value that is not None")
    n = len(xs)
    mean = math.fsum(xs) / n
    if n == 1:
        return Stat(mean, None, 1, None, None)
    from scipy import stats  # ~0.6 s to import: paid only when statistics are asked for

    std = float(np.std(xs, ddof=1))
    half = float(stats.t.ppf((1 + CONFIDENCE) / 2, n - 1)) * std / math.sqrt(n)
    return Stat(mean, std, n, mean - half, mean + half)


def _describe_or_none(values: Sequence[float | None]) -> Stat | None:
    """describe(), or None when no value was recorded."""
    if all(v is None for v in values):
        return None
    return describe(values)


# ---------------------------------------------------------------- comparison rows


@dataclass(frozen=True)
class ArchRow:
    """One row of the comparison table: one architecture label over its seeds."""

    label: str
    arch_name: str
    optimizer: str
    params: int
    flops: int
    seeds: int
    seconds_per_epoch: Stat  # mean epoch seconds per trial, then across seeds
    best_epoch: Stat | None  # epoch of minimum val_loss; None without validation
    final_loss: Stat  # last epoch's running (Keras-style) train metrics
    final_acc: Stat
    clean_loss: Stat | None  # train_clean_*; None if not recorded
    clean_acc: Stat | None
    val_loss: Stat | None  # last epoch's validation metrics
    val_acc: Stat | None
    test_loss: Stat | None
    test_acc: Stat | None
    stopped_early: int  # trials with status 'stopped_early'
    test_images: int | None = None  # images in the test set; None if not recorded
    test_reads: int | None = None  # most test-set reads of any of its trials

    @property
    def test_se(self) -> float | None:
        """Binomial standard error of the mean test accuracy on `test_images`
        images: the test set's own sampling error, there even with one seed."""
        if self.test_acc is None or not self.test_images:
            return None
        return binomial_se(self.test_acc.mean, self.test_images)


def comparison_rows(trials: Sequence[TrialResult]) -> list[ArchRow]:
    """One row per label, in first-appearance order, over trials with a history."""
    return [_arch_row(group) for group in group_by_label(trials).values()]


def group_by_label(trials: Sequence[TrialResult]) -> dict[str, list[TrialResult]]:
    """Trials with at least one epoch, by label; dicts keep first-appearance order."""
    groups: dict[str, list[TrialResult]] = {}
    for trial in trials:
        if trial.history:
            groups.setdefault(trial.label, []).append(trial)
    return groups


def _arch_row(group: list[TrialResult]) -> ArchRow:
    """Summarise one label's trials; the study gives all seeds of a label one net."""
    first = group[0]

    def over_seeds(metric: str) -> Stat | None:
        return _describe_or_none([metric_value(t, metric) for t in group])

    final_loss, final_acc = over_seeds("loss"), over_seeds("acc")
    assert final_loss is not None and final_acc is not None  # every epoch has them
    return ArchRow(
        label=first.label,
        arch_name=first.arch_name,
        optimizer=first.optimizer,
        params=first.params,
        flops=first.flops,
        seeds=len(group),
        seconds_per_epoch=describe(
            [mean_of([r.get("seconds") for r in t.history]) for t in group]
        ),
        best_epoch=_describe_or_none([_best_epoch(t) for t in group]),
        final_loss=final_loss,
        final_acc=final_acc,
        clean_loss=over_seeds("train_clean_loss"),
        clean_acc=over_seeds("train_clean_acc"),
        val_loss=over_seeds("val_loss"),
        val_acc=over_seeds("val_acc"),
        test_loss=over_seeds("test_loss"),
        test_acc=over_seeds("test_acc"),
        stopped_early=sum(t.status == Status.STOPPED_EARLY for t in group),
        test_images=test_images(group),
        test_reads=max(
            (t.test_reads for t in group if t.test_reads is not None), default=None
        ),
    )


def test_images(trials: Sequence[TrialResult]) -> int | None:
    """How many test images the trials were scored on (from their predictions)."""
    sizes = {
        len(t.predictions["test"]["labels"]) for t in trials if "test" in t.predictions
    }
    return sizes.pop() if len(sizes) == 1 else None


def metric_value(trial: TrialResult, metric: str) -> float | None:
    """A trial's value of one of METRICS; None when it was not recorded."""
    if metric in _FROM_TRIAL:
        value = getattr(trial, metric)
    else:
        value = trial.history[-1].get(metric) if trial.history else None
    return None if value is None else float(value)


def _best_epoch(trial: TrialResult) -> int | None:
    """The (1-based) epoch of minimum validation loss; None without validation."""
    rows = [r for r in trial.history if r.get("val_loss") is not None]
    if not rows:
        return None
    return int(min(rows, key=lambda r: r["val_loss"])["epoch"])


def mean_of(values: Sequence[Any]) -> float | None:
    """Mean of the values that are not None; None if there are none."""
    xs = [float(v) for v in values if v is not None]
    return math.fsum(xs) / len(xs) if xs else None


# ---------------------------------------------------------------- protocol


@dataclass(frozen=True)
class Protocol:
    """What chose the best architecture, and how often the test set was read."""

    metric: str  # the metric the best is chosen on, e.g. "val_acc"
    validation: str  # holdout | test | none | mixed (trials differ)
    test_reads: tuple[int, int] | None  # (fewest, most) reads per trial

    @property
    def chosen_on_test(self) -> bool:
        return self.metric.startswith("test") or self.validation == "test"

    @property
    def warning(self) -> str | None:
        """The visible caveat when the test set chose the winner."""
        if not self.chosen_on_test:
            return None
        why = {
            "test": "validation was the test set",
            "none": "there was no validation set",
        }.get(self.validation, "not every trial had a hold-out validation set")
        return (
            f"Warning: the ranking was chosen on the test set ({why}), so the best "
            "net's test accuracy is optimistic. Hold out validation images "
            "(validation: holdout) for an unbiased choice."
        )

    @property
    def reads_text(self) -> str | None:
        if self.test_reads is None:
            return None
        low, high = self.test_reads
        times = f"{low} time" + ("s" if low != 1 else "")
        if low != high:
            times = f"{low} to {high} times"
        return f"Each trial read the test set {times}."


def protocol(trials: Sequence[TrialResult]) -> Protocol:
    """Choose on validation accuracy whenever every trial held out validation
    images; otherwise the test set chooses (and the protocol warns)."""
    kinds = {t.config.get("validation", "holdout") for t in trials} or {"holdout"}
    validation = kinds.pop() if len(kinds) == 1 else "mixed"
    has_test = any(t.test_acc is not None for t in trials)
    has_val = all(
        t.history and t.history[-1].get("val_acc") is not None for t in trials
    )
    if validation == "holdout" and has_val or not has_test:
        metric = "val_acc"
    else:
        metric = "test_acc"
    reads = [t.test_reads for t in trials if t.test_reads is not None]
    return Protocol(metric, validation, (min(reads), max(reads)) if reads else None)


# ---------------------------------------------------------------- significance


@dataclass(frozen=True)
class Comparison:
    """One label against the best label on one metric: Welch's t-test, with the
    p-value Holm-corrected over the `family` comparisons with the best. Numbers
    only: `cnnlab.reporting.wording.comparison_text` says it in a sentence."""

    label: str
    best_label: str
    metric: str  # one of METRICS, e.g. "val_acc"
    difference: float  # mean(label) - mean(best)
    p_value: float | None  # None with < 2 seeds on a side or no variance at all
    significant: bool | None  # on the Holm-adjusted p
    p_holm: float | None = None
    mean: float = math.nan  # this label's mean over seeds
    best_mean: float = math.nan
    n: int = 0  # seeds on this side
    best_n: int = 0
    untested: Untested | None = None  # why the t-test could not run
    family: int = 0  # comparisons Holm's correction ran over


class Untested(StrEnum):
    """Why a comparison has no p-value."""

    ONE_SEED = "one seed"
    NOT_FINITE = "not finite"
    NO_VARIANCE = "no variance"


def compare_to_best(
    trials: Sequence[TrialResult], metric: str | None = None, alpha: float = ALPHA
) -> list[Comparison]:
    """Each label (first-appearance order) against the best mean on the metric
    (by default the one `protocol` chooses on)."""
    metric = metric or protocol(trials).metric
    _check_metric(metric)
    samples: dict[str, list[float]] = {}
    for label, group in group_by_label(trials).items():
        values = [metric_value(t, metric) for t in group]
        if any(v is not None for v in values):
            samples[label] = [v for v in values if v is not None]
    if not samples:
        return []
    best = best_label(samples, lower_is_better=metric.endswith("loss"))
    tests = {
        label: _welch(values, samples[best])
        for label, values in samples.items()
        if label != best
    }
    adjusted = dict(zip(tests, holm([p for p, _ in tests.values()]), strict=True))
    return [
        _compare(
            label,
            values,
            best,
            samples[best],
            metric,
            alpha,
            tests.get(label, (None, None)),
            adjusted.get(label),
            len(tests),
        )
        for label, values in samples.items()
    ]


def _check_metric(metric: str) -> None:
    """Refuse a metric this module cannot read, suggesting the closest name."""
    if metric in METRICS:
        return
    hint = did_you_mean(metric, METRICS)
    raise CnnlabError(
        f"unknown metric '{metric}'.{hint} Choose one of: {', '.join(METRICS)}."
    )


def best_label(samples: dict[str, list[float]], lower_is_better: bool) -> str:
    """The label with the best mean; a NaN mean (a diverged seed) ranks last."""

    def score(label: str) -> float:
        mean = math.fsum(samples[label]) / len(samples[label])
        if math.isnan(mean):
            return -math.inf
        return -mean if lower_is_better else mean

    return max(samples, key=score)  # max keeps the first of equal scores


def _compare(
    label: str,
    values: list[float],
    best: str,
    best_values: list[float],
    metric: str,
    alpha: float,
    test: tuple[float | None, Untested | None],
    p_holm: float | None,
    family: int,
) -> Comparison:
    """Compare one label's per-seed values with the best label's."""
    mean = math.fsum(values) / len(values)
    best_mean = math.fsum(best_values) / len(best_values)
    same = Comparison(
        label,
        best,
        metric,
        0.0,
        None,
        None,
        mean=mean,
        best_mean=best_mean,
        n=len(values),
        best_n=len(best_values),
        family=family,
    )
    if label == best:
        return same
    p, untested = test
    significant = None if p_holm is None else p_holm < alpha
    return replace(
        same,
        difference=mean - best_mean,
        p_value=p,
        significant=significant,
        p_holm=p_holm,
        untested=untested,
    )


def _welch(a: list[float], b: list[float]) -> tuple[float | None, Untested | None]:
    """Welch's two-sided p-value, or None and the reason the test cannot run."""
    if min(len(a), len(b)) < 2:
        return None, Untested.ONE_SEED
    if not all(math.isfinite(v) for v in a + b):
        return None, Untested.NOT_FINITE
    if max(a) == min(a) and max(b) == min(b):
        # the t statistic would divide by zero: there is no noise to measure against
        return None, Untested.NO_VARIANCE
    from scipy import stats  # ~0.6 s to import: paid only when statistics are asked for

    return float(stats.ttest_ind(a, b, equal_var=False).pvalue), None


# ---------------------------------------------------------------- notebook view


def notebook_view(rows: Sequence[ArchRow]) -> list[dict[str, str]]:
    """The notebook's conclusion table: seed means to 4 decimals, one dict per arch."""
    return [
        {
            "label": row.label,
            "Optimizer": row.optimizer,
            "Train Accuracy": _mean_text(row.final_acc),
            "Train Loss": _mean_text(row.final_loss),
            "Test Accuracy": _mean_text(row.test_acc),
            "Test Loss": _mean_text(row.test_loss),
        }
        for row in rows
    ]


def _mean_text(stat: Stat | None) -> str:
    return "—" if stat is None else f"{stat.mean:.4f}"


# ---------------------------------------------------------------- the test set's say


@dataclass(frozen=True)
class TestSetCheck:
    """One label against the best on the test images themselves: the accuracy gap
    beside the test set's own sampling error, and McNemar's exact test on the
    images both nets were scored on (per matched seed, and pooled)."""

    label: str
    best_label: str
    difference: float | None  # mean test accuracy minus the best's
    sampling_error: float | None  # binomial SE of the best's test accuracy
    per_seed: tuple[tuple[int, McNemar], ...]
    pooled: McNemar | None  # discordant counts summed over the matched seeds
    test_images: int | None = None  # images the best net's test accuracy is over


def test_set_checks(trials: Sequence[TrialResult], best: str) -> list[TestSetCheck]:
    """A check per label other than `best` that has test scores."""
    groups = group_by_label(trials)
    if best not in groups:
        return []
    rows = {r.label: r for r in comparison_rows(trials)}
    return [
        _test_set_check(label, group, best, groups[best], rows[label], rows[best])
        for label, group in groups.items()
        if label != best and rows[label].test_acc is not None
    ]


def _test_set_check(
    label: str,
    group: list[TrialResult],
    best: str,
    best_group: list[TrialResult],
    row: ArchRow,
    best_row: ArchRow,
) -> TestSetCheck:
    by_seed = {t.seed: t for t in best_group if "test" in t.predictions}
    per_seed = []
    for t in group:
        other = by_seed.get(t.seed)
        if other is None or "test" not in t.predictions:
            continue
        mine, theirs = t.predictions["test"], other.predictions["test"]
        if not np.array_equal(mine["labels"], theirs["labels"]):
            continue  # scored on other images: no pairing
        per_seed.append(
            (
                t.seed,
                mcnemar(
                    mine["predicted"] == mine["labels"],
                    theirs["predicted"] == theirs["labels"],
                ),
            )
        )
    pooled = None
    if per_seed:
        only_a = sum(m.only_a for _, m in per_seed)
        only_b = sum(m.only_b for _, m in per_seed)
        n = sum(m.n for _, m in per_seed)
        pooled = McNemar(only_a, only_b, n, mcnemar_p(only_a, only_b))
    assert row.test_acc is not None
    difference = (
        None
        if best_row.test_acc is None
        else row.test_acc.mean - best_row.test_acc.mean
    )
    return TestSetCheck(
        label,
        best,
        difference,
        best_row.test_se,
        tuple(per_seed),
        pooled,
        best_row.test_images,
    )
