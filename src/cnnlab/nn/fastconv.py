"""Winograd 3x3 convolutions for wide layers on the CPU: all three passes.

PyTorch's CPU build ships NNPACK, whose 3x3 convolution uses Winograd's minimal
filtering: far fewer multiplications than the direct convolution oneDNN runs.
PyTorch only calls it for inference without a gradient (and then prefers oneDNN),
so this module wraps it as an autograd function: the forward pass and the input
gradient (itself a 3x3 convolution, of the output gradient with the flipped,
transposed kernel) run in NNPACK; the kernel gradient, which NNPACK does not
offer for training, runs in oneDNN or, with `winograd_grad`, as Winograd's
F(4x4, 3x3) in tensor ops (nn.winograd). nn.convpath measures which of these
paths is fastest on the machine.

It pays only on wide layers, and loses on narrow ones (measured:
docs/benchmarks.md). Hence `applies`: 3x3, stride 1, both channel counts >= 64.
Outputs agree with oneDNN's to float rounding (relative error ~4e-7 on the
512->256 layer; the F(4x4, 3x3) kernel gradient ~6e-6).
"""

from __future__ import annotations

import functools
from typing import Any

import torch
import torch.nn.functional as F
from torch.autograd import Function

from cnnlab.nn import winograd

MIN_CHANNELS = 64  # below this on either side, oneDNN's direct convolution wins
MIN_BATCH = 16  # PyTorch's own threshold for NNPACK; smaller batches gain little


@functools.cache
def available() -> bool:
    """NNPACK is built in and works on this CPU (checked once per process).

    `torch._nnpack_available()` also initialises NNPACK; calling it first is
    required before any NNPACK convolution.
    """
    try:
        return bool(torch._nnpack_available())
    except (AttributeError, RuntimeError):
        return False


def applies(
    in_channels: int,
    out_channels: int,
    kernel: tuple[int, int],
    strides: tuple[int, int],
    padding: tuple[int, int],
) -> bool:
    """Whether a conv layer of this shape should take the NNPACK path."""
    return (
        kernel == (3, 3)
        and strides == (1, 1)
        and padding[0] == padding[1]
        and padding[0] in (0, 1)
        and min(in_channels, out_channels) >= MIN_CHANNELS
    )


def usable(x: torch.Tensor) -> bool:
    """Whether this input can take the NNPACK path now."""
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 4
        and x.shape[0] >= MIN_BATCH
        and available()
    )


def _nnpack(
    x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None, pad: int
) -> torch.Tensor:
    if bias is None:
        bias = x.new_zeros(weight.shape[0])
    return torch._nnpack_spatial_convolution(
        x.contiguous(), weight.contiguous(), bias, [pad, pad], [1, 1]
    )


class _WinogradConv(Function):
    """NNPACK computes in (N, C, H, W) order; the rest of the net, the kernel
    gradient included, runs channels_last, so results go back to the input's layout
    (mixed layouts sent ReLU's backward down a far slower path; measured:
    docs/benchmarks.md)."""

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        x: torch.Tensor,
        weight: torch.Tensor,
        bias: torch.Tensor | None,
        pad: int,
        winograd_grad: bool,
    ) -> torch.Tensor:
        ctx.save_for_backward(x, weight)
        ctx.pad, ctx.has_bias, ctx.winograd_grad = pad, bias is not None, winograd_grad
        ctx.layout = _layout(x)
        return _nnpack(x, weight, bias, pad).contiguous(memory_format=ctx.layout)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[Any, ...]:  # type: ignore[override]
        x, weight = ctx.saved_tensors
        pad = ctx.pad
        grad_x = None
        if ctx.needs_input_grad[0]:
            # The input gradient of a stride-1 convolution: a convolution of the
            # output gradient with the kernel flipped and its channel axes swapped.
            flipped = weight.transpose(0, 1).flip(2, 3)
            grad_x = _nnpack(grad, flipped, None, 2 - pad)
            grad_x = grad_x.contiguous(memory_format=ctx.layout)
        grad_w = grad_b = None
        if ctx.needs_input_grad[1] and ctx.winograd_grad:
            grad_w = winograd.weight_grad(x, grad, pad)
            if ctx.has_bias and ctx.needs_input_grad[2]:
                grad_b = grad.sum((0, 2, 3))
        elif ctx.needs_input_grad[1] or ctx.needs_input_grad[2]:
            grad = grad.contiguous(memory_format=ctx.layout)
            _, grad_w, grad_b = torch.ops.aten.convolution_backward(
                grad,
                x,
                weight,
                [weight.shape[0]] if ctx.has_bias else None,
                [1, 1],
                [pad, pad],
                [1, 1],
                False,
                [0, 0],
                1,
                [False, ctx.needs_input_grad[1], ctx.has_bias],
            )
        return grad_x, grad_w, grad_b, None, None


def _layout(x: torch.Tensor) -> torch.memory_format:
    if x.is_contiguous(memory_format=torch.channels_last) and not x.is_contiguous():
        return torch.channels_last
    return torch.contiguous_format


def conv3x3(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None,
    pad: int,
    winograd_grad: bool = False,
) -> torch.Tensor:
    """A stride-1 3x3 convolution in NNPACK when `usable(x)`, else PyTorch's own;
    `winograd_grad`: its kernel gradient in Winograd's form (else oneDNN's)."""
    if not usable(x):
        return F.conv2d(x, weight, bias, padding=pad)
    return _WinogradConv.apply(x, weight, bias, pad, winograd_grad)
