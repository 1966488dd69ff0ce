"""A trained network out to an ONNX, Keras or TorchScript file.

Every export takes images the way Keras does: an (N, H, W, C) float32 array with
values in [0, 1], for MNIST (N, 28, 28, 1), channels last, so a Keras user feeds
the same array; the graph transposes it to PyTorch's (N, C, H, W) inside. It
returns class probabilities (N, classes), softmax applied, as a Keras net ending in
softmax does. The batch size N is free. A run that standardises its inputs
(data.standardize) does it inside the export, so the input stays [0, 1] pixels.

ONNX uses torch's TorchScript-based exporter (`dynamo=False`): in torch 2.13 it is
deprecated but present, needs no package beyond `onnx` for the checks, is quiet and
takes under a second; the torch.export-based exporter gives the same graph here,
but needs `onnxscript` (and `onnx_ir`), takes seconds and prints its progress.
TorchScript (`torch.jit.trace`, a `.pt` file) rather than a torch.export `.pt2`:
`torch.jit.load(path)` returns a callable module in one step, in any recent torch
and in C++ (libtorch), while a `.pt2` needs `torch.export.load(path).module()` and a
torch that reads its schema. Both need no cnnlab to load.
"""

from __future__ import annotations

import copy
import io
import json
import warnings
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from cnnlab.errors import CnnlabError, RunError
from cnnlab.interop.marker import (
    INPUT_CONVENTION,
    INPUT_NAME,
    MARKER_FILE,
    MARKER_KEY,
    OUTPUT_NAME,
    metadata,
)
from cnnlab.nn import convpath
from cnnlab.nn.model import Network
from cnnlab.nn.shapes import infer
from cnnlab.nn.spec import Architecture
from cnnlab.util.fsio import atomic_write, sweep_stale_temps
from cnnlab.util.interrupts import signals_deferred

FORMATS = ("onnx", "keras", "torchscript")
SUFFIXES = {"onnx": ".onnx", "keras": ".keras", "torchscript": ".pt"}
OPSET = 17  # ONNX opset of the exported graph; onnxruntime >= 1.18 runs it
NEEDS_ONNX = "--format onnx needs onnx and onnxruntime: pip install 'cnnlab[interop]'"
VERIFY_TOLERANCE = 1e-4  # onnxruntime vs torch on a sample batch; more is a bug
MAX_MARKER_READ = 2**31  # protobuf's own size limit: no ONNX file is larger
STORE_NAME = "cnnlab.sqlite"  # the study store (studies.study.STORE_FILE)


@dataclass(frozen=True)
class Signature:
    """What an exported file takes and returns; names are None where not fixed."""

    input_name: str | None
    input_shape: tuple[int | str, ...]
    output_name: str | None
    output_shape: tuple[int | str, ...]
    opset: int | None
    loader: str  # the call that loads the file, e.g. onnxruntime.InferenceSession


LOADERS = {
    "onnx": "onnxruntime.InferenceSession",
    "keras": "keras.saving.load_model",
    "torchscript": "torch.jit.load",
}


def signature(arch: Architecture, fmt: str) -> Signature:
    """The input and output of `fmt`'s export of a network of `arch`."""
    classes = infer(arch).output_shape
    named = fmt != "keras"  # Keras names its tensors after its layers
    return Signature(
        INPUT_NAME if named else None,
        ("N", *arch.input_shape),
        OUTPUT_NAME if named else None,
        ("N", *classes),
        OPSET if fmt == "onnx" else None,
        LOADERS[fmt],
    )


def default_path(run: Path, fmt: str) -> Path:
    """Where an export goes without --out: model.<suffix> in the run folder."""
    return Path(run) / f"model{SUFFIXES[fmt]}"


class ProbabilityNet(nn.Module):
    """(N, H, W, C) images in [0, 1] -> (N, classes) probabilities: what is exported.
    A run's input standardisation (data.standardize) is applied inside."""

    def __init__(self, model: Network) -> None:
        super().__init__()
        plain = _plain_copy(model)
        self.body = plain.body
        self.standardize = plain.standardize
        self.eval()  # exporters restore the root's mode onto every module after

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        x = image.permute(0, 3, 1, 2)
        if self.standardize is not None:
            x = self.standardize(x)
        return torch.softmax(self.body(x), dim=1)


