"""Checkpoints keep every generator dropout draws from: the CPU's, and on a GPU the
CUDA generators too, so a resumed run continues exactly as an unbroken one."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import cnnlab
from cnnlab.errors import RunError
from cnnlab.nn.model import build_model
from cnnlab.nn.spec import parse_architecture
from cnnlab.training.config import TrainConfig
from cnnlab.training.loop import TrainState
from cnnlab.training.runs import open_run
from cnnlab.training.session import Hooks

# Dense layers and a strong dropout: the masks matter, and no convolution brings
# cuDNN's nondeterministic kernels into an exact comparison on a GPU.
ARCH = parse_architecture(
    {
        "name": "dense-dropout",
        "input_shape": [28, 28, 1],
        "layers": [
            "Flatten",
            {"Dense": {"units": 32, "activation": "relu"}},
            {"Dropout": {"rate": 0.5}},
            {"Dense": {"units": 10, "activation": "softmax"}},
        ],
    },
    source="test_rng.py",
)
SMALL = TrainConfig(epochs=1, train_limit=1000, val_size=500, test_limit=500)


def weights(run: Path) -> dict[str, torch.Tensor]:
    return torch.load(run / "weights.pt", map_location="cpu", weights_only=True)


def checkpoint(run: Path) -> dict:
    return torch.load(run / "checkpoint.pt", map_location="cpu", weights_only=True)


def assert_same_weights(a: Path, b: Path) -> None:
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.equal(wa[key], wb[key]), key


def straight_and_resumed(tmp_path: Path, config: TrainConfig) -> tuple[Path, Path]:
    """2 epochs straight, and 1 epoch then a resumption to 2: (straight, split)."""
    cnnlab.train(ARCH, config.replace(epochs=2), tmp_path / "straight")
    cnnlab.train(ARCH, config.replace(epochs=1), tmp_path / "split")
    return tmp_path / "straight", tmp_path / "split"


def test_cpu_checkpoint_round_trips_the_cpu_generator(tmp_path: Path) -> None:
    seen: list[TrainState] = []
    run = tmp_path / "run"
    cnnlab.train(
        ARCH, SMALL.replace(device="cpu"), run, hooks=Hooks(on_epoch=seen.append)
    )

    payload = checkpoint(run)
    assert "cuda_rng" in payload and payload["cuda_rng"] is None
    assert torch.equal(payload["torch_rng"], seen[-1].torch_rng)

    model = build_model(ARCH, 10)
    state = open_run(run).load_checkpoint(model)
    assert state is not None and state.epoch == 1
    assert torch.equal(state.torch_rng, seen[-1].torch_rng)
    assert torch.equal(state.shuffle_rng, seen[-1].shuffle_rng)
    assert state.cuda_rng is None


def test_a_checkpoint_without_cuda_rng_still_resumes_exactly(tmp_path: Path) -> None:
    """Checkpoints written before the CUDA states were kept lack the key."""
    straight, split = straight_and_resumed(tmp_path, SMALL.replace(device="cpu"))
    payload = checkpoint(split)
    del payload["cuda_rng"]
    torch.save(payload, split / "checkpoint.pt")

    cnnlab.resume(split, epochs=2)
    assert_same_weights(straight, split)


def test_a_garbled_cuda_rng_is_refused(tmp_path: Path) -> None:
    run = tmp_path / "run"
    cnnlab.train(ARCH, SMALL.replace(device="cpu"), run)
    payload = checkpoint(run)
    payload["cuda_rng"] = [torch.zeros(3)]  # float, not a generator's bytes
    torch.save(payload, run / "checkpoint.pt")
    with pytest.raises(RunError, match=r"checkpoint.pt: 'cuda_rng' is not a list"):
        cnnlab.resume(run, epochs=2)


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
def test_cuda_resume_is_exact(tmp_path: Path) -> None:
    straight, split = straight_and_resumed(tmp_path, SMALL.replace(device="cuda"))
    saved = checkpoint(split)["cuda_rng"]
    assert isinstance(saved, list) and len(saved) == torch.cuda.device_count()

    # Whatever the CUDA generators hold now must not matter: the checkpoint's win.
    torch.cuda.manual_seed_all(12345)
    cnnlab.resume(split, epochs=2)
    assert_same_weights(straight, split)
