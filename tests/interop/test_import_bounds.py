"""`cnnlab import` reads within bounds and writes only where it may: Keras code
(.py, .ipynb) that is not a regular file, too large, or builds huge values; an
--out folder that holds the user's files; two files of the same stem; a model
named `study`; Keras model files (.keras, .json, .h5) whose members inflate past
a cap, hold numbers of thousands of digits, or point HDF5 at other files."""

from __future__ import annotations

import io
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cnnlab.interop import keras as keras_import
from cnnlab.interop import source_code
from helpers import error_line, snapshot

MODEL = (
    "from keras import Sequential, layers\n"
    "m = Sequential([layers.Flatten(), layers.Dense(10, activation='softmax')]"
    "{extra})\n"
)


def code(path: Path, extra: str = "", before: str = "") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(before + MODEL.format(extra=extra))
    return path


# ------------------------------------------------------------------ Keras code


@pytest.mark.parametrize("kind", ["fifo", "device-py", "device-ipynb"])
def test_code_that_is_no_regular_file_is_refused_unread(
    kind: str, tmp_path: Path, cli: Any
) -> None:
    if kind == "fifo":
        source = tmp_path / "f.py"
        os.mkfifo(source)
    else:
        source = tmp_path / ("u.ipynb" if kind == "device-ipynb" else "z.py")
        source.symlink_to("/dev/urandom" if kind == "device-ipynb" else "/dev/zero")
    error_line(cli("import", source, "--out", tmp_path / "o"), "not a file")
    assert not (tmp_path / "o").exists()


