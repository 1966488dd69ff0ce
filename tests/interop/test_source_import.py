"""`cnnlab import` of Keras code (.py, .ipynb): read with `ast`, never run."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cnnlab.errors import CnnlabError
from cnnlab.interop.source import import_source, read_source
from cnnlab.nn.presets import NOTEBOOK_NETS, load_preset
from cnnlab.nn.shapes import infer
from cnnlab.nn.spec import Dropout, parse_architecture
from cnnlab.studies.study import load_study
from helpers import TESTS, error_line, run_cli

FIXTURE = TESTS / "fixtures" / "seed-notebook.ipynb"
NAMES = [
    "2-using-3-3-convnet-optimizer-adadelta",
    "2.1-evaluating-model",
    "3-5-5-convnet-optimizer-adam",
    "3.1-evaluating-model",
    "4-7-7-convnet-optimizer-adam",
    "4.1-evaluating-model",
    "4.2-evaluating-model",
    "4.3-evaluating-model",
    "4.4-evaluating-model",
]
NET_8 = 7  # index of conv7-deep-dense, whose listing has no Dropout layers


def shapes(arch, skip_dropout: bool = False) -> list[tuple]:
    """(type, output shape, trainable, non-trainable) of each layer."""
    return [
        (type(i.layer).__name__, i.output_shape, i.trainable, i.non_trainable)
        for i in infer(arch).layers
        if not (skip_dropout and isinstance(i.layer, Dropout))
    ]


def write_notebook(path: Path, cells: list[tuple[str, str]]) -> Path:
    """An nbformat 4 notebook of (cell type, source) pairs."""
    doc = {
        "cells": [
            {"cell_type": kind, "metadata": {}, "source": source.splitlines(True)}
            | ({"execution_count": None, "outputs": []} if kind == "code" else {})
            for kind, source in cells
        ],
        "metadata": {},
        "nbformat": 4,
        "nbformat_minor": 4,
    }
    path.write_text(json.dumps(doc), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def notebook():
    return read_source(FIXTURE)


def test_the_notebook_gives_the_nine_presets(notebook) -> None:
    assert list(notebook.models) == NAMES
    assert notebook.problems == []
    archs = list(notebook.models.values())
    for index, (arch, preset) in enumerate(
        zip(archs, NOTEBOOK_NETS.values(), strict=True)
    ):
        ours, theirs = infer(arch), infer(load_preset(preset))
        totals = (ours.total, ours.trainable, ours.non_trainable)
        assert totals == (theirs.total, theirs.trainable, theirs.non_trainable)
        assert arch.input_shape == (28, 28, 1)
        if index == NET_8:  # compare what the listing defines: all but the Dropouts
            assert not any(isinstance(layer, Dropout) for layer in arch.layers)
            assert shapes(arch) == shapes(load_preset(preset), skip_dropout=True)
        else:
            assert shapes(arch) == shapes(load_preset(preset))
            assert arch.layers == load_preset(preset).layers


def test_the_notebook_protocol_and_locations(notebook) -> None:
    assert notebook.train == {
        "epochs": 12,
        "batch_size": 128,
        "optimizer": "adam",
        "validation": "test",
    }
    assert notebook.overrides == {}
    first = notebook.models[NAMES[0]]
    assert first.source == f"{FIXTURE}:cell 5:line 1"
    assert "under '2 Using 3*3 ConvNet" in first.description


def test_a_py_sequential_list_with_constants(tmp_path: Path) -> None:
    code = tmp_path / "net.py"
    code.write_text(
        "import tensorflow as tf\n"
        "from tensorflow import keras\n"
        "from tensorflow.keras import layers\n"
        "from keras.layers import Dense as D\n"
        "num_classes = 10\n"
        "img_rows, img_cols = 28, 28\n"
        "input_shape = (img_rows, img_cols, 1)\n"
        "kernel = (3, 3)\n"
        "width = 2 * 16\n"
        "net = keras.Sequential([\n"
        "    keras.Input(shape=input_shape),\n"
        "    layers.Conv2D(width // 2, kernel, 1, 'same', activation='relu'),\n"
        "    layers.MaxPool2D(2),\n"
        "    tf.keras.layers.Flatten(),\n"
        "    layers.Dropout(rate=0.25),\n"
        "    D(num_classes, activation=tf.nn.softmax),\n"
        "])\n"
    )
    result = read_source(code)
    assert result.problems == []
    expected = parse_architecture(
        {
            "name": "net",
            "description": "imported from net.py, line 10",
            "layers": [
                {
                    "Conv2D": {
                        "filters": 16,
                        "kernel_size": 3,
                        "padding": "same",
                        "activation": "relu",
                    }
                },  # fmt: skip
                {"MaxPooling2D": {"pool_size": 2}},
                "Flatten",
                {"Dropout": {"rate": 0.25}},
                {"Dense": {"units": 10, "activation": "softmax"}},
            ],
        }
    )
    assert list(result.models) == ["net"]
    assert result.models["net"] == expected
    assert result.models["net"].source == f"{code}:10"


def test_keras_1_spellings_and_a_reused_variable(tmp_path: Path) -> None:
    code = tmp_path / "old.py"
    code.write_text(
        "from keras.models import Sequential\n"
        "from keras.layers import *\n"
        "model = Sequential()\n"
        "model.add(Convolution2D(8, 3, 3, border_mode='same', input_shape=(28, 28, 1)))\n"
        "model.add(Flatten())\n"
        "model.add(Dropout(p=0.5))\n"
        "model.add(Dense(output_dim=10, init='glorot_uniform'))\n"
        "model.fit(X, Y, nb_epoch=3, batch_size=64)\n"
        "model = Sequential([Flatten(input_shape=(28, 28, 1)), Dense(10)])\n"
    )
    result = read_source(code)
    assert list(result.models) == ["model", "model-2"]
    conv = result.models["model"].layers[0]
    assert (conv.filters, conv.kernel_size, conv.padding) == (8, (3, 3), "same")
    assert (
        result.models["model"].layers[1:]
        == parse_architecture(
            {
                "layers": [
                    "Flatten",
                    {"Dropout": {"rate": 0.5}},
                    {"Dense": {"units": 10}},
                ]
            }
        ).layers
    )
    assert result.train == {"epochs": 3, "batch_size": 64, "validation": "holdout"}


def test_untranslatable_code_is_located_and_the_rest_imported(tmp_path: Path) -> None:
    code = tmp_path / "mixed.py"
    code.write_text(
        "from tensorflow import keras\n"
        "from tensorflow.keras import layers\n"
        "inputs = keras.Input(shape=(28, 28, 1))\n"
        "outputs = layers.Dense(10)(layers.Flatten()(inputs))\n"
        "functional = keras.Model(inputs, outputs)\n"
        "pooled = keras.Sequential()\n"
        "pooled.add(layers.Conv2D(8, 3, input_shape=(28, 28, 1)))\n"
        "pooled.add(layers.GlobalAveragePooling2D())\n"
        "shaped = keras.Sequential([layers.Flatten(input_shape=x_train.shape[1:])])\n"
        "good = keras.Sequential([layers.Flatten(), layers.Dense(10)])\n"
    )
    result = read_source(code)
    assert list(result.models) == ["good"]
    functional, pooled, shaped = result.problems
    assert functional.startswith(f"{code}:5: ") and "functional-API" in functional
    assert pooled.startswith(f"{code}:8: ") and "GlobalAveragePooling2D" in pooled
    assert "Model 'pooled' is not imported" in pooled
    assert shaped.startswith(f"{code}:9: ") and "run time" in shaped


def test_a_notebook_problem_names_its_cell(tmp_path: Path) -> None:
    path = write_notebook(
        tmp_path / "nb.ipynb",
        [
            ("markdown", "# Setup"),
            (
                "code",
                "%matplotlib inline\n!pip list\nfrom keras import layers, models\n",
            ),
            ("markdown", "## A tiny net\nprose"),
            ("code", "m = models.Sequential()\nm.add(layers.Conv3D(4, 3))\n"),
            ("code", "m = models.Sequential()\nm.add(layers.Flatten())\n"),
            ("code", "m.add(layers.Dense(10, activation='softmax'))\n"),
        ],
    )
    result = read_source(path)
    (problem,) = result.problems
    assert problem.startswith(f"{path}:cell 4:line 2: ") and "Conv3D" in problem
    # a reused variable is named from the heading above it; cells add to one model
    assert list(result.models) == ["a-tiny-net-2"]
    assert len(result.models["a-tiny-net-2"].layers) == 2


def test_the_written_study_loads_with_the_imported_nets(notebook, tmp_path) -> None:
    out = tmp_path / "out"
    result = import_source(FIXTURE, out)
    assert sorted(p.name for p in out.iterdir()) == sorted(
        [f"{n}.yaml" for n in NAMES] + ["study.yaml"]
    )
    study = load_study(out / "study.yaml")
    assert [a.label for a in study.archs] == NAMES
    assert [a.arch for a in study.archs] == list(result.models.values())
    assert [a.arch for a in study.archs] == list(notebook.models.values())
    config = study.archs[0].config
    assert (config.epochs, config.batch_size, config.validation) == (12, 128, "test")
    assert "# The code validates on the test set" in (out / "study.yaml").read_text()


def test_nothing_importable_is_one_error_and_writes_nothing(tmp_path: Path) -> None:
    code = tmp_path / "functional.py"
    code.write_text("import keras\nm = keras.Model(i, o)\n")
    with pytest.raises(CnnlabError, match=r"no Keras model could be imported: .*:2: "):
        import_source(code, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def cli_or_skip(*args, cwd: Path):
    """`python -m cnnlab ARGS`; skipped while `import` does not route code files."""
    result = run_cli(*args, cwd=cwd)
    if "cannot import a '.py" in result.err or "cannot import a '.ipynb" in result.err:
        pytest.skip("`cnnlab import` does not route .py/.ipynb to interop.source yet")
    return result


def test_cli_imports_the_notebook(tmp_path: Path) -> None:
    result = cli_or_skip("import", FIXTURE, "--out", tmp_path / "out", cwd=tmp_path)
    assert result.code == 0, result.err
    assert (tmp_path / "out" / "study.yaml").is_file()
    assert len(list((tmp_path / "out").glob("*.yaml"))) == 10


@pytest.mark.parametrize(
    ("name", "text", "phrase"),
    [
        ("bad.ipynb", "{not json", "not JSON"),
        ("bad.py", "x = 1\ny = (\nz = 2\n", "bad.py:2: not valid Python"),
        ("empty.py", "import keras\nprint('no model')\n", "no Keras model"),
    ],
)
def test_cli_refuses_bad_code(tmp_path: Path, name: str, text: str, phrase: str):
    (tmp_path / name).write_text(text)
    result = cli_or_skip("import", name, "--out", "out", cwd=tmp_path)
    error_line(result, phrase)
    assert not (tmp_path / "out").exists()
