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

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.config import TrainConfig
from cnnlab.data import Dataset, Split, load_dataset, split_dataset
from cnnlab.errors import CnnlabError, RunError
from cnnlab.images import load_image
from cnnlab.model import Network, build_model
from cnnlab.plots import plot_history as _plot_history
from cnnlab.presets import resolve_architecture
from cnnlab.runs import (
    CURVES_FILE,
    RunRecord,
    create_run,
    default_run_path,
    environment,
    open_run,
)
from cnnlab.shapes import check_input, check_memory, infer
from cnnlab.spec import Architecture
from cnnlab.summary import format_summary
from cnnlab.train import (
    EVAL_BATCH,
    History,
    Reporter,
    TrainingDiverged,
    TrainState,
    available_memory,
    evaluate,
    fit,
    pick_device,
    set_threads,
)


@dataclass
class RunResult:
    """A finished (or resumed-to-the-end) training run."""

    path: Path
    model: Network
    history: History
    test_loss: float
    test_acc: float
    train_clean: tuple[float, float] | None = None  # (loss, acc), dropout off

    @property
    def meta(self) -> dict[str, Any]:
        """The run's run.json."""
        return open_run(self.path).meta


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


def _prepare(config: TrainConfig) -> tuple[torch.device, Any, Split]:
    """Device, thread count and data: everything checked before a file is written."""
    device = pick_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(
            "--device cuda was asked for, but PyTorch sees no GPU. Use --device cpu."
        )
    set_threads(config.threads)
    dataset, split = load_split(config)
    return device, dataset, split


def load_split(config: TrainConfig) -> tuple[Dataset, Split]:
    """The data set `config` names, split into train/validation/test as it says."""
    dataset = load_dataset(config.data)
    split = split_dataset(
        dataset,
        validation=config.validation,
        val_size=config.val_size,
        split_seed=config.split_seed,
        train_limit=config.train_limit,
        test_limit=config.test_limit,
    )
    return dataset, split


def _image_shape(dataset: Dataset) -> tuple[int, int, int]:
    """(H, W, C) of the data set's images: IDX images have one channel."""
    return (*dataset.x_train.shape[1:], 1)  # type: ignore[return-value]


def _check_fits(
    arch: Architecture,
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    device: torch.device,
) -> None:
    """The net must take the data's images, score its classes and fit in memory."""
    check_input(arch, _image_shape(dataset), config.data)
    info = infer(arch, dataset.num_classes)
    batch = min(config.batch_size, len(split.x_train))  # a big batch_size is capped
    check_memory(info, batch, config.optimizer, available_memory(device))


def _mark(record: RunRecord, status: str, **changes: Any) -> None:
    """Record the status of a run that stopped; a failing disk must not hide why."""
    try:
        record.save_meta(status=status, **changes)
    except CnnlabError:
        pass  # the error being raised already says what went wrong


def _kept(record: RunRecord) -> str:
    """What the run folder still holds after a failed epoch."""
    done = record.meta.get("epochs_done", 0)
    if not done:
        return "No epoch had finished, so the folder holds no weights."
    return (
        f"The checkpoint of epoch {done} is intact (cnnlab evaluate and predict use "
        "it)."
    )


def _run_training(
    record: RunRecord,
    model: Network,
    split: Split,
    config: TrainConfig,
    state: TrainState | None,
    hooks: Hooks,
) -> RunResult:
    """Train with a checkpoint per epoch, then score the test set and finish."""

    def checkpoint(s: TrainState) -> None:
        record.save_checkpoint(model, s)
        _plot_history(
            s.history.as_dict(), record.path / CURVES_FILE, title=record.meta["name"]
        )
        if hooks.on_epoch is not None:
            hooks.on_epoch(s)

    record.save_meta(status="running")
    if state is not None and state.epoch >= config.epochs:
        # Killed after its last checkpoint, before the curves were drawn: no epoch
        # will run to draw them, so do it here.
        _plot_history(
            state.history.as_dict(),
            record.path / CURVES_FILE,
            title=record.meta["name"],
        )
    try:
        history = fit(model, split, config, state, checkpoint, hooks.reporter)
        test_loss, test_acc = evaluate(model, split.x_test, split.y_test)
        clean = None
        if hooks.clean_train:  # the training set scored after the last epoch
            clean = evaluate(model, split.x_train, split.y_train)
        record.save_weights(model)
    except TrainingDiverged as err:  # resuming would diverge again: "failed"
        _mark(record, "failed", error=str(err))
        raise TrainingDiverged(
            f"{record.path}: {err} {_kept(record)} Train again with a smaller --lr "
            "(--overwrite replaces this run).",
            err.epoch,
            err.step,
        ) from err
    except CnnlabError as err:  # e.g. a full disk: fixable, then resumable
        _mark(record, "interrupted")
        raise RunError(
            f"{err} {_kept(record)} Once fixed, resume with: "
            f"cnnlab train --resume {record.path}"
        ) from err
    except BaseException:  # Ctrl-C or a crash: the last checkpoint stays resumable
        _mark(record, "interrupted")
        raise
    record.save_meta(
        status="completed",
        test={"loss": test_loss, "acc": test_acc},
        train_clean=None if clean is None else {"loss": clean[0], "acc": clean[1]},
    )
    return RunResult(record.path, model, history, test_loss, test_acc, clean)


@dataclass(frozen=True)
class Hooks:
    """Optional extras of a training run: progress display, per-epoch callback."""

    reporter: Reporter | None = None
    on_epoch: Callable[[TrainState], None] | None = None  # after each checkpoint
    clean_train: bool = False  # also score the training set after the last epoch


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
    config = config or TrainConfig()
    device, dataset, split = _prepare(config)
    _check_fits(arch, dataset, split, config, device)  # before the folder exists
    path = Path(out) if out is not None else default_run_path(arch.name)
    env = environment(device) | {
        "data_source": dataset.source,
        "class_names": list(dataset.class_names),
        "train_samples": len(split.x_train),
        "val_samples": 0 if split.x_val is None else len(split.x_val),
        "test_samples": len(split.x_test),
    }
    record = create_run(path, arch, config, env, overwrite=overwrite)
    model = build_model(arch, dataset.num_classes, seed=config.seed).to(device)
    hooks = hooks or Hooks(reporter=reporter)
    return _run_training(record, model, split, config, None, hooks)


def resume(
    run: str | Path,
    epochs: int | None = None,
    reporter: Reporter | None = None,
    hooks: Hooks | None = None,
) -> RunResult:
    """Continue an interrupted run from its last checkpoint (or extend its epochs)."""
    record = open_run(run)
    config = record.config.replace(epochs=epochs)
    if record.status == "completed" and record.meta["epochs_done"] >= config.epochs:
        raise RunError(
            f"{record.path}: already completed {record.meta['epochs_done']} epochs. "
            "Pass --epochs N with a larger N to train further."
        )
    arch = record.architecture()
    device, dataset, split = _prepare(config)
    _check_fits(arch, dataset, split, config, device)
    model = build_model(arch, dataset.num_classes, seed=config.seed).to(device)
    state = record.load_checkpoint(model)
    record.save_meta(config=config.to_dict())
    hooks = hooks or Hooks(reporter=reporter)
    return _run_training(record, model, split, config, state, hooks)


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
    check_input(model.arch, _image_shape(dataset), config.data)
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
