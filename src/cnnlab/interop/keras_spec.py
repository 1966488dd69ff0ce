"""Keras `Sequential` configs -> cnnlab Architectures, by one table of what is known.

A config is plain JSON (a `.keras` archive's config.json, `model.to_json()`, or a
legacy `.h5`'s `model_config` attribute), in Keras 3's form or Keras 2's (tf.keras):
it is read as data, never deserialised by Keras, so no code in it runs.

Each Keras argument is one of:

- mapped: a field of the cnnlab layer (`LAYERS[...].args`);
- fixed: an argument that changes the function, accepted only at the values that
  match cnnlab's layer (`LAYERS[...].fixed`, e.g. dilation_rate 1, groups 1,
  data_format channels_last, BatchNormalization center/scale true and axis -1);
- ignored, because it does not change the function of a trained model: every
  `*_initializer` (only the starting weights), `*_regularizer` and
  `activity_regularizer` (only the training loss), `*_constraint` (only the
  training updates), `name`, `trainable` (cnnlab trains every layer), `seed`
  (Dropout's random stream), `synchronized` (how batch statistics are gathered
  across devices), `fused` (a kernel choice), `renorm_clipping`/`renorm_momentum`
  (inert while renorm is false), `lora_alpha` (inert without lora_rank), `dtype`
  when float32, and the input-shape keys (`batch_input_shape`, `input_shape`,
  `batch_size`), which give the Architecture's input_shape instead;
- anything else: refused, with the layer, the argument, its value and a fix.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import SpecError
from cnnlab.nn.spec import (
    ACTIVATIONS,
    DEFAULT_INPUT_SHAPE,
    Activation,
    Architecture,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPooling2D,
)
from cnnlab.util.text import is_int, show_value, slug


@dataclass(frozen=True)
class Rule:
    """How one Keras layer class becomes a cnnlab layer."""

    spec: type  # the cnnlab layer class
    args: Mapping[str, str]  # Keras argument -> cnnlab field
    fixed: Mapping[str, tuple[Any, ...]]  # argument -> the values cnnlab computes
    weights: tuple[str, ...] = ()  # Keras variables in saved order


_LAST = {"data_format": ("channels_last", None)}  # None: Keras's default, last
_WINDOW = {"pool_size": "pool_size", "strides": "strides", "padding": "padding"}
_NO_LORA = {"lora_rank": (None, 0), "quantization_config": (None,)}
# The one table: the code reads it, and `supported_layers` lists it for the docs.
LAYERS: dict[str, Rule] = {
    "Conv2D": Rule(
        Conv2D,
        {k: k for k in ("filters", "kernel_size", "strides", "padding")}
        | {"activation": "activation", "use_bias": "use_bias"},
        _LAST | {"dilation_rate": (1, [1, 1]), "groups": (1,)} | _NO_LORA,
        ("kernel", "bias"),
    ),
    "MaxPooling2D": Rule(MaxPooling2D, _WINDOW, _LAST),
    "AveragePooling2D": Rule(AveragePooling2D, _WINDOW, _LAST),
    "BatchNormalization": Rule(
        BatchNormalization,
        {"momentum": "momentum", "epsilon": "epsilon"},
        {"axis": (-1, [-1]), "center": (True,), "scale": (True,)}
        | {"renorm": (False,), "virtual_batch_size": (None,), "adjustment": (None,)},
        ("gamma", "beta", "moving_mean", "moving_variance"),
    ),
    "Dropout": Rule(Dropout, {"rate": "rate"}, {"noise_shape": (None,)}),
    "Flatten": Rule(Flatten, {}, _LAST),
    "Dense": Rule(
        Dense,
        {"units": "units", "activation": "activation", "use_bias": "use_bias"},
        _NO_LORA,
        ("kernel", "bias"),
    ),
    "Activation": Rule(Activation, {"activation": "activation"}, {}),
    "LeakyReLU": Rule(
        LeakyReLU, {"negative_slope": "negative_slope", "alpha": "negative_slope"}, {}
    ),
}
ALIASES = {
    "Convolution2D": "Conv2D",
    "MaxPool2D": "MaxPooling2D",
    "AvgPool2D": "AveragePooling2D",
}
IGNORED = (
    "name",
    "trainable",
    "dtype",
    "seed",
    "synchronized",
    "fused",
    "renorm_clipping",
    "renorm_momentum",
    "lora_alpha",
    "batch_input_shape",
    "input_shape",
    "batch_size",
    "activity_regularizer",
)
IGNORED_SUFFIXES = ("_initializer", "_regularizer", "_constraint")
INPUT_LAYER = "InputLayer"
# Hints for layers often met in MNIST nets that cnnlab has no layer for.
_LAYER_FIXES = {
    "GlobalAveragePooling2D": "use Flatten (after pooling down to a small map)",
    "GlobalMaxPooling2D": "use Flatten (after pooling down to a small map)",
    "ReLU": "use Activation('relu'), or activation='relu' on the layer before",
    "Softmax": "use Activation('softmax'), or activation='softmax' on the last Dense",
    "ELU": "use Activation('elu')",
    "Reshape": "give the model an image input (height, width, channels) instead",
    "Sequential": "put the inner model's layers in the outer model, one list",
    INPUT_LAYER: "keep only one input, as the first layer",
}
_KERAS_MODULES = ("keras", "tf_keras", "tensorflow")
_AUTO_NAME = re.compile(r"^sequential(_\d+)?$")


def supported_layers() -> list[dict[str, Any]]:
    """The supported Keras layers: arguments used, fixed values and weights (docs)."""
    return [
        {
            "layer": name,
            "arguments": sorted(rule.args),
            "fixed": {k: list(v) for k, v in rule.fixed.items()},
            "weights": list(rule.weights),
        }
        for name, rule in LAYERS.items()
    ]


@dataclass(frozen=True)
class KerasModel:
    """A parsed Sequential config: the Architecture and each layer's Keras name."""

    arch: Architecture
    names: tuple[str, ...]  # the Keras layer names, one per arch layer


