"""Where each net goes wrong, on a real study: two small nets trained for one epoch
on 1,000 MNIST images through the study runner, two seeds each, scored on the first
300 test images, then read back from the store."""

import sqlite3
from contextlib import closing
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml

import cnnlab
from cnnlab.data.datasets import FASHION_MNIST_CLASSES, Dataset, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.reporting.figures import (
    confusion_figure,
    error_figures,
    gallery_figure,
    hard_images_figure,
)
from cnnlab.reporting.mistakes import (
    ConfusedPair,
    confused_pairs,
    confusion_by_label,
    confusion_matrix,
    hard_images,
    misclassified,
    missing_predictions,
)
from cnnlab.studies.results import TrialResult
from cnnlab.studies.runner import run_study
from cnnlab.studies.store import Store
from cnnlab.studies.study import STORE_FILE
from cnnlab.training.loop import as_input
from helpers import TINY_NET, read_png

TEST = 300  # test images scored
VAL = 200
# 32 images a batch and lr 0.003 give ~30 steps: 75-85% right, so some images are
# wrong for both nets, yet the whole study trains in about 6 s on one core.
STUDY = {
    "name": "mistakes",
    "seeds": [0, 1],
    "train": {"epochs": 1, "train_limit": 1000, "test_limit": TEST, "val_size": VAL,
              "batch_size": 32, "lr": 0.003},
    "architectures": [
        {"label": "conv", "spec": {"layers": [
            {"Conv2D": {"filters": 8, "kernel_size": 3, "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 2}},
            "Flatten",
            {"Dense": {"units": 10, "activation": "softmax"}},
        ]}},
        {"label": "dense", "spec": TINY_NET},
    ],
}  # fmt: skip
LABELS = ["conv", "dense"]


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("mistakes")
    path = folder / "mistakes.yaml"
    path.write_text(yaml.safe_dump(STUDY, sort_keys=False))
    run_study(cnnlab.load_study(path), folder / "out")
    return folder / "out" / STORE_FILE


@pytest.fixture(scope="module")
def trials(store_path: Path) -> list[TrialResult]:
    with Store(store_path) as store:
        return store.trials("mistakes")


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    return load_dataset("mnist")


def test_confusion_matrices_count_every_test_answer(
    trials: list[TrialResult], mnist: Dataset
) -> None:
    assert [(t.label, t.seed) for t in trials] == [
        ("conv", 0), ("dense", 0), ("conv", 1), ("dense", 1)]  # fmt: skip
    per_class = np.bincount(mnist.y_test[:TEST].numpy(), minlength=10)
    for trial in trials:
        matrix = confusion_matrix([trial])
        assert matrix.shape == (10, 10) and matrix.sum() == TEST
        assert np.trace(matrix) == round(trial.test_acc * TEST)
        assert list(matrix.sum(axis=1)) == list(per_class)
        assert confusion_matrix([trial], "val").sum() == VAL
    by_label = confusion_by_label(trials)
    assert list(by_label) == LABELS
    for label, matrix in by_label.items():
        seeds = [confusion_matrix([t]) for t in trials if t.label == label]
        assert np.array_equal(matrix, sum(seeds)) and matrix.sum() == 2 * TEST
    assert confusion_matrix(trials).sum() == 4 * TEST


def test_confused_pairs_are_the_largest_off_diagonal_cells(
    trials: list[TrialResult],
) -> None:
    matrix = np.array([[5, 1, 0], [3, 2, 0], [0, 0, 4]])
    assert confused_pairs(matrix) == [
        ConfusedPair(true=1, predicted=0, count=3, share=0.6),
        ConfusedPair(true=0, predicted=1, count=1, share=1 / 6),
    ]  # empty cells are never listed
    real = confusion_by_label(trials)["dense"]
    pairs = confused_pairs(real, top=3)
    off = real - np.diag(np.diag(real))
    assert [p.count for p in pairs] == sorted(off.flat, reverse=True)[:3]
    for pair in pairs:
        assert pair.true != pair.predicted
        assert pair.count == real[pair.true, pair.predicted]
        assert pair.share == pytest.approx(pair.count / real[pair.true].sum())


def test_mistakes_are_real_test_images_the_nets_get_wrong(
    trials: list[TrialResult], mnist: Dataset
) -> None:
    for label in LABELS:
        own = [t for t in trials if t.label == label]
        mistakes = misclassified(own, limit=None)
        answers = np.stack([t.predictions["test"]["predicted"] for t in own])
        truth = mnist.y_test[:TEST].numpy()
        assert {m.index for m in mistakes} == set(
            np.flatnonzero((answers != truth).any(axis=0))
        )
        probs = [m.true_prob for m in mistakes]
        assert probs == sorted(probs) and misclassified(own, limit=5) == mistakes[:5]
        for m in mistakes:
            assert m.true == truth[m.index] != m.predicted
            assert m.seeds == 2 and m.wrong == (answers[:, m.index] != m.true).sum()
            assert m.predicted in answers[:, m.index]
            stored = [float(t.predictions["test"]["true_prob"][m.index]) for t in own]
            assert m.true_prob == pytest.approx(np.mean(stored))
    # The saved nets, run again on the gallery's test images, make the same mistakes.
    first = misclassified([trials[0]], limit=8)
    _, model = cnnlab.load_model(trials[0].run_path)
    images = mnist.x_test[[m.index for m in first]]
    with torch.no_grad():
        predicted = model(as_input(images)).argmax(1)
    assert predicted.tolist() == [m.predicted for m in first]
    with pytest.raises(CnnlabError, match="one label, got 2: 'conv', 'dense'"):
        misclassified(trials)


def test_hard_images_are_wrong_for_every_trial(
    trials: list[TrialResult], mnist: Dataset
) -> None:
    hard = hard_images(trials)
    answers = np.stack([t.predictions["test"]["predicted"] for t in trials])
    truth = mnist.y_test[:TEST].numpy()
    assert sorted(h.index for h in hard) == list(
        np.flatnonzero((answers != truth).all(axis=0))
    )
    assert hard, "one-epoch nets at 75-85% share some mistakes"
    for image in hard:
        assert image.true == truth[image.index]
        assert list(image.predicted) == LABELS
        for label, said in image.predicted.items():
            seeds = [t for t in trials if t.label == label]
            assert said == tuple(
                int(t.predictions["test"]["predicted"][image.index]) for t in seeds
            )
            assert image.true not in said
    probs = [h.true_prob for h in hard]
    assert probs == sorted(probs)


def old_store(store_path: Path, folder: Path, where: str) -> list[TrialResult]:
    """The study's trials from a copy of its store whose trials matching `where`
    lost their predictions, as if recorded before predictions were kept."""
    folder.mkdir(exist_ok=True)
    copy = folder / STORE_FILE
    source, target = sqlite3.connect(store_path), sqlite3.connect(copy)
    with closing(source), closing(target):
        source.backup(target)
        with target:
            target.execute(
                "DELETE FROM predictions WHERE trial_id IN "
                f"(SELECT id FROM trials WHERE {where})"
            )
    with Store(copy) as store:
        return store.trials("mistakes")


def test_trials_without_predictions_are_skipped_and_named(
    store_path: Path, tmp_path: Path, mnist: Dataset
) -> None:
    trials = old_store(store_path, tmp_path, "label='dense' AND seed=1")
    assert trials[3].predictions == {} and trials[3].status == "completed"
    assert missing_predictions(trials) == ["dense"]
    by_label = confusion_by_label(trials)
    assert by_label["dense"].sum() == TEST and by_label["conv"].sum() == 2 * TEST
    dense = [t for t in trials if t.label == "dense"]
    assert {m.seeds for m in misclassified(dense, limit=None)} == {1}
    assert {len(h.predicted["dense"]) for h in hard_images(trials)} == {1}

    trials = old_store(store_path, tmp_path / "none", "label='dense'")
    assert missing_predictions(trials) == ["dense"]
    assert list(confusion_by_label(trials)) == ["conv"]
    with pytest.raises(CnnlabError, match="no trial has test predictions.*'dense'"):
        confusion_matrix([t for t in trials if t.label == "dense"])
    figures = error_figures(
        trials, {"mnist": mnist.x_test}, {"mnist": mnist.class_names}, tmp_path
    )
    # One label left: no hard-images figure, as it would repeat the conv gallery.
    assert list(figures) == ["confusion-conv", "mistakes-conv"]


def test_error_figures_are_valid_pngs(
    trials: list[TrialResult], mnist: Dataset, tmp_path: Path
) -> None:
    folder = tmp_path / "figs"
    figures = error_figures(
        trials, {"mnist": mnist.x_test}, {"mnist": mnist.class_names}, folder
    )
    assert list(figures) == [
        "confusion-conv", "confusion-dense", "mistakes-conv", "mistakes-dense",
        "hard-images"]  # fmt: skip
    assert sorted(folder.iterdir()) == sorted(figures.values())  # no temp files
    for name, path in figures.items():
        assert path == folder / f"{name}.png"
        read_png(path, 700, 350 if name == "hard-images" else 600, exact=False)
    # Fashion-MNIST's long class names, on the same answers.
    matrix = confusion_by_label(trials)["conv"]
    fashion = confusion_figure(
        "conv", matrix, FASHION_MNIST_CLASSES, tmp_path / "f.png", seeds=2
    )
    read_png(fashion, 700, 600, exact=False)
    own = [t for t in trials if t.label == "conv"]
    gallery = gallery_figure(
        "conv", misclassified(own, 7), mnist.x_test, FASHION_MNIST_CLASSES,
        tmp_path / "g.png")  # fmt: skip
    read_png(gallery, 700, 300, exact=False)
    hard = hard_images_figure(
        hard_images(trials), mnist.x_test, FASHION_MNIST_CLASSES, tmp_path / "h.png"
    )
    read_png(hard, 300, 250, exact=False)


def test_figures_say_what_is_missing(
    trials: list[TrialResult], mnist: Dataset, tmp_path: Path
) -> None:
    with pytest.raises(CnnlabError, match=r"images_by_data has no entry .*'mnist'"):
        error_figures(trials, {}, {"mnist": mnist.class_names}, tmp_path)
    with pytest.raises(CnnlabError, match=r"N > \d+, got shape \(10, 28, 28\)"):
        gallery_figure(
            "conv", misclassified(trials[:1]), mnist.x_test[:10], mnist.class_names,
            tmp_path / "g.png")  # fmt: skip
    with pytest.raises(CnnlabError, match="must be 3x3, got shape"):
        confusion_figure("conv", np.eye(10), ["a", "b", "c"], tmp_path / "c.png")
    assert list(tmp_path.iterdir()) == []
