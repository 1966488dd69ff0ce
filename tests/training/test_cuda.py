"""On a CUDA GPU: a preset trains and learns, and the CPU-only fast paths stay off.

No GPU on the machine that runs CI: the `cuda` tests are skipped there and run by
benchmarks/gpu_check.sh where one is. Exact resume on CUDA is in tests/training/test_rng.py.
The guard that keeps NNPACK (a CPU library) away from other devices is checked on
every machine through PyTorch's `meta` device, which has no data and no kernels.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

import cnnlab
from cnnlab.nn import fastconv
from cnnlab.nn.model import build_model
from cnnlab.nn.spec import parse_architecture
from cnnlab.training.config import TrainConfig

cuda = pytest.mark.cuda
needs_cuda = pytest.mark.skipif(
    not torch.cuda.is_available(), reason="needs a CUDA GPU"
)

# Two 3x3 convolutions wide enough for the Winograd path on a CPU (64 -> 64).
WIDE = parse_architecture(
    {
        "name": "wide-3x3",
        "input_shape": [28, 28, 1],
        "layers": [
            {"Conv2D": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
            {"Conv2D": {"filters": 64, "kernel_size": 3, "activation": "relu"}},
            {"MaxPooling2D": {"pool_size": 4}},
            "Flatten",
            {"Dense": {"units": 10, "activation": "softmax"}},
        ],
    },
    source="test_cuda.py",
)


def test_the_winograd_path_is_for_cpu_tensors_only() -> None:
    model = build_model(WIDE, 10, seed=0)
    assert [c.winograd for c in model.modules() if hasattr(c, "winograd")] == [
        False,  # 1 -> 64: too narrow on its input side
        True,
    ]
    assert fastconv.usable(torch.zeros(32, 64, 26, 26))
    assert not fastconv.usable(torch.empty(32, 64, 26, 26, device="meta"))
    # ... and a non-CPU tensor takes PyTorch's own convolution: shapes only on meta
    out = fastconv.conv3x3(
        torch.empty(32, 64, 26, 26, device="meta"),
        torch.empty(64, 64, 3, 3, device="meta"),
        None,
        0,
    )
    assert out.shape == (32, 64, 24, 24) and out.device.type == "meta"


@cuda
@needs_cuda
def test_a_preset_trains_on_cuda_and_learns(tmp_path: Path) -> None:
    config = TrainConfig(epochs=1, train_limit=6000, val_size=1000, test_limit=2000)
    result = cnnlab.train("conv5-tiny", config.replace(device="cuda"), tmp_path / "r")
    assert result.meta["status"] == "completed"
    assert next(result.model.parameters()).device.type == "cuda"
    assert result.test_acc is not None and result.test_acc > 0.8


@cuda
@needs_cuda
def test_a_wide_net_on_cuda_matches_the_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    """The same weights give the same outputs and gradients on both devices: on the
    CPU the second convolution runs in NNPACK, on CUDA in cuDNN (in full float32:
    TF32, cuDNN's default on recent GPUs, rounds to 10 mantissa bits)."""
    monkeypatch.setattr(torch.backends.cudnn, "allow_tf32", False)
    monkeypatch.setattr(torch.backends.cuda.matmul, "allow_tf32", False)
    x = torch.rand(32, 1, 28, 28)
    y = torch.randint(0, 10, (32,))
    results = {}
    for device in ("cpu", "cuda"):
        model = build_model(WIDE, 10, seed=0).to(device)
        loss = F.cross_entropy(model(x.to(device)), y.to(device))
        loss.backward()
        grads = [p.grad.cpu() for p in model.parameters()]
        results[device] = (loss.item(), grads)
    assert results["cpu"][0] == pytest.approx(results["cuda"][0], rel=1e-4)
    for a, b in zip(results["cpu"][1], results["cuda"][1], strict=True):
        scale = a.abs().max().item() or 1.0
        assert (a - b).abs().max().item() <= 1e-3 * scale