def spec_from_keras_config(config: dict, source: str) -> Architecture:
    """A Keras Sequential model config -> a cnnlab Architecture, or a located error."""
    return parse_keras_config(config, source).arch


# About what one architecture file of SPEC_LIMIT (1 MiB) holds, at ~100 bytes a layer.
MAX_LAYERS = 10_000


def parse_keras_config(config: Any, source: str) -> KerasModel:
    """The Architecture of a Sequential config, with the Keras names of its layers."""
    body = _sequential_body(config, source)
    entries = body["layers"] if isinstance(body, Mapping) else body
    if not isinstance(entries, list):
        raise SpecError(f"{source}: the model's 'layers' is not a list. {_RESAVE}")
    shape = _input_shape(body, entries, source)
    layers = [e for i, e in enumerate(entries) if not (i == 0 and _is_input(e))]
    model_name = body.get("name") if isinstance(body, Mapping) else None
    if not layers:
        raise SpecError(
            f"{source}: the Sequential model {show_value(model_name)} has no layers. "
            "Add its layers, e.g. keras.Sequential([keras.Input((28, 28, 1)), "
            "layers.Flatten(), layers.Dense(10, activation='softmax')]), and save it "
            "again."
        )
    if len(layers) > MAX_LAYERS:
        raise SpecError(
            f"{source}: the model has {len(layers):,} layers, over the {MAX_LAYERS:,} "
            "an imported architecture may hold (its spec file would be too large to "
            "read back). Check that it is the right model."
        )
    parsed, names, rank = [], [], 4  # rank with the batch axis, for BN's axis
    for index, entry in enumerate(layers):
        layer, name = _layer(entry, source, index, rank)
        rank = 2 if isinstance(layer, Flatten) else rank
        parsed.append(layer)
        names.append(name)
    arch = Architecture(
        name=_arch_name(model_name, source),
        layers=tuple(parsed),
        input_shape=shape,
        description=f"imported from {Path(source).name}",
        source=source,
    )
    return KerasModel(arch, tuple(names))


