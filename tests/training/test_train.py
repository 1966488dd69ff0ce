"""Real training on MNIST subsets: it learns, it is deterministic, resume is exact."""

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.data.datasets import load_dataset, split_dataset
from cnnlab.nn.model import build_model
from cnnlab.training.config import TrainConfig
from cnnlab.training.loop import evaluate, fit
from helpers import cli_command, run_cli

SMALL = TrainConfig(epochs=2, train_limit=2000, val_size=500, test_limit=1000)


def test_fit_learns_well_above_chance() -> None:
    split = split_dataset(
        load_dataset("mnist"), val_size=500, train_limit=2000, test_limit=1000
    )
    model = build_model(cnnlab.load("conv5-medium"), 10, seed=0)
    history = fit(model, split, SMALL)
    loss, acc = evaluate(model, split.x_test, split.y_test)
    assert len(history) == 2
    assert history.column("loss")[1] < history.column("loss")[0]
    assert acc > 0.75  # chance is 0.10
    assert history.epochs[-1]["val_acc"] > 0.75


def test_every_optimizer_takes_real_steps() -> None:
    split = split_dataset(load_dataset("mnist"), val_size=500, train_limit=512)
    for name in ("adam", "adamw", "sgd", "rmsprop", "adadelta"):
        model = build_model(cnnlab.load("conv5-medium"), 10, seed=0)
        before = [p.detach().clone() for p in model.parameters()]
        fit(model, split, TrainConfig(epochs=1, optimizer=name, validation="none"))
        moved = any(
            not torch.equal(a, b)
            for a, b in zip(before, model.parameters(), strict=True)
        )
        assert moved, name


@pytest.mark.slow
def test_same_seed_same_history_and_resume_is_exact(tmp_path: Path) -> None:
    whole = cnnlab.train("conv3-small", SMALL, tmp_path / "whole")
    again = cnnlab.train("conv3-small", SMALL, tmp_path / "again")
    assert whole.history.epochs and _metrics(whole) == _metrics(again)

    cnnlab.train("conv3-small", SMALL.replace(epochs=1), tmp_path / "split")
    resumed = cnnlab.resume(tmp_path / "split", epochs=2)
    assert _metrics(resumed) == _metrics(whole)
    assert (resumed.test_loss, resumed.test_acc) == (whole.test_loss, whole.test_acc)

    other = cnnlab.train("conv3-small", SMALL.replace(seed=1), tmp_path / "other")
    assert _metrics(other) != _metrics(whole)


def _metrics(result: cnnlab.RunResult) -> list[tuple]:
    keys = ("loss", "acc", "val_loss", "val_acc")
    return [tuple(row[k] for k in keys) for row in result.history.epochs]


def test_run_folder_records_everything(tmp_path: Path) -> None:
    result = cnnlab.train("conv5-medium", SMALL.replace(epochs=1), tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    assert meta["status"] == "completed" and meta["epochs_done"] == 1
    assert meta["test"]["acc"] == result.test_acc
    assert meta["config"]["train_limit"] == 2000
    assert meta["environment"]["torch"] == torch.__version__
    assert meta["environment"]["class_names"][:3] == ["0", "1", "2"]
    for name in (
        "spec.yaml",
        "history.csv",
        "checkpoint.pt",
        "weights.pt",
        "curves.png",
    ):
        assert (tmp_path / "run" / name).stat().st_size > 0
    assert cnnlab.load_architecture(tmp_path / "run" / "spec.yaml") == cnnlab.load(
        "conv5-medium"
    )
    assert not list((tmp_path / "run").glob(".*tmp*"))  # no temp files left
    scores = cnnlab.evaluate_run(tmp_path / "run")
    assert scores["test_acc"] == result.test_acc
    # A REPL shows the result in one line, not the network's layers.
    shown = repr(result)
    assert shown.startswith(f"<RunResult '{tmp_path / 'run'}': completed, 1 epochs,")
    assert f"test accuracy {100 * result.test_acc:.2f}%" in shown
    assert "\n" not in shown and "Conv2d" not in shown


def test_validation_on_test_set_reproduces_notebook_protocol(tmp_path: Path) -> None:
    config = SMALL.replace(epochs=1, validation="test")
    result = cnnlab.train("conv5-medium", config, tmp_path / "nb")
    row = result.history.epochs[0]
    assert row["val_loss"] == pytest.approx(result.test_loss, rel=1e-5)
    assert row["val_acc"] == result.test_acc


@pytest.mark.slow
def test_ctrl_c_stops_at_a_resumable_point(tmp_path: Path) -> None:
    run = tmp_path / "run"
    args = [
        "train",
        "conv5-medium",
        "--epochs",
        "3",
        "--train-limit",
        "4000",
        "--val-size",
        "500",
        "--test-limit",
        "500",
        "--out",
        str(run),
    ]
    proc = subprocess.Popen(
        cli_command(*args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    deadline = time.monotonic() + 120
    while '"epochs_done": 0' in _read(run / "run.json"):  # wait for epoch 1
        assert proc.poll() is None and time.monotonic() < deadline, proc.communicate()
        time.sleep(0.05)
    os.kill(proc.pid, signal.SIGINT)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "Resume with: cnnlab train --resume" in err and "Traceback" not in err
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "interrupted" and meta["epochs_done"] >= 1

    done = run_cli("train", "--resume", run, timeout=300)
    assert done.code == 0, done.err
    assert json.loads((run / "run.json").read_text())["status"] == "completed"
    assert len((run / "history.csv").read_text().splitlines()) == 1 + 3


def _read(path: Path) -> str:
    return path.read_text() if path.exists() else '"epochs_done": 0'
