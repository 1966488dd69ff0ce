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
from cnnlab.cli import main
from cnnlab.errors import SpecError
from cnnlab.nn.presets import names_file, resolve_architecture
from cnnlab.studies.study import load_study

# A valid architecture that no preset resembles, to tell which one was read.
FILE_NET = {
    "name": "file-net",
    "input_shape": [28, 28, 1],
    "layers": ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}],
}
TINY = [
    *("--epochs", "1", "--train-limit", "500"),
    *("--val-size", "100", "--test-limit", "500"),
]


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> Callable[..., tuple[int, str, str]]:
    """`cnnlab.cli.main(ARGS)` in process, in tmp_path: (exit code, out, err)."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str | Path) -> tuple[int, str, str]:
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return call


@pytest.fixture
def clash(tmp_path: Path) -> Path:
    """tmp_path holding a file named like the preset conv5-medium."""
    (tmp_path / "conv5-medium").write_text(yaml.safe_dump(FILE_NET), encoding="utf-8")
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


def error_message(code: int, err: str) -> str:
    """The bad-input contract: exit 2 and one `error: ...` line; its message."""
    assert code == 2, err
    lines = err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    return lines[0].removeprefix("error: ")


def test_train_summary_and_study_refuse_a_name_that_is_preset_and_file(
    cli: Callable[..., tuple[int, str, str]], clash: Path
) -> None:
    expected = (
        f"'conv5-medium' is both a preset and a file in {clash}; write ./conv5-medium "
        "for the file, or rename the file to use the preset."
    )
    train = error_message(*cli("train", "conv5-medium", "--out", "OUT", *TINY)[::2])
    assert train == expected
    assert error_message(*cli("summary", "conv5-medium")[::2]) == expected

    write_study(clash, "conv5-medium")
    study = error_message(*cli("study", "study.yaml", "--out", "out")[::2])
    assert expected in study  # the same words, whatever location precedes them
    assert not (clash / "OUT").exists() and not (clash / "out" / "names").exists()


def test_dot_slash_names_the_file(
    cli: Callable[..., tuple[int, str, str]], clash: Path
) -> None:
    code, out, err = cli("summary", "./conv5-medium")
    assert code == 0, err
    assert "file-net" in out and "conv5-medium" not in out

    code, out, err = cli("train", "./conv5-medium", "--out", "OUT", *TINY)
    assert code == 0, err
    meta = json.loads((clash / "OUT" / "run.json").read_text(encoding="utf-8"))
    assert meta["name"] == "file-net"

    study = load_study(write_study(clash, "./conv5-medium"))
    assert [a.arch.name for a in study.archs] == ["file-net"]


def test_the_preset_without_a_clashing_file(tmp_path: Path) -> None:
    assert resolve_architecture("conv5-medium", tmp_path).name == "conv5-medium"
    assert resolve_architecture("4", tmp_path).name == "conv5-medium"
    study = load_study(write_study(tmp_path, "conv5-medium"))
    assert [a.arch.name for a in study.archs] == ["conv5-medium"]


def test_a_bare_word_that_is_no_preset_is_the_file_of_that_name(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "mynet").write_text(yaml.safe_dump(FILE_NET), encoding="utf-8")
    assert resolve_architecture("mynet", tmp_path).name == "file-net"
    monkeypatch.chdir(tmp_path)
    assert cnnlab.load("mynet").name == "file-net"
    study = load_study(write_study(tmp_path, "mynet"))
    assert [a.arch.name for a in study.archs] == ["file-net"]


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
    (tmp_path / "4").write_text(yaml.safe_dump(FILE_NET), encoding="utf-8")
    with pytest.raises(SpecError, match=r"'4' is both a preset and a file in .*\./4"):
        resolve_architecture("4", tmp_path)
    assert resolve_architecture("./4", tmp_path).name == "file-net"


def test_the_rule_is_in_the_help_of_train_and_summary(
    cli: Callable[..., tuple[int, str, str]],
) -> None:
    for command in ("train", "summary"):
        code, out, _ = cli(command, "--help")
        assert code == 0
        text = " ".join(out.split())
        assert "Text with a / or a .yaml, .yml or .json suffix is a file" in text
        assert "a bare word is the preset of that name" in text
        assert "write ./NAME for the file" in text
        assert "any other bare word is the file of that name" in text
