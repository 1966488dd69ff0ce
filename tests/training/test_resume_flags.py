"""`cnnlab train --resume RUN`: --epochs, --device and --threads reach the resumed
run; every other training flag is refused, by a list derived from TrainConfig."""

from __future__ import annotations

import dataclasses
import json
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

import cnnlab
from cnnlab.cli import build_parser
from cnnlab.training.config import RESUMABLE, TrainConfig
from helpers import Result, error_line, run_cli, snapshot

# One epoch of the 412-weight preset on 1,000 images: a real run in about a second.
TINY = TrainConfig(epochs=1, train_limit=1000, val_size=500, test_limit=1000)


@pytest.fixture(scope="module")
def one_epoch_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("trained") / "run"
    cnnlab.train("conv5-tiny", TINY, path)
    return path


@pytest.fixture
def run(one_epoch_run: Path, tmp_path: Path) -> Path:
    """A private copy of the one-epoch run."""
    return Path(shutil.copytree(one_epoch_run, tmp_path / "run"))


def read_meta(run: Path) -> dict:
    return json.loads((run / "run.json").read_text(encoding="utf-8"))


@pytest.mark.slow
def test_resume_applies_threads_and_device(run: Path, tmp_path: Path) -> None:
    assert read_meta(run)["config"]["threads"] is None  # trained with the default
    run_cli(
        *("train", "--resume", run, "--epochs", "2", "--threads", "1"),
        *("--device", "cpu"),
        cwd=tmp_path,
        check=True,
    )
    meta = read_meta(run)
    assert meta["status"] == "completed" and meta["epochs_done"] == 2
    assert meta["config"]["epochs"] == 2
    assert meta["config"]["threads"] == 1
    assert meta["config"]["device"] == "cpu"
    assert meta["config"]["train_limit"] == 1000  # the rest is the run's own


def test_a_fixed_flag_is_refused_by_name(cli: Callable[..., Result], run: Path) -> None:
    before = snapshot(run)
    error_line(
        cli("train", "--resume", run, "--epochs", "2", "--lr", "0.1"),
        "error: --resume continues a run with its own settings; drop --lr ",
        "(only --epochs, --device, --threads may change).",
    )
    assert snapshot(run) == before


def _fixed_flags() -> list[tuple[str, ...]]:
    """(flag, a valid value) for each TrainConfig field `train` has a flag for, but
    for RESUMABLE's: the list --resume must refuse."""
    train = build_parser().commands["train"]  # type: ignore[attr-defined]
    actions = {a.dest: a for a in train._actions}
    flags = []
    for field in dataclasses.fields(TrainConfig):
        action = actions.get(field.name)
        if field.name in RESUMABLE or action is None:
            continue
        value = str(action.choices[0]) if action.choices else "1"
        if field.name == "data":
            value = "mnist"
        if field.name in ("test_fraction", "val_fraction"):
            value = "0.5"
        values = [] if action.nargs == 0 else [value] * (action.nargs or 1)
        flags.append((action.option_strings[0], *values))
    return flags


def test_every_config_flag_but_the_resumable_ones_is_refused(
    cli: Callable[..., Result], run: Path
) -> None:
    flags = _fixed_flags()
    # Every flag of TrainConfig's fields, so a new field's flag is covered too.
    assert {"--lr", "--seed", "--batch-size", "--max-shift"} <= {f[0] for f in flags}
    before = snapshot(run)
    for flag, *values in flags:
        error_line(cli("train", "--resume", run, flag, *values), f"drop {flag} (only")
    assert snapshot(run) == before


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--seed", "0"], "--seed"),  # a falsy value is still a flag given
        (["--label-smoothing", "0"], "--label-smoothing"),
        (["--data-dir", "idx"], "--data-dir"),
        (["--out", "elsewhere"], "--out"),
        (["--overwrite"], "--overwrite"),
        (["conv5-tiny"], "NAME|FILE"),
    ],
    ids=["seed-0", "smoothing-0", "data-dir", "out", "overwrite", "arch"],
)
def test_run_flags_and_falsy_values_are_refused(
    cli: Callable[..., Result], run: Path, args: list[str], named: str
) -> None:
    error_line(cli("train", "--resume", run, *args), f"drop {named} (only")
