"""Tests for cnnlab.figures: study figures written to tmp_path and read back."""

import dataclasses
import re
from pathlib import Path

import numpy as np
import pytest

from cnnlab.errors import CnnlabError
from cnnlab.reporting.figures import (
    accuracy_vs_cost,
    arch_curves,
    cost_points,
    labels_of,
    overlay_validation,
    safe_name,
    study_figures,
)
from cnnlab.studies.results import TrialResult
from helpers import read_png

HTML_LABEL = "<b>x/y</b>"


def trial(
    label: str,
    seed: int,
    epochs: int = 4,
    validation: bool = True,
    test_acc: float | None = 0.98,
    params: int = 15_146,
    **changes: object,
) -> TrialResult:
    """A synthetic trial whose loss falls and accuracy rises, shifted by its seed."""
    rows = []
    for epoch in range(1, epochs + 1):
        loss = 1.5 / epoch + 0.05 * seed
        rows.append(
            {
                "epoch": epoch,
                "loss": loss,
                "acc": 1 - loss / 3,
                "val_loss": loss * 1.1 if validation else None,
                "val_acc": 1 - loss / 2.8 if validation else None,
                "seconds": 2.0,
            }
        )
    record = TrialResult(
        study="demo",
        label=label,
        seed=seed,
        arch_name=label,
        optimizer="adam",
        params=params,
        flops=params * 20,
        history=tuple(rows),
        status="completed",
        test_acc=None if test_acc is None else test_acc + 0.002 * seed,
    )
    return dataclasses.replace(record, **changes)


def study() -> list[TrialResult]:
    """Three labels: 3 seeds (one stopped early), 1 seed without validation, 2 seeds."""
    return [
        trial("lenet", 0),
        trial("lenet", 1),
        trial("lenet", 2, epochs=3, status="stopped_early", stopped_epoch=3),
        trial("mlp", 0, validation=False, params=118_258, test_acc=0.97),
        trial(HTML_LABEL, 0, params=412, test_acc=0.88),
        trial(HTML_LABEL, 1, params=412, test_acc=0.88),
    ]


def tinted_pixels(pixels: np.ndarray, spread: int) -> int:
    """Pixels whose channels differ by more than spread: colour, not grey text."""
    channels = pixels.astype(int)
    return int((channels.max(axis=2) - channels.min(axis=2) > spread).sum())


def test_study_figures_writes_every_figure_in_order(tmp_path: Path) -> None:
    figures = study_figures(study(), tmp_path / "figs")
    html = f"curves-{safe_name(HTML_LABEL)}"
    assert list(figures) == [
        "curves-lenet",
        "curves-mlp",
        html,
        "val_loss",
        "val_acc",
        "acc_vs_params",
        "acc_vs_flops",
    ]
    for name, path in figures.items():
        assert path == tmp_path / "figs" / f"{name}.png"
    # Nothing else in the folder: no temporary files left behind.
    assert sorted((tmp_path / "figs").iterdir()) == sorted(figures.values())
    for name in list(figures)[:3]:
        assert tinted_pixels(read_png(figures[name], 1000, 400), 80) > 1000
    for name in ("val_loss", "val_acc"):
        assert tinted_pixels(read_png(figures[name], 1000, 500), 80) > 500
    for name in ("acc_vs_params", "acc_vs_flops"):
        assert tinted_pixels(read_png(figures[name], 800, 500), 80) > 100


def test_file_names_are_safe_and_unique(tmp_path: Path) -> None:
    labels = ["lenet", "LeNet", "le net", "le-net", HTML_LABEL, "../etc/passwd"]
    labels += ["", "...", "é", "x" * 200, "x" * 201, "$\\frac$"]
    names = [safe_name(label) for label in labels]
    assert names[0] == "lenet"
    assert safe_name(HTML_LABEL) == safe_name(HTML_LABEL)
    assert safe_name(HTML_LABEL).startswith("b-x-y-b-")
    # Unique even on case-blind filesystems, and nothing hidden or path-like.
    assert len({name.lower() for name in names}) == len(names)
    for name in names:
        assert re.fullmatch(r"[a-z0-9][a-z0-9._-]{0,50}", name), name


def test_tricky_labels_get_their_own_files(tmp_path: Path) -> None:
    labels = ["A", "a", HTML_LABEL, "../etc/passwd", "", "x" * 200]
    trials = [trial(label, 0, validation=False, test_acc=None) for label in labels]
    figures = study_figures(trials, tmp_path)
    curves = [name for name in figures if name.startswith("curves-")]
    assert curves == [f"curves-{safe_name(label)}" for label in labels]
    assert sorted(tmp_path.iterdir()) == sorted(figures.values())


def test_labels_keep_study_order() -> None:
    trials = [trial("b", 0), trial("a", 0), trial("b", 1), trial("c", 0)]
    assert labels_of(trials) == ["b", "a", "c"]


