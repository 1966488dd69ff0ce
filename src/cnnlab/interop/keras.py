"""Keras models in and out, exactly: `.keras`/`.h5`/`.json` -> a spec and a run
folder, and a trained cnnlab network -> a Keras 3 `.keras` file.

Reading runs no Keras code and needs no Keras: the archive is opened with zipfile,
the config read as JSON (see keras_spec for what is accepted) and the weights with
h5py. Writing builds a real `keras.Sequential`, so export needs Keras (the `keras`
extra). Weight layouts: a Keras Conv2D kernel (kh, kw, in, out) is torch's
(out, in, kh, kw); a Dense kernel (in, out) is torch's (out, in); BatchNormalization's
gamma, beta, moving_mean, moving_variance are torch's weight, bias, running_mean,
running_var. Dense after Flatten needs no reordering: cnnlab flattens in Keras's
(H, W, C) order.
"""

from __future__ import annotations

import errno
import io
import json
import os
import shutil
import stat
import zipfile
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.errors import CnnlabError, RunError, SpecError
from cnnlab.interop.keras_export import (
    NEEDS_KERAS,
    export_keras,
    param_modules,
    to_torch,
    torch_tensors,
)
from cnnlab.interop.keras_spec import (
    LAYERS,
    KerasModel,
    parse_keras_config,
    spec_from_keras_config,
    supported_layers,
)
from cnnlab.nn.model import Network, build_model
from cnnlab.nn.shapes import ModelInfo, check_memory, infer, keras_names
from cnnlab.nn.spec import Architecture, dump_architecture, layer_type
from cnnlab.training.config import TrainConfig
from cnnlab.training.runs import create_run, default_run_path
from cnnlab.training.status import Status
from cnnlab.util.fsio import (
    atomic_write_text,
    not_a_file,
    read_bounded,
    sweep_stale_temps,
)
from cnnlab.util.machine import available_memory, environment

__all__ = [
    "KERAS_SUFFIXES",
    "ImportResult",
    "export_keras",
    "import_keras",
    "spec_from_keras_config",
    "supported_layers",
]

KERAS_SUFFIXES = (".keras", ".h5", ".json")
CONFIG_FILE, WEIGHTS_FILE = "config.json", "model.weights.h5"
MAX_CONFIG_BYTES = 64 * 2**20  # a config is a few KB; refuse a zip bomb's
MAX_METADATA_BYTES = 2**20  # metadata.json: a version and a date
# model.weights.h5, read into memory: 1 GiB is 268M float32 weights, far more than
# a network cnnlab trains (the memory check refuses those first).
MAX_MEMBER_BYTES = 2**30
MAX_HDF5_OBJECTS = 100_000  # groups and datasets looked at in one weights file
# (layer index, Keras name, archive name) -> the layer's saved arrays, or None.
Weights = Callable[[int, str, str], list[Any] | None]


@dataclass(frozen=True)
class ImportResult:
    """What `import_keras` read and wrote."""

    source: Path
    arch: Architecture
    spec_path: Path  # the run's spec.yaml, or the spec file of an architecture
    run_path: Path | None  # the run folder, when the source held weights

    @property
    def info(self) -> ModelInfo:
        """Shapes and parameter totals of the imported architecture."""
        return infer(self.arch)

    def lines(self) -> list[str]:
        """What the import wrote, for a terminal: files and parameter totals."""
        info = self.info
        text = [f"Spec: {self.spec_path}"]
        if self.run_path is not None:
            text.append(f"Run folder: {self.run_path}")
        text.append(
            f"Total params: {info.total:,} (trainable {info.trainable:,}, "
            f"non-trainable {info.non_trainable:,})"
        )
        if self.run_path is not None:
            text.append(f"Next: cnnlab evaluate {self.run_path}")
        return text


@dataclass
class _Source:
    config: Any
    weights: Weights | None
    keras_version: str | None
    kind: str  # "keras", "h5" or "json"


