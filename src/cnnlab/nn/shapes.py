"""Shape inference, parameter counts and FLOPs from an `Architecture`, before building.

Shapes are Keras's (H, W, C) per sample. Every check here runs before a tensor is
allocated, so a bad file fails in milliseconds with the layer it concerns.

FLOPs are forward-pass floating-point operations per sample, counted as
2 x multiply-accumulates of Conv2D and Dense layers; biases, activations, pooling and
normalisation are left out (under 2% on the notebook's nets). Training costs about
3x the forward pass (forward + two backward products).

Memory is estimated the same way, from the shapes alone, so that a network too large
for the machine is refused with its estimate before a byte of it is allocated.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from cnnlab.errors import SpecError
from cnnlab.nn.spec import (
    Activation,
    Architecture,
    BatchNormalization,
    Conv2D,
    Dense,
    Dropout,
    Flatten,
    Layer,
    LeakyReLU,
    MaxPooling2D,
    layer_type,
)
from cnnlab.util.units import ceil_div, format_bytes_si

Shape = tuple[int, ...]
BYTES_PER_PARAM = 4  # float32 weights
BYTES_PER_VALUE = 4  # float32 activations
# Activations kept per sample while training: each layer's output, its gradient and
# about one more temporary (ReLU masks, batch-norm statistics); inference keeps ~1x.
TRAIN_ACTIVATION_FACTOR = 3
# A network may plan to use at most this fraction of the available memory: the
# estimate is rough, and the data, PyTorch's workspace and the system need the rest.
MEMORY_SAFETY_FRACTION = 0.8

# Buffers each optimizer (by its cnnlab name) keeps per weight, for the memory
# estimate: Adam's and AdamW's two moments, RMSprop's squared average, Adadelta's two
# averages; SGD with Keras's momentum 0 keeps none.
OPTIMIZER_SLOTS = {"adam": 2, "adamw": 2, "sgd": 0, "rmsprop": 1, "adadelta": 2}


@dataclass(frozen=True)
class LayerInfo:
    """What one layer does to a sample: its output shape, parameters and FLOPs."""

    index: int
    name: str  # Keras-style automatic name: conv2d, conv2d_1, ...
    layer: Layer
    input_shape: Shape
    output_shape: Shape
    trainable: int
    non_trainable: int
    flops: int

    @property
    def params(self) -> int:
        return self.trainable + self.non_trainable


# A training step's FLOPs per sample, in forward passes: the forward pass, and the
# backward pass's input and weight gradients (each about one forward's arithmetic).
TRAINING_FACTOR = 3


def training_flops(forward: int) -> int:
    """Training FLOPs per sample of a net of `forward` FLOPs per sample."""
    return TRAINING_FACTOR * forward


@dataclass(frozen=True)
class ModelInfo:
    """Per-layer facts and the totals of a whole architecture."""

    arch: Architecture
    layers: tuple[LayerInfo, ...]

    @property
    def output_shape(self) -> Shape:
        return self.layers[-1].output_shape if self.layers else self.arch.input_shape

    @property
    def trainable(self) -> int:
        return sum(info.trainable for info in self.layers)

    @property
    def non_trainable(self) -> int:
        return sum(info.non_trainable for info in self.layers)

    @property
    def total(self) -> int:
        return self.trainable + self.non_trainable

    @property
    def flops(self) -> int:
        """Forward FLOPs per sample."""
        return sum(info.flops for info in self.layers)

    @property
    def train_flops(self) -> int:
        """Training FLOPs per sample (`training_flops`)."""
        return training_flops(self.flops)

    @property
    def weight_bytes(self) -> int:
        return self.total * BYTES_PER_PARAM


@dataclass(frozen=True)
class MemoryEstimate:
    """Bytes a network needs: weights, gradients + optimizer state, activations."""

    weights: int
    training_state: int  # gradients and the optimizer's per-parameter buffers
    activations: int  # every layer's output for one batch (forward + backward)
    batch_size: int

    @property
    def total(self) -> int:
        return self.weights + self.training_state + self.activations


def estimate_memory(
    info: ModelInfo, batch_size: int, optimizer_slots: int | None
) -> MemoryEstimate:
    """What training (`optimizer_slots` buffers per weight) or inference (None) needs.

    A rough upper bound, for refusing a network that cannot fit before anything is
    allocated: the real peak also depends on PyTorch's temporaries.
    """
    weights = info.total * BYTES_PER_PARAM
    values = math.prod(info.arch.input_shape) + sum(
        math.prod(layer.output_shape) for layer in info.layers
    )
    factor = 1 if optimizer_slots is None else TRAIN_ACTIVATION_FACTOR
    # gradients (1x) + optimizer buffers (Adam: m and v, 2x), trainable weights only
    state = 0 if optimizer_slots is None else info.trainable * (1 + optimizer_slots)
    return MemoryEstimate(
        weights=weights,
        training_state=state * BYTES_PER_PARAM,
        activations=values * batch_size * factor * BYTES_PER_VALUE,
        batch_size=batch_size,
    )


def check_memory(
    info: ModelInfo, batch_size: int, optimizer: str | None, available: int | None
) -> MemoryEstimate:
    """Refuse, before allocating, a network that cannot fit in `available` bytes.

    `optimizer` None estimates inference; `available` None (unknown) skips the check.
    """
    slots = None if optimizer is None else OPTIMIZER_SLOTS[optimizer]
    need = estimate_memory(info, batch_size, slots)
    if available is None or need.total <= MEMORY_SAFETY_FRACTION * available:
        return need
    raise SpecError(_memory_message(info, need, optimizer, available))


def _memory_message(
    info: ModelInfo, need: MemoryEstimate, optimizer: str | None, available: int
) -> str:
    """What needs the memory, how much is free, and which change helps most."""
    parts = [f"weights {format_bytes_si(need.weights)}"]
    if optimizer is not None:
        state = format_bytes_si(need.training_state)
        parts.append(f"gradients and {optimizer} state {state}")
    activations = format_bytes_si(need.activations)
    parts.append(f"activations {activations} for a batch of {need.batch_size}")
    if need.activations > need.weights + need.training_state:
        top = max(info.layers, key=lambda layer: math.prod(layer.output_shape))
        fix = (
            f"a smaller --batch-size, or smaller layer outputs (layers[{top.index}] "
            f"({layer_type(top.layer)}) outputs {top.output_shape} per image)"
        )
    else:
        top = max(info.layers, key=lambda layer: layer.params)
        fix = (
            f"fewer units or filters (layers[{top.index}] "
            f"({layer_type(top.layer)}) has {top.params:,} weights)"
        )
    doing = "training" if optimizer is not None else "running the network"
    return (
        f"{info.arch.source}: {doing} needs about {format_bytes_si(need.total)} of "
        f"memory ({', '.join(parts)}), but {format_bytes_si(available)} is available "
        f"and cnnlab plans to use at most {MEMORY_SAFETY_FRACTION:.0%} of it. "
        f"Use {fix}, or a machine with more memory."
    )


def check_input(arch: Architecture, image_shape: Shape, data: str) -> None:
    """The network's input_shape (H, W, C) must be the data's image shape."""
    if tuple(arch.input_shape) == tuple(image_shape):
        return
    h, w, c = image_shape
    raise SpecError(
        f"{arch.source}: input_shape is {list(arch.input_shape)}, but the images of "
        f"{data} are {h}x{w} with {c} channel{'s' if c != 1 else ''}. Set "
        f"input_shape: {list(image_shape)} or train on data of that shape."
    )


def _out_size(size: int, window: int, stride: int, padding: str) -> int:
    if padding == "same":
        return ceil_div(size, stride)
    return (size - window) // stride + 1


def _spatial(
    layer: Conv2D | MaxPooling2D, window: tuple[int, int], shape: Shape, where: str
) -> tuple[int, int]:
    """Output (H, W) of a sliding window, or an error when the window cannot fit."""
    if len(shape) != 3:
        raise SpecError(
            f"{where}: expects an image input (height, width, channels), got shape "
            f"{shape}. Move it before the Flatten/Dense layers."
        )
    H, W = shape[0], shape[1]
    what = "kernel_size" if isinstance(layer, Conv2D) else "pool_size"
    if layer.padding == "valid" and (window[0] > H or window[1] > W):
        raise SpecError(
            f"{where}: {what} {list(window)} is larger than its input "
            f"{H}x{W} (padding 'valid'). Use a smaller {what}, padding: same, "
            "or remove a pooling layer before it."
        )
    strides: tuple[int, int] = layer.strides  # type: ignore[assignment]
    return (
        _out_size(H, window[0], strides[0], layer.padding),
        _out_size(W, window[1], strides[1], layer.padding),
    )


def _layer_info(layer: Layer, shape: Shape, where: str) -> tuple[Shape, int, int, int]:
    """(output shape, trainable, non-trainable, forward FLOPs) of one layer."""
    if isinstance(layer, Conv2D):
        kh, kw = layer.kernel_size  # type: ignore[misc]
        oh, ow = _spatial(layer, (kh, kw), shape, where)
        cin = shape[2]
        weights = kh * kw * cin * layer.filters
        bias = layer.filters if layer.use_bias else 0
        return (oh, ow, layer.filters), weights + bias, 0, 2 * weights * oh * ow
    if isinstance(layer, MaxPooling2D):  # AveragePooling2D included
        oh, ow = _spatial(layer, layer.pool_size, shape, where)  # type: ignore[arg-type]
        return (oh, ow, shape[2]), 0, 0, 0
    if isinstance(layer, BatchNormalization):
        channels = shape[-1]
        # gamma, beta trainable; moving mean and variance not: 4 x C in all.
        return shape, 2 * channels, 2 * channels, 0
    if isinstance(layer, Flatten):
        return (math.prod(shape),), 0, 0, 0
    if isinstance(layer, Dense):
        fan_in = shape[-1]
        positions = math.prod(shape[:-1])  # Dense on (H, W, C) acts per position
        weights = fan_in * layer.units
        bias = layer.units if layer.use_bias else 0
        return (*shape[:-1], layer.units), weights + bias, 0, 2 * weights * positions
    if isinstance(layer, Dropout | Activation | LeakyReLU):
        return shape, 0, 0, 0
    raise AssertionError(f"unhandled layer type {layer_type(layer)}")


def keras_names(arch: Architecture) -> list[str]:
    """Keras 3's automatic layer names: conv2d, conv2d_1, max_pooling2d, ..."""
    snake = {
        "Conv2D": "conv2d",
        "MaxPooling2D": "max_pooling2d",
        "AveragePooling2D": "average_pooling2d",
        "BatchNormalization": "batch_normalization",
        "Dropout": "dropout",
        "Flatten": "flatten",
        "Dense": "dense",
        "Activation": "activation",
        "LeakyReLU": "leaky_re_lu",
    }
    seen: dict[str, int] = {}
    names = []
    for layer in arch.layers:
        base = snake[layer_type(layer)]
        count = seen.get(base, 0)
        names.append(base if count == 0 else f"{base}_{count}")
        seen[base] = count + 1
    return names