def test_code_over_the_size_limit_is_refused(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(source_code, "MAX_CODE_BYTES", 1000)
    source = code(tmp_path / "big.py", before="# " + "x" * 2000 + "\n")
    error_line(cli("import", source, "--out", tmp_path / "o"), "over the limit")


def test_doubling_strings_and_huge_repeats_are_bounded(
    tmp_path: Path, cli: Any
) -> None:
    doubled = "a = 'x' * 10000\n" + "a = a + a\n" * 40
    doubled += "b = 'x' * 10000 * 10000 * 10000\nc = (1,) * 10000 * 10000\n"
    source = code(tmp_path / "dbl.py", extra=", name=a", before=doubled)
    result = cli("import", source, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    assert (tmp_path / "o" / "m.yaml").is_file()  # named after the variable


@pytest.mark.parametrize("name", ["5", "1.5", "True", "b'x'", "None"])
def test_a_model_name_that_is_no_string_falls_back_to_the_variable(
    name: str, tmp_path: Path, cli: Any
) -> None:
    source = code(tmp_path / "n.py", extra=f", name={name}")
    assert cli("import", source, "--out", tmp_path / "o").code == 0
    assert (tmp_path / "o" / "m.yaml").is_file()


def test_a_model_named_study_keeps_its_own_file(tmp_path: Path, cli: Any) -> None:
    source = code(tmp_path / "s.py", extra=", name='study'")
    assert cli("import", source, "--out", tmp_path / "o").code == 0
    assert (tmp_path / "o" / "study-2.yaml").is_file()
    assert "file: study-2.yaml" in (tmp_path / "o" / "study.yaml").read_text()


def test_an_existing_folder_of_the_users_is_never_written(
    tmp_path: Path, cli: Any
) -> None:
    mine = tmp_path / "mine"
    mine.mkdir()
    (mine / "study.yaml").write_text("name: mine\n")
    before = snapshot(mine)
    source = code(tmp_path / "net.py")
    error_line(cli("import", source, "--out", mine), "did not write")
    assert snapshot(mine) == before
    (tmp_path / "file").write_text("x")
    error_line(cli("import", source, "--out", tmp_path / "file"), "not a folder")


def test_a_previous_import_of_the_same_file_is_replaced(
    tmp_path: Path, cli: Any
) -> None:
    source = code(tmp_path / "net.py")
    assert cli("import", source, "--out", tmp_path / "o").code == 0
    code(source, extra=", name='renamed'")
    assert cli("import", source, "--out", tmp_path / "o").code == 0
    assert "renamed.yaml" in (tmp_path / "o" / "study.yaml").read_text()


def test_two_files_of_one_stem_get_two_folders(tmp_path: Path, cli: Any) -> None:
    first, second = code(tmp_path / "a" / "net.py"), code(tmp_path / "b" / "net.py")
    assert cli("import", first).code == 0
    assert cli("import", first).code == 0  # the same file: its own folder again
    assert cli("import", second).code == 0
    folders = sorted(p.name for p in (tmp_path / "imported").iterdir())
    assert folders == ["net", "net-2"]
    assert str(second) in (tmp_path / "imported" / "net-2" / "study.yaml").read_text()
    line = error_line(cli("import", second, "--out", tmp_path / "imported" / "net"))
    assert "holds the import of" in line and str(first) in line


def test_a_notebook_with_a_5000_digit_number_is_one_line(
    tmp_path: Path, cli: Any
) -> None:
    notebook = tmp_path / "big.ipynb"
    notebook.write_text('{"cells": [], "n": ' + "9" * 5000 + "}")
    error_line(cli("import", notebook, "--out", tmp_path / "o"), "not a Jupyter")


def test_a_long_file_of_if_blocks_imports(tmp_path: Path, cli: Any) -> None:
    # Thousands of names, then thousands of `if` blocks: each branch saves only
    # the names it mentions, so the walk stays linear in the file's length.
    lines = [f"v{i} = {i}" for i in range(5000)]
    lines += ["if cond():\n    v1 = 2\nelse:\n    pass"] * 5000
    source = code(tmp_path / "ifs.py", before="\n".join(lines) + "\n")
    assert cli("import", source, "--out", tmp_path / "o").code == 0


# ---------------------------------------------------------------- Keras models


def config_json(units: str = "10") -> str:
    layers = [
        {"class_name": "InputLayer", "config": {"batch_shape": [None, 28, 28, 1]}},
        {"class_name": "Flatten", "config": {"name": "flatten"}},
        {"class_name": "Dense", "config": {"name": "dense", "units": 10,
                                           "activation": "softmax"}},
    ]  # fmt: skip
    doc = {"class_name": "Sequential", "config": {"name": "s", "layers": layers}}
    return json.dumps(doc).replace('"units": 10', f'"units": {units}')


def weights_h5(h5py: Any, **kernel: Any) -> bytes:
    buffer = io.BytesIO()
    with h5py.File(buffer, "w") as f:
        group = f.create_group("layers/dense/vars")
        if "data" in kernel:
            group.create_dataset("0", **kernel)
        elif kernel:
            group.create_dataset("0", shape=(784, 10), dtype="float32", **kernel)
        else:
            group.create_dataset("0", data=np.zeros((784, 10), "float32"))
        group.create_dataset("1", data=np.zeros(10, "float32"))
    return buffer.getvalue()


def keras_file(path: Path, weights: bytes, meta: bytes = b"{}") -> Path:
    with zipfile.ZipFile(path, "w", zipfile.ZIP_DEFLATED) as archive:
        archive.writestr("metadata.json", meta)
        archive.writestr("config.json", config_json())
        archive.writestr("model.weights.h5", weights)
    return path


@pytest.mark.parametrize("member", ["metadata.json", "model.weights.h5"])
def test_an_archive_member_over_its_cap_is_refused_before_inflating(
    member: str, tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    h5py = pytest.importorskip("h5py")
    monkeypatch.setattr(keras_import, "MAX_MEMBER_BYTES", 4096)
    monkeypatch.setattr(keras_import, "MAX_METADATA_BYTES", 4096)
    big = bytes(100_000)  # zeros: a few hundred bytes compressed
    weights = big if member == "model.weights.h5" else weights_h5(h5py)
    source = keras_file(tmp_path / "bomb.keras", weights,
                        big if member == "metadata.json" else b"{}")  # fmt: skip
    error_line(cli("import", source, "--out", tmp_path / "r"), member, "limit")
    assert not (tmp_path / "r").exists()


def test_a_json_config_over_its_cap_is_refused(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(keras_import, "MAX_CONFIG_BYTES", 1000)
    source = tmp_path / "sparse.json"
    with open(source, "wb") as fh:
        fh.truncate(10**9)  # a sparse file: no disk used, nothing may read it whole
    error_line(cli("import", source, "--out", tmp_path / "s.yaml"), "over the limit")
    fifo = tmp_path / "f.json"
    os.mkfifo(fifo)
    error_line(cli("import", fifo, "--out", tmp_path / "s.yaml"), "not a file")


@pytest.mark.parametrize("suffix", [".json", ".keras", ".h5"])
def test_a_5000_digit_number_in_a_config_is_one_line(
    suffix: str, tmp_path: Path, cli: Any
) -> None:
    h5py = pytest.importorskip("h5py")
    text = config_json("9" * 5000)
    source = tmp_path / f"bigint{suffix}"
    if suffix == ".json":
        source.write_text(text)
    elif suffix == ".h5":
        with h5py.File(source, "w") as f:
            f.attrs["model_config"] = text
    else:
        with zipfile.ZipFile(source, "w") as archive:
            archive.writestr("config.json", text)
    error_line(cli("import", source, "--out", tmp_path / "o"), "not valid JSON")


@pytest.mark.parametrize("kind", ["external-file", "external-link", "virtual"])
def test_hdf5_that_points_at_other_files_is_refused(
    kind: str, tmp_path: Path, cli: Any
) -> None:
    h5py = pytest.importorskip("h5py")
    secret = tmp_path / "secret.bin"
    secret.write_bytes(bytes(range(256)) * 200)
    other = tmp_path / "other.h5"
    with h5py.File(other, "w") as f:
        f.create_dataset("secret", data=np.full((784, 10), 7, "float32"))
    source = tmp_path / "ext.h5"
    with h5py.File(source, "w") as f:
        f.attrs["model_config"] = config_json()
        group = f.create_group("model_weights/dense")
        name = "dense/kernel:0"
        if kind == "external-file":
            group.create_dataset(name, shape=(784, 10), dtype="float32",
                                 external=[(str(secret), 0, 784 * 40)])  # fmt: skip
        elif kind == "external-link":
            group[name] = h5py.ExternalLink(str(other), "/secret")
        else:
            layout = h5py.VirtualLayout(shape=(784, 10), dtype="float32")
            layout[:] = h5py.VirtualSource(str(other), "secret", shape=(784, 10))
            group.create_virtual_dataset(name, layout)
        group.create_dataset("dense/bias:0", data=np.zeros(10, "float32"))
        group.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
    error_line(cli("import", source, "--out", tmp_path / "r"), "outside")
    assert not (tmp_path / "r").exists()


def test_external_storage_inside_a_keras_archive_is_refused(
    tmp_path: Path, cli: Any
) -> None:
    h5py = pytest.importorskip("h5py")
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)  # were it opened, the import would hang
    weights = weights_h5(h5py, external=[(str(fifo), 0, 784 * 40)])
    source = keras_file(tmp_path / "ext.keras", weights)
    error_line(cli("import", source, "--out", tmp_path / "r"), "outside")


def test_a_corrupt_compressed_chunk_is_one_line(tmp_path: Path, cli: Any) -> None:
    h5py = pytest.importorskip("h5py")
    source = tmp_path / "gz.h5"
    kernel = np.random.default_rng(0).normal(0, 0.05, (784, 10)).astype("float32")
    with h5py.File(source, "w") as f:
        f.attrs["model_config"] = config_json()
        group = f.create_group("model_weights/dense")
        group.create_dataset("dense/kernel:0", data=kernel, chunks=(784, 10),
                             compression="gzip")  # fmt: skip
        group.create_dataset("dense/bias:0", data=np.zeros(10, "float32"))
        group.attrs["weight_names"] = [b"dense/kernel:0", b"dense/bias:0"]
    with h5py.File(source, "r") as f:
        info = f["model_weights/dense/dense/kernel:0"].id.get_chunk_info(0)
    data = bytearray(source.read_bytes())
    data[info.byte_offset + 10 : info.byte_offset + info.size - 10] = b"\x55" * (
        info.size - 20
    )
    source.write_bytes(bytes(data))
    error_line(cli("import", source, "--out", tmp_path / "r"), "cannot be read")
    assert not (tmp_path / "r").exists()


def test_nan_weights_are_refused(tmp_path: Path, cli: Any) -> None:
    h5py = pytest.importorskip("h5py")
    weights = weights_h5(h5py, data=np.full((784, 10), np.nan, "float32"))
    source = keras_file(tmp_path / "nan.keras", weights)
    error_line(cli("import", source, "--out", tmp_path / "r"), "NaN or infinite")
    assert not (tmp_path / "r").exists()


def test_killed_imports_leftovers_are_swept(tmp_path: Path, cli: Any) -> None:
    h5py = pytest.importorskip("h5py")
    dead = 2**22 + 12345  # above Linux's default pid_max of 2^22: no such process
    stale = tmp_path / f".r.tmp-{dead}"
    (stale / "sub").mkdir(parents=True)
    (stale / ".weights.pt.tmp-1").write_bytes(b"half a file")
    live = tmp_path / f".r.tmp-{os.getppid()}"  # a live process's: left alone
    live.mkdir()
    source = keras_file(tmp_path / "ok.keras", weights_h5(h5py))
    assert cli("import", source, "--out", tmp_path / "r").code == 0
    assert not stale.exists() and live.is_dir()
    code(tmp_path / "net.py")
    (tmp_path / "o").mkdir()
    half = tmp_path / "o" / f".study.yaml.tmp-{dead}"
    half.write_text("half")
    assert cli("import", tmp_path / "net.py", "--out", tmp_path / "o").code == 0
    assert not half.exists()


def test_a_config_of_too_many_layers_is_refused(
    tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from cnnlab.interop import keras_spec

    monkeypatch.setattr(keras_spec, "MAX_LAYERS", 50)
    doc = json.loads(config_json())
    dropout = {"class_name": "Dropout", "config": {"name": "d", "rate": 0.1}}
    doc["config"]["layers"][1:1] = [dropout] * 60
    source = tmp_path / "many.json"
    source.write_text(json.dumps(doc))
    error_line(cli("import", source, "--out", tmp_path / "m.yaml"), "62 layers")


def test_fit_settings_a_study_would_refuse_are_left_out(
    tmp_path: Path, cli: Any
) -> None:
    fit = "m.fit(x, y, epochs=-3, batch_size=0)\n"
    source = tmp_path / "fit.py"
    source.write_text(MODEL.format(extra="") + fit)
    result = cli("import", source, "--out", tmp_path / "o")
    assert result.code == 0, result.err
    assert "epochs must be a positive integer" in result.out
    study = (tmp_path / "o" / "study.yaml").read_text()
    assert "epochs" not in study and "batch_size" not in study