def import_keras(path: str | Path, out: Path | None = None) -> ImportResult:
    """Import a Keras model file: a run folder at `out` if it has weights, else a spec.

    Without weights (a `.json`), `out` is the YAML file to write (default
    ./<name>.yaml); with weights, the run folder (default runs/<name>-imported-TIME).
    """
    path = Path(path)
    with ExitStack() as stack:
        source = _open_source(path, stack)
        parsed = parse_keras_config(source.config, str(path))
        if source.weights is None:
            return _write_spec(path, parsed.arch, out)
        classes = _classes(parsed.arch, str(path))  # before reading any weight
        model = _loaded_model(parsed, source.weights, str(path))
    env = _import_environment(path, source, classes)
    run = _write_run(parsed.arch, model, out, env)
    return ImportResult(path, parsed.arch, run / "spec.yaml", run)


# ------------------------------------------------------------------------- reading


def _open_source(path: Path, stack: ExitStack) -> _Source:
    suffix = path.suffix.lower()
    if suffix not in KERAS_SUFFIXES:
        raise CnnlabError(
            f"{path}: not a Keras model file. Give a .keras archive, a legacy .h5 "
            "model or a .json config."
        )
    _check_regular(path)
    if suffix == ".json":
        return _Source(_json(_read(path), str(path)), None, None, "json")
    if suffix == ".h5":
        return _open_h5(path, stack)
    return _open_archive(path, stack)


WHAT = "a Keras model file (.keras, .h5 or .json)"