def _plain_copy(model: Network) -> Network:
    """An inference-only copy without the NNPACK path, which no exporter can trace."""
    plain = copy.deepcopy(model).eval().requires_grad_(False)
    plain.set_conv_path(convpath.ONEDNN)
    return plain


def _example(model: Network, batch: int = 2) -> torch.Tensor:
    """A random batch in the exported input convention, seeded for repeatability."""
    generator = torch.Generator().manual_seed(0)
    return torch.rand(batch, *model.arch.input_shape, generator=generator)


def _onnx_modules() -> tuple[Any, Any]:
    """onnx and onnxruntime, or the one-line error naming the extra."""
    try:
        import onnx
        import onnxruntime
    except ImportError:
        raise CnnlabError(NEEDS_ONNX) from None
    return onnx, onnxruntime


def _onnx_bytes(net: ProbabilityNet, example: torch.Tensor) -> bytes:
    """The traced graph as ONNX bytes, batch dimension dynamic."""
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # the exporter's own deprecation notices
        warnings.simplefilter("ignore", DeprecationWarning)
        torch.onnx.export(
            net,
            (example,),
            buffer,
            dynamo=False,  # see the module docstring
            input_names=[INPUT_NAME],
            output_names=[OUTPUT_NAME],
            opset_version=OPSET,
            dynamic_axes={INPUT_NAME: {0: "batch"}, OUTPUT_NAME: {0: "batch"}},
        )
    return buffer.getvalue()


def _verify_onnx(ort: Any, data: bytes, net: ProbabilityNet, x: torch.Tensor) -> None:
    """Run the graph in onnxruntime and check it computes what torch computes."""
    session = ort.InferenceSession(data, providers=["CPUExecutionProvider"])
    got = torch.from_numpy(session.run([OUTPUT_NAME], {INPUT_NAME: x.numpy()})[0])
    diff = float((got - net(x)).abs().max())
    if not diff <= VERIFY_TOLERANCE:
        raise RuntimeError(f"ONNX export differs from the network by {diff:.2e}")


def export_onnx(model: Network, path: Path, class_names: list[str] | None) -> Path:
    """Write the network as a checked ONNX file of class probabilities."""
    onnx, ort = _onnx_modules()
    net, example = ProbabilityNet(model), _example(model, 3)
    proto = onnx.load_from_string(_onnx_bytes(net, example))
    props = metadata(model, class_names)
    onnx.helper.set_model_props(  # ONNX stores strings: lists as JSON
        proto, {k: v if isinstance(v, str) else json.dumps(v) for k, v in props.items()}
    )
    proto.doc_string = f"{model.arch.name}: {INPUT_NAME} {INPUT_CONVENTION}"
    onnx.checker.check_model(proto, full_check=True)
    data = proto.SerializeToString()
    with torch.no_grad():
        _verify_onnx(ort, data, net, example)
    atomic_write(path, lambda fh: fh.write(data))
    return path


def export_torchscript(
    model: Network, path: Path, class_names: list[str] | None
) -> Path:
    """Write the network as a traced TorchScript file of class probabilities."""
    net = ProbabilityNet(model)
    with warnings.catch_warnings(), torch.no_grad():  # torch.jit's notices
        warnings.simplefilter("ignore", DeprecationWarning)
        traced = torch.jit.trace(net, (_example(model),))
    extra = {MARKER_FILE: json.dumps(metadata(model, class_names))}

    def write(fh: Any) -> None:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            torch.jit.save(traced, fh, _extra_files=extra)

    atomic_write(path, write)
    return path


def export_keras_file(
    model: Network, path: Path, class_names: list[str] | None
) -> Path:
    """Write the network as a Keras 3 file (the Keras interop module does it)."""
    try:
        from cnnlab.interop.keras import export_keras
    except ImportError as err:
        if err.name != "cnnlab.interop.keras":
            raise
        raise CnnlabError("--format keras is not available in this cnnlab.") from None
    return export_keras(model, path)


WRITERS: dict[str, Callable[[Network, Path, list[str] | None], Path]] = {
    "onnx": export_onnx,
    "keras": export_keras_file,
    "torchscript": export_torchscript,
}


def check_format(fmt: str) -> None:
    """Refuse a format name this module does not write."""
    if fmt not in WRITERS:
        raise CnnlabError(
            f"unknown export format '{fmt}'. Choose one of {', '.join(FORMATS)}."
        )