def test_seeds_band_and_early_stop_mark_are_drawn(tmp_path: Path) -> None:
    one = [trial("lenet", 0)]
    several = [trial("lenet", seed) for seed in range(3)]
    stopped = [*several[:2], dataclasses.replace(several[2], status="stopped_early")]
    one_px = read_png(arch_curves("lenet", one, tmp_path / "one.png"), 1000, 400)
    band_px = read_png(arch_curves("lenet", several, tmp_path / "band.png"), 1000, 400)
    stop_px = read_png(arch_curves("lenet", stopped, tmp_path / "stop.png"), 1000, 400)
    # The min..max shading is a pale tint the single seed lacks.
    assert tinted_pixels(band_px, 20) > tinted_pixels(one_px, 20) + 2000
    assert not np.array_equal(band_px, stop_px)


def test_arch_curves_uses_only_its_label(tmp_path: Path) -> None:
    trials = study()
    alone = [t for t in trials if t.label == "mlp"]
    mixed = read_png(arch_curves("mlp", trials, tmp_path / "a.png"), 1000, 400)
    only = read_png(arch_curves("mlp", alone, tmp_path / "b.png"), 1000, 400)
    assert np.array_equal(mixed, only)
    with pytest.raises(CnnlabError, match=r"no trial has the label 'vgg'.*'lenet'"):
        arch_curves("vgg", trials, tmp_path / "c.png")
    with pytest.raises(CnnlabError, match="no training history"):
        arch_curves("new", [trial("new", 0, epochs=0)], tmp_path / "d.png")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.png", "b.png"]


def test_gaps_and_diverged_values_are_tolerated(tmp_path: Path) -> None:
    rows = list(trial("lenet", 0).history)
    rows[1] = {**rows[1], "loss": float("inf"), "val_loss": float("nan")}
    rows[2] = {**rows[2], "acc": None}
    gappy = trial("lenet", 1, history=tuple(rows))
    figures = study_figures([gappy, trial("lenet", 2)], tmp_path)
    assert list(figures)[0] == "curves-lenet"
    read_png(figures["val_loss"], 1000, 500)


def test_missing_validation_and_test_accuracy_are_skipped(tmp_path: Path) -> None:
    trials = [trial(label, 0, validation=False, test_acc=None) for label in "abc"]
    figures = study_figures(trials, tmp_path)
    assert list(figures) == ["curves-a", "curves-b", "curves-c"]
    assert cost_points(trials) == []
    with pytest.raises(CnnlabError, match="no trial has 'val_loss' values"):
        overlay_validation(trials, tmp_path / "v.png")
    with pytest.raises(CnnlabError, match="no trial has a test accuracy"):
        accuracy_vs_cost(trials, tmp_path / "c.png")
    assert sorted(tmp_path.iterdir()) == sorted(figures.values())
    assert study_figures([], tmp_path / "empty") == {}


def test_bad_keys_are_refused(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match=r"cannot overlay 'seconds'; use one of"):
        overlay_validation(study(), tmp_path / "v.png", key="seconds")
    with pytest.raises(CnnlabError, match=r"unknown cost 'macs'; use one of 'params'"):
        accuracy_vs_cost(study(), tmp_path / "c.png", cost="macs")


def test_cost_points_statistics() -> None:
    points = {point.label: point for point in cost_points(study(), "flops")}
    lenet, mlp = points["lenet"], points["mlp"]
    assert lenet.seeds == 3 and lenet.cost == 3 * 15_146 * 20
    assert lenet.mean == pytest.approx(98.2)
    assert lenet.std == pytest.approx(0.2)
    assert mlp.seeds == 1 and mlp.std is None and mlp.mean == pytest.approx(97.0)
    assert cost_points(study(), "params")[0].cost == 15_146


def test_many_labels_and_math_characters(tmp_path: Path) -> None:
    # Paired '$' would be parsed as mathtext, where a bare \\frac fails to render.
    labels = [f"net {index} $\\frac$" for index in range(12)] + ["_hidden"]
    trials = [
        trial(label, seed, params=1000 * (index + 1))
        for index, label in enumerate(labels)
        for seed in (0, 1)
    ]
    read_png(overlay_validation(trials, tmp_path / "v.png"), 1000, 500)
    read_png(accuracy_vs_cost(trials, tmp_path / "c.png"), 800, 500)
    read_png(arch_curves(labels[0], trials, tmp_path / "a.png"), 1000, 400)


def test_overwrites_without_leftovers(tmp_path: Path) -> None:
    target = tmp_path / "val.png"
    target.write_bytes(b"old")
    overlay_validation(study(), target, key="val_acc")
    read_png(target, 1000, 500)
    assert list(tmp_path.iterdir()) == [target]
