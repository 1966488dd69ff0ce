"""Train into a run folder: the one path from (architecture, config) to a finished,
scored run, shared by `cnnlab train`, the Python API and every study executor.

    check inputs -> create (or reopen) the run folder -> fit, a checkpoint per epoch
    -> finish_run (test and clean-train scores, weights, run.json)

Every way a run can stop passes through `mark_run`, the one place that records it.
"""

from __future__ import annotations

import html
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from cnnlab.data.datasets import (
    Dataset,
    Split,
    check_own_holdout,
    load_dataset,
    split_dataset,
)
from cnnlab.data.folders import ImageOptions
from cnnlab.data.standardize import channel_stats
from cnnlab.errors import CnnlabError, RunError
from cnnlab.nn import convpath
from cnnlab.nn.adapt import adapt_to_data
from cnnlab.nn.model import Network, build_model
from cnnlab.nn.shapes import check_input, check_memory, infer
from cnnlab.nn.spec import Architecture
from cnnlab.training.allocator import keep_large_blocks
from cnnlab.training.config import TrainConfig, holdout_asked
from cnnlab.training.curves import plot_history
from cnnlab.training.loop import (
    History,
    Reporter,
    Scores,
    StopTraining,
    TrainingDiverged,
    TrainState,
    evaluate,
    fit,
    score,
)
from cnnlab.training.metrics import EPOCH_METRICS
from cnnlab.training.precision import FP32, check_precision
from cnnlab.training.runs import (
    CHECKPOINT_FILE,
    CURVES_FILE,
    SPEC_FILE,
    WEIGHTS_FILE,
    RunRecord,
    check_new_run,
    create_run,
    make_run_folder,
    open_run,
    run_lock,
)
from cnnlab.training.status import Status, status_for
from cnnlab.util.machine import (
    available_memory,
    environment,
    pick_device,
    set_threads,
)


@dataclass
class RunResult:
    """A finished (or resumed-to-the-end) training run."""

    path: Path
    model: Network
    history: History
    test_loss: float | None  # None: the test set was not read (a search trial)
    test_acc: float | None
    train_clean: tuple[float, float] | None = None  # (loss, acc), dropout off
    status: Status = Status.COMPLETED  # or STOPPED_EARLY: an epoch callback said so

    @property
    def meta(self) -> dict[str, Any]:
        """The run's run.json."""
        return open_run(self.path).meta

    def __repr__(self) -> str:
        """One line (a REPL shows it), not the network's layers."""
        scored = (
            "test set not read"
            if self.test_acc is None
            else f"test accuracy {self.test_acc:.2%}"
        )
        return (
            f"<RunResult {str(self.path)!r}: {self.status.value}, "
            f"{len(self.history)} epochs, {scored}>"
        )

    def _repr_html_(self) -> str:
        """The run's folder and scores as a small HTML table (Jupyter shows it)."""
        last = self.history.epochs[-1] if self.history.epochs else {}
        rows = [("run folder", str(self.path)), ("epochs", str(len(self.history)))]
        config = self.meta.get("config")
        if isinstance(config, dict):
            rows.append(("precision", str(config.get("precision", FP32))))
        for key in EPOCH_METRICS:
            value = last.get(key)
            rows.append((f"final {key}", "-" if value is None else f"{value:.4f}"))
        if self.test_loss is not None and self.test_acc is not None:
            rows.append(("test loss", f"{self.test_loss:.4f}"))
            rows.append(("test accuracy", f"{self.test_acc:.4f} ({self.test_acc:.2%})"))
        else:
            rows.append(("test set", "not read"))
        cells = "".join(
            f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td></tr>"
            for k, v in rows
        )
        return f'<table class="cnnlab-run">{cells}</table>'


@dataclass(frozen=True)
class Hooks:
    """Optional extras of a training run: progress display, per-epoch callback."""

    reporter: Reporter | None = None
    on_epoch: Callable[[TrainState], None] | None = None  # after each checkpoint
    clean_train: bool = False  # also score the training set after the last epoch
    score_test: bool = True  # False: never read the test set (search candidates)


def image_options(config: TrainConfig) -> ImageOptions:
    """How `config` reads image folders."""
    return ImageOptions(
        image_size=config.image_size,
        color=config.color,
        skip_bad_images=config.skip_bad_images,
        test_fraction=config.test_fraction,
        split_seed=config.split_seed,
    )


