"""Tests for cnnlab.plots: real PNG files written to tmp_path and read back."""

import math
from pathlib import Path

import numpy as np
import pytest

import cnnlab
from cnnlab.errors import CnnlabError
from cnnlab.training import session
from cnnlab.training.config import TrainConfig
from cnnlab.training.curves import plot_histories, plot_history
from cnnlab.training.loop import StopTraining
from cnnlab.training.status import Status
from helpers import read_png

FULL = {
    "loss": [2.1, 0.9, 0.5, 0.35],
    "acc": [0.41, 0.72, 0.85, 0.9],
    "val_loss": [1.4, 0.8, 0.6, 0.62],
    "val_acc": [0.55, 0.75, 0.82, 0.83],
}


def coloured_pixels(pixels: np.ndarray) -> int:
    """How many pixels are clearly coloured (curves), not black/grey/white text."""
    spread = pixels.max(axis=2).astype(int) - pixels.min(axis=2).astype(int)
    return int((spread > 80).sum())


def only_file(folder: Path) -> Path:
    """The single entry of folder, failing if temporary files were left behind."""
    entries = list(folder.iterdir())
    assert len(entries) == 1, entries
    return entries[0]


def test_full_history(tmp_path: Path) -> None:
    target = tmp_path / "curves.png"
    assert plot_history(FULL, target, title="lenet") == target
    assert only_file(tmp_path) == target
    pixels = read_png(target, 800, 300, exact=False)
    # Two panels side by side: wider than tall.
    assert pixels.shape[1] > 2 * pixels.shape[0]
    assert coloured_pixels(pixels) > 1000


def test_one_epoch_history(tmp_path: Path) -> None:
    history = {"loss": [0.7], "acc": [0.8], "val_loss": [0.6], "val_acc": [0.81]}
    pixels = read_png(
        plot_history(history, tmp_path / "one.png"), 800, 300, exact=False
    )
    # A single epoch is drawn as dots, which must still show up.
    assert coloured_pixels(pixels) > 50


def test_history_without_validation(tmp_path: Path) -> None:
    train_only = {"loss": FULL["loss"], "acc": FULL["acc"]}
    with_none = {**train_only, "val_loss": None, "val_acc": [None] * 4}
    first = read_png(
        plot_history(train_only, tmp_path / "a.png"), 800, 300, exact=False
    )
    second = read_png(
        plot_history(with_none, tmp_path / "b.png"), 800, 300, exact=False
    )
    assert np.array_equal(first, second)
    full = read_png(plot_history(FULL, tmp_path / "c.png"), 800, 300, exact=False)
    # Validation curves add a second coloured line to each panel.
    assert coloured_pixels(full) > coloured_pixels(first)


def test_gaps_and_diverged_values_are_tolerated(tmp_path: Path) -> None:
    history = {"loss": [1.0, math.inf, math.nan, 0.4], "acc": [0.5, None, 0.7, 0.8]}
    read_png(plot_history(history, tmp_path / "gaps.png"), 800, 300, exact=False)


def test_overwrites_atomically_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "curves.png"
    target.write_bytes(b"old contents")
    plot_history(FULL, target)
    assert only_file(tmp_path) == target
    read_png(target, 800, 300, exact=False)


def test_string_path_in_missing_folders(tmp_path: Path) -> None:
    target = tmp_path / "reports" / "run1" / "curves.png"
    result = plot_history(FULL, str(target))
    assert isinstance(result, Path) and result == target
    read_png(target, 800, 300, exact=False)


def test_unwritable_target_is_a_cnnlab_error(tmp_path: Path) -> None:
    # The target's "folder" is a regular file, so nothing can be created in it.
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CnnlabError, match="cannot write the file"):
        plot_history(FULL, blocker / "curves.png")
    assert only_file(tmp_path) == blocker


def test_replacing_a_folder_fails_cleanly(tmp_path: Path) -> None:
    # os.replace cannot put a file over a non-empty folder: the temporary file
    # must be removed again.
    target = tmp_path / "curves.png"
    (target / "inside").mkdir(parents=True)
    with pytest.raises(CnnlabError, match="curves.png: cannot write the file"):
        plot_history(FULL, target)
    assert only_file(tmp_path) == target


@pytest.mark.parametrize("missing", ["loss", "acc"])
def test_history_without_training_values(tmp_path: Path, missing: str) -> None:
    history = {key: value for key, value in FULL.items() if key != missing}
    with pytest.raises(CnnlabError, match=f"no '{missing}' values"):
        plot_history(history, tmp_path / "x.png")
    assert list(tmp_path.iterdir()) == []


def test_empty_history(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="no 'loss' values"):
        plot_history({"loss": [], "acc": []}, tmp_path / "x.png")


def test_histories_overlay(tmp_path: Path) -> None:
    runs = {
        "small": FULL,
        "big": {**FULL, "val_loss": [1.2, 0.7, 0.5, 0.45, 0.44, 0.43]},
        "no-validation": {"loss": [1.0], "acc": [0.6]},
    }
    target = plot_histories(runs, tmp_path / "compare.png", title="val loss")
    assert only_file(tmp_path) == target
    pixels = read_png(target, 600, 400, exact=False)
    assert coloured_pixels(pixels) > 500


def test_histories_other_key_and_single_run(tmp_path: Path) -> None:
    target = plot_histories({"only": FULL}, tmp_path / "acc.png", key="acc")
    read_png(target, 600, 400, exact=False)


def test_histories_without_the_key(tmp_path: Path) -> None:
    runs = {"a": {"loss": [1.0], "acc": [0.5]}, "b": {"loss": [2.0], "acc": [0.4]}}
    with pytest.raises(CnnlabError, match="none of the runs a, b has 'val_loss'"):
        plot_histories(runs, tmp_path / "x.png")


def test_histories_with_no_runs(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="no runs to compare"):
        plot_histories({}, tmp_path / "x.png")


# ------------------------------------------- when a training run draws curves.png


def drawings_of_a_stopped_run(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, every_s: float
) -> list[int]:
    """Train 3 epochs, stopped by a pruner's decision after epoch 2; the number of
    epochs in each drawing of curves.png, in order."""

    drawn: list[int] = []

    def plot_and_count(history: dict, target: Path, **kwargs: object) -> None:
        drawn.append(len(history["loss"]))
        plot_history(history, target, **kwargs)

    monkeypatch.setattr(session, "plot_history", plot_and_count)
    monkeypatch.setattr(session, "CURVES_EVERY_S", every_s)

    def prune_after_second(state: session.TrainState) -> None:
        if state.epoch == 2:
            raise StopTraining(2)

    config = TrainConfig(epochs=3, train_limit=300, val_size=100, test_limit=100)
    result = cnnlab.train(
        "conv5-tiny",
        config.replace(threads=1),
        tmp_path / "run",
        hooks=session.Hooks(on_epoch=prune_after_second),
    )
    assert result.status == Status.STOPPED_EARLY
    read_png(tmp_path / "run" / "curves.png", 400, 300, exact=False)
    return drawn


def test_curves_are_drawn_once_per_epoch_at_most_and_once_at_a_stop(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Every epoch due: epochs 1 and 2, and the stop draws nothing more.
    assert drawings_of_a_stopped_run(tmp_path / "a", monkeypatch, 0.0) == [1, 2]
    # None due: the stop draws the two epochs once.
    assert drawings_of_a_stopped_run(tmp_path / "b", monkeypatch, 1e9) == [2]