def check_target(path: Path, fmt: str, overwrite: bool = False) -> None:
    """Refuse an --out that cannot become a file before any work is done, and one
    whose writing would lose data: a file of a run folder or of a study store, or
    an existing file that is not a previous export (or is one, without
    `overwrite`)."""
    try:
        _check_target(path, fmt, overwrite)
    except OSError as err:  # a name too long, a loop of links, no permission
        reason = err.strerror or type(err).__name__
        shown = str(path)
        shown = shown if len(shown) <= 100 else f"{shown[:60]}...{shown[-20:]}"
        raise RunError(
            f"{shown}: cannot be used as --out ({reason}). Choose a shorter or "
            "other file name."
        ) from err


def _check_target(path: Path, fmt: str, overwrite: bool) -> None:
    from cnnlab.training.runs import is_run_folder

    if path.is_dir():
        example = default_path(path, fmt)
        raise RunError(f"{path}: is a folder. Give a file name for --out: {example}.")
    if not path.parent.is_dir():
        raise RunError(
            f"{path.parent}: not an existing folder. Create it or choose another --out."
        )
    parent = path.parent
    if is_run_folder(parent) and path.name not in DEFAULT_NAMES:
        raise RunError(
            f"{path}: is inside the run folder {parent}, whose files an export must "
            f"not replace. Choose --out outside it, or leave --out out to write "
            f"{default_path(parent, fmt)}."
        )
    if path.name == STORE_NAME or (parent / STORE_NAME).exists():
        raise RunError(
            f"{path}: is next to the study store {parent / STORE_NAME}; an export "
            "must not write among a store's files. Choose --out in another folder."
        )
    if path.exists() or path.is_symlink():
        if not is_export(path):
            raise RunError(
                f"{path}: already exists and is not a file cnnlab export wrote; "
                "refusing to replace it. Choose another --out."
            )
        if not overwrite:
            raise RunError(
                f"{path}: already exists (a previous export). Add --overwrite to "
                "replace it, or choose another --out."
            )


DEFAULT_NAMES = frozenset(f"model{suffix}" for suffix in SUFFIXES.values())


def is_export(path: Path) -> bool:
    """True for a regular file this module wrote, told by the marker inside it:
    a zip (TorchScript, .keras) holding MARKER_FILE, or an ONNX graph whose
    metadata has MARKER_KEY. The marker travels with the file (a copied or renamed
    export is still known) and a run's, a store's or anybody's other file lacks
    it: a sidecar file could be lost, or left beside a file that is no export."""
    if path.is_symlink() or not path.is_file():
        return False
    if zipfile.is_zipfile(path):
        try:
            with zipfile.ZipFile(path) as archive:
                names = archive.namelist()
        except (zipfile.BadZipFile, OSError):
            return False
        return any(
            n == MARKER_FILE or n.endswith(f"/extra/{MARKER_FILE}") for n in names
        )
    if path.stat().st_size > MAX_MARKER_READ:
        return False
    try:
        import onnx
    except ImportError:
        return False
    try:
        proto = onnx.load(str(path), load_external_data=False)
    except Exception:  # not a protobuf: whatever onnx raises, it is no export
        return False
    return any(p.key == MARKER_KEY for p in proto.metadata_props)


def check_weights(model: Network, run: Path | str | None = None) -> None:
    """Refuse a network whose weights are not all finite: its export would compute
    NaN (and no check could compare it with the network)."""
    with torch.no_grad():
        bad = [
            name
            for name, tensor in model.state_dict().items()
            if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all())
        ]
    if bad:
        where = run if run is not None else f"network '{model.arch.name}'"
        raise RunError(
            f"{where}: the weights hold NaN or infinite values (in {bad[0]}), so the "
            "network computes nothing to export. Train the run again, e.g. with a "
            "lower learning rate."
        )


def export_network(
    model: Network,
    fmt: str,
    path: Path,
    class_names: list[str] | None = None,
    overwrite: bool = False,
    source: Path | None = None,
) -> Path:
    """Write `model` (of the run folder `source`, if any) to `path` in format `fmt`
    (see FORMATS); returns the path. An existing `path` is replaced only with
    `overwrite`, and only if an export wrote it (see check_target)."""
    check_format(fmt)
    path = Path(path)
    check_target(path, fmt, overwrite)
    check_weights(model, source)
    sweep_stale_temps(path.parent, path.name)
    with signals_deferred():  # the exporters call Python back from C++
        return WRITERS[fmt](model, path, class_names)
