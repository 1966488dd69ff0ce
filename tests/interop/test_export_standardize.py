"""Exports of a run trained with --standardize take raw [0, 1] NHWC pixels, as
every export does, and standardise inside: ONNX (in onnxruntime), TorchScript and
Keras files give the probabilities of the PyTorch model and of `cnnlab predict`."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.api import Hooks, load_model

TOL = 1e-5
NET = """name: net
layers:
  - {Conv2D: {filters: 4, kernel_size: 3, activation: relu}}
  - Flatten
  - {Dense: {units: 3, activation: softmax}}
"""


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One epoch on 10x12 RGB images of 3 classes, with standardisation; the
    training pixels are far from [0, 1]-centred, so the stored values matter."""
    root = tmp_path_factory.mktemp("std")
    rng = np.random.default_rng(0)
    labels = np.arange(120) % 3
    x = rng.integers(0, 90, (120, 10, 12, 3)).astype(np.uint8)
    x[np.arange(120), :, :, labels] += 120  # each class brightens one channel
    np.savez(
        root / "set.npz",
        x_train=x[:90],
        y_train=labels[:90],
        x_test=x[90:],
        y_test=labels[90:],
        class_names=np.array(["r", "g", "b"]),
    )
    (root / "net.yaml").write_text(NET)
    config = cnnlab.TrainConfig(
        data=str(root / "set.npz"), epochs=1, batch_size=16, standardize=True
    )
    cnnlab.train(root / "net.yaml", config, root / "run", hooks=Hooks())
    return root / "run"


@pytest.fixture(scope="module")
def images(run: Path) -> np.ndarray:
    """The test images as (N, 10, 12, 3) float32 in [0, 1]."""
    return np.load(run.parent / "set.npz")["x_test"].astype(np.float32) / 255


def torch_probs(run: Path, x: np.ndarray) -> np.ndarray:
    """The run's PyTorch model on raw [0, 1] pixels (it standardises them)."""
    _, model = load_model(run)
    assert model.standardize is not None
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    return model.probabilities(nchw.contiguous(memory_format=torch.channels_last))


def predicted(run: Path, x: np.ndarray, folder: Path) -> np.ndarray:
    """`cnnlab predict`'s probabilities for the images, written as PNG files."""
    files = []
    for i, pixels in enumerate(np.rint(x * 255).astype(np.uint8)):
        files.append(folder / f"{i}.png")
        Image.fromarray(pixels).save(files[-1])
    return np.array([p.probabilities for p in cnnlab.predict(run, files)])


def test_onnx_standardises_inside(run: Path, images: np.ndarray, tmp_path: Path):
    pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    path = cnnlab.export_run(run, "onnx", tmp_path / "net.onnx")
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    got = session.run(["probabilities"], {"image": images})[0]
    expected = torch_probs(run, images).numpy()
    assert got.shape == (30, 3) and np.abs(got - expected).max() <= TOL
    assert np.abs(got - predicted(run, images, tmp_path)).max() <= TOL
    # without the standardisation the same layers answer otherwise
    _, model = load_model(run)
    model.set_standardization(None)
    raw = model.probabilities(torch.from_numpy(images).permute(0, 3, 1, 2))
    assert np.abs(got - raw.numpy()).max() > 1e-2


@pytest.mark.filterwarnings("ignore:`torch.jit.load` is deprecated:DeprecationWarning")
def test_torchscript_standardises_inside(
    run: Path, images: np.ndarray, tmp_path: Path
) -> None:
    path = cnnlab.export_run(run, "torchscript", tmp_path / "net.pt")
    loaded = torch.jit.load(str(path))
    with torch.no_grad():
        got = loaded(torch.from_numpy(images))
    assert float((got - torch_probs(run, images)).abs().max()) <= TOL


@pytest.mark.slow
@pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:tensorflow")
def test_keras_standardises_inside(
    run: Path, images: np.ndarray, tmp_path: Path
) -> None:
    pytest.importorskip("cnnlab.interop.keras")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    keras = pytest.importorskip("keras")
    path = cnnlab.export_run(run, "keras", tmp_path / "net.keras")
    loaded = keras.saving.load_model(path)
    assert loaded.layers[0].name == "standardize"
    got = np.asarray(loaded.predict(images, verbose=0))
    assert np.abs(got - torch_probs(run, images).numpy()).max() <= 1e-4
    stored = json.loads((run / "run.json").read_text())["standardize"]
    mean = np.asarray(loaded.layers[0].mean).reshape(-1)
    np.testing.assert_allclose(mean, stored["mean"], rtol=1e-6)