def _check_regular(path: Path) -> None:
    """Refuse a missing path, a folder, a FIFO or a device before opening it (a
    FIFO would block zipfile and h5py, a device never end)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        raise CnnlabError(
            f"{path}: no such file. Give a Keras model saved with model.save() or "
            "model.to_json()."
        ) from None
    if stat.S_ISDIR(mode):
        raise CnnlabError(f"{path}: is a folder. Give {WHAT}.")
    if not stat.S_ISREG(mode):
        raise CnnlabError(not_a_file(path, mode, WHAT))


def _read(path: Path) -> bytes:
    try:
        return read_bounded(path, MAX_CONFIG_BYTES, WHAT)
    except OSError as err:
        raise CnnlabError(f"{path}: cannot read the file ({err.strerror}).") from err


def _member(archive: zipfile.ZipFile, name: str, limit: int, where: str) -> bytes:
    """A zip member's bytes, refused past `limit`: the size the archive states is
    checked before inflating, and the stream is cut at the limit (the stated size
    may lie)."""
    stated = archive.getinfo(name).file_size
    if stated > limit:
        raise CnnlabError(_over(where, name, stated, limit))
    chunks, total = [], 0
    with archive.open(name) as fh:
        while chunk := fh.read(min(limit + 1 - total, 1 << 22)):
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:
                raise CnnlabError(_over(where, name, total, limit))
    return b"".join(chunks)


def _over(where: str, name: str, size: int, limit: int) -> str:
    return (
        f"{where}: {name} inflates to {size:,} bytes or more, over the limit of "
        f"{limit:,} bytes. Check that it is the right file; save the model again "
        "with model.save('model.keras')."
    )


def _json(raw: bytes | str, where: str) -> Any:
    """Parsed JSON, or a located error saying why it is not."""
    try:
        return json.loads(raw)
    except (ValueError, RecursionError) as err:  # ValueError: 4,300+ digit numbers
        reason = " ".join(str(err).split())[:120]
        raise CnnlabError(
            f"{where}: not valid JSON ({reason}). Give a config written by "
            "model.to_json() or a .keras archive."
        ) from err


def _h5py() -> Any:
    try:
        import h5py
    except ImportError:
        raise CnnlabError(f"Reading Keras weights {NEEDS_KERAS}.") from None
    return h5py


def _open_archive(path: Path, stack: ExitStack) -> _Source:
    """A `.keras` zip: config.json, metadata.json and model.weights.h5."""
    fix = "Save the model again with model.save('model.keras')."
    try:
        archive = stack.enter_context(zipfile.ZipFile(path))
        names = set(archive.namelist())
        if CONFIG_FILE not in names:
            raise CnnlabError(
                f"{path}: a zip without {CONFIG_FILE}, so not a Keras model archive. "
                f"{fix}"
            )
        where = str(path)
        raw = _member(archive, CONFIG_FILE, MAX_CONFIG_BYTES, where)
        config = _json(raw, f"{path}: {CONFIG_FILE}")
        meta = b"{}"
        if "metadata.json" in names:
            meta = _member(archive, "metadata.json", MAX_METADATA_BYTES, where)
        weights_raw = None
        if WEIGHTS_FILE in names:
            weights_raw = _member(archive, WEIGHTS_FILE, MAX_MEMBER_BYTES, where)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError) as err:
        raise CnnlabError(
            f"{path}: not a readable .keras archive ({' '.join(str(err).split())}). "
            f"The file is corrupt or of another format. {fix}"
        ) from err
    version = _keras_version(_json(meta, f"{path}: metadata.json"))
    if weights_raw is None:
        if "model.weights.npz" in names:
            raise CnnlabError(
                f"{path}: the weights are stored as .npz; cnnlab reads the default "
                "h5 weights. Save with model.save('model.keras')."
            )
        return _Source(config, None, version, "keras")
    h5py = _h5py()
    try:
        store = stack.enter_context(h5py.File(io.BytesIO(weights_raw), "r"))
    except OSError as err:
        raise CnnlabError(
            f"{path}: {WEIGHTS_FILE} is not a readable HDF5 file. {fix}"
        ) from err
    _check_contained(store, f"{path}: {WEIGHTS_FILE}")
    return _Source(config, _archive_weights(store), version, "keras")


def _check_contained(store: Any, where: str) -> None:
    """Refuse an HDF5 file whose data lives in other files: an external link, a
    dataset with external storage or a virtual dataset would make h5py read any
    local file (or block on a FIFO) and put its bytes into the weights. Links are
    looked at without being followed; at most MAX_HDF5_OBJECTS are visited."""
    h5py = _h5py()
    seen: set[Any] = set()
    todo = [("/", store)]
    fix = "Save the model again with model.save() so the weights are inside the file."
    while todo:
        path, group = todo.pop()
        for name in group:
            if len(seen) >= MAX_HDF5_OBJECTS:
                raise CnnlabError(
                    f"{where}: holds more than {MAX_HDF5_OBJECTS:,} HDF5 objects, "
                    f"more than any Keras model's weights. {fix}"
                )
            full = f"{path.rstrip('/')}/{name}"
            link = group.get(name, getlink=True)
            if isinstance(link, h5py.ExternalLink):
                raise CnnlabError(
                    f"{where}: {full} is a link to {link.filename}, outside the "
                    f"file; cnnlab reads weights only from the file itself. {fix}"
                )
            if not isinstance(link, h5py.HardLink):
                continue  # a soft link names an object inside the file, seen anyway
            item = group.get(name)
            key = item.id.__hash__() if item is not None else None
            if key in seen:
                continue
            seen.add(key)
            if isinstance(item, h5py.Group):
                todo.append((full, item))
            elif isinstance(item, h5py.Dataset) and (item.external or item.is_virtual):
                kind = "external storage" if item.external else "a virtual dataset"
                raise CnnlabError(
                    f"{where}: {full} uses {kind}, with its data outside the file; "
                    f"cnnlab reads weights only from the file itself. {fix}"
                )


def _keras_version(doc: Any) -> str | None:
    value = doc.get("keras_version") if isinstance(doc, dict) else None
    return value.decode() if isinstance(value, bytes) else value


def _archive_weights(store: Any) -> Weights:
    """Keras 3's layout: layers/<class name, snake_case, numbered>/vars/0, 1, ..."""
    h5py = _h5py()

    def arrays(index: int, name: str, archive_name: str) -> list[Any] | None:
        for key in (archive_name, name):
            group = store.get(f"layers/{key}/vars")
            if isinstance(group, h5py.Group):
                numbered = sorted((k for k in group if k.isdigit()), key=int)
                return [group[k] for k in numbered]
        return None

    return arrays


