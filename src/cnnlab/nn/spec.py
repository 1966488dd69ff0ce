"""Architecture specs: Keras-vocabulary layer dataclasses, parsing and validation.

The `Architecture` (a frozen dataclass tree) is the one source of truth for a network:
it is validated and shape-inferred here, then summarised, built, stored and compared
downstream. YAML (and JSON, a subset of YAML) is read only by `load_architecture`.
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import SpecError
from cnnlab.util.fsio import read_bounded
from cnnlab.util.messages import must_be_one_of, received, unknown_key
from cnnlab.util.text import did_you_mean, is_int, is_number, show_value

ACTIVATIONS = (
    "relu",
    "sigmoid",
    "tanh",
    "softmax",
    "elu",
    "gelu",
    "leaky_relu",
    "linear",
)
PADDINGS = ("valid", "same")
DEFAULT_INPUT_SHAPE = (28, 28, 1)  # (H, W, C), Keras's channels_last order
# Largest size (filters, units, kernel, input side) a file may give: far beyond any
# network that fits in memory, and small enough that no shape product overflows.
MAX_NAME = 200  # characters; run folder names are cut to 100 (util.text.MAX_SLUG)
SPEC_LIMIT = 1 << 20  # bytes: architecture files are a few kB; YAML bombs are not
MAX_SIZE = 2**31 - 1


def _size(value: int, what: str) -> int:
    """Refuse sizes past MAX_SIZE, so that shape arithmetic stays in range."""
    if value > MAX_SIZE:
        raise SpecError(
            f"{what} is too large. Received: {what}={show_value(value)}. Use at most "
            f"{MAX_SIZE:,}."
        )
    return value


def _pair(value: Any, what: str) -> tuple[int, int]:
    """Keras accepts `3` or `[3, 3]` for a 2-D size; return `(3, 3)`."""
    if is_int(value):
        value = (value, value)
    if (
        isinstance(value, Sequence)
        and not isinstance(value, str)
        and len(value) == 2
        and all(is_int(v) for v in value)
    ):
        if min(value) <= 0:
            raise SpecError(
                f"{what} must be positive. Received: {what}={show_value(list(value))}. "
                f"Use a positive integer such as {what}: 3."
            )
        return (_size(int(value[0]), what), _size(int(value[1]), what))
    raise SpecError(
        f"{what} must be an integer or a list of two integers. "
        f"Received: {what}={show_value(value)}. Example: {what}: 3 or {what}: [3, 3]."
    )


def _positive_int(value: Any, what: str) -> int:
    if is_int(value) and value > 0:
        return _size(value, what)
    raise SpecError(
        f"{what} must be a positive integer. Received: {what}={show_value(value)}. "
        f"Example: {what}: 16."
    )


def _choice(value: Any, what: str, choices: Sequence[str]) -> str:
    if value is None and what == "activation":
        return "linear"
    if isinstance(value, str) and value.lower() in choices:
        return value.lower()
    hint = did_you_mean(value.lower(), choices) if isinstance(value, str) else ""
    raise SpecError(must_be_one_of(what, choices, received(what, value), hint))


def _rate(value: Any, what: str, example: float) -> float:
    if is_number(value) and 0.0 <= value < 1.0:
        return float(value)
    raise SpecError(
        f"{what} must be a number in [0, 1). Received: {what}={show_value(value)}. "
        f"Example: {what}: {example}."
    )


def _positive_float(value: Any, what: str) -> float:
    # not inf, nan or a huge int
    if is_number(value) and 0 < value <= sys.float_info.max:
        return float(value)
    raise SpecError(
        f"{what} must be a positive number. Received: {what}={show_value(value)}."
    )


def _flag(value: Any, what: str) -> bool:
    if isinstance(value, bool):
        return value
    raise SpecError(
        f"{what} must be true or false. Received: {what}={show_value(value)}."
    )


def _set(obj: Any, name: str, value: Any) -> None:
    object.__setattr__(obj, name, value)  # normalise fields of a frozen dataclass


@dataclass(frozen=True)
class Conv2D:
    """2-D convolution, Keras semantics: Glorot-uniform kernel, zero bias."""

    filters: int
    kernel_size: tuple[int, int] | int
    strides: tuple[int, int] | int = 1
    padding: str = "valid"
    activation: str = "linear"
    use_bias: bool = True

    def __post_init__(self) -> None:
        _set(self, "filters", _positive_int(self.filters, "filters"))
        _set(self, "kernel_size", _pair(self.kernel_size, "kernel_size"))
        _set(self, "strides", _pair(self.strides, "strides"))
        _set(self, "padding", _choice(self.padding, "padding", PADDINGS))
        _set(self, "activation", _choice(self.activation, "activation", ACTIVATIONS))
        _set(self, "use_bias", _flag(self.use_bias, "use_bias"))


@dataclass(frozen=True)
class MaxPooling2D:
    """Max pooling; `strides` defaults to `pool_size`, as in Keras."""

    pool_size: tuple[int, int] | int = 2
    strides: tuple[int, int] | int | None = None
    padding: str = "valid"

    def __post_init__(self) -> None:
        _set(self, "pool_size", _pair(self.pool_size, "pool_size"))
        strides = self.pool_size if self.strides is None else self.strides
        _set(self, "strides", _pair(strides, "strides"))
        _set(self, "padding", _choice(self.padding, "padding", PADDINGS))


@dataclass(frozen=True)
class AveragePooling2D(MaxPooling2D):
    """Average pooling; with padding 'same' the padded cells are not counted."""


@dataclass(frozen=True)
class BatchNormalization:
    """Batch norm over channels; Keras's momentum (0.99) and epsilon (1e-3)."""

    momentum: float = 0.99
    epsilon: float = 1e-3

    def __post_init__(self) -> None:
        _set(self, "momentum", _rate(self.momentum, "momentum", 0.99))
        _set(self, "epsilon", _positive_float(self.epsilon, "epsilon"))