_RESAVE = (
    "Save the model with model.save('model.keras') or model.to_json(), and give "
    "that file."
)


def _sequential_body(config: Any, source: str) -> Any:
    """The `config` part of a Sequential model document; other documents refused."""
    kind = config.get("class_name") if isinstance(config, Mapping) else None
    if kind == "Sequential":
        body = config.get("config")
        if isinstance(body, Mapping) and "layers" in body or isinstance(body, list):
            return body
        raise SpecError(f"{source}: the Sequential model has no 'layers'. {_RESAVE}")
    if kind in ("Functional", "Model"):
        name = (config.get("config") or {}).get("name", "?")
        raise SpecError(
            f"{source}: {show_value(name)} is a functional (non-Sequential) Keras "
            "model; cnnlab imports keras.Sequential models only. Rebuild it as "
            "keras.Sequential([...]) of the supported layers and save it again."
        )
    if isinstance(kind, str):
        raise SpecError(
            f"{source}: a Keras {kind!r} object, not a Sequential model. {_RESAVE}"
        )
    raise SpecError(
        f"{source}: not a Keras model config (no 'class_name': 'Sequential'). {_RESAVE}"
    )


def _is_input(entry: Any) -> bool:
    return isinstance(entry, Mapping) and entry.get("class_name") == INPUT_LAYER


def _input_shape(body: Any, entries: list, source: str) -> tuple[int, ...]:
    """(H, W, C) from the InputLayer, the first layer or the build shape."""
    head = entries[0] if entries and _is_mapping(entries[0]) else {}
    first = head.get("config") if _is_mapping(head.get("config")) else {}
    build = head.get("build_config") if _is_mapping(head.get("build_config")) else {}
    candidates = (
        (first.get("batch_shape"), True),
        (first.get("batch_input_shape"), True),
        (first.get("shape"), False) if _is_input(head) else (None, False),
        (first.get("input_shape"), False),
        ((body.get("build_input_shape") if _is_mapping(body) else None), True),
        (build.get("input_shape"), True),
    )
    for value, batched in candidates:
        if value is not None:
            return _check_shape(value, batched, source)
    return DEFAULT_INPUT_SHAPE


def _is_mapping(value: Any) -> bool:
    return isinstance(value, Mapping)


def _check_shape(value: Any, batched: bool, source: str) -> tuple[int, ...]:
    dims = list(value)[1:] if batched and isinstance(value, list | tuple) else value
    if isinstance(dims, list | tuple) and len(dims) == 3 and all(map(is_int, dims)):
        return tuple(dims)
    raise SpecError(
        f"{source}: the model's input shape is {show_value(value)}; cnnlab needs a "
        "fixed image shape (height, width, channels). Build the model on "
        "keras.Input(shape=(28, 28, 1)) (your sizes) and save it again."
    )


def _arch_name(name: Any, source: str) -> str:
    """The model's own name, or the file's when Keras named it automatically."""
    if not isinstance(name, str) or _AUTO_NAME.match(name):
        name = Path(source).stem
    return slug(name) or "keras-model"


