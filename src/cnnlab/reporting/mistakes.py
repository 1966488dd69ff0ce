"""Where each net goes wrong: confusion matrices, most-confused pairs, the test
images a net gets wrong and the ones every net gets wrong.

Pure computations on the per-image answers the store keeps (`TrialResult.predictions`):
no drawing (reporting/figures.py draws) and no data loading. Index i of a split's
answers is the i-th image of that split; for "test", the i-th image of the data set's
test set. Trials recorded before predictions were kept have none: they are skipped,
and `missing_predictions` names their labels so that a report can say so.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.studies.results import TrialResult
from cnnlab.training.config import TrainConfig


@dataclass(frozen=True)
class Answers:
    """One trial's answers on one split, an entry per image."""

    labels: np.ndarray  # (N,) int64: the true class
    predicted: np.ndarray  # (N,) int64: the class the net chose
    true_prob: np.ndarray  # (N,) float64: the probability it gave the true class


@dataclass(frozen=True)
class ConfusedPair:
    """Images of class `true` that were answered `predicted` (summed over seeds)."""

    true: int
    predicted: int
    count: int
    share: float  # count / all answers on images of class `true`


@dataclass(frozen=True)
class Mistake:
    """A test image one label's seeds get wrong."""

    index: int  # in the data set's test set
    true: int
    predicted: int  # the commonest wrong answer over the seeds (ties: lower class)
    true_prob: float  # mean probability of the true class over the seeds
    wrong: int  # seeds that got it wrong
    seeds: int  # seeds that scored it


@dataclass(frozen=True)
class HardImage:
    """A test image every trial with test predictions got wrong."""

    index: int  # in the data set's test set
    true: int
    predicted: dict[str, tuple[int, ...]]  # label -> each seed's answer, trial order
    true_prob: float  # mean probability of the true class over every trial


def answers(trial: TrialResult, split: str = "test") -> Answers | None:
    """The trial's answers on `split`, or None if it has none (an older store)."""
    arrays = trial.predictions.get(split)
    if not arrays:
        return None
    found = Answers(
        labels=np.asarray(arrays["labels"]).astype(np.int64),
        predicted=np.asarray(arrays["predicted"]).astype(np.int64),
        true_prob=np.asarray(arrays["true_prob"]).astype(np.float64),
    )
    sizes = {len(found.labels), len(found.predicted), len(found.true_prob)}
    assert len(sizes) == 1, f"{trial.label} seed {trial.seed}: ragged {split} answers"
    return found


def data_of(trial: TrialResult) -> str:
    """The data set a trial was scored on: 'mnist', 'fashion-mnist' or a folder."""
    return str(trial.config.get("data", TrainConfig.data))


def missing_predictions(
    trials: Sequence[TrialResult], split: str = "test"
) -> list[str]:
    """Labels (first-appearance order) with a finished trial lacking `split`
    predictions: trained before predictions were kept, so left out of the matrices."""
    lacking = [
        trial.label
        for trial in trials
        if trial.status.finished and answers(trial, split) is None
    ]
    return list(dict.fromkeys(lacking))


def confusion_matrix(
    trials: Sequence[TrialResult], split: str = "test", classes: int | None = None
) -> np.ndarray:
    """(classes, classes) int64 counts summed over the trials: rows are the true
    class, columns the predicted one. Trials without `split` answers are skipped.

    Args:
        classes: the data set's class count; by default one more than the highest
            class among the answers.
    """
    scored = _scored(trials, split)
    if not scored:
        raise CnnlabError(
            f"no trial has {split} predictions: the trials of "
            f"{', '.join(map(repr, _labels(trials))) or 'no label'} are unfinished "
            "or were recorded before predictions were kept"
        )
    _one_data_set([trial for trial, _ in scored])
    found = [a for _, a in scored]
    highest = max(int(max(a.labels.max(), a.predicted.max())) for a in found)
    if classes is None:
        classes = highest + 1
    elif highest >= classes:
        raise CnnlabError(
            f"the answers hold class {highest}, but classes={classes}; pass the "
            "data set's class count (len(class_names))"
        )
    matrix = np.zeros((classes, classes), dtype=np.int64)
    for a in found:
        flat = np.bincount(a.labels * classes + a.predicted, minlength=classes**2)
        matrix += flat.reshape(classes, classes)
    return matrix


def confusion_by_label(
    trials: Sequence[TrialResult], split: str = "test", classes: int | None = None
) -> dict[str, np.ndarray]:
    """Each label's confusion matrix summed over its seeds, in first-appearance
    order; labels without `split` answers are left out."""
    matrices = {}
    for label in _labels(trials):
        own = _of_label(trials, label)
        if _scored(own, split):
            matrices[label] = confusion_matrix(own, split, classes)
    return matrices


