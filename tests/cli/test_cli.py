"""Tests for the `cnnlab` command: real runs on the embedded MNIST, tiny subsets.

Successful commands run as real processes (`python -m cnnlab`); refusals run in
process through `cli.main` (the `cli` fixture: each process start costs ~2 s of
torch import). The bad-input matrix is tests/cli/test_bad_input.py.
"""

from __future__ import annotations

import csv
import json
import re
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
import yaml

from helpers import (
    FLAT,
    OUT10,
    TINY_FLAGS,
    Result,
    arch_yaml,
    draw_digit,
    error_line,
    layer,
    run_cli,
    snapshot,
    write_files,
)

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_FILES = (
    "spec.yaml",
    "run.json",
    "history.csv",
    "checkpoint.pt",
    "weights.pt",
    "curves.png",
    "predictions.npz",
)

# Parameter totals of the nine presets (`cnnlab presets`), in the notebook's order.
PRESET_TOTALS = {
    "conv3-512": "23,337,610",
    "conv3-small": "15,146",
    "conv5-tiny": "412",
    "conv5-medium": "118,258",
    "conv7-pool3": "11,208,922",
    "conv7-pool2": "13,154,522",
    "conv7-one-dense": "1,310,522",
    "conv7-deep-dense": "16,996,122",
    "conv7-dropout": "6,752,730",
}

# ----------------------------------------------------------------------- helpers


def preset_text(name: str) -> str:
    """A preset's YAML text, read from the installed package."""
    return (resources.files("cnnlab.nn.presets") / f"{name}.yaml").read_text("utf-8")


def history_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_meta(run: Path) -> dict:
    return json.loads((run / "run.json").read_text(encoding="utf-8"))


def accuracy_line(acc: float) -> str:
    return f"Test accuracy: {acc:.4f} ({100 * acc:.2f}%)"


# ------------------------------------------------------------- one shared run


@dataclass
class TrainedRun:
    path: Path
    result: Result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """conv5-medium, 1 epoch on 2,000 images: trained once, never modified."""
    cwd = tmp_path_factory.mktemp("shared")
    result = run_cli(
        "train",
        "conv5-medium",
        "--epochs",
        "1",
        "--train-limit",
        "2000",
        "--val-size",
        "500",
        "--test-limit",
        "1000",
        "--out",
        "RUN",
        cwd=cwd,
    )
    assert result.code == 0, result.err
    return TrainedRun(cwd / "RUN", result)


# ---------------------------------------------------------- presets, summary


def test_presets_lists_nine_networks_with_parameter_totals(tmp_path: Path) -> None:
    result = run_cli("presets", cwd=tmp_path)
    assert result.code == 0, result.err
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in result.out.splitlines()
        if line.startswith("│")
    ]
    # Columns: #, name, description, params, FLOPs/sample; one line per row.
    assert [(row[0], row[1], row[3]) for row in rows] == [
        (str(number), name, total)
        for number, (name, total) in enumerate(PRESET_TOTALS.items(), start=1)
    ]


