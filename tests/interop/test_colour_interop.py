"""Colour data through summaries, exports and Keras imports, against real Keras 3
(TensorFlow backend), onnxruntime and TorchScript: a preset or a file without
input_shape fitted to RGB data of several sizes and class counts has the summary
Keras computes; a run trained on a folder of colour PNGs exports to files that take
(N, H, W, 3) and compute what `cnnlab predict` computes; a Keras model taking
(32, 32, 3) imports, trains on a colour .npz, and is refused on data of another
shape."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import yaml
from PIL import Image

import cnnlab
from cnnlab.api import Hooks, load_model
from cnnlab.interop.keras_export import keras_model
from cnnlab.nn.adapt import adapt_to_data
from cnnlab.nn.model import build_model
from cnnlab.nn.presets import load_preset
from cnnlab.nn.shapes import infer
from cnnlab.nn.spec import parse_architecture
from cnnlab.nn.summary import summary_rows
from helpers import error_line, run_cli, write_colour_folder

TOL = 1e-5
SHAPE = (20, 24, 3)  # the trained run's images: height 20, width 24, RGB
pytestmark = [
    pytest.mark.slow,
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:tensorflow"),
]


@pytest.fixture(scope="module")
def keras() -> Any:
    """Keras 3 on TensorFlow, imported once for the module (~10 s)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    return pytest.importorskip("keras")


def keras_rows(model: Any) -> list[tuple[str, str, int]]:
    """(name (Type), output shape, params) of each layer, as Keras reports them."""
    return [
        (f"{a.name} ({type(a).__name__})", str(a.output.shape), a.count_params())
        for a in model.layers
    ]


def cnnlab_rows(info: Any) -> list[tuple[str, str, int]]:
    return [(r.name, r.output_shape, r.params) for r in summary_rows(info)]


def trainable(model: Any) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def assert_same_summary(info: Any, kmodel: Any) -> None:
    assert cnnlab_rows(info) == keras_rows(kmodel)
    assert (info.total, info.trainable) == (kmodel.count_params(), trainable(kmodel))


# ------------------------------------------------------------------- summaries

# An architecture file without input_shape: it takes the data's (H, W, C).
UNSHAPED = """
name: unshaped
layers:
  - {Conv2D: {filters: 6, kernel_size: 3, padding: same, activation: relu}}
  - BatchNormalization
  - {MaxPooling2D: {pool_size: 2}}
  - {Conv2D: {filters: 8, kernel_size: [3, 2], strides: 2}}
  - Flatten
  - {Dense: {units: 7, activation: softmax}}
"""

CASES = [
    ("conv3-small", (32, 32, 3), 10),
    ("conv3-small", (48, 40, 3), 7),
    ("conv3-small", (64, 64, 3), 100),
    ("conv3-small", (24, 24, 1), 3),
    ("conv5-tiny", (32, 32, 3), 10),
    ("conv5-medium", (48, 40, 3), 7),
    ("conv5-medium", (64, 64, 3), 100),
    ("conv7-dropout", (32, 32, 3), 10),
    ("conv7-dropout", (24, 24, 1), 3),
    ("fast", (32, 32, 3), 10),
    ("unshaped", (48, 40, 3), 7),
    ("unshaped", (64, 64, 3), 7),
]


@pytest.mark.parametrize(("name", "shape", "classes"), CASES)
def test_summary_on_colour_inputs_is_keras_summary(
    keras: Any, name: str, shape: tuple[int, int, int], classes: int
) -> None:
    if name == "unshaped":
        arch = parse_architecture(yaml.safe_load(UNSHAPED), source="unshaped.yaml")
        assert not arch.shape_given
    else:
        arch = load_preset(name)
    fitted = adapt_to_data(arch, shape, classes)
    assert fitted.input_shape == shape
    info = infer(fitted, classes)
    assert summary_rows(info)[-1].output_shape == f"(None, {classes})"
    kmodel = keras_model(build_model(fitted, classes, seed=0))
    assert_same_summary(info, kmodel)
    text = cnnlab.summary(fitted, classes)  # the API's text holds the same rows
    for row in summary_rows(info):
        assert f"{row.output_shape}" in text and f"{row.params:,}" in text
    assert f"Total params: {kmodel.count_params():,} " in text