@dataclass(frozen=True)
class Dropout:
    """Drops a fraction `rate` of inputs while training, scaling the rest."""

    rate: float

    def __post_init__(self) -> None:
        _set(self, "rate", _rate(self.rate, "rate", 0.25))


@dataclass(frozen=True)
class Flatten:
    """Flattens (H, W, C) in Keras's channels_last order."""


@dataclass(frozen=True)
class Dense:
    """Fully connected layer; on an (H, W, C) input it acts on the last axis."""

    units: int
    activation: str = "linear"
    use_bias: bool = True

    def __post_init__(self) -> None:
        _set(self, "units", _positive_int(self.units, "units"))
        _set(self, "activation", _choice(self.activation, "activation", ACTIVATIONS))
        _set(self, "use_bias", _flag(self.use_bias, "use_bias"))


@dataclass(frozen=True)
class Activation:
    """An activation function as a layer of its own."""

    activation: str

    def __post_init__(self) -> None:
        _set(self, "activation", _choice(self.activation, "activation", ACTIVATIONS))


@dataclass(frozen=True)
class LeakyReLU:
    """Leaky ReLU layer; Keras's layer default slope is 0.3 (the function's is 0.2)."""

    negative_slope: float = 0.3

    def __post_init__(self) -> None:
        slope = self.negative_slope
        if not is_number(slope) or not 0 <= slope <= sys.float_info.max:
            raise SpecError(
                "negative_slope must be a number >= 0. "
                f"Received: negative_slope={show_value(self.negative_slope)}."
            )
        _set(self, "negative_slope", float(self.negative_slope))