def test_summary_of_a_preset_prints_keras_totals(tmp_path: Path) -> None:
    result = run_cli("summary", "conv3-small", cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.err == ""
    assert 'Model: "conv3-small"' in result.out
    assert "Total params: 15,146 " in result.out
    assert "Trainable params: 15,050 " in result.out
    assert "Non-trainable params: 96 " in result.out


@pytest.mark.parametrize(
    ("arch", "model", "totals"),
    [
        ("2", "conv3-small", ("15,146", "15,050", "96")),
        ("9", "conv7-dropout", ("6,752,730", "6,752,730", "0")),
        ("conv3-512", "conv3-512", ("23,337,610", "23,337,610", "0")),
        ("nets/small.yaml", "small", ("15,146", "15,050", "96")),
    ],
    ids=["number-2", "number-9", "name", "yaml-file"],
)
def test_summary_by_number_name_or_file(
    cli: Callable[..., Result],
    tmp_path: Path,
    arch: str,
    model: str,
    totals: tuple[str, str, str],
) -> None:
    # The file is conv3-small's layers under another name.
    preset = yaml.safe_load(preset_text("conv3-small"))
    write_files(
        tmp_path, {"nets/small.yaml": arch_yaml(*preset["layers"], name="small")}
    )
    result = cli("summary", arch)
    assert result.code == 0, result.err
    assert f'Model: "{model}"' in result.out
    total, trainable, frozen = totals
    assert f"Total params: {total} " in result.out
    assert f"Trainable params: {trainable} " in result.out
    assert f"Non-trainable params: {frozen} " in result.out


# ------------------------------------------------------ train, evaluate, predict


def test_train_writes_a_complete_run_folder(trained: TrainedRun) -> None:
    run, result = trained.path, trained.result
    assert "Traceback" not in result.err
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)

    meta = read_meta(run)
    assert meta["name"] == "conv5-medium"
    assert meta["status"] == "completed"
    assert meta["epochs_done"] == 1
    assert {k: meta["config"][k] for k in ("epochs", "train_limit", "test_limit")} == {
        "epochs": 1,
        "train_limit": 2000,
        "test_limit": 1000,
    }
    env = meta["environment"]
    assert (env["train_samples"], env["val_samples"], env["test_samples"]) == (
        2000,
        500,
        1000,
    )
    assert set(meta["test"]) == {"loss", "acc"}
    assert 0.0 <= meta["test"]["acc"] <= 1.0
    assert meta["test"]["loss"] > 0.0

    out = result.out.splitlines()
    assert f"Test loss: {meta['test']['loss']:.4f}" in out
    assert accuracy_line(meta["test"]["acc"]) in out
    assert out[-1] == "Run folder: RUN"

    rows = history_rows(run)
    assert [row["epoch"] for row in rows] == ["1"]
    assert all(rows[0][key] for key in ("loss", "acc", "val_loss", "val_acc"))
    assert yaml.safe_load((run / "spec.yaml").read_text())["name"] == "conv5-medium"
    assert (run / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert (run / "checkpoint.pt").stat().st_size > 0
    assert (run / "weights.pt").stat().st_size > 0


def test_evaluate_reproduces_the_recorded_test_accuracy(
    trained: TrainedRun, tmp_path: Path
) -> None:
    result = run_cli("evaluate", trained.path, cwd=tmp_path)
    assert result.code == 0, result.err
    test = read_meta(trained.path)["test"]
    out = result.out.splitlines()
    assert out[0] == "Data: mnist (1,000 test images)"  # the run's own test_limit
    assert f"Test loss: {test['loss']:.4f}" in out
    assert accuracy_line(test["acc"]) in out


def test_predict_prints_one_line_per_image(trained: TrainedRun, tmp_path: Path) -> None:
    draw_digit(tmp_path / "one.png", "1")
    draw_digit(tmp_path / "zero.png", "0")
    result = run_cli("predict", trained.path, "one.png", "zero.png", cwd=tmp_path)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 2
    for line, image in zip(lines, ("one.png", "zero.png"), strict=True):
        match = re.fullmatch(r"(.+): (\d) \((\d{1,3}\.\d)%\)", line)
        assert match, line
        assert match[1] == image
        # The winning class of ten has at least a tenth of the probability.
        assert 10.0 <= float(match[3]) <= 100.0


# ------------------------------------------------------------------- resume


@pytest.mark.slow
def test_resume_continues_to_more_epochs(trained: TrainedRun, tmp_path: Path) -> None:
    run = tmp_path / "RUN"
    shutil.copytree(trained.path, run)
    first_epoch = history_rows(run)[0]

    result = run_cli("train", "--resume", "RUN", "--epochs", "2", cwd=tmp_path)

    assert result.code == 0, result.err
    assert "Test accuracy" in result.out
    rows = history_rows(run)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0] == first_epoch
    meta = read_meta(run)
    assert (meta["status"], meta["epochs_done"], meta["config"]["epochs"]) == (
        "completed",
        2,
        2,
    )
    assert meta["config"]["train_limit"] == 2000  # the run's own settings
    assert accuracy_line(meta["test"]["acc"]) in result.out.splitlines()


