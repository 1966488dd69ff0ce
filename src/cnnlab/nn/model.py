"""Architecture -> PyTorch module with Keras's layer semantics and initialisers.

Tensors run as (N, C, H, W), PyTorch's layout; every Keras detail that differs is
handled here: 'same' padding that is asymmetric for even kernels or strides > 1,
Flatten in (H, W, C) order, Dense acting on the last axis of an image, Glorot-uniform
kernels with zero biases, and batch-norm momentum as 1 - Keras's momentum. A final
softmax is not applied in `forward`: the network returns logits, trained with
cross-entropy (the stable form of softmax + categorical cross-entropy), and
`probabilities` applies it.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from cnnlab.errors import CnnlabError
from cnnlab.nn import convpath, fastconv
from cnnlab.nn.shapes import ModelInfo, infer
from cnnlab.nn.spec import (
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
from cnnlab.util.text import is_int, show_value
from cnnlab.util.units import ceil_div

MAX_SEED = 2**32 - 1  # torch takes seeds < 2**64, numpy's legacy seeding < 2**32

# Keras's activation functions; leaky_relu as a function uses Keras's 0.2 slope
# (keras.activations.leaky_relu), while the LeakyReLU layer defaults to 0.3.
_ACTIVATIONS = {
    "relu": nn.ReLU,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "elu": nn.ELU,  # alpha 1.0 in both
    "gelu": nn.GELU,  # exact erf form, Keras's default (approximate=False)
    "leaky_relu": lambda: nn.LeakyReLU(0.2),
    "softmax": lambda: nn.Softmax(dim=1),  # over channels/features
}


def _same_padding(size: int, window: int, stride: int) -> tuple[int, int]:
    """(before, after) padding that Keras/TF use for padding='same'."""
    out = ceil_div(size, stride)
    total = max((out - 1) * stride + window - size, 0)
    return total // 2, total - total // 2  # the odd extra cell goes after


def _pads(
    shape: tuple[int, ...], window: tuple[int, int], strides: tuple[int, int]
) -> tuple[int, int, int, int]:
    top, bottom = _same_padding(shape[0], window[0], strides[0])
    left, right = _same_padding(shape[1], window[1], strides[1])
    return (left, right, top, bottom)  # F.pad order: last axis first


class KerasConv2d(nn.Module):
    """Conv2d whose 'same' padding may be asymmetric, as in Keras."""

    def __init__(self, spec: Conv2D, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        kernel, strides = spec.kernel_size, spec.strides
        pads = (0, 0, 0, 0)
        if spec.padding == "same":
            pads = _pads(in_shape, kernel, strides)  # type: ignore[arg-type]
        symmetric = pads[0] == pads[1] and pads[2] == pads[3]
        # Symmetric padding goes inside the convolution (no extra copy).
        self.pad = None if symmetric else pads
        self.conv = nn.Conv2d(
            in_shape[2],
            spec.filters,
            kernel,  # type: ignore[arg-type]
            stride=strides,  # type: ignore[arg-type]
            padding=(pads[2], pads[0]) if symmetric else 0,
            bias=spec.use_bias,
        )
        nn.init.xavier_uniform_(self.conv.weight)  # Keras's glorot_uniform
        if self.conv.bias is not None:
            nn.init.zeros_(self.conv.bias)
        # Wide 3x3 layers may run as Winograd convolutions in NNPACK (fastconv):
        # `wide` says the shape allows it, `winograd` that it is in use and
        # `winograd_grad` that the kernel gradient is too (convpath decides per
        # machine; NNPACK with oneDNN's kernel gradient unless told otherwise).
        self.wide = symmetric and fastconv.applies(
            in_shape[2],
            spec.filters,
            kernel,
            strides,
            (pads[2], pads[0]),  # type: ignore[arg-type]
        )
        self.winograd = self.wide
        self.winograd_grad = False
        self.in_shape = in_shape

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.winograd:
            conv = self.conv
            return fastconv.conv3x3(
                x, conv.weight, conv.bias, conv.padding[0], self.winograd_grad
            )
        if self.pad is not None:
            x = F.pad(x, self.pad)
        return self.conv(x)


class KerasPool2d(nn.Module):
    """Max or average pooling with Keras's 'same' padding rules."""

    def __init__(self, spec: MaxPooling2D, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.average = isinstance(spec, AveragePooling2D)
        self.window, self.strides = spec.pool_size, spec.strides
        self.pads = None
        if spec.padding == "same":
            pads = _pads(in_shape, spec.pool_size, spec.strides)  # type: ignore[arg-type]
            self.pads = pads if any(pads) else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.pads is None:
            pool = F.avg_pool2d if self.average else F.max_pool2d
            return pool(x, self.window, self.strides)
        if not self.average:  # padded cells never win a max
            return F.max_pool2d(
                F.pad(x, self.pads, value=-math.inf), self.window, self.strides
            )
        # Keras averages over the real cells only: sum / count of real cells.
        total = F.avg_pool2d(F.pad(x, self.pads), self.window, self.strides)
        ones = F.pad(torch.ones_like(x[:1, :1]), self.pads)
        return total / F.avg_pool2d(ones, self.window, self.strides)


class MaskDropout(nn.Module):
    """Inverted dropout (Keras's and nn.Dropout's maths) with a mask from rand_like.

    Same distribution as nn.Dropout, other random numbers: on the CPU `bernoulli_`
    draws single-threaded and was the costliest op of some nets' steps; a uniform
    draw compared with the rate is vectorised (measured: docs/benchmarks.md).
    """

    def __init__(self, rate: float) -> None:
        super().__init__()
        self.rate = rate

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or self.rate == 0.0:
            return x
        # One scaled mask, so forward and backward are one multiply each.
        mask = torch.rand_like(x).ge_(self.rate).mul_(1.0 / (1.0 - self.rate))
        return x * mask

    def extra_repr(self) -> str:
        return f"rate={self.rate}"


class KerasFlatten(nn.Module):
    """Flatten (N, C, H, W) in Keras's (H, W, C) order."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            x = x.permute(0, 2, 3, 1)  # free when x is channels_last in memory
        return x.flatten(1)


class KerasDense(nn.Module):
    """Dense layer; on an image it acts on the channel axis at every position."""

    def __init__(self, spec: Dense, in_shape: tuple[int, ...]) -> None:
        super().__init__()
        self.linear = nn.Linear(in_shape[-1], spec.units, bias=spec.use_bias)
        nn.init.xavier_uniform_(self.linear.weight)
        if self.linear.bias is not None:
            nn.init.zeros_(self.linear.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() == 4:
            return self.linear(x.movedim(1, -1)).movedim(-1, 1)
        return self.linear(x)


# Activations that never decrease: max(f(a), f(b)) == f(max(a, b)), so one can run
# after a max pool instead of before it, on a quarter of the elements.
_MONOTONIC = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.Sigmoid, nn.Tanh)


def pool_before_activation(modules: list[nn.Module]) -> list[nn.Module]:
    """Move each monotonic activation that feeds a max pool to after the pool.

    The result is the same function with the same gradients: a monotonic f keeps
    the order of a window's values, so the pool picks the same cell (ReLU's
    all-negative windows give a zero gradient either way), and the random
    numbers drawn by later layers are unchanged. The activation and its backward
    then touch a quarter of the elements of a 2x2 pool's input (measured:
    docs/benchmarks.md).
    """
    out = list(modules)
    for i in range(len(out) - 1):
        act, pool = out[i], out[i + 1]
        if (
            isinstance(act, _MONOTONIC)
            and isinstance(pool, KerasPool2d)
            and not pool.average
        ):
            out[i], out[i + 1] = pool, act
    return out


def _activation(name: str) -> nn.Module | None:
    return None if name == "linear" else _ACTIVATIONS[name]()


def _build_layer(spec: Layer, in_shape: tuple[int, ...]) -> list[nn.Module]:
    if isinstance(spec, Conv2D):
        return [KerasConv2d(spec, in_shape), _activation(spec.activation)]
    if isinstance(spec, MaxPooling2D):
        return [KerasPool2d(spec, in_shape)]
    if isinstance(spec, BatchNormalization):
        norm = nn.BatchNorm2d if len(in_shape) == 3 else nn.BatchNorm1d
        # PyTorch's momentum weighs the new batch; Keras's weighs the old average.
        return [norm(in_shape[-1], eps=spec.epsilon, momentum=1.0 - spec.momentum)]
    if isinstance(spec, Dropout):
        return [MaskDropout(spec.rate)]
    if isinstance(spec, Flatten):
        return [KerasFlatten()]
    if isinstance(spec, Dense):
        return [KerasDense(spec, in_shape), _activation(spec.activation)]
    if isinstance(spec, Activation):
        return [_activation(spec.activation)]
    if isinstance(spec, LeakyReLU):
        return [nn.LeakyReLU(spec.negative_slope)]
    raise AssertionError(f"unhandled layer {spec!r}")


class Standardize(nn.Module):
    """(x - mean_c) / std_c per channel of (N, C, H, W) images: the run's input
    standardisation (data.standardize), data preparation rather than a layer of
    the architecture. Its buffers are not in the state dict: the values live in
    the run's run.json."""

    def __init__(self, mean: list[float], std: list[float]) -> None:
        super().__init__()
        shape = (1, len(mean), 1, 1)
        mean_t = torch.tensor(mean, dtype=torch.float32).reshape(shape)
        std_t = torch.tensor(std, dtype=torch.float32).reshape(shape)
        self.register_buffer("mean", mean_t, persistent=False)
        self.register_buffer("std", std_t, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


class Network(nn.Module):
    """A built architecture: `forward` gives logits, `probabilities` softmax scores."""

    def __init__(
        self, arch: Architecture, info: ModelInfo, reorder: bool = True
    ) -> None:
        super().__init__()
        self.arch = arch
        self.info = info
        modules: list[nn.Module] = []
        for layer_info in info.layers:
            built = _build_layer(layer_info.layer, layer_info.input_shape)
            modules.extend(m for m in built if m is not None)
        # A trailing softmax becomes part of the loss (logits + cross-entropy).
        if modules and isinstance(modules[-1], nn.Softmax):
            modules.pop()
        if reorder:  # parameter-free modules only: state_dict keys are unchanged
            modules = pool_before_activation(modules)
        self.body = nn.Sequential(*modules)
        self.standardize: Standardize | None = None  # set_standardization

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.standardize is not None:
            x = self.standardize(x)
        return self.body(x)

    @torch.no_grad()
    def probabilities(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.forward(x), dim=1)

    def set_standardization(self, stats: dict[str, list[float]] | None) -> None:
        """Standardise every input with `stats` ({"mean": [...], "std": [...]},
        one value per channel, on the [0, 1] scale) before the first layer; None:
        feed [0, 1] pixels as they are."""
        if stats is None:
            self.standardize = None
            return
        device = next(self.parameters(), torch.empty(0)).device
        self.standardize = Standardize(stats["mean"], stats["std"]).to(device)

    def wide_convs(self) -> list[KerasConv2d]:
        """The conv layers whose shape lets them run in NNPACK (fastconv)."""
        return [m for m in self.modules() if isinstance(m, KerasConv2d) and m.wide]

    def conv_shapes(self) -> list[convpath.Shape]:
        """(in, out channels, height, width, padding) of each wide conv layer."""
        shapes = []
        for conv in self.wide_convs():
            height, width, channels = conv.in_shape
            shapes.append(
                (channels, conv.conv.out_channels, height, width, conv.conv.padding[0])
            )
        return sorted(set(shapes))

    def set_conv_path(self, path: str) -> None:
        """Run the wide conv layers in NNPACK (`nnpack`; `winograd`: with the
        kernel gradient in Winograd's form too) or in PyTorch's own convolution
        (`onednn`); convpath says which is fastest here."""
        if path not in convpath.PATHS:
            raise ValueError(f"unknown convolution path {path!r}")
        for conv in self.wide_convs():
            conv.winograd = path in convpath.NNPACK_PATHS
            conv.winograd_grad = path == convpath.WINOGRAD


def build_model(
    arch: Architecture,
    num_classes: int | None = None,
    seed: int | None = None,
    reorder: bool = True,
) -> Network:
    """Validate `arch`, then build it; `seed` fixes the initial weights.

    `reorder=False` keeps every activation before its pool, as written (the same
    function, slower; see `pool_before_activation`).
    """
    if seed is not None and not (is_int(seed) and 0 <= seed <= MAX_SEED):
        raise CnnlabError(
            f"seed must be an integer from 0 to {MAX_SEED}. "
            f"Received: seed={show_value(seed)}."
        )
    if num_classes is not None and not (is_int(num_classes) and num_classes >= 1):
        raise CnnlabError(
            "num_classes must be a positive integer (the data set's classes). "
            f"Received: num_classes={show_value(num_classes)}."
        )
    info = infer(arch, num_classes)
    if seed is None:
        return _channels_last(Network(arch, info, reorder))
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        return _channels_last(Network(arch, info, reorder))


def _channels_last(net: Network) -> Network:
    """Conv weights in channels_last memory, so every conv runs channels_last.

    A 1-channel (N, 1, H, W) input is the same memory in both layouts, so PyTorch
    takes it as NCHW and, with NCHW weights, keeps the whole net in NCHW; a
    channels_last weight decides it (measured: docs/benchmarks.md).
    """
    return net.to(memory_format=torch.channels_last)
