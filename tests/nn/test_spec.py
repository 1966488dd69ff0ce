"""Architecture files: the accepted forms, and one located error per mistake."""

from pathlib import Path

import pytest

from cnnlab import Conv2D, Dense, Flatten, MaxPooling2D, SpecError
from cnnlab.nn.presets import load_preset
from cnnlab.nn.shapes import infer
from cnnlab.nn.spec import (
    Architecture,
    dump_architecture,
    load_architecture,
    parse_architecture,
)

HEAD = "name: t\nlayers:\n"


def write(tmp_path: Path, layers: str, head: str = HEAD) -> Path:
    path = tmp_path / "net.yaml"
    path.write_text(head + layers)
    return path


def test_three_spellings_of_a_layer_give_the_same_spec(tmp_path: Path) -> None:
    a = load_architecture(
        write(
            tmp_path,
            "  - {type: Conv2D, filters: 4, kernel_size: 3}\n"
            "  - Flatten\n  - {Dense: {units: 10}}\n",
        )
    )
    b = load_architecture(
        write(
            tmp_path,
            "  - {type: conv2d, filters: 4, kernel_size: [3, 3]}\n"
            "  - {type: flatten}\n  - {type: dense, units: 10}\n",
        )
    )
    c = Architecture("t", (Conv2D(4, 3), Flatten(), Dense(10)))
    assert a == b == c
    assert a.layers[0].kernel_size == (3, 3) and a.layers[0].strides == (1, 1)


def test_json_file_is_read_too(tmp_path: Path) -> None:
    path = tmp_path / "net.json"
    path.write_text(
        '{"name": "j", "layers": [{"type": "Flatten"}, '
        '{"type": "Dense", "units": 10, "activation": "softmax"}]}'
    )
    arch = load_architecture(path)
    assert infer(arch, 10).total == 28 * 28 * 10 + 10


def test_keras_input_shape_on_first_layer(tmp_path: Path) -> None:
    arch = load_architecture(
        write(
            tmp_path,
            "  - {type: Conv2D, filters: 2, kernel_size: 3, input_shape: [32, 32, 3]}\n",
        )
    )
    assert arch.input_shape == (32, 32, 3)
    assert infer(arch).layers[0].output_shape == (30, 30, 2)


def test_pool_strides_default_to_pool_size() -> None:
    assert MaxPooling2D(3).strides == (3, 3)
    assert MaxPooling2D(3, strides=1).strides == (1, 1)


@pytest.mark.parametrize("name", ["conv3-small", "conv7-dropout"])
def test_dump_and_load_round_trip(tmp_path: Path, name: str) -> None:
    arch = load_preset(name)
    path = tmp_path / "spec.yaml"
    path.write_text(dump_architecture(arch))
    assert load_architecture(path) == arch


def test_same_padding_with_stride_rounds_up() -> None:
    arch = Architecture("s", (Conv2D(4, 3, strides=2, padding="same"),))
    assert infer(arch).layers[0].output_shape == (14, 14, 4)
    arch = Architecture("s", (Conv2D(4, 3, strides=2, padding="same"),), (27, 27, 1))
    assert infer(arch).layers[0].output_shape == (14, 14, 4)


def test_dense_on_an_image_acts_on_channels() -> None:
    info = infer(Architecture("d", (Conv2D(8, 3), Dense(5))))
    assert info.layers[1].output_shape == (26, 26, 5)
    assert info.layers[1].params == 8 * 5 + 5


