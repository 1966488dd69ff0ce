"""Cross-dataset studies: the same nets on several data sets, and whether the data
sets rank them alike (Kendall's tau between each pair of rankings)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from cnnlab.reporting.analysis import Stat, comparison_rows
from cnnlab.reporting.paired import RankAgreement, kendall
from cnnlab.studies.results import TrialResult
from cnnlab.studies.study import base_label, data_name


def by_data(trials: Sequence[TrialResult]) -> dict[str, list[TrialResult]]:
    """Trials by the short name of their data set, in first-appearance order."""
    groups: dict[str, list[TrialResult]] = {}
    for trial in trials:
        groups.setdefault(data_name(trial.config.get("data", "mnist")), []).append(
            trial
        )
    return groups


@dataclass(frozen=True)
class CrossRow:
    """One net's accuracy on each data set (None where it has no trial there)."""

    label: str
    ranked: dict[str, Stat | None]  # the metric the ranking uses, per data set
    test: dict[str, Stat | None]  # test accuracy, per data set


@dataclass(frozen=True)
class CrossData:
    datas: tuple[str, ...]
    metric: str  # what ranks the nets: val_acc with a hold-out, else test_acc
    rows: tuple[CrossRow, ...]
    agreement: tuple[tuple[str, str, RankAgreement], ...]  # per pair of data sets


def cross_dataset(trials: Sequence[TrialResult], metric: str) -> CrossData | None:
    """Per net, its accuracy on each data set and the ranking agreement; None for a
    study on a single data set."""
    groups = by_data(trials)
    if len(groups) < 2:
        return None
    per_data = {}
    for name, group in groups.items():
        data = group[0].config.get("data", "mnist")
        per_data[name] = {
            base_label(row.label, data): row for row in comparison_rows(group)
        }
    labels = list(dict.fromkeys(lab for rows in per_data.values() for lab in rows))
    key = "val_acc" if metric.startswith("val") else "test_acc"
    rows = tuple(
        CrossRow(
            label,
            {d: _stat(per_data[d].get(label), key) for d in per_data},
            {d: _stat(per_data[d].get(label), "test_acc") for d in per_data},
        )
        for label in labels
    )
    datas = tuple(per_data)
    agreement = []
    for i, a in enumerate(datas):
        for b in datas[i + 1 :]:
            both = [r for r in rows if r.ranked[a] is not None and r.ranked[b]]
            agreement.append(
                (
                    a,
                    b,
                    kendall(
                        [r.ranked[a].mean for r in both],  # type: ignore[union-attr]
                        [r.ranked[b].mean for r in both],
                    ),
                )  # type: ignore[union-attr]
            )
    return CrossData(datas, key, rows, tuple(agreement))


def _stat(row: object, key: str) -> Stat | None:
    return None if row is None else getattr(row, key)


def agreement_text(a: str, b: str, result: RankAgreement) -> str:
    """One sentence on whether two data sets rank the nets alike."""
    if result.tau is None or result.p_value is None:
        return (
            f"{a} vs {b}: {result.n} nets with scores on both, too few (or all "
            "equal) to compare rankings."
        )
    strength = "agree" if result.tau > 0 else "disagree"
    p = "p < 0.0001" if result.p_value < 1e-4 else f"p = {result.p_value:.2g}"
    return (
        f"{a} vs {b}: the rankings of {result.n} nets {strength}, Kendall's tau = "
        f"{result.tau:+.2f} ({p}; exact for small n)."
    )
