"""Per-channel standardisation (--standardize): computed on the training split
only, kept in run.json, and the same stored values used by training, evaluate,
predict and resume; a malformed entry is one error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.api import Hooks, load_model
from cnnlab.data.standardize import channel_stats
from cnnlab.training.runs import open_run
from cnnlab.training.session import load_split
from helpers import error_line

COLOURS = ((200, 40, 40), (40, 200, 40), (40, 40, 200))  # one class each
NET = "name: net\nlayers: [Flatten, {Dense: {units: 3, activation: softmax}}]\n"


def colour_set(path: Path, train: int = 150, test: int = 45, seed: int = 0) -> Path:
    """An .npz of 8x8 RGB images, 3 classes told by their colour: the training
    images dim (pixels 0..110), the test images bright (the same colours + 120),
    so a statistic computed on the test images is far from the training split's."""
    rng = np.random.default_rng(seed)

    def images(count: int, offset: int) -> tuple[np.ndarray, np.ndarray]:
        labels = np.arange(count) % 3
        base = np.array(COLOURS, dtype=np.float64)[labels] // 2 + offset
        noise = rng.normal(0, 12, (count, 8, 8, 3))
        pixels = np.clip(base[:, None, None, :] + noise, 0, 255)
        return pixels.astype(np.uint8), labels

    x_train, y_train = images(train, 0)
    x_test, y_test = images(test, 120)
    np.savez(
        path,
        x_train=x_train,
        y_train=y_train,
        x_test=x_test,
        y_test=y_test,
        class_names=np.array(["red", "green", "blue"]),
    )
    return path


def numpy_stats(x: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    pixels = x.numpy().astype(np.float64).reshape(-1, x.shape[-1]) / 255.0
    return pixels.mean(0), pixels.std(0)


@pytest.fixture(scope="module")
def data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return colour_set(tmp_path_factory.mktemp("data") / "colours.npz")


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory, data: Path) -> Path:
    """A run trained with standardisation on the colour set, 3 epochs of 9 steps."""
    root = tmp_path_factory.mktemp("runs")
    (root / "net.yaml").write_text(NET)
    config = cnnlab.TrainConfig(
        data=str(data), epochs=3, batch_size=16, standardize=True
    )
    cnnlab.train(root / "net.yaml", config, root / "run", hooks=Hooks())
    return root / "run"


def test_stats_are_numpys_on_the_training_split_only(data: Path, run: Path) -> None:
    config = cnnlab.TrainConfig(data=str(data), standardize=True)
    _, split = load_split(config)
    assert split.x_val is not None and len(split.x_val) > 0  # a hold-out was made
    mean, std = numpy_stats(split.x_train)
    stored = json.loads((run / "run.json").read_text())["standardize"]
    np.testing.assert_allclose(stored["mean"], mean, rtol=1e-12)
    np.testing.assert_allclose(stored["std"], std, rtol=1e-12)
    # neither the whole training file (with the hold-out) nor the test images
    whole, _ = numpy_stats(torch.cat([split.x_train, split.x_val]))
    test_mean, _ = numpy_stats(split.x_test)
    assert not np.allclose(stored["mean"], whole, rtol=1e-9)
    assert np.all(test_mean - np.array(stored["mean"]) > 0.4)


def test_a_constant_channel_is_centred_only() -> None:
    x = torch.zeros(5, 4, 4, 3, dtype=torch.uint8)
    x[..., 0] = 51
    x[1:, :, :, 1] = 255
    stats = channel_stats(x)
    assert stats["mean"] == pytest.approx([0.2, 0.8, 0.0], abs=1e-15)
    assert stats["std"][0] == stats["std"][2] == 1.0 and stats["std"][1] == 0.4
    grey = channel_stats(torch.arange(256, dtype=torch.uint8).reshape(4, 8, 8))
    values = np.arange(256) / 255.0
    assert grey == {"mean": [values.mean()], "std": [pytest.approx(values.std())]}


def test_a_standardised_run_learns_and_predict_matches_its_scores(
    run: Path, data: Path, tmp_path: Path
) -> None:
    meta = json.loads((run / "run.json").read_text())
    assert meta["config"]["standardize"] is True
    history = open_run(run).history()
    assert history.column("loss")[-1] < history.column("loss")[0]
    assert history.epochs[-1]["val_acc"] > 0.9  # chance is 1/3
    # predict reads PNG files: the test images, written losslessly
    arrays = np.load(data)
    x_test, y_test = arrays["x_test"][:6], arrays["y_test"][:6]
    files = []
    for i, pixels in enumerate(x_test):
        files.append(tmp_path / f"{i}.png")
        Image.fromarray(pixels).save(files[-1])
    predicted = cnnlab.predict(run, files)
    # the run's own per-image record of its test scoring (float16)
    kept = np.load(run / "predictions.npz")
    for i, p in enumerate(predicted):
        true_prob = p.probabilities[y_test[i]]
        assert true_prob == pytest.approx(float(kept["test_true_prob"][i]), abs=1e-3)
    # and by hand: (x / 255 - mean) / std into the bare layers
    stored = meta["standardize"]
    mean = torch.tensor(stored["mean"]).reshape(1, 3, 1, 1)
    std = torch.tensor(stored["std"]).reshape(1, 3, 1, 1)
    x = torch.from_numpy(x_test).permute(0, 3, 1, 2).float() / 255
    _, model = load_model(run)
    with torch.no_grad():
        by_hand = torch.softmax(model.body((x - mean) / std), 1)
    got = torch.tensor([p.probabilities for p in predicted])
    assert float((got - by_hand).abs().max()) < 1e-5


