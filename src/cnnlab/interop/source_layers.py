"""One Keras layer call in source code -> a cnnlab layer document, argument by argument.

Arguments are read as Keras defines them: positional ones in each class's order,
Keras 1 spellings (`Convolution2D(32, 3, 3)`, `nb_filter`, `border_mode`, `subsample`,
`output_dim`, `p`, `init`) renamed. What a layer's arguments mean comes from the table
the Keras-file import uses (`keras_spec.LAYERS`): an argument cnnlab maps, or one it
accepts only at the value cnnlab computes. The code will be trained again, so what
changes training is refused unless it is cnnlab's own choice: initializers other
than Keras's defaults, any regularizer or constraint, `trainable=False`.
"""

from __future__ import annotations

import ast
from typing import Any

from cnnlab.interop.keras_spec import ALIASES, LAYERS
from cnnlab.interop.source_code import Scope, Unresolved, keras_name, short
from cnnlab.nn.spec import ACTIVATIONS
from cnnlab.util.text import show_value

_CONV = ("filters", "kernel_size", "strides", "padding", "data_format")
_POOL = ("pool_size", "strides", "padding", "data_format")
POSITIONAL = {
    "Conv2D": (*_CONV, "dilation_rate", "activation", "use_bias"),
    "MaxPooling2D": _POOL,
    "AveragePooling2D": _POOL,
    "BatchNormalization": ("axis", "momentum", "epsilon", "center", "scale"),
    "Dropout": ("rate", "noise_shape", "seed"),
    "Flatten": ("data_format",),
    "Dense": ("units", "activation", "use_bias"),
    "Activation": ("activation",),
    "LeakyReLU": ("negative_slope",),
}
_KERAS1 = {
    "nb_filter": "filters",
    "border_mode": "padding",
    "subsample": "strides",
    "output_dim": "units",
    "p": "rate",
    "init": "kernel_initializer",
    "dim_ordering": "data_format",
}
_ORDERING = {"tf": "channels_last", "th": "channels_first"}
# Initializers cnnlab uses (normalised names: lower case, no '_'); any other refused.
_INITIALIZERS = {
    "kernel_initializer": ("glorotuniform",),
    "bias_initializer": ("zeros", "zero"),
    "beta_initializer": ("zeros", "zero"),
    "gamma_initializer": ("ones", "one"),
    "moving_mean_initializer": ("zeros", "zero"),
    "moving_variance_initializer": ("ones", "one"),
}
# The values that change nothing; BatchNormalization `mode` is Keras 1's.
_NEUTRAL = {"trainable": (True,), "dtype": ("float32", None), "mode": (0,)}
_SKIPPED = ("name", "seed")  # names and Dropout's random stream change nothing
SHAPE_KEYS = ("input_shape", "batch_input_shape", "shape", "batch_shape")


class Untranslatable(Exception):
    """A layer call cnnlab cannot reproduce; the message says what and how to fix."""


def layer_args(kind: str, call: ast.Call, scope: Scope) -> dict[str, ast.expr]:
    """The call's arguments by Keras 2 name (positional ones named, Keras 1 renamed)."""
    if any(isinstance(a, ast.Starred) for a in call.args) or any(
        k.arg is None for k in call.keywords
    ):
        raise Untranslatable("`*args` and `**kwargs` are known only at run time")
    given = list(call.args)
    named: dict[str, ast.expr] = {}
    if kind == "Convolution2D" and len(given) >= 3 and _ints(given[1:3], scope):
        named["kernel_size"] = ast.Tuple(elts=given[1:3], ctx=ast.Load())
        given = given[:1] + given[3:]  # Keras 1: (nb_filter, nb_row, nb_col, ...)
        order: tuple[str, ...] = ("filters",)
    else:
        order = POSITIONAL.get(ALIASES.get(kind, kind), ())
    if len(given) > len(order):
        raise Untranslatable(
            f"{len(given)} positional arguments; {kind} takes at most {len(order)} "
            "here. Name the extra arguments (e.g. padding='same')."
        )
    named.update(zip(order, given, strict=False))
    rows = [k for k in call.keywords if k.arg in ("nb_row", "nb_col")]
    if rows:
        parts = {k.arg: k.value for k in rows}
        if len(parts) != 2:
            raise Untranslatable("give both nb_row and nb_col, or kernel_size")
        named["kernel_size"] = ast.Tuple(
            elts=[parts["nb_row"], parts["nb_col"]], ctx=ast.Load()
        )
    for keyword in call.keywords:
        if keyword.arg not in ("nb_row", "nb_col"):
            named[_KERAS1.get(keyword.arg or "", keyword.arg or "")] = keyword.value
    return named


def _ints(nodes: list[ast.expr], scope: Scope) -> bool:
    try:
        return all(type(scope.value(n)) is int for n in nodes)
    except Unresolved:
        return False


