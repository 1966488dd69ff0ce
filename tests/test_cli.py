"""Tests for the `cnnlab` command: real runs on the embedded MNIST, tiny subsets.

Successful commands run as real processes (`python -m cnnlab`); the bad-input
matrix runs in process through `cli.main` (each process start costs ~2 s of torch
import), and a sample of it runs again as real processes.
"""

from __future__ import annotations

import csv
import json
import os
import re
import shutil
import subprocess
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

import pytest
import yaml
from PIL import Image, ImageDraw

from cnnlab.cli import main
from cnnlab.data.datasets import FASHION_MNIST_DIR

# The brief's size limits: every training run in this file stays this small.
TINY = [
    *("--epochs", "1", "--train-limit", "1000"),
    *("--val-size", "500", "--test-limit", "1000"),
]
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
RUN_FILES = (
    "spec.yaml",
    "run.json",
    "history.csv",
    "checkpoint.pt",
    "weights.pt",
    "curves.png",
)

# Parameter totals of the nine presets (`cnnlab presets`), in the notebook's order.
PRESET_TOTALS = {
    "conv3-512": "23,337,610",
    "conv3-small": "15,146",
    "conv5-tiny": "412",
    "conv5-medium": "118,258",
    "conv7-pool3": "11,208,922",
    "conv7-pool2": "13,154,522",
    "conv7-one-dense": "1,310,522",
    "conv7-deep-dense": "16,996,122",
    "conv7-dropout": "6,752,730",
}

# ----------------------------------------------------------------------- helpers


@dataclass
class Result:
    code: int
    out: str
    err: str


def run_cli(*args: str | Path, cwd: Path) -> Result:
    """`python -m cnnlab ARGS` as a real process in `cwd`."""
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", *map(str, args)],
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ | {"COLUMNS": "200"},  # rich tables: no wrapped rows
        timeout=120,
    )
    return Result(proc.returncode, proc.stdout, proc.stderr)