def test_evaluate_and_predict_use_the_stored_values(run: Path, tmp_path: Path) -> None:
    """Changed values in run.json change the scores: they are read, never
    recomputed from the images at hand."""
    copy = tmp_path / "copy"
    copy.mkdir()
    for f in run.iterdir():
        (copy / f.name).write_bytes(f.read_bytes())
    before = cnnlab.evaluate_run(copy)
    assert (
        before["test_acc"] == json.loads((run / "run.json").read_text())["test"]["acc"]
    )
    meta = json.loads((copy / "run.json").read_text())
    meta["standardize"]["mean"] = [0.9, 0.9, 0.9]
    (copy / "run.json").write_text(json.dumps(meta))
    after = cnnlab.evaluate_run(copy)
    assert after["test_loss"] != pytest.approx(before["test_loss"], rel=1e-3)
    _, model = load_model(copy)
    assert model.standardize.mean.flatten().tolist() == pytest.approx([0.9] * 3)


@pytest.mark.parametrize(
    "entry, phrase",
    [
        (None, "standardize must be a mapping of mean and std"),
        (
            {"mean": [0.1, 0.2], "std": [1, 1, 1]},
            "mean must be a list of finite numbers, one per channel (3)",
        ),
        (
            {"mean": [0, 0, 0], "std": [1, 0, 1]},
            "std must be a list of finite positive",
        ),
        ({"mean": [0, "x", 0], "std": [1, 1, 1]}, "standardize.mean=[0, 'x', 0]"),
    ],
)
def test_a_malformed_entry_is_one_error(
    run: Path, tmp_path: Path, cli, entry: object, phrase: str
) -> None:
    meta = json.loads((run / "run.json").read_text())
    bad = tmp_path / "bad"
    bad.mkdir()
    for f in run.iterdir():
        (bad / f.name).write_bytes(f.read_bytes())
    if entry is None:
        del meta["standardize"]
    else:
        meta["standardize"] = entry
    (bad / "run.json").write_text(json.dumps(meta))
    line = error_line(cli("evaluate", bad), "run.json: standardize", phrase)
    assert "Retrain the run" in line


def test_resume_keeps_the_values_and_is_exact(data: Path, tmp_path: Path) -> None:
    (tmp_path / "net.yaml").write_text(NET)
    config = cnnlab.TrainConfig(data=str(data), epochs=2, standardize=True)
    whole = cnnlab.train(tmp_path / "net.yaml", config, tmp_path / "whole")
    first = config.replace(epochs=1)
    cnnlab.train(tmp_path / "net.yaml", first, tmp_path / "split", hooks=Hooks())
    stored = json.loads((tmp_path / "split" / "run.json").read_text())["standardize"]
    resumed = cnnlab.resume(tmp_path / "split", epochs=2)
    assert resumed.meta["standardize"] == stored == whole.meta["standardize"]
    keys = ("loss", "acc", "val_loss", "val_acc")
    rows = [
        [tuple(r[k] for k in keys) for r in x.history.epochs] for x in (whole, resumed)
    ]
    assert rows[0] == rows[1]
    assert (resumed.test_loss, resumed.test_acc) == (whole.test_loss, whole.test_acc)


@pytest.mark.slow
def test_cli_flag_trains_and_says_so(data: Path, tmp_path: Path, cli) -> None:
    (tmp_path / "net.yaml").write_text(NET)
    args = ("train", "net.yaml", "--data", data, "--epochs", "1")
    result = cli(*args, "--standardize", "--out", "run")
    assert result.code == 0, result.err
    assert "Inputs: standardised per channel with the training split's" in result.out
    assert json.loads((tmp_path / "run" / "run.json").read_text())["standardize"]
    plain = cli(*args, "--out", "plain")
    assert plain.code == 0 and "standardised" not in plain.out
    meta = json.loads((tmp_path / "plain" / "run.json").read_text())
    assert meta["config"]["standardize"] is False and "standardize" not in meta


@pytest.mark.slow
def test_a_study_standardises_each_trial_and_its_report_says_so(
    data: Path, tmp_path: Path
) -> None:
    import yaml

    doc = {
        "name": "std",
        "seeds": [0],
        "data": "colours.npz",
        "train": {"epochs": 1, "batch_size": 16},
        "architectures": [
            {"label": "plain", "spec": yaml.safe_load(NET)},
            {
                "label": "std",
                "spec": yaml.safe_load(NET),
                "train": {"standardize": True},
            },
        ],
    }
    (tmp_path / "colours.npz").write_bytes(data.read_bytes())
    path = tmp_path / "std.yaml"
    path.write_text(yaml.safe_dump(doc))
    cnnlab.run_study(cnnlab.load_study(path), tmp_path / "out")
    runs = tmp_path / "out" / "std" / "runs"
    metas = {p.name: json.loads((p / "run.json").read_text()) for p in runs.iterdir()}
    assert set(metas) == {"plain-s0", "std-s0"}
    assert "standardize" not in metas["plain-s0"]
    assert len(metas["std-s0"]["standardize"]["mean"]) == 3
    report = (tmp_path / "out" / "std" / "report" / "report.md").read_text()
    assert (
        "Inputs standardised per channel with the training split's mean and std, "
        "each run its own (std only)." in report
    )
