"""`cnnlab export --out` never replaces a file it did not write: a run's own files,
a study store or anything beside it, any existing file that is not a previous
export; `--overwrite` replaces a previous export only. Also: a name too long, a run
whose weights are NaN, and the temporary files a killed export left."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

import cnnlab
from cnnlab.api import Hooks
from cnnlab.interop.export import is_export
from cnnlab.nn.spec import parse_architecture
from cnnlab.util.fsio import sweep_stale_temps
from helpers import error_line, snapshot, tiny_net_doc

CONFIG = cnnlab.TrainConfig(epochs=1, train_limit=300, test_limit=100, val_size=100)


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """One trained run of the tiny network, shared by the module's tests."""
    root = tmp_path_factory.mktemp("runs")
    arch = parse_architecture(tiny_net_doc())
    cnnlab.train(arch, CONFIG, out=root / "net", hooks=Hooks())
    return root / "net"


@pytest.fixture
def copy_run(run: Path, tmp_path: Path) -> Path:
    """A copy of the run this test may damage (it must not)."""
    return Path(shutil.copytree(run, tmp_path / "run"))


def test_export_names_in_the_run_are_refused_and_nothing_changes(
    copy_run: Path, cli: Any
) -> None:
    before = snapshot(copy_run)
    for name in ("weights.pt", "checkpoint.pt", "spec.yaml", "run.json", "x.pt"):
        line = error_line(
            cli(
                "export",
                copy_run,
                "--format",
                "torchscript",
                "--out",
                copy_run / name,
                "--overwrite",
            ),  # fmt: skip
            "inside the run folder",
        )
        assert str(copy_run / "model.pt") in line  # the way out: the default
    assert snapshot(copy_run) == before


def test_a_study_store_and_its_folder_are_refused(
    copy_run: Path, tmp_path: Path, cli: Any
) -> None:
    store = tmp_path / "studies"
    store.mkdir()
    (store / "cnnlab.sqlite").write_bytes(b"SQLite format 3\0" + bytes(100))
    before = snapshot(store)
    for name in ("cnnlab.sqlite", "net.onnx"):
        error_line(
            cli("export", copy_run, "--format", "torchscript", "--out", store / name),
            "study store",
        )
    assert snapshot(store) == before


def test_an_existing_file_is_kept_and_a_previous_export_needs_overwrite(
    copy_run: Path, tmp_path: Path, cli: Any
) -> None:
    mine = tmp_path / "notes.pt"
    mine.write_text("my notes")
    error_line(
        cli(
            "export", copy_run, "--format", "torchscript", "--out", mine, "--overwrite"
        ),  # fmt: skip
        "not a file cnnlab export wrote",
    )
    assert mine.read_text() == "my notes"

    out = tmp_path / "net.pt"
    assert cli("export", copy_run, "--format", "torchscript", "--out", out).code == 0
    assert is_export(out)
    first = out.read_bytes()
    error_line(
        cli("export", copy_run, "--format", "torchscript", "--out", out),
        "a previous export",
        "--overwrite",
    )
    assert out.read_bytes() == first
    result = cli("export", copy_run, "--format", "torchscript", "--out", out,
                 "--overwrite")  # fmt: skip
    assert result.code == 0, result.err
    assert is_export(out) and not list(tmp_path.glob(".net.pt.tmp-*"))


def test_an_onnx_export_is_recognised_and_replaced_with_overwrite(
    copy_run: Path, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    out = cnnlab.export_run(copy_run, "onnx", tmp_path / "net.onnx")
    assert is_export(out)
    with pytest.raises(cnnlab.CnnlabError, match="a previous export"):
        cnnlab.export_run(copy_run, "onnx", out)
    assert cnnlab.export_run(copy_run, "onnx", out, overwrite=True) == out
    (tmp_path / "other.onnx").write_bytes(b"\x08\x07" + bytes(40))  # some protobuf
    assert not is_export(tmp_path / "other.onnx")


def test_the_default_path_is_written_again_with_overwrite(copy_run: Path) -> None:
    path = cnnlab.export_run(copy_run, "torchscript")
    assert path == copy_run / "model.pt"
    with pytest.raises(cnnlab.CnnlabError, match="--overwrite"):
        cnnlab.export_run(copy_run, "torchscript")
    assert cnnlab.export_run(copy_run, "torchscript", overwrite=True) == path


def test_a_name_too_long_is_one_line(copy_run: Path, tmp_path: Path, cli: Any) -> None:
    out = tmp_path / ("a" * 300 + ".onnx")
    error_line(cli("export", copy_run, "--out", out), "cannot be used as --out")


def test_nan_weights_are_refused_before_writing(
    copy_run: Path, tmp_path: Path, cli: Any
) -> None:
    weights = copy_run / "weights.pt"
    state = torch.load(weights, weights_only=True)
    state = {k: torch.full_like(v, float("nan")) for k, v in state.items()}
    torch.save(state, weights)
    out = tmp_path / "nan.pt"
    error_line(
        cli("export", copy_run, "--format", "torchscript", "--out", out),
        "NaN or infinite",
    )
    assert not out.exists()


def test_a_killed_exports_temporary_file_is_swept_by_the_next(
    copy_run: Path, tmp_path: Path
) -> None:
    # A process that has exited: its PID names no live process any more.
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True)  # fmt: skip
    stale = tmp_path / f".net.pt.tmp-{dead.stdout.strip()}"
    stale.write_bytes(b"half an export")
    live = tmp_path / f".net.pt.tmp-{os.getppid()}"  # a live process's: kept
    live.write_bytes(b"being written")
    other = tmp_path / f".notes.txt.tmp-{dead.stdout.strip()}"  # not this target's
    other.write_bytes(b"kept")
    cnnlab.export_run(copy_run, "torchscript", tmp_path / "net.pt")
    assert not stale.exists() and live.exists() and other.exists()
    assert sweep_stale_temps(tmp_path, "net.pt") == []
