"""The Python API: what the CLI does, callable from a script or a Jupyter notebook.

import cnnlab
arch = cnnlab.load("conv5-medium")          # a preset, number or YAML file
print(cnnlab.summary(arch))
result = cnnlab.train(arch, cnnlab.TrainConfig(epochs=2))
result.test_acc, result.history.as_dict()
cnnlab.plot_history(result.path)             # the run's curves.png
cnnlab.predict(result.path, ["digit.png"])
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data.datasets import load_dataset, split_dataset
from cnnlab.data.images import load_image
from cnnlab.errors import RunError
from cnnlab.nn.model import Network, build_model
from cnnlab.nn.presets import resolve_architecture
from cnnlab.nn.shapes import check_input, check_memory, infer
from cnnlab.nn.spec import Architecture
from cnnlab.nn.summary import format_summary
from cnnlab.training.config import TrainConfig
from cnnlab.training.curves import plot_history as _plot_history
from cnnlab.training.loop import EVAL_BATCH, History, Reporter, evaluate
from cnnlab.training.runs import CURVES_FILE, RunRecord, default_run_path, open_run
from cnnlab.training.session import (
    Hooks,
    RunResult,
    image_shape,
    resume_run,
    train_run,
)
from cnnlab.util.machine import available_memory


@dataclass(frozen=True)
class Prediction:
    """The predicted class of one image file."""

    path: str
    label: int
    name: str
    probability: float
    probabilities: tuple[float, ...]


def load(name_or_path: str | Path) -> Architecture:
    """An architecture: preset name ('conv3-small'), number ('2') or YAML/JSON file."""
    return resolve_architecture(name_or_path)


def summary(arch: Architecture | str, num_classes: int | None = None) -> str:
    """The Keras-style summary text of an architecture."""
    if not isinstance(arch, Architecture):
        arch = load(arch)
    return format_summary(infer(arch, num_classes))


@contextmanager
def _torch_state_kept() -> Iterator[None]:
    """Leave torch's thread count and random generators as the caller had them:
    training sets both (threads from the config, seeds for weights and dropout)."""
    threads = torch.get_num_threads()
    cpu_rng = torch.get_rng_state()
    cuda_rng = torch.cuda.get_rng_state_all() if torch.cuda.is_initialized() else None
    try:
        yield
    finally:
        torch.set_num_threads(threads)
        torch.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)


def train(
    arch: Architecture | str,
    config: TrainConfig | None = None,
    out: str | Path | None = None,
    overwrite: bool = False,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
) -> RunResult:
    """Train an architecture into a new run folder and score it on the test set."""
    if not isinstance(arch, Architecture):
        arch = load(arch)
    path = Path(out) if out is not None else default_run_path(arch.name)
    with _torch_state_kept():
        return train_run(
            arch, config or TrainConfig(), path, overwrite, hooks or Hooks(reporter)
        )


def resume(
    run: str | Path,
    epochs: int | None = None,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
    device: str | None = None,
    threads: int | None = None,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint (or extend its epochs),
    optionally on another device or with another thread count."""
    changes = {"epochs": epochs, "device": device, "threads": threads}
    with _torch_state_kept():
        return resume_run(run, changes, hooks or Hooks(reporter))


def load_model(run: str | Path) -> tuple[RunRecord, Network]:
    """A run's network with its saved weights, ready for inference."""
    record = open_run(run)
    arch = record.architecture()
    env = record.meta.get("environment")
    names = env.get("class_names") if isinstance(env, dict) else None
    classes = len(names) if isinstance(names, list) and names else None
    cpu = torch.device("cpu")
    check_memory(infer(arch, classes), EVAL_BATCH, None, available_memory(cpu))
    model = build_model(arch, classes)
    record.load_weights(model)
    return record, model.eval()


def evaluate_run(run: str | Path, data: str | None = None) -> dict[str, Any]:
    """Re-score a run's saved weights on the test set of its data set (or `data`)."""
    record, model = load_model(run)
    config = record.config.replace(data=data)
    dataset = load_dataset(config.data)
    check_input(model.arch, image_shape(dataset), config.data)
    outputs = model.info.output_shape[0]
    if dataset.num_classes > outputs:
        raise RunError(
            f"{config.data}: the data set has {dataset.num_classes} classes, but the "
            f"network of {record.path} scores {outputs}. Evaluate it on data with "
            "the classes it was trained on."
        )
    split = split_dataset(dataset, validation="none", test_limit=config.test_limit)
    loss, acc = evaluate(model, split.x_test, split.y_test)
    return {
        "run": str(record.path),
        "data": config.data,
        "test_loss": loss,
        "test_acc": acc,
        "test_samples": len(split.x_test),
    }


def predict(run: str | Path, images: Sequence[str | Path]) -> list[Prediction]:
    """Classify image files with a trained run's network."""
    record, model = load_model(run)
    names = record.meta["environment"].get("class_names") or []
    height, width, channels = model.arch.input_shape
    if height != width or channels != 1:
        raise RunError(
            f"{record.path}: predict reads images as square greyscale digits, but "
            f"this network takes {height}x{width}x{channels} inputs. Use a run "
            "trained on square one-channel images."
        )
    batch = torch.stack([load_image(p, height) for p in images])  # (N, 1, H, W)
    probs = model.probabilities(batch.contiguous(memory_format=torch.channels_last))
    out = []
    for path, p in zip(images, probs, strict=True):
        label = int(p.argmax())
        name = names[label] if label < len(names) else str(label)
        out.append(
            Prediction(str(path), label, name, float(p[label]), tuple(p.tolist()))
        )
    return out


def plot_history(
    run_or_history: str | Path | History, path: str | Path | None = None
) -> Path:
    """Draw train vs validation loss and accuracy; returns the PNG's path."""
    if isinstance(run_or_history, History):
        if path is None:
            raise ValueError("give `path` when plotting a History object")
        return _plot_history(run_or_history.as_dict(), path)
    record = open_run(run_or_history)
    target = Path(path) if path is not None else record.path / CURVES_FILE
    return _plot_history(record.history().as_dict(), target, title=record.meta["name"])
