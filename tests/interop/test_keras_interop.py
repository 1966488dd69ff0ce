"""Keras models in and out with real Keras (TensorFlow backend): a model imported
from .keras/.h5/.json computes what Keras computes, an exported network loads in
Keras and computes what cnnlab computes, and bad files are one-line errors."""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

os.environ.setdefault("KERAS_BACKEND", "tensorflow")
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
keras = pytest.importorskip("keras")
L = keras.layers

import cnnlab  # noqa: E402
from cnnlab.api import Hooks, load_model  # noqa: E402
from cnnlab.data.datasets import load_dataset  # noqa: E402
from cnnlab.errors import CnnlabError  # noqa: E402
from cnnlab.interop.keras import (  # noqa: E402
    export_keras,
    import_keras,
    spec_from_keras_config,
    supported_layers,
)
from cnnlab.nn.presets import load_preset  # noqa: E402
from cnnlab.nn.shapes import infer  # noqa: E402
from helpers import error_line, run_cli  # noqa: E402

TOL = 1e-5
# Keras and TensorFlow's own warnings under numpy 2 (copy=False in __array__) are
# theirs; cnnlab's warnings still fail the tests.
pytestmark = [
    pytest.mark.filterwarnings("ignore::DeprecationWarning:keras"),
    pytest.mark.filterwarnings("ignore::DeprecationWarning:tensorflow"),
]


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """64 real MNIST test images as (N, 28, 28, 1) floats in [0, 1]."""
    return load_dataset("mnist").x_test[:64].numpy()[..., None].astype("float32") / 255


def keras_probs(model: Any, x: np.ndarray) -> np.ndarray:
    return np.asarray(model(x, training=False))


def cnnlab_probs(model: Any, x: np.ndarray) -> np.ndarray:
    import torch

    return model.probabilities(torch.from_numpy(x).permute(0, 3, 1, 2)).numpy()


def randomised(model: Any, seed: int = 0) -> Any:
    """Every variable random (batch-norm statistics too, variances positive)."""
    rng = np.random.default_rng(seed)
    for layer in model.layers:
        values = [rng.normal(0, 0.3, w.shape).astype("float32") for w in layer.weights]
        if isinstance(layer, L.BatchNormalization):
            values[3] = rng.uniform(0.5, 1.5, values[3].shape).astype("float32")
        layer.set_weights(values)
    return model


