"""The NNPACK Winograd path for wide 3x3 convolutions equals PyTorch's convolution."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from cnnlab.data.datasets import load_dataset
from cnnlab.nn import fastconv
from cnnlab.nn.model import KerasConv2d, build_model
from cnnlab.nn.spec import Architecture, Conv2D, Dense, Flatten, MaxPooling2D
from cnnlab.training.loop import as_input

needs_nnpack = pytest.mark.skipif(
    not fastconv.available(), reason="this PyTorch build has no working NNPACK"
)


@needs_nnpack
@pytest.mark.parametrize("pad", [0, 1])
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
@pytest.mark.parametrize("bias", [True, False])
def test_winograd_conv_matches_conv2d_values_and_gradients(
    pad: int, layout: torch.memory_format, bias: bool
) -> None:
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(16, 64, 9, 9, generator=gen).contiguous(memory_format=layout)
    w = torch.randn(72, 64, 3, 3, generator=gen) * 0.05
    b = torch.randn(72, generator=gen) if bias else None
    ours = [t.clone().requires_grad_() for t in (x, w)]
    ref = [t.clone().requires_grad_() for t in (x, w)]
    b_ours = b.clone().requires_grad_() if bias else None
    b_ref = b.clone().requires_grad_() if bias else None
    out = fastconv.conv3x3(ours[0], ours[1], b_ours, pad)
    expected = F.conv2d(ref[0], ref[1], b_ref, padding=pad)
    assert out.shape == expected.shape
    assert out.is_contiguous(memory_format=layout)  # stays in the net's layout
    torch.testing.assert_close(out, expected, rtol=1e-4, atol=1e-4)
    grad = torch.randn(expected.shape, generator=gen)
    out.backward(grad)
    expected.backward(grad)
    torch.testing.assert_close(ours[0].grad, ref[0].grad, rtol=1e-4, atol=1e-4)
    # the kernel gradient (oneDNN or Winograd's F(4x4, 3x3)) to its own scale
    scale = ref[1].grad.abs().max()
    torch.testing.assert_close(
        ours[1].grad / scale, ref[1].grad / scale, rtol=0, atol=2e-5
    )
    if bias:
        torch.testing.assert_close(b_ours.grad, b_ref.grad, rtol=1e-4, atol=1e-4)


def test_only_wide_stride_1_3x3_layers_take_the_winograd_path() -> None:
    assert fastconv.applies(64, 64, (3, 3), (1, 1), (1, 1))
    assert fastconv.applies(512, 256, (3, 3), (1, 1), (0, 0))
    assert not fastconv.applies(32, 64, (3, 3), (1, 1), (1, 1))  # too narrow
    assert not fastconv.applies(64, 64, (5, 5), (1, 1), (2, 2))  # not 3x3
    assert not fastconv.applies(64, 64, (3, 3), (2, 2), (1, 1))  # strided
    small = torch.zeros(fastconv.MIN_BATCH - 1, 64, 5, 5)
    assert not fastconv.usable(small)  # small batches stay with oneDNN


def _wide_net() -> Architecture:
    return Architecture(
        name="wide",
        input_shape=(28, 28, 1),
        layers=(
            Conv2D(filters=64, kernel_size=3, activation="relu"),
            MaxPooling2D(pool_size=2),
            Conv2D(filters=64, kernel_size=3, padding="same", activation="relu"),
            MaxPooling2D(pool_size=4),
            Flatten(),
            Dense(units=10, activation="softmax"),
        ),
    )


@needs_nnpack
def test_a_net_with_a_wide_layer_trains_as_with_pytorchs_convolution() -> None:
    """Same loss and gradients on MNIST with the Winograd path on and off."""
    mnist = load_dataset("mnist")
    x, y = as_input(mnist.x_train[:64]), mnist.y_train[:64]
    grads, losses = [], []
    for winograd in (True, False):
        net = build_model(_wide_net(), seed=1)
        convs = [m for m in net.body if isinstance(m, KerasConv2d)]
        assert [c.winograd for c in convs] == [False, True]
        convs[1].winograd = winograd
        # Nonzero biases: with Keras's zero init, MNIST's blank background gives
        # pre-activations of exactly 0 in oneDNN but +-1e-9 in Winograd's rounding,
        # and ReLU's gradient at 0 is a knife edge that would route them apart.
        with torch.no_grad():
            for conv in convs:
                conv.conv.bias.copy_(torch.linspace(-0.1, 0.1, 64))
        loss = F.cross_entropy(net(x), y)
        loss.backward()
        losses.append(loss.item())
        grads.append({k: p.grad for k, p in net.named_parameters()})
    assert losses[0] == pytest.approx(losses[1], rel=1e-5)
    for key, grad in grads[1].items():
        scale = grad.abs().max().item()
        assert (grads[0][key] - grad).abs().max().item() <= 1e-4 * scale, key


@pytest.mark.parametrize(
    ("batch", "channels", "outs", "size", "pad"),
    [(3, 5, 7, 6, 1), (4, 8, 6, 9, 0), (2, 3, 4, 13, 1), (17, 64, 64, 7, 1)],
)
@pytest.mark.parametrize("layout", [torch.channels_last, torch.contiguous_format])
def test_winograd_kernel_gradient_equals_the_direct_one(
    batch: int,
    channels: int,
    outs: int,
    size: int,
    pad: int,
    layout: torch.memory_format,
) -> None:
    """Odd sizes (partial tiles), both paddings, both layouts, a batch that is not
    a multiple of the chunk."""
    from cnnlab.nn import winograd

    gen = torch.Generator().manual_seed(1)
    x = torch.randn(batch, channels, size, size, generator=gen)
    w = torch.randn(outs, channels, 3, 3, generator=gen)
    out = size + 2 * pad - 2
    grad = torch.randn(batch, outs, out, out, generator=gen)
    x, grad = x.contiguous(memory_format=layout), grad.contiguous(memory_format=layout)
    expected = torch.ops.aten.convolution_backward(
        grad, x, w, None, [1, 1], [pad, pad], [1, 1], False, [0, 0], 1,
        [False, True, False],
    )[1]  # fmt: skip
    ours = winograd.weight_grad(x, grad, pad)
    assert ours.shape == w.shape
    scale = expected.abs().max()
    torch.testing.assert_close(ours / scale, expected / scale, rtol=0, atol=2e-5)


def test_the_winograd_kernel_gradient_is_used_where_asked() -> None:
    """conv3x3 with winograd_grad: the same gradients as with oneDNN's kernel
    gradient, to Winograd's rounding, and not bit-for-bit (so it did run)."""
    gen = torch.Generator().manual_seed(3)
    x = torch.randn(16, 64, 9, 9, generator=gen).contiguous(
        memory_format=torch.channels_last
    )
    w = torch.randn(64, 64, 3, 3, generator=gen).mul_(0.05)
    grads = []
    for winograd_grad in (False, True):
        weight = w.clone().requires_grad_()
        out = fastconv.conv3x3(x, weight, None, 1, winograd_grad)
        out.square().sum().backward()
        grads.append(weight.grad)
    if not fastconv.available():
        pytest.skip("this PyTorch build has no working NNPACK")
    scale = grads[0].abs().max()
    torch.testing.assert_close(grads[1] / scale, grads[0] / scale, rtol=0, atol=2e-5)
    assert not torch.equal(grads[0], grads[1])