Layer = (
    Conv2D
    | MaxPooling2D
    | AveragePooling2D
    | BatchNormalization
    | Dropout
    | Flatten
    | Dense
    | Activation
    | LeakyReLU
)
LAYER_TYPES: dict[str, type] = {
    cls.__name__: cls
    for cls in (
        Conv2D,
        MaxPooling2D,
        AveragePooling2D,
        BatchNormalization,
        Dropout,
        Flatten,
        Dense,
        Activation,
        LeakyReLU,
    )
}
# Lower-case, underscore-free spellings -> class name: "max_pooling2d", "MaxPool2D",
# "conv2d" and Keras's own aliases all reach the same class.
_TYPE_ALIASES = {name.lower(): name for name in LAYER_TYPES} | {
    "convolution2d": "Conv2D",
    "maxpool2d": "MaxPooling2D",
    "averagepool2d": "AveragePooling2D",
    "avgpool2d": "AveragePooling2D",
}


def layer_type(layer: Layer) -> str:
    """The Keras class name of a layer, e.g. 'Conv2D'."""
    return type(layer).__name__


def layer_to_dict(layer: Layer) -> dict[str, Any]:
    """A layer as a plain mapping (`{'type': 'Conv2D', 'filters': 16, ...}`)."""
    out: dict[str, Any] = {"type": layer_type(layer)}
    for f in fields(layer):
        value = getattr(layer, f.name)
        out[f.name] = list(value) if isinstance(value, tuple) else value
    return out


@dataclass(frozen=True)
class Architecture:
    """A sequential network: a name, an input shape (H, W, C) and its layers."""

    name: str
    layers: tuple[Layer, ...]
    input_shape: tuple[int, int, int] = DEFAULT_INPUT_SHAPE
    description: str = ""
    source: str = field(default="<python>", compare=False)  # file, for messages
    # False when the document gave no input_shape: training takes the data's.
    shape_given: bool = field(default=True, compare=False)

    def __post_init__(self) -> None:
        _set(self, "layers", tuple(self.layers))
        shape = self.input_shape
        if not (
            isinstance(shape, Sequence)
            and len(shape) == 3
            and all(is_int(v) for v in shape)
            and 0 < min(shape)
            and max(shape) <= MAX_SIZE
        ):
            shown = list(shape) if isinstance(shape, tuple) else shape
            raise SpecError(
                f"{self.source}: input_shape must be three positive integers "
                "(height, width, channels). "
                f"Received: input_shape={show_value(shown)}. "
                "Example: input_shape: [28, 28, 1]."
            )
        _set(self, "input_shape", tuple(shape))

    def to_dict(self) -> dict[str, Any]:
        """The architecture as a plain document, ready for YAML or JSON."""
        return {
            "name": self.name,
            "description": self.description,
            "input_shape": list(self.input_shape),
            "layers": [layer_to_dict(layer) for layer in self.layers],
        }


# --------------------------------------------------------------------------- parsing

_TOP_KEYS = ("name", "description", "input_shape", "layers")


def _where(source: str, index: int | None = None, type_name: str | None = None) -> str:
    if index is None:
        return source
    return f"{source}: layers[{index}]" + (f" ({type_name})" if type_name else "")


def _resolve_type(raw: Any, where: str) -> type:
    if not isinstance(raw, str):
        raise SpecError(
            f"{where}: the layer type must be a name such as Conv2D. "
            f"Received: {show_value(raw)}."
        )
    key = raw.replace("_", "").replace("-", "").lower()
    if key in _TYPE_ALIASES:
        return LAYER_TYPES[_TYPE_ALIASES[key]]
    names = list(LAYER_TYPES)
    hint = did_you_mean(raw, names, cutoff=0.5)
    raise SpecError(
        f"{where}: unknown layer type {show_value(raw)}.{hint} "
        f"Known types: {', '.join(names)}."
    )