def _open_h5(path: Path, stack: ExitStack) -> _Source:
    """A legacy full-model `.h5`: the `model_config` attribute and `model_weights`."""
    h5py = _h5py()
    try:
        store = stack.enter_context(h5py.File(path, "r"))
        raw = store.attrs.get("model_config")
    except OSError as err:
        raise CnnlabError(
            f"{path}: not a readable HDF5 file (corrupt, or of another format). "
            "Save the model again with model.save('model.h5') or as .keras."
        ) from err
    if raw is None:
        raise CnnlabError(
            f"{path}: holds weights only (no model_config, as model.save_weights "
            "writes). Save the whole model with model.save('model.keras')."
        )
    config = _json(raw.decode() if isinstance(raw, bytes) else str(raw), str(path))
    _check_contained(store, str(path))
    group = store.get("model_weights")
    weights = _legacy_weights(group) if isinstance(group, h5py.Group) else None
    return _Source(config, weights, _keras_version(dict(store.attrs)), "h5")


def _legacy_weights(root: Any) -> Weights:
    """Keras 2's and Keras 3's legacy layout: <layer name>/ with `weight_names`."""
    h5py = _h5py()

    def arrays(index: int, name: str, archive_name: str) -> list[Any] | None:
        group = root.get(name)
        if not isinstance(group, h5py.Group):
            return None
        names = [
            n.decode() if isinstance(n, bytes) else str(n)
            for n in group.attrs.get("weight_names", [])
        ]
        return [group.get(n) for n in names]

    return arrays


# ------------------------------------------------------------------------- weights


def _expected(arch: Architecture) -> list[list[tuple[str, tuple[int, ...]]]]:
    """Per layer, the Keras variables (role, shape) the architecture implies."""
    out = []
    for layer_info in infer(arch).layers:
        layer, cin = layer_info.layer, layer_info.input_shape[-1]
        roles = [
            r
            for r in LAYERS[layer_type(layer)].weights
            if r != "bias" or getattr(layer, "use_bias", True)
        ]
        shapes = {
            "kernel": (*getattr(layer, "kernel_size", ()), cin, _width(layer)),
            "bias": (_width(layer),),
        }
        out.append([(r, shapes.get(r, (cin,))) for r in roles])
    return out


def _width(layer: Any) -> int:
    return getattr(layer, "filters", None) or getattr(layer, "units", 0)


def _read_arrays(parsed: KerasModel, weights: Weights, source: str) -> list[np.ndarray]:
    """Every variable of every layer, checked against the shape the config implies."""
    arch, found = parsed.arch, []
    names = zip(parsed.names, keras_names(arch), strict=True)
    for index, ((name, archive_name), wanted) in enumerate(
        zip(names, _expected(arch), strict=True)
    ):
        if not wanted:
            continue
        where = f"{source}: layers[{index}] ({layer_type(arch.layers[index])} {name!r})"
        arrays = weights(index, name, archive_name)
        if arrays is None or len(arrays) != len(wanted):
            have = "none" if arrays is None else str(len(arrays))
            raise SpecError(
                f"{where}: the file holds {have} weight arrays for this layer, the "
                f"config implies {len(wanted)} ({', '.join(r for r, _ in wanted)}). "
                "The weights do not belong to this config; save the model again."
            )
        for array, (role, shape) in zip(arrays, wanted, strict=True):
            found.append(_checked(array, role, shape, where))
    return found


def _checked(array: Any, role: str, shape: tuple[int, ...], where: str) -> np.ndarray:
    got = getattr(array, "shape", None)
    dtype = getattr(array, "dtype", None)
    if got is None or tuple(got) != shape or dtype is None or dtype.kind != "f":
        shown = "missing" if got is None else f"shape {tuple(got)} ({dtype})"
        raise SpecError(
            f"{where}: weight {role!r} is {shown}; the config implies float shape "
            f"{shape}. The weights do not belong to this config; save the model "
            "again."
        )
    try:
        return np.asarray(array[()], dtype=np.float32)
    except OSError as err:  # a corrupt compressed chunk, a truncated file
        reason = " ".join(str(err).split())[:120]
        raise SpecError(
            f"{where}: weight {role!r} cannot be read ({reason}). The file is "
            "corrupt; save the model again."
        ) from err