def output_activation(arch: Architecture) -> str:
    """The activation applied to the network's output (its last non-trivial layer)."""
    for layer in reversed(arch.layers):
        if isinstance(layer, Dense | Conv2D | Activation):
            return layer.activation
        if isinstance(layer, LeakyReLU):
            return "leaky_relu"
        # Dropout, Flatten, pooling and batch norm do not change the output's meaning
    return "linear"


def infer(arch: Architecture, num_classes: int | None = None) -> ModelInfo:
    """Walk the layers, checking each fits its input; check the output layer too.

    With `num_classes`, the network must end in a vector of that many scores,
    activated by softmax (probabilities) or linear (logits).
    """
    shape: Shape = arch.input_shape
    infos = []
    for i, (layer, name) in enumerate(zip(arch.layers, keras_names(arch), strict=True)):
        where = f"{arch.source}: layers[{i}] ({layer_type(layer)})"
        out, trainable, frozen, flops = _layer_info(layer, shape, where)
        if min(out) <= 0:
            raise SpecError(
                f"{where}: output shape {out} has a zero-sized axis. Use a smaller "
                "kernel, pool or stride, or padding: same."
            )
        infos.append(LayerInfo(i, name, layer, shape, out, trainable, frozen, flops))
        shape = out
    info = ModelInfo(arch, tuple(infos))
    if num_classes is not None:
        check_output(info, num_classes)
    return info


def check_output(info: ModelInfo, num_classes: int) -> None:
    """The network must end in `num_classes` softmax (or linear) scores."""
    arch = info.arch
    last = len(arch.layers) - 1
    where = f"{arch.source}: layers[{last}] ({layer_type(arch.layers[last])})"
    fix = (
        f"End the network with {{type: Dense, units: {num_classes}, "
        "activation: softmax}"
    )
    if info.output_shape != (num_classes,):
        if len(info.output_shape) != 1:
            fix = "Add {type: Flatten} and " + fix[0].lower() + fix[1:]
        raise SpecError(
            f"{where}: the network's output has shape {info.output_shape}, but the "
            f"data set has {num_classes} classes. {fix}."
        )
    act = output_activation(arch)
    if act not in ("softmax", "linear"):
        raise SpecError(
            f"{where}: the output activation is '{act}'; classification needs "
            f"'softmax' (or 'linear' for raw logits). {fix}."
        )