def _split_entry(entry: Any, where: str) -> tuple[Any, dict[str, Any]]:
    """Accept `{type: Conv2D, filters: 8}`, `{Conv2D: {filters: 8}}` or `Flatten`."""
    if isinstance(entry, str):
        return entry, {}
    if isinstance(entry, Mapping):
        if "type" in entry:
            args = {k: v for k, v in entry.items() if k != "type"}
            return entry["type"], args
        if len(entry) == 1:
            ((type_name, args),) = entry.items()
            if args is None:
                args = {}
            if not isinstance(args, Mapping):
                raise SpecError(
                    f"{where}: the arguments of {show_value(type_name)} must be a "
                    f"mapping such as {{filters: 16}}. Received: {show_value(args)}."
                )
            return type_name, dict(args)
    raise SpecError(
        f"{where}: a layer must be a mapping with a 'type' key, e.g. "
        f"{{type: Dense, units: 10}}. Received: {show_value(entry)}."
    )


def parse_layer(entry: Any, source: str = "<python>", index: int = 0) -> Layer:
    """One layer entry of a document -> a layer dataclass, or a located SpecError."""
    type_name, args = _split_entry(entry, _where(source, index))
    cls = _resolve_type(type_name, _where(source, index))
    where = _where(source, index, cls.__name__)
    known = [f.name for f in fields(cls)]
    for key in args:
        if not isinstance(key, str) or key not in known:
            hint = did_you_mean(key, known)
            allowed = ", ".join(known) if known else "none"
            raise SpecError(
                f"{where}: unknown argument {show_value(key)}.{hint} "
                f"Allowed: {allowed}."
            )
    try:
        return cls(**args)
    except SpecError as err:
        raise SpecError(f"{where}: {err}") from err
    except TypeError as err:  # a required argument is missing
        required = [f.name for f in fields(cls) if f.default is f.default_factory]
        raise SpecError(
            f"{where}: missing required argument(s): {', '.join(required)}. "
            f"Example: {{type: {cls.__name__}, {required[0]}: ...}}."
        ) from err


def parse_architecture(doc: Any, source: str = "<python>") -> Architecture:
    """A parsed YAML/JSON document -> a validated `Architecture`."""
    if doc is None:
        raise SpecError(
            f"{source}: the file is empty. An architecture needs 'name' and 'layers' "
            "keys, e.g. name: tiny, layers: [Flatten, {Dense: {units: 10}}]."
        )
    if not isinstance(doc, Mapping):
        raise SpecError(
            f"{source}: an architecture file must be a mapping with 'name' and "
            f"'layers' keys. Received a {type(doc).__name__}."
        )
    for key in doc:
        if key not in _TOP_KEYS:
            raise SpecError(f"{source}: {unknown_key(key, _TOP_KEYS)}")
    entries = doc.get("layers")
    if not isinstance(entries, list) or not entries:
        raise SpecError(
            f"{source}: 'layers' must be a non-empty list of layers. "
            "Example: layers: [{type: Flatten}, {type: Dense, units: 10, "
            "activation: softmax}]."
        )
    default_name = Path(source).stem if source != "<python>" else "model"
    name = doc.get("name", default_name)
    if not isinstance(name, str) or not name.strip():
        raise SpecError(
            f"{source}: 'name' must be a non-empty string. Got {show_value(name)}."
        )
    if not name.isprintable() or len(name) > MAX_NAME:
        raise SpecError(
            f"{source}: 'name' must be one line of printable text of at most "
            f"{MAX_NAME} characters (it names run folders). Got {show_value(name)}."
        )
    description = doc.get("description", "") or ""
    if not isinstance(description, str):
        raise SpecError(f"{source}: 'description' must be a string.")
    default_shape = DEFAULT_INPUT_SHAPE
    input_shape = doc.get("input_shape", default_shape)
    # Keras lets the first layer carry input_shape; accept that spelling too.
    first = entries[0]
    if isinstance(first, Mapping) and "input_shape" in first:
        first = dict(first)
        input_shape = first.pop("input_shape")
        entries = [first, *entries[1:]]
    layers = tuple(parse_layer(e, source, i) for i, e in enumerate(entries))
    if isinstance(input_shape, list):
        input_shape = tuple(input_shape)
    return Architecture(
        name=name.strip(),
        layers=layers,
        input_shape=input_shape,
        description=description.strip(),
        source=source,
        shape_given="input_shape" in doc or input_shape is not default_shape,
    )