def load_split(config: TrainConfig) -> tuple[Dataset, Split]:
    """The data set `config` names, split into train/validation/test as it says.

    An IDX data set holds out `val_size` images, or a stratified `val_fraction`
    when one is asked for; any other (image folder, .npz, CIFAR) its own val/
    folder, else a stratified `val_fraction` of its training images unless val_size
    was changed from its default. A size asked for on a set with its own val/
    folder is an error (`check_own_holdout`)."""
    dataset = load_dataset(config.data, image_options(config))
    asked = holdout_asked(config)
    check_own_holdout(dataset, config.validation, asked)
    by_share = "val_fraction" in asked or (
        bool(dataset.info.get("kind")) and "val_size" not in asked
    )
    split = split_dataset(
        dataset,
        validation=config.validation,
        val_size=config.val_size,
        split_seed=config.split_seed,
        train_limit=config.train_limit,
        test_limit=config.test_limit,
        val_fraction=config.val_fraction if by_share else None,
    )
    return dataset, split


def split_sizes(config: TrainConfig) -> tuple[int, int, int]:
    """(train, validation, test) images of the split `config` asks for."""
    _, split = load_split(config)
    val = 0 if split.x_val is None else len(split.x_val)
    return len(split.x_train), val, len(split.x_test)


def prepare(config: TrainConfig) -> tuple[torch.device, Dataset, Split]:
    """Device, thread count, precision and data: everything checked before a file
    is written."""
    device = pick_device(config.device)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RunError(
            "--device cuda was asked for, but PyTorch sees no GPU. Use --device cpu."
        )
    check_precision(config.precision, device)
    set_threads(config.threads)
    keep_large_blocks()
    dataset, split = load_split(config)
    return device, dataset, split


def fitted_arch(arch: Architecture, config: TrainConfig) -> Architecture:
    """`arch` as `train_run` builds it for `config`'s data: fitted to the data's
    image shape and class count (`adapt_to_data`), so that a preset on 32x32x3
    images is counted (FLOPs, parameters, time) as such, not as the 28x28x1 net its
    file states. As written when the data cannot be read (training then says why).
    Data sets are memoized by their loaders: asking again costs little."""
    try:
        dataset = load_dataset(config.data, image_options(config))
    except CnnlabError:
        return arch
    return adapt_to_data(arch, image_shape(dataset), dataset.num_classes)


def image_shape(dataset: Dataset) -> tuple[int, int, int]:
    """(H, W, C) of the data set's images: IDX images have one channel."""
    return dataset.image_shape


def batch_of(config: TrainConfig, split: Split) -> int:
    """The batch a run trains with: a batch_size over the training set is capped."""
    return min(config.batch_size, len(split.x_train))


def check_fits(
    arch: Architecture,
    dataset: Dataset,
    split: Split,
    config: TrainConfig,
    device: torch.device,
) -> None:
    """The net must take the data's images, score its classes and fit in memory."""
    check_input(arch, image_shape(dataset), config.data)
    info = infer(arch, dataset.num_classes)
    memory = available_memory(device)
    check_memory(info, batch_of(config, split), config.optimizer, memory)


def use_conv_path(
    model: Network,
    device: torch.device,
    batch: int,
    kept: str | None = None,
    precision: str = FP32,
) -> str | None:
    """Set which path runs the net's wide conv layers and return it (None: the
    net has none, or runs on a GPU). `kept`: the path a resumed run trained with,
    kept unless CNNLAB_CONV_PATH says otherwise or NNPACK is missing here.
    NNPACK computes in float32 only, so mixed precision takes oneDNN's, which
    runs the convolutions in bf16 under autocast."""
    if device.type != "cpu" or not model.wide_convs():
        return None
    if precision != FP32:
        model.set_conv_path(convpath.ONEDNN)
        return convpath.ONEDNN
    path = convpath.override() or kept
    if path is None:
        path = convpath.choose(model.conv_shapes(), batch, torch.get_num_threads())
    if path in convpath.NNPACK_PATHS and not convpath.usable():
        path = convpath.ONEDNN
    model.set_conv_path(path)
    return path