def _loaded_model(parsed: KerasModel, weights: Weights, source: str) -> Network:
    """The cnnlab network of the config, holding the file's weights."""
    arrays = _read_arrays(parsed, weights, source)  # all checked before building
    for index, array in enumerate(arrays):
        if not np.isfinite(array).all():
            raise SpecError(
                f"{source}: weight array {index} holds NaN or infinite values, so the "
                "network computes nothing usable. Save the model again after "
                "training that did not diverge."
            )
    check_memory(infer(parsed.arch), 1, None, available_memory(torch.device("cpu")))
    model = build_model(parsed.arch, seed=0)
    targets = [t for m in param_modules(model) for t in torch_tensors(m)]
    with torch.no_grad():
        for target, array in zip(targets, arrays, strict=True):
            target.copy_(to_torch(array))
    return model.eval()


# ------------------------------------------------------------------------- writing


def _classes(arch: Architecture, source: str) -> int:
    """The number of classes the network scores; a run folder needs a classifier."""
    shape = infer(arch).output_shape
    if len(shape) != 1:
        raise SpecError(
            f"{source}: the model's output has shape {shape}; a cnnlab run needs a "
            "vector of class scores. End the model with Flatten and Dense(N, "
            "activation='softmax'), or import its architecture only (.json)."
        )
    infer(arch, shape[0])  # softmax or linear scores, as evaluate and predict need
    return shape[0]


def _import_environment(path: Path, source: _Source, classes: int) -> dict:
    """run.json's `environment`: this machine, and where the weights came from."""
    return environment(torch.device("cpu")) | {
        "imported_from": str(path.resolve()),
        "import_format": source.kind,
        "keras_version": source.keras_version,
        "class_names": [str(i) for i in range(classes)],
    }


def _write_run(arch: Architecture, model: Network, out: Path | None, env: dict) -> Path:
    """A completed run folder (spec, run.json, weights.pt), whole or not at all."""
    run = Path(out) if out is not None else default_run_path(f"{arch.name}-imported")
    if run.exists():
        raise RunError(f"{run}: already exists. Choose another --out.")
    made_parent = not run.parent.exists()
    temp = run.with_name(f".{run.name}.tmp-{os.getpid()}")
    try:
        run.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(
            f"{run.parent}: cannot create the folder ({err.strerror}). Choose a "
            "writable --out."
        ) from err
    sweep_stale_temps(run.parent, run.name)  # what killed imports left
    shutil.rmtree(temp, ignore_errors=True)
    try:
        record = create_run(temp, arch, TrainConfig(), env)
        record.save_weights(model)
        record.save_meta(status=Status.COMPLETED, epochs_done=0)
        os.rename(temp, run)
    except BaseException as err:
        shutil.rmtree(temp, ignore_errors=True)
        if made_parent:
            _remove_empty(run.parent)
        if isinstance(err, OSError) and err.errno in (errno.ENOTEMPTY, errno.EEXIST):
            raise RunError(
                f"{run}: already exists (another import wrote it meanwhile). "
                "Choose another --out."
            ) from err
        if isinstance(err, OSError):
            reason = err.strerror or type(err).__name__
            raise RunError(f"{run}: cannot write the run folder ({reason}).") from err
        if isinstance(err, RuntimeError) and "inline_container" in str(err):
            # torch.save's own error when a write fails (a full disk)
            raise RunError(
                f"{run}: cannot write the run folder (the weights could not be "
                "written: is the disk full?). Free some space or choose another --out."
            ) from err
        raise
    return run


def _remove_empty(folder: Path) -> None:
    """Remove a folder this import created, if nothing else was put in it."""
    try:
        folder.rmdir()
    except OSError:
        pass


def _write_spec(path: Path, arch: Architecture, out: Path | None) -> ImportResult:
    """An architecture-only import: the spec as a YAML file."""
    target = Path(out) if out is not None else Path(f"{arch.name}.yaml")
    if target.suffix.lower() not in (".yaml", ".yml"):
        raise CnnlabError(
            f"{target}: {path.name} holds no weights, so the import is a spec file; "
            "give --out a .yaml path."
        )
    if target.exists():
        raise CnnlabError(f"{target}: already exists. Choose another --out.")
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise RunError(
            f"{target.parent}: cannot create the folder ({err.strerror}). Choose a "
            "writable --out."
        ) from err
    sweep_stale_temps(target.parent, target.name)
    atomic_write_text(target, dump_architecture(arch))
    return ImportResult(path, arch, target, None)
