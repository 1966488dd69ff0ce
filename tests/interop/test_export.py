"""`cnnlab export`: ONNX and TorchScript files that compute what cnnlab computes,
loaded without cnnlab, on real MNIST images in the Keras (N, 28, 28, 1) layout; bad
input is one `error:` line and leaves no file behind."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

import cnnlab
from cnnlab.api import Hooks, load_model
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.interop.export import NEEDS_ONNX, OPSET, export_network
from cnnlab.nn.model import KerasConv2d, build_model
from cnnlab.nn.spec import parse_architecture
from helpers import error_line, run_cli

TOL = 1e-5
NETS = ("conv5-tiny", "conv3-small")  # conv3-small: batch norm, dropout, 'same'
CONFIG = cnnlab.TrainConfig(epochs=1, train_limit=2000, test_limit=500, val_size=500)


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """One trained run per net in NETS, shared by the module's tests."""
    root = tmp_path_factory.mktemp("runs")
    for name in NETS:
        cnnlab.train(name, CONFIG, out=root / name, hooks=Hooks())
    return {name: root / name for name in NETS}


@pytest.fixture(scope="module")
def images() -> np.ndarray:
    """200 real MNIST test images as (N, 28, 28, 1) float32 in [0, 1]."""
    x = load_dataset("mnist").x_test[:200].numpy()[..., None]
    return x.astype("float32") / 255


def cnnlab_probs(model: Any, x: np.ndarray) -> np.ndarray:
    """cnnlab's own probabilities for (N, H, W, C) images."""
    nchw = torch.from_numpy(x).permute(0, 3, 1, 2)
    return model.probabilities(nchw.contiguous(memory_format=torch.channels_last))