def run_environment(device: torch.device, dataset: Dataset, split: Split) -> dict:
    """run.json's `environment`: the machine, and the data the run saw."""
    return environment(device) | {
        "data_source": dataset.source,
        "class_names": list(dataset.class_names),
        **({"data_info": dataset.info} if dataset.info else {}),
        "train_samples": len(split.x_train),
        "val_samples": 0 if split.x_val is None else len(split.x_val),
        "test_samples": len(split.x_test),
    }


def mark_run(record: RunRecord, error: BaseException) -> Status:
    """Record in run.json why a run stopped; a failing disk must not hide why.

    The one funnel for every way a run ends early (Ctrl-C, SIGTERM, a crash, a full
    disk, divergence); returns the status written.
    """
    status = status_for(error)
    changes: dict[str, Any] = {"status": status}
    if status is Status.FAILED:
        changes["error"] = str(error)
    try:
        record.save_meta(**changes)
    except CnnlabError:
        pass  # the error being raised already says what went wrong
    return status


def kept_text(record: RunRecord) -> str:
    """What the run folder still holds after a failed epoch."""
    done = record.meta.get("epochs_done", 0)
    if not done:
        return "No epoch had finished, so the folder holds no weights."
    return (
        f"The checkpoint of epoch {done} is intact (cnnlab evaluate and predict use "
        "it)."
    )


def finish_run(
    record: RunRecord,
    model: Network,
    split: Split,
    hooks: Hooks,
    status: Status = Status.COMPLETED,
    **extra: Any,
) -> tuple[tuple[float, float] | None, tuple[float, float] | None]:
    """Score the test set (unless `hooks.score_test` is off) and the training set
    (dropout off, if asked), save the final weights, then write run.json's scores,
    its count of test-set reads and `status`: the last write, so a kill before it
    leaves a resumable run. Returns (test, clean-train) scores."""
    answers: dict[str, dict[str, Any]] = {}
    test = None
    views, precision = record.config.test_augment, record.config.precision
    if hooks.score_test:
        scored = score(model, split.x_test, split.y_test, None, views, precision)
        test = (scored.loss, scored.acc)
        answers["test"] = per_image(scored, split.y_test)
    if split.x_val is not None and split.x_val is not split.x_test:
        scored = score(model, split.x_val, split.y_val, None, views, precision)
        answers["val"] = per_image(scored, split.y_val)
    clean = None
    if hooks.clean_train:  # scored as the test set is, so the two compare
        x, y = split.x_train, split.y_train
        clean = evaluate(model, x, y, None, views, precision)
    record.save_weights(model)
    record.save_predictions(answers)
    reads = int(record.meta.get("test_reads") or 0) + (test is not None)
    record.save_meta(
        status=status,
        test=None if test is None else {"loss": test[0], "acc": test[1]},
        test_reads=reads,
        train_clean=None if clean is None else {"loss": clean[0], "acc": clean[1]},
        **extra,
    )
    return test, clean


def per_image(scored: Scores, labels: torch.Tensor) -> dict[str, Any]:
    """The compact per-image record kept in a run folder and the store."""
    return {
        "labels": labels.to(torch.uint8).numpy(),
        "predicted": scored.predicted.numpy(),
        "true_prob": scored.true_prob.to(torch.float16).numpy(),
    }


# curves.png is redrawn after an epoch when this long has passed since it was last
# drawn, and always after the last epoch: a draw costs about as much as an epoch of
# a small net on a few thousand images, and a run of long epochs redraws each time.
CURVES_EVERY_S = 10.0


def draw_curves(record: RunRecord, history: History) -> None:
    plot_history(
        history.as_dict(), record.path / CURVES_FILE, title=record.meta["name"]
    )