@pytest.mark.parametrize(
    "epochs", [[], ["--epochs", "1"]], ids=["no-epochs", "same-epochs"]
)
def test_resume_of_a_completed_run_asks_for_more_epochs(
    cli: Callable[..., Result], trained: TrainedRun, epochs: list[str]
) -> None:
    before = snapshot(trained.path)
    result = cli("train", "--resume", trained.path, *epochs)
    assert snapshot(trained.path) == before
    error_line(result, "already completed 1 epochs", "Pass --epochs N")


# -------------------------------------------------------------- run folders


def test_existing_output_folder_is_left_untouched(
    cli: Callable[..., Result], trained: TrainedRun, tmp_path: Path
) -> None:
    shutil.copytree(trained.path, tmp_path / "OUT")
    before = snapshot(tmp_path / "OUT")
    result = cli("train", "conv5-tiny", "--out", "OUT", *TINY_FLAGS)
    assert snapshot(tmp_path / "OUT") == before
    error_line(
        result,
        "OUT: the output folder exists",
        "--resume OUT",
        "--overwrite",
        "another --out",
    )


def test_overwrite_replaces_an_existing_run(
    cli: Callable[..., Result], trained: TrainedRun, tmp_path: Path
) -> None:
    shutil.copytree(trained.path, tmp_path / "OUT")
    result = cli("train", "conv5-tiny", "--out", "OUT", "--overwrite", *TINY_FLAGS)
    assert result.code == 0, result.err
    meta = read_meta(tmp_path / "OUT")
    assert (meta["name"], meta["status"]) == ("conv5-tiny", "completed")
    assert meta["config"]["train_limit"] == 1000
    assert len(history_rows(tmp_path / "OUT")) == 1
    assert sorted(p.name for p in (tmp_path / "OUT").iterdir()) == sorted(RUN_FILES)


def test_overwrite_refuses_a_folder_that_is_not_a_run(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    write_files(tmp_path, {"OUT/notes.txt": "keep me\n"})
    result = cli("train", "conv5-tiny", "--out", "OUT", "--overwrite", *TINY_FLAGS)
    assert snapshot(tmp_path / "OUT") == {"notes.txt": b"keep me\n"}
    error_line(result, "OUT: exists and is not a cnnlab run folder", "another --out")


# ------------------------------------------------------------- --debug


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    bad_net = arch_yaml(layer("Conv2D", filter=4, kernel_size=3), FLAT, OUT10)
    write_files(tmp_path, {"net.yaml": bad_net})
    result = run_cli("--debug", "train", "net.yaml", "--out", "OUT", cwd=tmp_path)
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert result.err.splitlines()[-1].startswith(
        "cnnlab.errors.SpecError: net.yaml: layers[0] (Conv2D): unknown argument"
    )
    assert not (tmp_path / "OUT").exists()


# --------------------------------------------------------------------- help


def test_top_level_help(cli: Callable[..., Result]) -> None:
    result = cli("--help")
    assert result.code == 0
    for word in ("--debug", "presets", "summary", "train", "evaluate", "predict"):
        assert word in result.out
    assert "exits with code 2" in " ".join(result.out.split())


def test_train_help_lists_its_flags(cli: Callable[..., Result]) -> None:
    result = cli("train", "--help")
    assert result.code == 0
    flags = set(re.findall(r"--[a-z][a-z-]*", result.out))
    assert flags >= {
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--seed",
        "--data",
        "--data-dir",
        "--validation",
        "--val-size",
        "--train-limit",
        "--test-limit",
        "--device",
        "--threads",
        "--out",
        "--overwrite",
        "--resume",
    }