# (layers, phrases every message must contain): what, where and the fix.
BAD_SPECS = {
    "unknown-layer": ("  - {type: Conv2d2, filters: 4}\n",
                      ["layers[0]", "unknown layer type 'Conv2d2'", "Did you mean 'Conv2D'"]),
    "unknown-argument": ("  - {type: Conv2D, filter: 4, kernel_size: 3}\n",
                         ["layers[0] (Conv2D)", "unknown argument 'filter'",
                          "Did you mean 'filters'"]),
    "wrong-type": ("  - {type: Conv2D, filters: sixteen, kernel_size: 3}\n",
                   ["layers[0] (Conv2D)", "filters must be a positive integer",
                    "Received: filters='sixteen'"]),
    "zero-size": ("  - {type: Dense, units: 0}\n",
                  ["layers[0] (Dense)", "units must be a positive integer"]),
    "negative-kernel": ("  - {type: Conv2D, filters: 4, kernel_size: -3}\n",
                        ["layers[0] (Conv2D)", "kernel_size must be positive"]),
    "missing-argument": ("  - {type: Dense}\n",
                         ["layers[0] (Dense)", "missing required argument(s): units"]),
    "bad-activation": ("  - {type: Dense, units: 10, activation: softmaxx}\n",
                       ["layers[0] (Dense)", "Did you mean 'softmax'"]),
    "bad-padding": ("  - {type: Conv2D, filters: 4, kernel_size: 3, padding: full}\n",
                    ["layers[0] (Conv2D)", "padding must be one of valid, same"]),
    "dropout-rate": ("  - {type: Dropout, rate: 1.5}\n",
                     ["layers[0] (Dropout)", "rate must be a number in [0, 1)"]),
    "not-a-mapping": ("  - 42\n", ["layers[0]", "a layer must be a mapping"]),
    "kernel-too-large": ("  - {type: MaxPooling2D, pool_size: 8}\n"
                         "  - {type: Conv2D, filters: 4, kernel_size: 5}\n",
                         ["layers[1] (Conv2D)", "kernel_size [5, 5] is larger than its "
                          "input 3x3", "padding: same"]),
    "conv-after-flatten": ("  - Flatten\n  - {type: Conv2D, filters: 4, kernel_size: 3}\n",
                           ["layers[1] (Conv2D)", "expects an image input"]),
    "wrong-class-count": ("  - Flatten\n  - {type: Dense, units: 5, activation: softmax}\n",
                          ["layers[1] (Dense)", "data set has 10 classes",
                           "units: 10, activation: softmax"]),
    "no-flatten": ("  - {type: Conv2D, filters: 4, kernel_size: 3}\n"
                   "  - {type: Dense, units: 10, activation: softmax}\n",
                   ["layers[1] (Dense)", "(26, 26, 10)", "Add {type: Flatten}"]),
    "sigmoid-output": ("  - Flatten\n  - {type: Dense, units: 10, activation: sigmoid}\n",
                       ["layers[1] (Dense)", "output activation is 'sigmoid'"]),
}  # fmt: skip


@pytest.mark.parametrize("layers,phrases", BAD_SPECS.values(), ids=BAD_SPECS.keys())
def test_bad_spec_gives_one_located_error(
    tmp_path: Path, layers: str, phrases: list[str]
) -> None:
    path = write(tmp_path, layers)
    with pytest.raises(SpecError) as err:
        infer(load_architecture(path), num_classes=10)
    message = str(err.value)
    assert message.startswith(str(path))
    assert "\n" not in message
    for phrase in phrases:
        assert phrase in message


@pytest.mark.parametrize(
    "text,phrases",
    [
        ("name: t\nlayers: [\n", ["invalid YAML at line", "Fix the syntax"]),
        ("- just a list\n", ["must be a mapping with 'name' and 'layers'"]),
        ("name: t\nlayer: []\n", ["unknown key 'layer'", "Did you mean 'layers'"]),
        ("name: t\nlayers: []\n", ["'layers' must be a non-empty list"]),
        (
            "name: t\ninput_shape: [28, 28]\nlayers: [Flatten]\n",
            ["input_shape must be"],
        ),
    ],
    ids=[
        "invalid-yaml",
        "not-a-mapping",
        "unknown-key",
        "empty-layers",
        "bad-input-shape",
    ],
)
def test_bad_document(tmp_path: Path, text: str, phrases: list[str]) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as err:
        load_architecture(path)
    for phrase in phrases:
        assert phrase in str(err.value)


def test_missing_file_says_what_to_give(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="no such file.*cnnlab presets"):
        load_architecture(tmp_path / "nope.yaml")


def test_python_api_errors_name_the_value() -> None:
    with pytest.raises(SpecError, match=r"Received: filters=0"):
        Conv2D(0, 3)
    with pytest.raises(SpecError, match="unknown layer"):
        parse_architecture({"name": "x", "layers": [{"type": "Conv3D"}]})