def conv3_small() -> Any:
    """The notebook's net 2 (presets/conv3-small.yaml), written in Keras."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(16, 3, activation="relu"),
            L.Conv2D(16, 3, activation="relu", padding="same"),
            L.MaxPooling2D(2),
            L.Conv2D(16, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.BatchNormalization(),
            L.Dropout(0.15),
            L.Conv2D(32, 3, activation="relu"),
            L.MaxPooling2D(2),
            L.BatchNormalization(),
            L.Dropout(0.15),
            L.Flatten(),
            L.Dense(128, activation="relu"),
            L.Dense(10, activation="softmax"),
        ]
    )


def mixed() -> Any:
    """Every supported layer, with asymmetric 'same' padding and no-bias layers."""
    return keras.Sequential(
        [
            keras.Input((28, 28, 1)),
            L.Conv2D(4, 4, strides=2, padding="same", use_bias=False),
            L.LeakyReLU(negative_slope=0.1),
            L.AveragePooling2D(3, strides=2, padding="same"),
            L.BatchNormalization(momentum=0.9, epsilon=1e-4),
            L.Activation("gelu"),
            L.Conv2D(6, (3, 2), activation="elu"),
            L.MaxPooling2D(2, padding="same"),
            L.Dense(5, activation="tanh"),
            L.Flatten(),
            L.BatchNormalization(),
            L.Dropout(0.2),
            L.Dense(10, activation="softmax", use_bias=False),
        ]
    )


def trainable_count(model: Any) -> int:
    return sum(int(np.prod(w.shape)) for w in model.trainable_weights)


def imported_probs(path: Path, out: Path, x: np.ndarray) -> tuple[Any, np.ndarray]:
    result = import_keras(path, out)
    assert result.run_path == out and (out / "weights.pt").is_file()
    record, model = load_model(out)
    assert record.meta["status"] == "completed" and record.meta["epochs_done"] == 0
    return result, cnnlab_probs(model, x)


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_conv3_small_imports_with_keras_function(
    tmp_path: Path, images: np.ndarray, suffix: str
) -> None:
    kmodel = randomised(conv3_small())
    path = tmp_path / f"net2{suffix}"
    kmodel.save(path)
    result, probs = imported_probs(path, tmp_path / "run", images)
    assert result.arch.layers == load_preset("conv3-small").layers
    info = infer(result.arch)
    assert (info.total, info.trainable) == (
        kmodel.count_params(),
        trainable_count(kmodel),
    )
    assert info.total == 15_146  # the notebook's summary of net 2
    assert np.abs(probs - keras_probs(kmodel, images)).max() < TOL
    assert probs.argmax(1).tolist() != [0] * 64  # random, but not degenerate


def test_json_is_the_architecture_only(tmp_path: Path) -> None:
    kmodel = conv3_small()
    path = tmp_path / "net2.json"
    path.write_text(kmodel.to_json())
    result = import_keras(path, tmp_path / "net2.yaml")
    assert result.run_path is None and result.spec_path.is_file()
    assert cnnlab.load(result.spec_path).layers == load_preset("conv3-small").layers
    assert result.info.total == kmodel.count_params()
    assert result.info.trainable == trainable_count(kmodel)


def test_cli_import_prints_what_it_wrote(tmp_path: Path) -> None:
    kmodel = randomised(mixed())
    kmodel.save(tmp_path / "m.keras")
    res = run_cli("import", "m.keras", "--out", "run", cwd=tmp_path, check=True)
    assert "Run folder: run" in res.out and "Spec: run/spec.yaml" in res.out
    assert f"Total params: {kmodel.count_params():,}" in res.out
    res = run_cli("evaluate", "run", cwd=tmp_path, check=True)
    assert "Test accuracy" in res.out
    weights = (tmp_path / "run" / "weights.pt").read_bytes()
    resumed = run_cli("train", "--resume", "run", cwd=tmp_path)
    assert resumed.code == 2 and "no training checkpoint" in resumed.err
    assert (tmp_path / "run" / "weights.pt").read_bytes() == weights  # kept


def test_export_of_a_trained_preset_loads_in_keras(
    tmp_path: Path, images: np.ndarray
) -> None:
    config = cnnlab.TrainConfig(
        epochs=1, train_limit=2000, test_limit=500, val_size=500
    )
    cnnlab.train("conv5-tiny", config, out=tmp_path / "run", hooks=Hooks())
    _, model = load_model(tmp_path / "run")
    path = export_keras(model, tmp_path / "tiny.keras")
    assert path == tmp_path / "tiny.keras"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    reloaded = keras.saving.load_model(path)
    assert reloaded.count_params() == model.info.total
    diff = np.abs(keras_probs(reloaded, images) - cnnlab_probs(model, images)).max()
    assert diff < TOL


def test_round_trip_keeps_the_function(tmp_path: Path, images: np.ndarray) -> None:
    kmodel = randomised(mixed(), seed=1)
    kmodel.save(tmp_path / "in.keras")
    _, probs = imported_probs(tmp_path / "in.keras", tmp_path / "run", images)
    _, model = load_model(tmp_path / "run")
    back = keras.saving.load_model(export_keras(model, tmp_path / "out.keras"))
    original = keras_probs(kmodel, images)
    assert np.abs(probs - original).max() < TOL
    assert np.abs(keras_probs(back, images) - original).max() < TOL
    assert [type(a).__name__ for a in back.layers] == [
        type(a).__name__ for a in kmodel.layers
    ]


def keras2_config() -> dict:
    """A tf.keras 2 to_json() document: batch_input_shape, alpha, list axis."""
    conv = {"name": "conv2d", "filters": 4, "kernel_size": [3, 3], "strides": [1, 1],
            "padding": "valid", "data_format": "channels_last", "dilation_rate": [1, 1],
            "groups": 1, "activation": "relu", "use_bias": True, "dtype": "float32",
            "batch_input_shape": [None, 12, 12, 1], "kernel_initializer": {
                "class_name": "GlorotUniform", "config": {"seed": None}}}  # fmt: skip
    layers = [
        {"class_name": "Conv2D", "config": conv},
        {"class_name": "BatchNormalization", "config": {"axis": [3], "momentum": 0.9}},
        {"class_name": "LeakyReLU", "config": {"name": "lr", "alpha": 0.2}},
        {"class_name": "Flatten", "config": {"data_format": "channels_last"}},
        {"class_name": "Dense", "config": {"units": 10, "activation": "softmax"}},
    ]
    return {"class_name": "Sequential", "config": {"name": "old", "layers": layers},
            "keras_version": "2.15.0", "backend": "tensorflow"}  # fmt: skip


def test_keras2_config_is_read() -> None:
    arch = spec_from_keras_config(keras2_config(), "old.json")
    assert arch.name == "old" and arch.input_shape == (12, 12, 1)
    assert [type(layer).__name__ for layer in arch.layers] == [
        "Conv2D", "BatchNormalization", "LeakyReLU", "Flatten", "Dense"
    ]  # fmt: skip
    assert arch.layers[2].negative_slope == 0.2 and arch.layers[1].momentum == 0.9


def test_supported_layers_is_the_table() -> None:
    names = [row["layer"] for row in supported_layers()]
    assert names == [
        "Conv2D", "MaxPooling2D", "AveragePooling2D", "BatchNormalization",
        "Dropout", "Flatten", "Dense", "Activation", "LeakyReLU",
    ]  # fmt: skip


def config_of(*layers: Any) -> dict:
    return json.loads(keras.Sequential([keras.Input((28, 28, 1)), *layers]).to_json())


@pytest.mark.parametrize(
    "layers, expected",
    [
        (
            (L.Conv2D(4, 3, dilation_rate=2, name="c"),),
            "layers[0] (Conv2D 'c'): unsupported argument dilation_rate=[2, 2]",
        ),
        (
            (L.Conv2D(4, 3), L.Conv2D(4, 3, groups=2, name="c")),
            "layers[1] (Conv2D 'c'): unsupported argument groups=2",
        ),
        (
            (L.Conv2D(4, 3, activation="swish"),),
            "unsupported argument activation='silu'",
        ),
        (
            (L.Flatten(data_format="channels_first"),),
            "unsupported argument data_format='channels_first'",
        ),
        ((L.BatchNormalization(axis=1),), "unsupported argument axis=1"),
        ((L.BatchNormalization(center=False),), "unsupported argument center=False"),
        (
            (L.Dropout(0.1, noise_shape=(None, 1, 1, 1)),),
            "unsupported argument noise_shape",
        ),
        ((L.Conv2D(4, 3, dtype="float16"),), "unsupported argument dtype='float16'"),
        (
            (L.GlobalAveragePooling2D(name="c"),),
            "layers[0] (GlobalAveragePooling2D 'c'): unsupported layer. To import the model, use Flatten",
        ),
    ],
)
def test_unsupported_is_named_with_its_value(layers: tuple, expected: str) -> None:
    with pytest.raises(CnnlabError) as err:
        spec_from_keras_config(config_of(*layers), "m.json")
    assert expected in str(err.value) and "\n" not in str(err.value)


def test_weights_of_another_shape_are_a_located_error(tmp_path: Path) -> None:
    randomised(conv3_small()).save(tmp_path / "m.keras")
    with zipfile.ZipFile(tmp_path / "m.keras") as zf:
        files = {name: zf.read(name) for name in zf.namelist()}
    doc = json.loads(files["config.json"])
    doc["config"]["layers"][2]["config"]["filters"] = 8  # the second Conv2D
    files["config.json"] = json.dumps(doc).encode()
    with zipfile.ZipFile(tmp_path / "bad.keras", "w") as zf:
        for name, data in files.items():
            zf.writestr(name, data)
    with pytest.raises(CnnlabError, match=r"layers\[1\] \(Conv2D 'conv2d_\d+'\): weight "
                       r"'kernel' is shape \(3, 3, 16, 16\)"):  # fmt: skip
        import_keras(tmp_path / "bad.keras", tmp_path / "run")
    assert not (tmp_path / "run").exists()


# ------------------------------------------------------------- bad files, via the CLI


def bad_dilation(path: Path) -> str:
    keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(2, 3, dilation_rate=2),
                      L.Flatten(), L.Dense(10)]).save(path)  # fmt: skip
    return "unsupported argument dilation_rate=[2, 2]"


def bad_layer(path: Path) -> str:
    keras.Sequential([keras.Input((28, 28, 1)), L.Conv2D(2, 3),
                      L.GlobalAveragePooling2D(), L.Dense(10)]).save(path)  # fmt: skip
    return "layers[1] (GlobalAveragePooling2D"


def bad_functional(path: Path) -> str:
    inputs = keras.Input((28, 28, 1))
    outputs = L.Dense(10)(L.Flatten()(inputs))
    keras.Model(inputs, outputs).save(path)
    return "functional (non-Sequential) Keras model"


def bad_zip(path: Path) -> str:
    path.write_bytes(b"PK\x03\x04 this is not really a zip archive")
    return "not a readable .keras archive"


def bad_truncated(path: Path) -> str:
    randomised(mixed()).save(path)
    path.write_bytes(path.read_bytes()[:3000])
    return "not a readable .keras archive"


def bad_no_config(path: Path) -> str:
    with zipfile.ZipFile(path, "w") as zf:
        zf.writestr("metadata.json", "{}")
    return "a zip without config.json"


def bad_json(path: Path) -> str:
    path.write_text(json.dumps({"hello": [1, 2]}))
    return "not a Keras model config (no 'class_name': 'Sequential')"


def bad_empty(path: Path) -> str:
    path.write_text(keras.Sequential([keras.Input((28, 28, 1))]).to_json())
    return "has no layers"


def bad_h5(path: Path) -> str:
    path.write_bytes(b"\x89HDF\r\n\x1a\n" + b"\0" * 64)
    return "not a readable HDF5 file"


@pytest.mark.parametrize(
    "make, name",
    [
        (bad_dilation, "m.keras"),
        (bad_layer, "m.keras"),
        (bad_functional, "m.keras"),
        (bad_zip, "m.keras"),
        (bad_truncated, "m.keras"),
        (bad_no_config, "m.keras"),
        (bad_json, "m.json"),
        (bad_empty, "m.json"),
        (bad_h5, "m.h5"),
    ],
)
def test_bad_file_is_a_one_line_error(tmp_path: Path, make: Any, name: str) -> None:
    expected = make(tmp_path / name)
    res = run_cli("import", name, "--out", "out", cwd=tmp_path)
    assert res.code == 2 and res.out == ""
    assert res.err.startswith(f"error: {name}: ") and res.err.count("\n") == 1
    assert expected in res.err and "Traceback" not in res.err
    assert sorted(p.name for p in tmp_path.iterdir()) == [name]  # nothing written


def test_other_files_are_refused_with_what_import_reads(tmp_path: Path) -> None:
    (tmp_path / "net.txt").write_text("model = None\n")
    result = run_cli("import", "net.txt", cwd=tmp_path)
    error_line(
        result, "net.txt: cannot import a '.txt' file", ".keras archive", ".ipynb"
    )
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net.txt"]