# ---------------------------------------------------------- a trained colour run


# The trained net: a file without input_shape, with batch norm, dropout and 'same'.
TRAINED = """
name: small-rgb
layers:
  - {Conv2D: {filters: 8, kernel_size: 3, padding: same, activation: relu}}
  - BatchNormalization
  - {MaxPooling2D: {pool_size: 2}}
  - {Dropout: {rate: 0.2}}
  - {Conv2D: {filters: 8, kernel_size: 3, activation: relu}}
  - Flatten
  - {Dense: {units: 3, activation: softmax}}
"""


@pytest.fixture(scope="module")
def colour_run(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A small net trained 1 epoch on a folder of 20x24 RGB PNGs of 3 classes, and
    the folder's test images as the exports take them."""
    root = tmp_path_factory.mktemp("colour")
    folder = write_colour_folder(root / "colours", SHAPE[:2], (12, 4))
    (root / "net.yaml").write_text(TRAINED)
    config = cnnlab.TrainConfig(data=str(folder), epochs=1, batch_size=8)
    cnnlab.train(root / "net.yaml", config, out=root / "run", hooks=Hooks())
    files = sorted((folder / "test").rglob("*.png"))
    pixels = np.stack([np.asarray(Image.open(p)) for p in files])
    return {
        "run": root / "run",
        "files": files,
        "x": pixels.astype("float32") / 255,  # (N, 20, 24, 3) in [0, 1]
        "probs": np.array(
            [p.probabilities for p in cnnlab.predict(root / "run", files)]
        ),
    }


def test_the_run_takes_the_datas_shape_and_predict_agrees_with_the_model(
    colour_run: dict[str, Any],
) -> None:
    _, model = load_model(colour_run["run"])
    assert model.arch.input_shape == SHAPE and model.info.layers[-1].output_shape == (
        3,
    )
    nchw = torch.from_numpy(colour_run["x"]).permute(0, 3, 1, 2)
    own = model.probabilities(nchw).numpy()
    assert own.shape == (12, 3)
    assert np.abs(own - colour_run["probs"]).max() <= TOL


def test_cli_onnx_export_takes_nhwc_colour_and_computes_predicts_probabilities(
    colour_run: dict[str, Any],
) -> None:
    onnx = pytest.importorskip("onnx")
    ort = pytest.importorskip("onnxruntime")
    run = colour_run["run"]
    result = run_cli("export", run, "--format", "onnx", check=True)
    assert "image (N, 20, 24, 3) float32 in [0, 1]" in result.out
    assert "probabilities (N, 3)" in result.out
    proto = onnx.load(run / "model.onnx")
    [inp], [out] = proto.graph.input, proto.graph.output

    def dims(value: Any) -> list:
        return [d.dim_param or d.dim_value for d in value.type.tensor_type.shape.dim]

    assert dims(inp) == ["batch", 20, 24, 3] and dims(out) == ["batch", 3]
    session = ort.InferenceSession(
        str(run / "model.onnx"), providers=["CPUExecutionProvider"]
    )
    got = session.run(["probabilities"], {"image": colour_run["x"]})[0]
    assert np.abs(got - colour_run["probs"]).max() <= TOL


# Loads the file in a fresh interpreter where importing cnnlab fails.
LOADER = """
import sys
sys.modules["cnnlab"] = None
import torch
m = torch.jit.load(sys.argv[1])
torch.save(m(torch.load(sys.argv[2])), sys.argv[3])
"""


def test_torchscript_export_takes_nhwc_colour(
    colour_run: dict[str, Any], tmp_path: Path
) -> None:
    path = cnnlab.export_run(colour_run["run"], "torchscript", tmp_path / "net.pt")
    torch.save(torch.from_numpy(colour_run["x"]), tmp_path / "x.pt")
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, path, tmp_path / "x.pt", tmp_path / "y.pt"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    got = torch.load(tmp_path / "y.pt").numpy()
    assert got.shape == (12, 3)
    assert np.abs(got - colour_run["probs"]).max() <= TOL


def test_keras_export_of_the_colour_run_loads_in_keras_and_agrees(
    keras: Any, colour_run: dict[str, Any], tmp_path: Path
) -> None:
    path = cnnlab.export_run(colour_run["run"], "keras", tmp_path / "net.keras")
    kmodel = keras.saving.load_model(path)
    assert tuple(kmodel.input_shape) == (None, *SHAPE)
    got = np.asarray(kmodel(colour_run["x"], training=False))
    assert np.abs(got - colour_run["probs"]).max() <= TOL
    # `cnnlab summary` of the run's spec is the exported model's Keras summary
    _, model = load_model(colour_run["run"])
    assert_same_summary(model.info, kmodel)
    text = run_cli("summary", colour_run["run"] / "spec.yaml", check=True).out
    assert f"Total params: {kmodel.count_params():,} " in text
    for name, shape, params in keras_rows(kmodel):
        line = next(x for x in text.splitlines() if x.startswith(name + " "))
        assert shape in line and f" {params:,} " in line


# ------------------------------------------------------------ Keras import


def colour_npz(path: Path, shape: tuple[int, int, int], classes: int = 4) -> Path:
    """An .npz in the keras.datasets layout: 40 + 12 uint8 images of `shape`."""
    rng = np.random.default_rng(3)
    np.savez(
        path,
        x_train=rng.integers(0, 256, (40, *shape), dtype=np.uint8),
        y_train=(np.arange(40) % classes)[:, None],
        x_test=rng.integers(0, 256, (12, *shape), dtype=np.uint8),
        y_test=np.arange(12) % classes,
    )
    return path


def test_keras_colour_model_imports_trains_and_refuses_other_shapes(
    keras: Any, tmp_path: Path
) -> None:
    L = keras.layers
    # Named as a fresh Keras process names them: Keras counts layers per process,
    # and other tests in this worker built some before.
    kmodel = keras.Sequential(
        [
            keras.Input((32, 32, 3)),
            L.Conv2D(8, 3, activation="relu", name="conv2d"),
            L.MaxPooling2D(2, name="max_pooling2d"),
            L.BatchNormalization(name="batch_normalization"),
            L.Conv2D(8, 3, padding="same", activation="relu", name="conv2d_1"),
            L.Flatten(name="flatten"),
            L.Dense(4, activation="softmax", name="dense"),
        ],
        name="rgb",
    )
    kmodel.save(tmp_path / "rgb.keras")
    result = run_cli("import", "rgb.keras", "--out", "run", cwd=tmp_path, check=True)
    assert f"Total params: {kmodel.count_params():,} " in result.out
    record, model = load_model(tmp_path / "run")
    assert model.arch.input_shape == (32, 32, 3)
    assert_same_summary(model.info, kmodel)
    x = np.random.default_rng(0).random((5, 32, 32, 3), dtype=np.float32)
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    got = model.probabilities(nchw).numpy()
    assert np.abs(got - np.asarray(kmodel(x, training=False))).max() <= TOL

    colour_npz(tmp_path / "rgb.npz", (32, 32, 3))
    args = ["--data", "rgb.npz", "--epochs", "1", "--batch-size", "8"]
    trained = run_cli("train", "run/spec.yaml", *args, "--out", "t", cwd=tmp_path)
    assert trained.code == 0, trained.err
    _, net = load_model(tmp_path / "t")
    assert net.arch.input_shape == (32, 32, 3) and net.info.total == model.info.total

    colour_npz(tmp_path / "small.npz", (28, 28, 3))
    other = ["--data", "small.npz", "--epochs", "1", "--out", "u"]
    line = error_line(run_cli("train", "run/spec.yaml", *other, cwd=tmp_path))
    assert line == (
        "error: run/spec.yaml: input_shape is [32, 32, 3], but the images of "
        "small.npz are 28x28 with 3 channels. Set input_shape: [28, 28, 3] or train "
        "on data of that shape."
    )
    assert not (tmp_path / "u").exists()