@pytest.fixture
def cli(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> Callable[..., Result]:
    """`cnnlab.cli.main(ARGS)` in process, in tmp_path; argparse exits included."""
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("COLUMNS", "200")

    def call(*args: str | Path) -> Result:
        try:
            code = main([str(a) for a in args])
        except SystemExit as stop:
            code = stop.code if isinstance(stop.code, int) else 1
        captured = capsys.readouterr()
        return Result(code, captured.out, captured.err)

    return call


def error_line(result: Result, *phrases: str) -> str:
    """Check the bad-input contract and return the 'error: ...' line.

    Exit code 2, no traceback, the key phrases in the message, and the message as
    the only line on stderr (checked last, as its own exception type).
    """
    assert result.code == 2, result
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert lines, "nothing on stderr"
    line = lines[-1]
    assert line.startswith("error: "), result.err
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    assert len(lines) == 1, f"stderr has {len(lines)} lines: {result.err!r}"
    return line


def layer(type_name: str, **args: object) -> object:
    """One layer entry in the short form: `Flatten` or `{Conv2D: {filters: 4}}`."""
    return {type_name: args} if args else type_name


def arch_yaml(*layers: object, name: str = "net") -> str:
    """An architecture file's text; `layers` as built by `layer()`."""
    return yaml.safe_dump({"name": name, "layers": list(layers)}, sort_keys=False)


CONV = layer("Conv2D", filters=4, kernel_size=3, activation="relu")
POOL = layer("MaxPooling2D", pool_size=2)
FLAT = layer("Flatten")
OUT10 = layer("Dense", units=10, activation="softmax")


def conv(**args: object) -> object:
    """CONV with some arguments replaced or added."""
    return layer("Conv2D", **({"filters": 4, "kernel_size": 3} | args))


def write_files(root: Path, files: dict[str, str | None]) -> None:
    """Create `files` under root: text content, or None for an empty folder."""
    for name, content in files.items():
        path = root / name
        if content is None:
            path.mkdir(parents=True)
        else:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(content, encoding="utf-8")


def draw_digit(path: Path, shape: str) -> Path:
    """A 200x200 black-on-white "1" (a thick bar) or "0" (a ring) as PNG."""
    image = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(image)
    if shape == "1":
        draw.rectangle((88, 30, 111, 170), fill=0)
    else:
        draw.ellipse((55, 30, 145, 170), outline=0, width=18)
    image.save(path)
    return path


def preset_text(name: str) -> str:
    """A preset's YAML text, read from the installed package."""
    return (resources.files("cnnlab.presets") / f"{name}.yaml").read_text("utf-8")


def history_rows(run: Path) -> list[dict[str, str]]:
    with open(run / "history.csv", newline="", encoding="utf-8") as fh:
        return list(csv.DictReader(fh))


def read_meta(run: Path) -> dict:
    return json.loads((run / "run.json").read_text(encoding="utf-8"))


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, by relative path: to show a folder was left untouched."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


def accuracy_line(acc: float) -> str:
    return f"Test accuracy: {acc:.4f} ({100 * acc:.2f}%)"


# ------------------------------------------------------------- one shared run


@dataclass
class TrainedRun:
    path: Path
    result: Result


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> TrainedRun:
    """conv5-medium, 1 epoch on 2,000 images: trained once, never modified."""
    cwd = tmp_path_factory.mktemp("shared")
    result = run_cli(
        "train",
        "conv5-medium",
        "--epochs",
        "1",
        "--train-limit",
        "2000",
        "--val-size",
        "500",
        "--test-limit",
        "1000",
        "--out",
        "RUN",
        cwd=cwd,
    )
    assert result.code == 0, result.err
    return TrainedRun(cwd / "RUN", result)


# ---------------------------------------------------------- presets, summary


def test_presets_lists_nine_networks_with_parameter_totals(tmp_path: Path) -> None:
    result = run_cli("presets", cwd=tmp_path)
    assert result.code == 0, result.err
    rows = [
        [cell.strip() for cell in line.split("│")[1:-1]]
        for line in result.out.splitlines()
        if line.startswith("│")
    ]
    # Columns: #, name, description, params, FLOPs/sample; one line per row.
    assert [(row[0], row[1], row[3]) for row in rows] == [
        (str(number), name, total)
        for number, (name, total) in enumerate(PRESET_TOTALS.items(), start=1)
    ]


def test_summary_of_a_preset_prints_keras_totals(tmp_path: Path) -> None:
    result = run_cli("summary", "conv3-small", cwd=tmp_path)
    assert result.code == 0, result.err
    assert result.err == ""
    assert 'Model: "conv3-small"' in result.out
    assert "Total params: 15,146 " in result.out
    assert "Trainable params: 15,050 " in result.out
    assert "Non-trainable params: 96 " in result.out


@pytest.mark.parametrize(
    ("arch", "model", "totals"),
    [
        ("2", "conv3-small", ("15,146", "15,050", "96")),
        ("9", "conv7-dropout", ("6,752,730", "6,752,730", "0")),
        ("conv3-512", "conv3-512", ("23,337,610", "23,337,610", "0")),
        ("nets/small.yaml", "small", ("15,146", "15,050", "96")),
    ],
    ids=["number-2", "number-9", "name", "yaml-file"],
)
def test_summary_by_number_name_or_file(
    cli: Callable[..., Result],
    tmp_path: Path,
    arch: str,
    model: str,
    totals: tuple[str, str, str],
) -> None:
    # The file is conv3-small's layers under another name.
    preset = yaml.safe_load(preset_text("conv3-small"))
    write_files(
        tmp_path, {"nets/small.yaml": arch_yaml(*preset["layers"], name="small")}
    )
    result = cli("summary", arch)
    assert result.code == 0, result.err
    assert f'Model: "{model}"' in result.out
    total, trainable, frozen = totals
    assert f"Total params: {total} " in result.out
    assert f"Trainable params: {trainable} " in result.out
    assert f"Non-trainable params: {frozen} " in result.out


# ------------------------------------------------------ train, evaluate, predict


def test_train_writes_a_complete_run_folder(trained: TrainedRun) -> None:
    run, result = trained.path, trained.result
    assert "Traceback" not in result.err
    assert sorted(p.name for p in run.iterdir()) == sorted(RUN_FILES)

    meta = read_meta(run)
    assert meta["name"] == "conv5-medium"
    assert meta["status"] == "completed"
    assert meta["epochs_done"] == 1
    assert {k: meta["config"][k] for k in ("epochs", "train_limit", "test_limit")} == {
        "epochs": 1,
        "train_limit": 2000,
        "test_limit": 1000,
    }
    env = meta["environment"]
    assert (env["train_samples"], env["val_samples"], env["test_samples"]) == (
        2000,
        500,
        1000,
    )
    assert set(meta["test"]) == {"loss", "acc"}
    assert 0.0 <= meta["test"]["acc"] <= 1.0
    assert meta["test"]["loss"] > 0.0

    out = result.out.splitlines()
    assert f"Test loss: {meta['test']['loss']:.4f}" in out
    assert accuracy_line(meta["test"]["acc"]) in out
    assert out[-1] == "Run folder: RUN"

    rows = history_rows(run)
    assert [row["epoch"] for row in rows] == ["1"]
    assert all(rows[0][key] for key in ("loss", "acc", "val_loss", "val_acc"))
    assert yaml.safe_load((run / "spec.yaml").read_text())["name"] == "conv5-medium"
    assert (run / "curves.png").read_bytes().startswith(PNG_MAGIC)
    assert (run / "checkpoint.pt").stat().st_size > 0
    assert (run / "weights.pt").stat().st_size > 0


def test_evaluate_reproduces_the_recorded_test_accuracy(
    trained: TrainedRun, tmp_path: Path
) -> None:
    result = run_cli("evaluate", trained.path, cwd=tmp_path)
    assert result.code == 0, result.err
    test = read_meta(trained.path)["test"]
    out = result.out.splitlines()
    assert out[0] == "Data: mnist (1,000 test images)"  # the run's own test_limit
    assert f"Test loss: {test['loss']:.4f}" in out
    assert accuracy_line(test["acc"]) in out


def test_predict_prints_one_line_per_image(trained: TrainedRun, tmp_path: Path) -> None:
    draw_digit(tmp_path / "one.png", "1")
    draw_digit(tmp_path / "zero.png", "0")
    result = run_cli("predict", trained.path, "one.png", "zero.png", cwd=tmp_path)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert len(lines) == 2
    for line, image in zip(lines, ("one.png", "zero.png"), strict=True):
        match = re.fullmatch(r"(.+): (\d) \((\d{1,3}\.\d)%\)", line)
        assert match, line
        assert match[1] == image
        # The winning class of ten has at least a tenth of the probability.
        assert 10.0 <= float(match[3]) <= 100.0


# ------------------------------------------------------------------- resume


def test_resume_continues_to_more_epochs(trained: TrainedRun, tmp_path: Path) -> None:
    run = tmp_path / "RUN"
    shutil.copytree(trained.path, run)
    first_epoch = history_rows(run)[0]

    result = run_cli("train", "--resume", "RUN", "--epochs", "2", cwd=tmp_path)

    assert result.code == 0, result.err
    assert "Test accuracy" in result.out
    rows = history_rows(run)
    assert [row["epoch"] for row in rows] == ["1", "2"]
    assert rows[0] == first_epoch
    meta = read_meta(run)
    assert (meta["status"], meta["epochs_done"], meta["config"]["epochs"]) == (
        "completed",
        2,
        2,
    )
    assert meta["config"]["train_limit"] == 2000  # the run's own settings
    assert accuracy_line(meta["test"]["acc"]) in result.out.splitlines()


@pytest.mark.parametrize(
    "epochs", [[], ["--epochs", "1"]], ids=["no-epochs", "same-epochs"]
)
def test_resume_of_a_completed_run_asks_for_more_epochs(
    cli: Callable[..., Result], trained: TrainedRun, epochs: list[str]
) -> None:
    before = snapshot(trained.path)
    result = cli("train", "--resume", trained.path, *epochs)
    assert snapshot(trained.path) == before
    error_line(result, "already completed 1 epochs", "Pass --epochs N")


# -------------------------------------------------------------- run folders


def test_existing_output_folder_is_left_untouched(
    cli: Callable[..., Result], trained: TrainedRun, tmp_path: Path
) -> None:
    shutil.copytree(trained.path, tmp_path / "OUT")
    before = snapshot(tmp_path / "OUT")
    result = cli("train", "conv5-tiny", "--out", "OUT", *TINY)
    assert snapshot(tmp_path / "OUT") == before
    error_line(
        result,
        "OUT: the output folder exists",
        "--resume OUT",
        "--overwrite",
        "another --out",
    )


def test_overwrite_replaces_an_existing_run(
    cli: Callable[..., Result], trained: TrainedRun, tmp_path: Path
) -> None:
    shutil.copytree(trained.path, tmp_path / "OUT")
    result = cli("train", "conv5-tiny", "--out", "OUT", "--overwrite", *TINY)
    assert result.code == 0, result.err
    meta = read_meta(tmp_path / "OUT")
    assert (meta["name"], meta["status"]) == ("conv5-tiny", "completed")
    assert meta["config"]["train_limit"] == 1000
    assert len(history_rows(tmp_path / "OUT")) == 1
    assert sorted(p.name for p in (tmp_path / "OUT").iterdir()) == sorted(RUN_FILES)


def test_overwrite_refuses_a_folder_that_is_not_a_run(
    cli: Callable[..., Result], tmp_path: Path
) -> None:
    write_files(tmp_path, {"OUT/notes.txt": "keep me\n"})
    result = cli("train", "conv5-tiny", "--out", "OUT", "--overwrite", *TINY)
    assert snapshot(tmp_path / "OUT") == {"notes.txt": b"keep me\n"}
    error_line(result, "OUT: exists and is not a cnnlab run folder", "another --out")


# ---------------------------------------------------------- bad-input matrix


@dataclass
class BadInput:
    """A command that must fail with exit code 2 and a one-line message."""

    args: Sequence[str]  # "{run}" stands for the shared trained run
    phrases: Sequence[str]  # key phrases of the message: what, where, the fix
    files: dict[str, str | None] | None = None  # created in the working folder

    @property
    def uses_run(self) -> bool:
        return any("{run}" in a for a in self.args)


def bad(id_: str, *marks: pytest.MarkDecorator, **fields: object) -> object:
    return pytest.param(BadInput(**fields), id=id_, marks=marks)  # type: ignore[arg-type]


def net(*layers: object) -> dict[str, str | None]:
    return {"net.yaml": arch_yaml(*layers)}


TRAIN_NET = ["train", "net.yaml", "--out", "OUT", *TINY]

BAD_INPUTS = [
    bad(
        "unknown-preset",
        args=["train", "conv3-smal", "--out", "OUT"],
        phrases=["unknown preset 'conv3-smal'", "Did you mean 'conv3-small'?"],
    ),
    bad(
        "missing-yaml",
        args=["train", "nets/none.yaml", "--out", "OUT"],
        phrases=["nets/none.yaml: no such file", "cnnlab presets"],
    ),
    bad(
        "invalid-yaml",
        args=TRAIN_NET,
        files={
            "net.yaml": "name: bad\nlayers:\n  - Flatten\n    - Dense: {units: 10}\n"
        },
        phrases=["net.yaml: invalid YAML at line 4,", "Fix the syntax"],
    ),
    bad(
        "unknown-type-Conv2d2",
        args=TRAIN_NET,
        files=net(layer("Conv2d2", filters=4, kernel_size=3), FLAT, OUT10),
        phrases=[
            "net.yaml: layers[0]: unknown layer type 'Conv2d2'",
            "Did you mean 'Conv2D'?",
        ],
    ),
    bad(
        "unknown-type-Conv3D",
        args=TRAIN_NET,
        files=net(CONV, layer("Conv3D", filters=4, kernel_size=3), FLAT, OUT10),
        phrases=[
            "net.yaml: layers[1]: unknown layer type 'Conv3D'",
            "Known types: Conv2D,",
        ],
    ),
    bad(
        "unknown-argument",
        args=TRAIN_NET,
        files=net(layer("Conv2D", filter=4, kernel_size=3), FLAT, OUT10),
        phrases=[
            "net.yaml: layers[0] (Conv2D): unknown argument 'filter'",
            "Did you mean 'filters'?",
        ],
    ),
    bad(
        "wrong-type",
        args=TRAIN_NET,
        files=net(conv(filters="sixteen"), FLAT, OUT10),
        phrases=[
            "net.yaml: layers[0] (Conv2D): filters must be a positive integer",
            "Received: filters='sixteen'",
        ],
    ),
    bad(
        "non-positive",
        args=TRAIN_NET,
        files=net(CONV, POOL, conv(filters=0), FLAT, OUT10),
        phrases=[
            "net.yaml: layers[2] (Conv2D): filters must be a positive integer",
            "Received: filters=0",
        ],
    ),
    bad(
        "kernel-larger-than-input",
        args=TRAIN_NET,
        # 28 -> 9 -> 3 after two 3x3 poolings: a 7x7 valid kernel cannot fit.
        files=net(
            layer("MaxPooling2D", pool_size=3),
            layer("MaxPooling2D", pool_size=3),
            conv(kernel_size=7),
            FLAT,
            OUT10,
        ),
        phrases=[
            "net.yaml: layers[2] (Conv2D): kernel_size [7, 7] is larger than its "
            "input 3x3",
            "Use a smaller kernel_size, padding: same",
        ],
    ),
    bad(
        "not-ten-classes",
        args=TRAIN_NET,
        files=net(CONV, POOL, FLAT, layer("Dense", units=5, activation="softmax")),
        phrases=[
            "net.yaml: layers[3] (Dense): the network's output has shape (5,)",
            "10 classes",
            "{type: Dense, units: 10, activation: softmax}",
        ],
    ),
    bad(
        "missing-flatten",
        args=TRAIN_NET,
        files=net(CONV, POOL, OUT10),
        phrases=[
            "net.yaml: layers[2] (Dense): the network's output has shape (13, 13, 10)",
            "Add {type: Flatten}",
        ],
    ),
    bad(
        "no-architecture",
        args=["train", "--out", "OUT"],
        phrases=["give an architecture", "or --resume RUN"],
    ),
    bad(
        "unknown-flag",
        args=["train", "conv3-small", "--epocs", "3", "--out", "OUT"],
        phrases=["unrecognized arguments: --epocs", "did you mean --epochs?"],
    ),
    bad(
        "epochs-zero",
        args=["train", "conv3-small", "--epochs", "0", "--out", "OUT"],
        phrases=["argument --epochs: expected a positive integer, got 0"],
    ),
    bad(
        "lr-negative",
        args=["train", "conv3-small", "--lr", "-1", "--out", "OUT"],
        phrases=["argument --lr: expected a positive number, got -1"],
    ),
    bad(
        "bad-choice",
        args=["train", "conv3-small", "--optimizer", "adamm", "--out", "OUT"],
        phrases=["argument --optimizer: invalid choice: 'adamm'", "'adam'"],
    ),
    bad(
        "resume-with-lr",
        args=["train", "--resume", "{run}", "--lr", "0.1"],
        phrases=["--resume continues a run with its own settings", "drop --lr"],
    ),
    bad(
        "data-and-data-dir",
        args=["train", "conv3-small", "--data", "mnist", "--data-dir", "idx"],
        files={"idx": None},
        phrases=["--data and --data-dir both given"],
    ),
    bad(
        "data-dir-empty",
        args=["train", "conv3-small", "--data-dir", "idx", "--out", "OUT", *TINY],
        files={"idx": None},
        phrases=["missing train-images-idx3-ubyte[.gz]", " in idx;"],
    ),
    bad(
        "fashion-mnist-absent",
        pytest.mark.skipif(
            FASHION_MNIST_DIR.is_dir(), reason="Fashion-MNIST is installed here"
        ),
        args=["train", "conv3-small", "--data", "fashion-mnist", "--out", "OUT"],
        phrases=["Fashion-MNIST is not installed", "apt-get install"],
    ),
    bad(
        "evaluate-not-a-run",
        args=["evaluate", "somefolder"],
        files={"somefolder/notes.txt": "hi\n"},
        phrases=["somefolder: not a cnnlab run folder", "run.json"],
    ),
    bad(
        "predict-text-as-png",
        args=["predict", "{run}", "x.png"],
        files={"x.png": "not a picture\n"},
        phrases=["x.png: not an image file", "PNG or JPEG"],
    ),
    bad(
        "predict-empty-file",
        args=["predict", "{run}", "empty.png"],
        files={"empty.png": ""},
        phrases=["empty.png: the file is empty (0 bytes)"],
    ),
]

# Run again as real processes: a spec error, a flag error and a run-folder error.
AS_PROCESS = {"unknown-argument", "epochs-zero", "evaluate-not-a-run"}


def prepare(case: BadInput, request: pytest.FixtureRequest, cwd: Path) -> list[str]:
    """Write the case's files; put the shared run's path in (training it if need be)."""
    write_files(cwd, case.files or {})
    if not case.uses_run:
        return list(case.args)
    run = str(request.getfixturevalue("trained").path)
    return [a.replace("{run}", run) for a in case.args]


@pytest.mark.parametrize("case", BAD_INPUTS)
def test_bad_input(
    cli: Callable[..., Result],
    request: pytest.FixtureRequest,
    tmp_path: Path,
    case: BadInput,
) -> None:
    args = prepare(case, request, tmp_path)
    watched = [tmp_path]  # the working folder, and the shared run if used
    if case.uses_run:
        watched.append(request.getfixturevalue("trained").path)
    before = [snapshot(folder) for folder in watched]
    result = cli(*args)
    assert not (tmp_path / "OUT").exists()  # nothing half-written
    assert [snapshot(folder) for folder in watched] == before
    error_line(result, *case.phrases)


@pytest.mark.parametrize(
    "case",
    [p for p in BAD_INPUTS if p.id in AS_PROCESS],  # type: ignore[attr-defined]
)
def test_bad_input_as_process(
    request: pytest.FixtureRequest, tmp_path: Path, case: BadInput
) -> None:
    result = run_cli(*prepare(case, request, tmp_path), cwd=tmp_path)
    assert not (tmp_path / "OUT").exists()
    error_line(result, *case.phrases)


def test_debug_shows_the_traceback(tmp_path: Path) -> None:
    write_files(tmp_path, net(layer("Conv2D", filter=4, kernel_size=3), FLAT, OUT10))
    result = run_cli("--debug", "train", "net.yaml", "--out", "OUT", cwd=tmp_path)
    assert result.code == 1
    assert "Traceback (most recent call last)" in result.err
    assert result.err.splitlines()[-1].startswith(
        "cnnlab.errors.SpecError: net.yaml: layers[0] (Conv2D): unknown argument"
    )
    assert not (tmp_path / "OUT").exists()


# --------------------------------------------------------------------- help


def test_top_level_help(cli: Callable[..., Result]) -> None:
    result = cli("--help")
    assert result.code == 0
    for word in ("--debug", "presets", "summary", "train", "evaluate", "predict"):
        assert word in result.out
    assert "exits with code 2" in " ".join(result.out.split())


def test_train_help_lists_its_flags(cli: Callable[..., Result]) -> None:
    result = cli("train", "--help")
    assert result.code == 0
    flags = set(re.findall(r"--[a-z][a-z-]*", result.out))
    assert flags >= {
        "--epochs",
        "--batch-size",
        "--optimizer",
        "--lr",
        "--seed",
        "--data",
        "--data-dir",
        "--validation",
        "--val-size",
        "--train-limit",
        "--test-limit",
        "--device",
        "--threads",
        "--out",
        "--overwrite",
        "--resume",
    }
