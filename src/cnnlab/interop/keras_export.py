"""Layouts between torch and Keras weights, and the export to a Keras 3 `.keras` file.

Keras 3 is imported lazily, on the first export: cnnlab itself never needs it.
"""

from __future__ import annotations

import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnlab.errors import CnnlabError, RunError
from cnnlab.interop.keras_spec import LAYERS
from cnnlab.interop.marker import MARKER_FILE, metadata
from cnnlab.nn.model import KerasConv2d, KerasDense, Network
from cnnlab.nn.shapes import keras_names
from cnnlab.nn.spec import layer_type
from cnnlab.util.text import slug

NEEDS_KERAS = "needs Keras: pip install 'cnnlab[keras]'"


def param_modules(model: Network) -> list[nn.Module]:
    """The modules holding weights, in layer order: Conv2d, BatchNorm, Linear."""
    out: list[nn.Module] = []
    for module in model.body:
        if isinstance(module, KerasConv2d):
            out.append(module.conv)
        elif isinstance(module, KerasDense):
            out.append(module.linear)
        elif isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
            out.append(module)
    return out


def torch_tensors(module: nn.Module) -> list[torch.Tensor]:
    """A module's tensors in Keras's variable order."""
    if isinstance(module, nn.BatchNorm1d | nn.BatchNorm2d):
        names = ("weight", "bias", "running_mean", "running_var")
    else:
        names = ("weight", "bias") if module.bias is not None else ("weight",)
    return [getattr(module, n) for n in names]


def to_torch(array: np.ndarray) -> torch.Tensor:
    """Keras layout -> torch layout: (kh, kw, in, out) -> (out, in, kh, kw); (in,
    out) -> (out, in)."""
    tensor = torch.from_numpy(np.ascontiguousarray(array))
    if tensor.dim() == 4:
        return tensor.permute(3, 2, 0, 1)
    return tensor.t() if tensor.dim() == 2 else tensor


def to_keras(tensor: torch.Tensor) -> np.ndarray:
    """Torch layout -> Keras layout, the inverse of `to_torch`."""
    tensor = tensor.detach().cpu().float()
    if tensor.dim() == 4:
        tensor = tensor.permute(2, 3, 1, 0)
    elif tensor.dim() == 2:
        tensor = tensor.t()
    return np.ascontiguousarray(tensor.numpy())


def _keras() -> Any:
    """Keras 3, imported on first use (TensorFlow backend unless one is chosen)."""
    os.environ.setdefault("KERAS_BACKEND", "tensorflow")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")  # TensorFlow's start-up lines
    try:
        import keras
    except ImportError:
        raise CnnlabError(f"Exporting to Keras {NEEDS_KERAS}.") from None
    return keras


def _keras_layer(keras: Any, spec: Any, name: str) -> Any:
    """The Keras layer computing what the cnnlab layer `spec` computes."""
    kind = layer_type(spec)
    args = {field: getattr(spec, field) for field in set(LAYERS[kind].args.values())}
    return getattr(keras.layers, kind)(name=name, **args)


def keras_model(model: Network) -> Any:
    """A Keras 3 Sequential with the network's layers and weights, after a
    Normalization layer for a run that standardises its inputs."""
    keras = _keras()
    arch = model.arch
    layers = [
        _keras_layer(keras, spec, name)
        for spec, name in zip(arch.layers, keras_names(arch), strict=True)
    ]
    first = _standardization(keras, model)
    built = keras.Sequential(
        [keras.Input(shape=arch.input_shape), *first, *layers],
        name=slug(arch.name) or "cnnlab",
    )
    modules = iter(param_modules(model))
    for layer in built.layers[len(first) :]:
        if layer.weights:
            layer.set_weights([to_keras(t) for t in torch_tensors(next(modules))])
    return built


def _standardization(keras: Any, model: Network) -> list[Any]:
    """A Normalization layer doing the run's input standardisation (the same
    (x - mean) / std per channel), or none."""
    prep = model.standardize
    if prep is None:
        return []
    mean = prep.mean.detach().cpu().double().flatten().numpy()
    std = prep.std.detach().cpu().double().flatten().numpy()
    layer = keras.layers.Normalization(mean=mean, variance=std**2, name="standardize")
    return [layer]


def export_keras(model: Network, path: Path) -> Path:
    """Save the network as a Keras 3 `.keras` file (atomically, replacing one there)."""
    path = Path(path)
    if path.suffix != ".keras":
        raise CnnlabError(f"{path}: a Keras export is a .keras file; end the name so.")
    built = keras_model(model)
    temp = path.with_name(f".{path.stem}.tmp-{os.getpid()}.keras")
    try:
        built.save(temp)
        _mark(temp, model)
        os.replace(temp, path)
    except BaseException as err:
        temp.unlink(missing_ok=True)
        if isinstance(err, OSError):
            raise RunError(f"{path}: cannot write the file ({err.strerror}).") from err
        raise
    return path


def _mark(archive: Path, model: Network) -> None:
    """Add the export's marker member to the saved zip (Keras reads only its own
    members): it tells a later `export --overwrite` the file is one it may replace."""
    with zipfile.ZipFile(archive, "a") as zf:
        zf.writestr(MARKER_FILE, json.dumps(metadata(model, None)))
