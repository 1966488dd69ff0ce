"""One rule for what a name means, in `cnnlab train`, `cnnlab summary`, the API and
the architectures of a study: a path is a file, a preset name is the preset, and a
preset name that is also a file next to it is an error that says how to choose."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

import cnnlab
from cnnlab.errors import SpecError
from cnnlab.nn.presets import names_file, resolve_architecture
from cnnlab.studies.study import load_study
from helpers import TINY_FLAGS, Result, error_line, write_tiny_net

# The tiny network under a name no preset has, to tell which one was read.
FILE_NET = "file-net"


@pytest.fixture
def clash(tmp_path: Path) -> Path:
    """tmp_path holding a file named like the preset conv5-medium."""
    write_tiny_net(tmp_path / "conv5-medium", FILE_NET)
    return tmp_path


def write_study(folder: Path, entry: str) -> Path:
    doc = {
        "name": "names",
        "seeds": [0],
        "train": {"epochs": 1, "train_limit": 500, "val_size": 100, "test_limit": 500},
        "architectures": [entry],
    }
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(doc), encoding="utf-8")
    return path


def error_message(result: Result) -> str:
    """The bad-input contract (exit 2, one `error: ...` line); the message."""
    return error_line(result).removeprefix("error: ")


def test_train_summary_and_study_refuse_a_name_that_is_preset_and_file(
    cli: Callable[..., Result], clash: Path
) -> None:
    expected = (
        f"'conv5-medium' is both a preset and a file in {clash.resolve()}; write "
        "./conv5-medium for the file, or rename the file to use the preset."
    )
    train = cli("train", "conv5-medium", "--out", "OUT", *TINY_FLAGS)
    assert error_message(train) == expected
    assert error_message(cli("summary", "conv5-medium")) == expected

    write_study(clash, "conv5-medium")
    study = error_message(cli("study", "study.yaml", "--out", "out"))
    assert expected in study  # the same words, whatever location precedes them
    assert not (clash / "OUT").exists() and not (clash / "out" / "names").exists()


def test_dot_slash_names_the_file(cli: Callable[..., Result], clash: Path) -> None:
    summary = cli("summary", "./conv5-medium")
    assert summary.code == 0, summary.err
    assert FILE_NET in summary.out and "conv5-medium" not in summary.out

    train = cli("train", "./conv5-medium", "--out", "OUT", *TINY_FLAGS)
    assert train.code == 0, train.err
    meta = json.loads((clash / "OUT" / "run.json").read_text(encoding="utf-8"))
    assert meta["name"] == FILE_NET

    study = load_study(write_study(clash, "./conv5-medium"))
    assert [a.arch.name for a in study.archs] == [FILE_NET]


def test_the_preset_without_a_clashing_file(tmp_path: Path) -> None:
    assert resolve_architecture("conv5-medium", tmp_path).name == "conv5-medium"
    assert resolve_architecture("4", tmp_path).name == "conv5-medium"
    study = load_study(write_study(tmp_path, "conv5-medium"))
    assert [a.arch.name for a in study.archs] == ["conv5-medium"]


def test_a_bare_word_that_is_no_preset_is_the_file_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write_tiny_net(tmp_path / "mynet", FILE_NET)
    assert resolve_architecture("mynet", tmp_path).name == FILE_NET
    monkeypatch.chdir(tmp_path)
    assert cnnlab.load("mynet").name == FILE_NET
    study = load_study(write_study(tmp_path, "mynet"))
    assert [a.arch.name for a in study.archs] == [FILE_NET]


@pytest.mark.parametrize(
    ("text", "is_file"),
    [
        ("nets/mine", True),  # a path separator
        ("mine.yaml", True),  # a suffix
        ("mine.yml", True),
        ("mine.json", True),
        ("conv5-medium.yaml", True),
        ("./conv5-medium", True),
        ("conv5-medium", False),  # a preset, no such file here
        ("4", False),  # a notebook number
        ("nothing-here", False),  # neither: loading it says "unknown preset"
    ],
)
def test_names_file_rule(tmp_path: Path, text: str, is_file: bool) -> None:
    assert names_file(text, tmp_path) is is_file


def test_a_notebook_number_that_is_also_a_file_is_ambiguous(tmp_path: Path) -> None:
    write_tiny_net(tmp_path / "4", FILE_NET)
    with pytest.raises(SpecError, match=r"'4' is both a preset and a file in .*\./4"):
        resolve_architecture("4", tmp_path)
    assert resolve_architecture("./4", tmp_path).name == FILE_NET


def test_the_rule_is_in_the_help_of_train_and_summary(
    cli: Callable[..., Result],
) -> None:
    for command in ("train", "summary"):
        result = cli(command, "--help")
        assert result.code == 0
        text = " ".join(result.out.split())
        assert "Text with a / or a .yaml, .yml or .json suffix is a file" in text
        assert "a bare word is the preset of that name" in text
        assert "write ./NAME for the file" in text
        assert "any other bare word is the file of that name" in text
