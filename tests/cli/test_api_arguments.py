"""The Python API checks its arguments as the CLI checks its flags: a value of the
wrong kind is a TypeError saying what to give, a wrong value a CnnlabError with
the CLI's wording; nothing is iterated character by character or silently empty."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

import cnnlab
from cnnlab.api import Hooks
from cnnlab.nn.spec import parse_architecture
from helpers import draw_digit, tiny_net_doc

CONFIG = cnnlab.TrainConfig(epochs=1, train_limit=300, test_limit=100, val_size=100)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("api")
    cnnlab.train(parse_architecture(tiny_net_doc()), CONFIG, out=root / "net",
                 hooks=Hooks())  # fmt: skip
    return root / "net"


def test_load_takes_a_preset_number_as_the_readme_says() -> None:
    assert cnnlab.load(4) == cnnlab.load("4")
    for bad in (None, {"name": "x"}, 1.5):
        with pytest.raises(TypeError, match="preset name"):
            cnnlab.load(bad)  # type: ignore[arg-type]


def test_an_architecture_without_layers_is_one_error() -> None:
    with pytest.raises(cnnlab.CnnlabError, match="has no layers"):
        cnnlab.summary(cnnlab.Architecture("t", ()))


def test_predict_takes_one_path_or_a_list_never_characters(
    run: Path, tmp_path: Path
) -> None:
    image = draw_digit(tmp_path / "one.png", "1")
    one = cnnlab.predict(run, str(image))
    assert [p.path for p in one] == [str(image)]
    assert cnnlab.predict(run, [image])[0].label == one[0].label
    with pytest.raises(cnnlab.CnnlabError, match="no images given"):
        cnnlab.predict(run, [])
    with pytest.raises(TypeError, match="image path"):
        cnnlab.predict(run, 5)  # type: ignore[arg-type]


def test_seeds_are_a_list_of_integers() -> None:
    assert cnnlab.load_study("quickstart", seeds=[0, 1]).seeds == (0, 1)
    with pytest.raises(TypeError, match=r"\[0, 1, 2\]"):
        cnnlab.load_study("quickstart", seeds="0,1")  # type: ignore[arg-type]
    with pytest.raises(cnnlab.CnnlabError, match="integers >= 0"):
        cnnlab.load_study("quickstart", seeds=[-1])


def test_an_unknown_trial_status_is_refused(run: Path, tmp_path: Path) -> None:
    doc = {"name": "s", "seeds": [0], "train": {"epochs": 1, "train_limit": 300,
           "test_limit": 100, "val_size": 100},
           "architectures": [{"label": "net", "spec": tiny_net_doc()}]}  # fmt: skip
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump(doc))
    cnnlab.run_study(path, tmp_path / "out", progress=None)
    assert len(cnnlab.list_trials(tmp_path / "out", status="completed")) == 1
    with pytest.raises(cnnlab.CnnlabError, match="status must be one of"):
        cnnlab.list_trials(tmp_path / "out", status="nonsense")


def test_build_model_checks_its_seed_as_training_does() -> None:
    arch = cnnlab.load("conv5-tiny")
    for seed in (-1, 2**32, 1.5, "0"):
        with pytest.raises(cnnlab.CnnlabError, match="seed must be an integer from 0"):
            cnnlab.build_model(arch, seed=seed)  # type: ignore[arg-type]
    for classes in (0, -3, 2.5, "10"):
        with pytest.raises(cnnlab.CnnlabError, match="num_classes must be a positive"):
            cnnlab.build_model(arch, num_classes=classes)  # type: ignore[arg-type]
    a, b = cnnlab.build_model(arch, seed=3), cnnlab.build_model(arch, seed=3)
    assert all(
        (p == q).all() for p, q in zip(a.parameters(), b.parameters(), strict=True)
    )


def test_an_idx_header_of_many_dimensions_is_named_not_listed(tmp_path: Path) -> None:
    from cnnlab.data.datasets import read_idx

    path = tmp_path / "many"
    path.write_bytes(bytes([0, 0, 0x08, 200]) + (1).to_bytes(4, "big") * 200 + b"xy")
    with pytest.raises(cnnlab.DataError) as err:
        read_idx(path)
    message = str(err.value)
    assert "of 200 dimensions, (1, 1, 1, 1)..." in message and len(message) < 300


def test_predict_on_a_run_of_tiny_images_is_one_error(tmp_path: Path) -> None:
    """A run trained on 1x1 images cannot read a picture as a digit: one error
    naming the run's input and what predict needs, not a ValueError."""
    import numpy as np

    from helpers import write_idx

    data = tmp_path / "px1"
    data.mkdir()
    rng = np.random.default_rng(0)
    for prefix, count in (("train", 200), ("t10k", 50)):
        write_idx(
            data / f"{prefix}-images-idx3-ubyte",
            rng.integers(0, 256, (count, 1, 1), dtype=np.uint8),
        )
        write_idx(
            data / f"{prefix}-labels-idx1-ubyte", np.arange(count, dtype=np.uint8) % 10
        )
    net = {
        "name": "dot",
        "layers": ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}],
    }
    config = cnnlab.TrainConfig(epochs=1, data=str(data), validation="none")
    run = cnnlab.train(parse_architecture(net), config, tmp_path / "run", hooks=Hooks())
    image = draw_digit(tmp_path / "one.png", "1")
    with pytest.raises(cnnlab.RunError, match="takes 1x1x1 inputs"):
        cnnlab.predict(run.path, [image])