def confused_pairs(matrix: np.ndarray, top: int = 3) -> list[ConfusedPair]:
    """The `top` off-diagonal cells with the most images, largest first (ties: the
    larger share, then the lower classes); empty cells are never listed."""
    totals = matrix.sum(axis=1)
    cells = [
        ConfusedPair(true, predicted, int(count), int(count) / int(totals[true]))
        for (true, predicted), count in np.ndenumerate(matrix)
        if true != predicted and count > 0
    ]
    cells.sort(key=lambda c: (-c.count, -c.share, c.true, c.predicted))
    return cells[:top]


def misclassified(
    trials: Sequence[TrialResult], limit: int | None = 25
) -> list[Mistake]:
    """The test images one label's seeds get wrong, most confident mistakes first:
    lowest mean probability of the true class, then wrong in more seeds, then
    index. At most `limit` (None: all)."""
    labels = _labels(trials)
    if len(labels) > 1:
        raise CnnlabError(
            f"misclassified() takes the trials of one label, got {len(labels)}: "
            f"{', '.join(map(repr, labels))}; pass [t for t in trials if t.label == "
            "label]"
        )
    scored = [a for _, a in _scored(trials, "test")]
    if not scored:
        return []
    true = _true_classes(scored)
    n = len(true)
    seeds, wrong, prob = np.zeros(n, np.int64), np.zeros(n, np.int64), np.zeros(n)
    votes = np.zeros((n, int(max(a.predicted.max() for a in scored)) + 1), np.int64)
    for a in scored:
        m, miss = len(a.labels), a.predicted != a.labels
        seeds[:m] += 1
        wrong[:m] += miss
        prob[:m] += a.true_prob
        np.add.at(votes, (np.flatnonzero(miss), a.predicted[miss]), 1)
    prob /= seeds
    index = np.flatnonzero(wrong)
    order = index[np.lexsort((index, -wrong[index], prob[index]))][:limit]
    return [
        Mistake(
            index=int(i),
            true=int(true[i]),
            predicted=int(votes[i].argmax()),
            true_prob=float(prob[i]),
            wrong=int(wrong[i]),
            seeds=int(seeds[i]),
        )
        for i in order
    ]


def hard_images(trials: Sequence[TrialResult]) -> list[HardImage]:
    """The test images that every trial with test predictions got wrong (among the
    images all of them scored), lowest mean probability of the true class first."""
    scored = _scored(trials, "test")
    if not scored:
        return []
    _one_data_set([trial for trial, _ in scored])
    n = min(len(a.labels) for _, a in scored)
    true = _true_classes([a for _, a in scored])[:n]
    wrong_everywhere = np.ones(n, dtype=bool)
    prob = np.zeros(n)
    for _, a in scored:
        wrong_everywhere &= a.predicted[:n] != true
        prob += a.true_prob[:n]
    prob /= len(scored)
    index = np.flatnonzero(wrong_everywhere)
    order = index[np.lexsort((index, prob[index]))]
    return [
        HardImage(
            index=int(i),
            true=int(true[i]),
            predicted={
                label: tuple(int(a.predicted[i]) for t, a in scored if t.label == label)
                for label in _labels([t for t, _ in scored])
            },
            true_prob=float(prob[i]),
        )
        for i in order
    ]


def _labels(trials: Sequence[TrialResult]) -> list[str]:
    return list(dict.fromkeys(trial.label for trial in trials))


def _of_label(trials: Sequence[TrialResult], label: str) -> list[TrialResult]:
    return [trial for trial in trials if trial.label == label]


def _scored(
    trials: Sequence[TrialResult], split: str
) -> list[tuple[TrialResult, Answers]]:
    """The trials that have `split` answers, with them, in the given order."""
    pairs = [(trial, answers(trial, split)) for trial in trials]
    return [(trial, found) for trial, found in pairs if found is not None]


def _one_data_set(trials: Sequence[TrialResult]) -> None:
    """Refuse to pool answers on different data sets: their images differ."""
    names = list(dict.fromkeys(map(data_of, trials)))
    if len(names) > 1:
        raise CnnlabError(
            f"the trials were scored on different data sets ({', '.join(names)}), "
            "so their answers cannot be pooled; pass the trials of one data set, "
            "e.g. [t for t in trials if t.config['data'] == 'mnist']"
        )


def _true_classes(scored: Sequence[Answers]) -> np.ndarray:
    """Each image's true class, from the longest answers; all must agree."""
    longest = max(scored, key=lambda a: len(a.labels)).labels
    for a in scored:
        if not np.array_equal(a.labels, longest[: len(a.labels)]):
            first = int(np.flatnonzero(a.labels != longest[: len(a.labels)])[0])
            raise CnnlabError(
                f"the trials disagree about the true class of test image {first} "
                f"({int(a.labels[first])} vs {int(longest[first])}): they were "
                "scored on different images; compare trials of one data set"
            )
    return longest