TRAIN_KEY = "train"  # a file's training settings (a recipe): read by recipe_settings


def load_architecture(path: str | Path) -> Architecture:
    """Read an architecture file (YAML or JSON) and validate it; a `train:` mapping
    beside its layers is the file's recipe (`cnnlab train FILE` starts from it)."""
    path = Path(path)
    doc = parse_yaml(_read_text(path), path)
    if isinstance(doc, Mapping):
        doc = {k: v for k, v in doc.items() if k != TRAIN_KEY}
    return parse_architecture(doc, source=str(path))


def file_recipe(path: str | Path) -> dict[str, Any]:
    """An architecture file's `train:` mapping, as written; {} if it has none."""
    path = Path(path)
    doc = parse_yaml(_read_text(path), path)
    settings = doc.get(TRAIN_KEY) if isinstance(doc, Mapping) else None
    if settings is not None and not isinstance(settings, dict):
        raise SpecError(
            f"{path}: '{TRAIN_KEY}' must be a mapping such as {{epochs: 4}}."
        )
    return settings or {}


def _read_text(path: Path) -> str:
    """The file's text, or a SpecError saying why it cannot be read."""
    try:
        data = read_bounded(path, SPEC_LIMIT, "an architecture file", SpecError)
        return data.decode("utf-8")
    except FileNotFoundError as err:
        raise SpecError(
            f"{path}: no such file. Give a preset name (see `cnnlab presets`) or the "
            "path of an architecture YAML file."
        ) from err
    except IsADirectoryError as err:
        raise SpecError(
            f"{path}: is a folder, not an architecture file. Give the path of a "
            "YAML or JSON file, e.g. nets/mine.yaml."
        ) from err
    except UnicodeDecodeError as err:
        raise SpecError(
            f"{path}: not a text file (byte {err.start} is not UTF-8). Save the "
            "architecture as UTF-8 YAML or JSON."
        ) from err
    except OSError as err:
        raise SpecError(
            f"{path}: cannot read the file ({err.strerror or err}). Check the path "
            "and its permissions."
        ) from err


def parse_yaml(text: str, path: Path | str) -> Any:
    """YAML (or JSON) text -> plain data, with the safe loader; failures as SpecError.

    safe_load builds only plain data (no `!!python/...` tags), but on bad input it
    raises more than YAMLError: ValueError for a date such as 2001-02-30 or an int
    past 4,300 digits, KeyError for `!!bool x`, RecursionError for deep nesting.
    Architecture and study files both come through here.
    """
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(err, "problem", None) or str(err).splitlines()[0]
        if isinstance(err, yaml.constructor.ConstructorError):
            fix = (
                "The file must hold plain YAML (mappings, lists, strings, numbers); "
                "tags such as !!python/... are refused."
            )
        else:
            fix = "Fix the syntax (indentation, colons, brackets) and try again."
        raise SpecError(f"{path}: invalid YAML{at}: {problem}. {fix}") from err
    except (ValueError, TypeError, KeyError, AttributeError, RecursionError) as err:
        if isinstance(err, RecursionError):
            reason = "nested too deeply"
        else:  # the first clause of the message, on one line
            reason = " ".join(str(err).split(";")[0].split())[:120]
        raise SpecError(
            f"{path}: invalid YAML: a value cannot be read ({reason}). Quote dates "
            "and tagged values, nest less deeply, and try again."
        ) from err


def dump_architecture(arch: Architecture) -> str:
    """The architecture as YAML text that `load_architecture` reads back unchanged."""
    return yaml.safe_dump(arch.to_dict(), sort_keys=False, default_flow_style=None)
