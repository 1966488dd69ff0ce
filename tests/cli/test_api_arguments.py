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