def _layer(entry: Any, source: str, index: int, rank: int) -> tuple[Layer, str]:
    """One Keras layer entry -> (cnnlab layer, its Keras name)."""
    if not isinstance(entry, Mapping) or not isinstance(entry.get("config"), Mapping):
        raise SpecError(
            f"{source}: layers[{index}]: not a Keras layer entry (a mapping with "
            f"'class_name' and 'config'). Received: {show_value(entry)}. {_RESAVE}"
        )
    kind, config = entry.get("class_name"), entry["config"]
    name = config.get("name") if isinstance(config.get("name"), str) else f"#{index}"
    where = f"{source}: layers[{index}] ({kind} {name!r})"
    rule = LAYERS.get(ALIASES.get(kind, kind)) if isinstance(kind, str) else None
    if rule is None or _custom(entry):
        raise SpecError(f"{where}: unsupported layer. {_layer_fix(kind, entry)}")
    args = {}
    for key, value in config.items():
        if key in rule.args:
            args[rule.args[key]] = _value(key, value, where)
        elif key in rule.fixed:
            _check_fixed(key, value, rule.fixed[key], where, rank)
        elif key == "dtype":
            _check_dtype(value, where)
        elif not (key in IGNORED or key.endswith(IGNORED_SUFFIXES)):
            raise SpecError(
                f"{where}: unsupported argument {key}={show_value(value)}: cnnlab's "
                f"{rule.spec.__name__} has no {key!r}. Remove it from the layer, "
                "retrain, and save again."
            )
    try:
        return rule.spec(**args), name
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from err
    except TypeError as err:  # a required argument is missing
        raise SpecError(f"{where}: a required argument is missing. {_RESAVE}") from err


def _custom(entry: Mapping) -> bool:
    """A layer class of the user's own (registered, or from another module)."""
    module, registered = entry.get("module"), entry.get("registered_name")
    other = isinstance(module, str) and not module.startswith(_KERAS_MODULES)
    return other or (isinstance(registered, str) and ">" in registered)


def _layer_fix(kind: Any, entry: Mapping) -> str:
    known = ", ".join(LAYERS)
    if _custom(entry):
        return (
            "It is a custom layer class; cnnlab imports Keras's own layers "
            f"{known} only. Replace it with those layers and save again."
        )
    fix = _LAYER_FIXES.get(kind) if isinstance(kind, str) else None
    hint = f"To import the model, {fix}. " if fix else ""
    return f"{hint}cnnlab imports Sequential models of {known}."


def _value(key: str, value: Any, where: str) -> Any:
    """A mapped argument in cnnlab's spelling: activations by their Keras name."""
    if key != "activation":
        return value
    if isinstance(value, Mapping):  # {"class_name": "function", "config": "relu"}
        value = value.get("config")
    if value is None or (isinstance(value, str) and value.lower() in ACTIVATIONS):
        return value
    raise SpecError(
        f"{where}: unsupported argument activation={show_value(value)}. cnnlab's "
        f"activations are {', '.join(ACTIVATIONS)}; use one of them and retrain."
    )


def _same(a: Any, b: Any) -> bool:
    """Equal as JSON values: a tuple equals the list of its items."""
    norm = lambda v: list(v) if isinstance(v, tuple) else v  # noqa: E731
    return norm(a) == norm(b) and type(norm(a)) is type(norm(b))


def _check_fixed(
    key: str, value: Any, accepted: Sequence[Any], where: str, rank: int
) -> None:
    """Refuse a value that would make the layer compute another function."""
    if key == "axis":  # the last axis may also be written as its index
        accepted = (*accepted, rank - 1, [rank - 1])
    if any(_same(value, ok) for ok in accepted):
        return
    fix = show_value(accepted[0])
    raise SpecError(
        f"{where}: unsupported argument {key}={show_value(value)}; cnnlab computes "
        f"this layer only with {key}={fix}. Rebuild the layer with {key}={fix} (or "
        "without it), retrain, and save again."
    )


def _check_dtype(value: Any, where: str) -> None:
    """float32 (or unset) only: another policy computes in another precision."""
    name = value
    if isinstance(value, Mapping):  # a DTypePolicy / Policy config
        inner = value.get("config")
        name = inner.get("name") if isinstance(inner, Mapping) else None
    if name in (None, "float32"):
        return
    raise SpecError(
        f"{where}: unsupported argument dtype={show_value(name)}; cnnlab computes in "
        "float32. Set the layer's dtype to 'float32' (no mixed precision) and save "
        "again."
    )