def layer_doc(kind: str, call: ast.Call, scope: Scope) -> tuple[dict, Any]:
    """A Keras layer call -> (cnnlab layer document, its input_shape or None)."""
    name = ALIASES.get(kind, kind)
    rule = LAYERS.get(name)
    if rule is None:
        raise Untranslatable(
            f"`{kind}` is not a layer cnnlab has. cnnlab imports "
            f"{', '.join(LAYERS)}; rewrite the model with those"
        )
    doc: dict[str, Any] = {"type": name}
    shape = None
    for key, node in layer_args(kind, call, scope).items():
        if key in SHAPE_KEYS:
            shape = _shape(key, node, scope)
        elif key in rule.args:
            doc[rule.args[key]] = _mapped(key, node, scope)
        elif key in rule.fixed:
            _check_fixed(key, _value(key, node, scope), rule.fixed[key], name)
        elif not _neutral(key, node, scope, name):
            raise Untranslatable(
                f"argument `{key}` is not supported: cnnlab's {name} has no {key!r}. "
                "Remove it, or build the model in cnnlab's YAML"
            )
    return doc, shape


def input_shape(call: ast.Call, scope: Scope) -> Any:
    """The (H, W, C) of `keras.Input(shape=...)` or `InputLayer(input_shape=...)`."""
    nodes = [(k.arg, k.value) for k in call.keywords if k.arg in SHAPE_KEYS]
    if not nodes and call.args:
        nodes = [("shape", call.args[0])]
    if not nodes:
        raise Untranslatable("the input layer gives no shape; add shape=(28, 28, 1)")
    key, node = nodes[0]
    return _shape(str(key), node, scope)


def _shape(key: str, node: ast.expr, scope: Scope) -> Any:
    value = _value(key, node, scope)
    if key.startswith("batch") and isinstance(value, tuple):
        value = value[1:]
    return list(value) if isinstance(value, tuple) else value


def _value(key: str, node: ast.expr, scope: Scope) -> Any:
    try:
        return scope.value(node)
    except Unresolved as err:
        raise Untranslatable(f"{key}={short(node)}: {err}") from err


def _mapped(key: str, node: ast.expr, scope: Scope) -> Any:
    """A mapped argument's value; an activation may also be a Keras function."""
    if key != "activation":
        value = _value(key, node, scope)
        return list(value) if isinstance(value, tuple) else value
    function = keras_name(scope.qualname(node))
    if function is not None and function.lower() in ACTIVATIONS:
        return function.lower()  # activation=keras.activations.relu, tf.nn.relu
    value = _value(key, node, scope)
    if value is None or (isinstance(value, str) and value.lower() in ACTIVATIONS):
        return value
    raise Untranslatable(
        f"activation={short(node)} is not one of cnnlab's activations "
        f"({', '.join(ACTIVATIONS)})"
    )


def _check_fixed(key: str, value: Any, accepted: tuple[Any, ...], name: str) -> None:
    """Refuse a value that would make the layer compute another function."""
    if key == "data_format" and value in _ORDERING:
        value = _ORDERING[value]
    if key == "axis":  # the channels axis may also be written as its index
        accepted = (*accepted, 3)
    plain = list(value) if isinstance(value, tuple) else value
    if any(plain == ok and type(plain) is type(ok) for ok in accepted):
        return
    raise Untranslatable(
        f"{key}={show_value(plain)}: cnnlab's {name} computes only {key}="
        f"{show_value(accepted[0])}. Use that value, or leave the argument out"
    )


def _neutral(key: str, node: ast.expr, scope: Scope, name: str) -> bool:
    """Whether an argument outside the table leaves training as cnnlab does it."""
    if key in _SKIPPED:
        return True
    if key in _INITIALIZERS:
        spelled = _object_name(node, scope)
        if spelled.lower().replace("_", "") in _INITIALIZERS[key]:
            return True
        raise Untranslatable(
            f"{key}={short(node)}: cnnlab initialises {name} as Keras does by "
            "default (Glorot-uniform kernels, zero biases); leave the argument out"
        )
    if key.endswith(("_regularizer", "_constraint")):
        if _object_name(node, scope) == "None":
            return True
        raise Untranslatable(
            f"{key}={short(node)}: cnnlab trains without regularizers or "
            "constraints; remove the argument (or use Dropout)"
        )
    if key in _NEUTRAL:
        if _value(key, node, scope) in _NEUTRAL[key]:
            return True
        only = show_value(_NEUTRAL[key][0])
        raise Untranslatable(f"{key}={short(node)}: cnnlab supports only {key}={only}")
    return False


def _object_name(node: ast.expr, scope: Scope) -> str:
    """'glorot_uniform', `GlorotUniform()` or `initializers.Zeros` -> its name."""
    if isinstance(node, ast.Call) and not node.args and not node.keywords:
        node = node.func
    if isinstance(node, ast.Constant):
        return str(node.value)
    return keras_name(scope.qualname(node)) or short(node)