def leftovers(folder: Path) -> list[str]:
    """Hidden temporary files a failed write would leave."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith("."))


# ----------------------------------------------------------------------- ONNX


def onnx_session(path: Path) -> Any:
    ort = pytest.importorskip("onnxruntime")
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("name", NETS)
def test_onnx_computes_cnnlabs_probabilities(
    name: str, runs: dict[str, Path], images: np.ndarray, tmp_path: Path
) -> None:
    onnx = pytest.importorskip("onnx")
    path = cnnlab.export_run(runs[name], "onnx", tmp_path / "net.onnx")
    assert path == tmp_path / "net.onnx" and leftovers(tmp_path) == []
    proto = onnx.load(path)
    onnx.checker.check_model(proto, full_check=True)
    assert proto.opset_import[0].version == OPSET
    [inp], [out] = proto.graph.input, proto.graph.output
    dims = lambda v: [d.dim_param or d.dim_value for d in v.type.tensor_type.shape.dim]  # noqa: E731
    assert (inp.name, dims(inp)) == ("image", ["batch", 28, 28, 1])
    assert (out.name, dims(out)) == ("probabilities", ["batch", 10])
    meta = {p.key: p.value for p in proto.metadata_props}
    assert meta["cnnlab_version"] == cnnlab.__version__
    assert meta["architecture"] == name
    assert json.loads(meta["class_names"]) == [str(i) for i in range(10)]
    session = onnx_session(path)
    _, model = load_model(runs[name])
    expected = cnnlab_probs(model, images).numpy()
    got = session.run(["probabilities"], {"image": images})[0]
    assert got.shape == (200, 10)
    assert np.abs(got - expected).max() <= TOL
    one = session.run(["probabilities"], {"image": images[:1]})[0]
    assert one.shape == (1, 10) and np.abs(one - expected[:1]).max() <= TOL


def test_onnx_of_a_wide_net_leaves_out_the_nnpack_path(
    images: np.ndarray, tmp_path: Path
) -> None:
    pytest.importorskip("onnx")
    arch = parse_architecture(
        {
            "name": "wide",
            "input_shape": [28, 28, 1],
            "layers": [
                {"Conv2D": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
                {"Conv2D": {"filters": 64, "kernel_size": 3, "padding": "same"}},
                {"MaxPooling2D": {"pool_size": 4}},
                "Flatten",
                {"Dense": {"units": 10, "activation": "softmax"}},
            ],
        }
    )
    model = build_model(arch, seed=0).eval()
    assert any(m.winograd for m in model.modules() if isinstance(m, KerasConv2d))
    path = export_network(model, "onnx", tmp_path / "wide.onnx")
    import onnx

    nodes = onnx.load(path).graph.node
    assert "Conv" in {n.op_type for n in nodes}
    assert all(n.domain == "" and n.op_type != "ATen" for n in nodes)  # standard ops
    got = onnx_session(path).run(None, {"image": images})[0]
    assert np.abs(got - cnnlab_probs(model, images).numpy()).max() <= TOL
    assert any(m.winograd for m in model.modules() if isinstance(m, KerasConv2d))


# ---------------------------------------------------------------- TorchScript

# Loads the file in a fresh interpreter where importing cnnlab fails.
LOADER = """
import sys
sys.modules["cnnlab"] = None  # any `import cnnlab` now raises ImportError
import torch
extra = {"cnnlab.json": ""}
m = torch.jit.load(sys.argv[1], _extra_files=extra)
x = torch.load(sys.argv[2])
torch.save({"all": m(x), "one": m(x[:1])}, sys.argv[3])
print(extra["cnnlab.json"].decode())
"""


@pytest.mark.parametrize("name", NETS)
def test_torchscript_loads_with_torch_alone(
    name: str, runs: dict[str, Path], images: np.ndarray, tmp_path: Path
) -> None:
    path = cnnlab.export_run(runs[name], "torchscript", tmp_path / "net.pt")
    torch.save(torch.from_numpy(images), tmp_path / "x.pt")
    proc = subprocess.run(
        [sys.executable, "-c", LOADER, path, tmp_path / "x.pt", tmp_path / "y.pt"],
        capture_output=True,
        text=True,
        cwd=tmp_path,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    meta = json.loads(proc.stdout)
    assert meta["architecture"] == name and meta["class_names"][9] == "9"
    out = torch.load(tmp_path / "y.pt")
    _, model = load_model(runs[name])
    expected = cnnlab_probs(model, images)
    assert out["all"].shape == (200, 10) and out["one"].shape == (1, 10)
    assert float((out["all"] - expected).abs().max()) <= TOL
    assert float((out["one"] - expected[:1]).abs().max()) <= TOL


# ---------------------------------------------------------------------- Keras


# Keras and TensorFlow's own warnings under numpy 2 are theirs, as in
# tests/interop/test_keras_interop.py.
@pytest.mark.filterwarnings("ignore::DeprecationWarning:keras")
@pytest.mark.filterwarnings("ignore::DeprecationWarning:tensorflow")
def test_keras_branch_writes_a_keras_file(
    runs: dict[str, Path], images: np.ndarray, tmp_path: Path
) -> None:
    pytest.importorskip("cnnlab.interop.keras")
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "3")
    pytest.importorskip("keras")
    path = cnnlab.export_run(runs["conv5-tiny"], "keras")
    assert path == runs["conv5-tiny"] / "model.keras" and path.is_file()


# ------------------------------------------------------------------------ CLI


def test_cli_writes_the_onnx_file_into_the_run(runs: dict[str, Path]) -> None:
    pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    run = runs["conv3-small"]
    result = run_cli("export", run, "--format", "onnx", check=True)
    assert (run / "model.onnx").is_file()
    assert f"Wrote: {run / 'model.onnx'}" in result.out
    assert "image (N, 28, 28, 1) float32 in [0, 1]" in result.out
    assert "probabilities (N, 10)" in result.out
    assert f"ONNX opset: {OPSET}" in result.out


def no_weights_run(runs: dict[str, Path], tmp_path: Path) -> Path:
    """A run folder whose first epoch never finished: spec and run.json only."""
    run = tmp_path / "fresh"
    run.mkdir()
    for name in ("spec.yaml", "run.json"):
        shutil.copy(runs["conv5-tiny"] / name, run / name)
    return run


@pytest.mark.parametrize(
    ("case", "phrase"),
    [
        ("missing", "no such run folder"),
        ("empty", "not a cnnlab run folder"),
        ("no-weights", "no weights yet"),
        ("format", "invalid choice: 'tflite'"),
        ("out-is-folder", "is a folder"),
        ("out-under-file", "not an existing folder"),
        ("out-unwritable", "cannot write the file"),
    ],
)
def test_bad_input_is_one_error_line_and_no_file(
    case: str, phrase: str, runs: dict[str, Path], tmp_path: Path, cli: Any
) -> None:
    run, out = runs["conv5-tiny"], tmp_path / "out.pt"
    before = sorted(p.name for p in run.iterdir())
    args = {
        "missing": [tmp_path / "nope", "--out", out],
        "empty": [tmp_path, "--out", out],
        "no-weights": [no_weights_run(runs, tmp_path), "--out", out],
        "format": [run, "--format", "tflite"],
        "out-is-folder": [run, "--out", tmp_path],
        "out-under-file": [run, "--out", run / "spec.yaml" / "model.pt"],
        "out-unwritable": [run, "--out", Path("/proc/model.pt")],
    }[case]
    if case == "out-unwritable" and not Path("/proc").is_dir():
        pytest.skip("needs /proc, a folder nobody can create files in")
    args = [*args, "--format", "torchscript"] if case != "format" else args
    error_line(cli("export", *args), phrase)
    assert not out.exists() and leftovers(tmp_path) == []
    assert sorted(p.name for p in run.iterdir()) == before


def test_a_missing_extra_is_one_line(
    runs: dict[str, Path], tmp_path: Path, cli: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if not installed
    out = tmp_path / "net.onnx"
    line = error_line(cli("export", runs["conv5-tiny"], "--out", out))
    assert line == f"error: {NEEDS_ONNX}"
    assert not out.exists() and leftovers(tmp_path) == []


def test_api_refuses_an_unknown_format(runs: dict[str, Path]) -> None:
    with pytest.raises(CnnlabError, match="unknown export format 'tflite'"):
        cnnlab.export_run(runs["conv5-tiny"], "tflite")  # type: ignore[arg-type]
