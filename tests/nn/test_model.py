"""Built modules behave as Keras's layers do: shapes, padding, flatten order, init."""

import math

import pytest
import torch
from torch import nn

from cnnlab.nn.model import build_model
from cnnlab.nn.presets import load_preset, preset_names
from cnnlab.nn.spec import (
    Architecture,
    AveragePooling2D,
    BatchNormalization,
    Conv2D,
    Dense,
    Flatten,
    MaxPooling2D,
)


def test_every_layer_output_matches_the_inferred_shape() -> None:
    for name in preset_names():
        if name == "conv3-512":
            continue  # 23 M parameters; its shapes are covered by test_summary
        model = build_model(load_preset(name), 10, seed=0)
        x = torch.rand(2, 1, 28, 28)
        out = model(x)
        assert out.shape == (2, 10)
        params = sum(p.numel() for p in model.parameters())
        assert params == model.info.trainable


def test_same_padding_puts_the_odd_cell_after_like_keras() -> None:
    # A 2x2 kernel of ones on an input of ones, padding 'same': Keras pads one
    # row/column after (bottom/right), so only the last row and column see padding.
    arch = Architecture("p", (Conv2D(1, 2, padding="same", use_bias=False),), (4, 4, 1))
    model = build_model(arch)
    conv = model.body[0].conv
    nn.init.ones_(conv.weight)
    out = model(torch.ones(1, 1, 4, 4))[0, 0]
    assert out.shape == (4, 4)
    assert out[0, 0] == 4 and out[3, 0] == 2 and out[0, 3] == 2 and out[3, 3] == 1


def test_strided_same_conv_and_pools_match_inferred_shapes() -> None:
    arch = Architecture(
        "s",
        (
            Conv2D(3, 4, strides=3, padding="same"),
            MaxPooling2D(3, strides=2, padding="same"),
            AveragePooling2D(2, padding="same"),
        ),
        (28, 28, 1),
    )
    model = build_model(arch)
    out = model(torch.rand(1, 1, 28, 28))
    h, w, c = model.info.output_shape
    assert out.shape == (1, c, h, w)


def test_average_pool_same_ignores_padded_cells() -> None:
    arch = Architecture("a", (AveragePooling2D(2, padding="same"),), (3, 3, 1))
    out = build_model(arch)(torch.ones(1, 1, 3, 3))
    assert torch.allclose(out, torch.ones(1, 1, 2, 2))  # zeros would pull edges down


def test_flatten_uses_keras_channels_last_order() -> None:
    model = build_model(Architecture("f", (Flatten(),), (2, 2, 3)))
    x = torch.arange(12.0).reshape(1, 3, 2, 2)  # (N, C, H, W)
    expected = x.permute(0, 2, 3, 1).reshape(1, -1)  # (N, H*W*C)
    assert torch.equal(model(x), expected)


def test_dense_on_image_equals_a_1x1_convolution() -> None:
    model = build_model(
        Architecture("d", (Dense(4, use_bias=True),), (5, 5, 3)), seed=1
    )
    linear = model.body[0].linear
    x = torch.rand(2, 3, 5, 5)
    ref = nn.functional.conv2d(x, linear.weight[:, :, None, None], linear.bias)
    assert torch.allclose(model(x), ref, atol=1e-6)


def test_glorot_uniform_kernels_and_zero_biases() -> None:
    model = build_model(
        Architecture("g", (Conv2D(64, 5), Flatten(), Dense(10))), seed=0
    )
    conv = model.body[0].conv
    limit = math.sqrt(6 / (25 * 1 + 25 * 64))  # fan_in = 5*5*1, fan_out = 5*5*64
    assert conv.weight.abs().max() <= limit
    assert conv.weight.abs().max() > 0.9 * limit
    assert torch.count_nonzero(conv.bias) == 0


def test_batch_norm_uses_keras_momentum_and_epsilon() -> None:
    model = build_model(Architecture("b", (Conv2D(2, 3), BatchNormalization())))
    bn = model.body[1]
    assert isinstance(bn, nn.BatchNorm2d)
    assert bn.momentum == pytest.approx(0.01) and bn.eps == pytest.approx(1e-3)


def test_final_softmax_is_left_to_the_loss() -> None:
    model = build_model(load_preset("conv5-medium"), 10, seed=0)
    x = torch.rand(3, 1, 28, 28)
    logits = model(x)
    assert not torch.allclose(logits.sum(1), torch.ones(3))
    assert torch.allclose(model.probabilities(x).sum(1), torch.ones(3))


def test_same_seed_same_weights() -> None:
    a = build_model(load_preset("conv3-small"), 10, seed=3).state_dict()
    b = build_model(load_preset("conv3-small"), 10, seed=3).state_dict()
    c = build_model(load_preset("conv3-small"), 10, seed=4).state_dict()
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not all(torch.equal(a[k], c[k]) for k in a)


@pytest.mark.parametrize(
    "name", ["conv3-small", "conv5-medium", "conv7-dropout", "fast"]
)
def test_pool_before_activation_gives_the_same_loss_and_gradients(name: str) -> None:
    """Moving ReLU after its max pool is a pure speed-up: same loss, same gradients.

    Equal up to float rounding, not bit for bit: the backward's intermediate
    gradients may come out in another memory layout, which changes the order of
    the convolutions' sums.
    """
    from cnnlab.data.datasets import load_dataset
    from cnnlab.training.loop import as_input

    mnist = load_dataset("mnist")
    x, y = as_input(mnist.x_train[:128]), mnist.y_train[:128]
    kinds, losses, grads = [], [], []
    for reorder in (False, True):
        net = build_model(load_preset(name), 10, seed=5, reorder=reorder)
        torch.manual_seed(9)  # the same dropout masks
        loss = nn.functional.cross_entropy(net(x), y)
        loss.backward()
        kinds.append([type(m).__name__ for m in net.body])
        losses.append(loss.item())
        grads.append({k: p.grad for k, p in net.named_parameters()})
    assert kinds[0] != kinds[1]  # the reordering happened
    assert sorted(kinds[0]) == sorted(kinds[1])  # and only that
    assert losses[0] == pytest.approx(losses[1], rel=1e-6)
    assert grads[0].keys() == grads[1].keys()
    for key, grad in grads[0].items():
        scale = grad.abs().max().item()
        assert (grad - grads[1][key]).abs().max().item() <= 1e-5 * scale, key


def test_activation_stays_before_an_average_pool() -> None:
    arch = Architecture(
        name="avg-then-max",
        input_shape=(12, 12, 1),
        layers=(
            Conv2D(filters=2, kernel_size=(3, 3), activation="relu"),
            AveragePooling2D(pool_size=(2, 2)),
            Conv2D(filters=2, kernel_size=(3, 3), activation="relu"),
            MaxPooling2D(pool_size=(2, 2)),
            Flatten(),
            Dense(units=3),
        ),
    )
    kinds = [type(m).__name__ for m in build_model(arch, seed=0).body]
    assert kinds[:6] == ["KerasConv2d", "ReLU", "KerasPool2d"] + [
        "KerasConv2d",
        "KerasPool2d",
        "ReLU",
    ]