def run_training(
    record: RunRecord,
    model: Network,
    split: Split,
    config: TrainConfig,
    state: TrainState | None,
    hooks: Hooks,
) -> RunResult:
    """Train with a checkpoint per epoch, then score the test set and finish."""

    drawn = time.monotonic()  # when curves.png was last drawn
    drawn_epoch = 0  # and up to which epoch

    def checkpoint(s: TrainState) -> None:
        nonlocal drawn, drawn_epoch
        record.save_checkpoint(model, s)
        if s.epoch >= config.epochs or time.monotonic() - drawn >= CURVES_EVERY_S:
            draw_curves(record, s.history)
            drawn, drawn_epoch = time.monotonic(), s.epoch
        if hooks.on_epoch is not None:
            hooks.on_epoch(s)

    status = Status.COMPLETED
    try:
        record.save_meta(status=Status.RUNNING)
        if state is not None and state.epoch >= config.epochs:
            # Killed after its last checkpoint, before the curves were drawn: no
            # epoch will run to draw them, so do it here.
            draw_curves(record, state.history)
        try:
            history = fit(model, split, config, state, checkpoint, hooks.reporter)
            test, clean = finish_run(record, model, split, hooks)
        except StopTraining as stop:  # after its checkpoint: scored as it stands
            status, history = Status.STOPPED_EARLY, record.history()
            if drawn_epoch != stop.epoch:  # the stop's epoch was not the last
                draw_curves(record, history)
            test, clean = finish_run(
                record, model, split, hooks, status, stopped_epoch=stop.epoch
            )
    except BaseException as err:
        mark_run(record, err)
        if isinstance(err, TrainingDiverged):
            raise TrainingDiverged(
                f"{record.path}: {err} {kept_text(record)} Train again with a "
                "smaller --lr (--overwrite replaces this run).",
                err.epoch,
                err.step,
            ) from err
        if isinstance(err, CnnlabError):  # e.g. a full disk: fixable, then resumable
            raise RunError(
                f"{err} {kept_text(record)} Once fixed, resume with: "
                f"cnnlab train --resume {record.path}"
            ) from err
        raise  # Ctrl-C or a crash: the last checkpoint stays resumable
    loss, acc = (None, None) if test is None else test
    return RunResult(record.path, model, history, loss, acc, clean, status)


def train_run(
    arch: Architecture,
    config: TrainConfig,
    out: Path,
    overwrite: bool = False,
    hooks: Hooks | None = None,
) -> RunResult:
    """Train `arch` into the new run folder `out` and score it on the test set."""
    device, dataset, split = prepare(config)
    arch = adapt_to_data(arch, image_shape(dataset), dataset.num_classes)
    check_fits(arch, dataset, split, config, device)  # before the folder exists
    check_new_run(out, overwrite)  # before the folder is made
    model = build_model(arch, dataset.num_classes, seed=config.seed).to(device)
    stats = channel_stats(split.x_train) if config.standardize else None
    model.set_standardization(stats)
    path = use_conv_path(
        model, device, batch_of(config, split), precision=config.precision
    )
    env = run_environment(device, dataset, split) | {"conv_path": path}
    make_run_folder(out)
    with run_lock(out):
        record = create_run(out, arch, config, env, overwrite, stats)
        return run_training(record, model, split, config, None, hooks or Hooks())


def resume_run(
    run: str | Path, changes: dict[str, Any] | None = None, hooks: Hooks | None = None
) -> RunResult:
    """Continue a run from its last checkpoint, applying `changes` (only the
    settings in `RESUMABLE`: more epochs, another device or thread count)."""
    with run_lock(open_run(run).path):
        record = open_run(run)  # read again: the last writer may just have finished
        return _resume_locked(record, changes or {}, hooks or Hooks())


def _resume_locked(
    record: RunRecord, changes: dict[str, Any], hooks: Hooks
) -> RunResult:
    config = record.config.resume_with(changes)
    if record.is_complete(config.epochs):
        raise RunError(
            f"{record.path}: already completed {record.meta['epochs_done']} epochs. "
            "Pass --epochs N with a larger N to train further."
        )
    no_checkpoint = not (record.path / CHECKPOINT_FILE).is_file()
    if no_checkpoint and (record.path / WEIGHTS_FILE).is_file():
        raise RunError(
            f"{record.path}: holds final weights but no training checkpoint (an "
            "imported model?), so there is nothing to resume; resuming would replace "
            "its weights. Train the architecture anew: cnnlab train "
            f"{record.path / SPEC_FILE}."
        )
    record.check_spec_unchanged()
    arch = record.architecture()
    device, dataset, split = prepare(config)
    check_fits(arch, dataset, split, config, device)
    model = build_model(arch, dataset.num_classes, seed=config.seed).to(device)
    batch = batch_of(config, split)
    path = use_conv_path(model, device, batch, record.conv_path, config.precision)
    state = record.load_checkpoint(model)
    env = record.meta.get("environment")
    if isinstance(env, dict) and env.get("conv_path") != path:
        record.save_meta(environment=env | {"conv_path": path})
    record.save_meta(config=config.to_dict())
    return run_training(record, model, split, config, state, hooks)
