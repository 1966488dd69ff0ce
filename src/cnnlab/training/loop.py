"""fit / evaluate: the training loop on in-memory tensors, with resumable state.

The whole data set stays in memory as uint8 tensors; each step gathers a batch by
index and scales it to [0, 1] (gathering 128 x 784 bytes and converting is cheaper
than keeping a float copy 4x the size). Shuffling draws a permutation from a seeded
generator, so data order, initial weights and dropout masks are all functions of the
seed, and a run resumed from a checkpoint continues exactly where it stopped.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
import torch.nn.functional as F

from cnnlab.data.augment import (
    MAX_SHIFT,
    augment_batch,
    epoch_generator,
    shifted_views,
)
from cnnlab.data.datasets import Split, channels_first
from cnnlab.errors import CnnlabError
from cnnlab.nn.model import Network
from cnnlab.nn.shapes import BYTES_PER_VALUE, ModelInfo
from cnnlab.training.config import OPTIMIZER_DEFAULTS, TrainConfig
from cnnlab.training.metrics import HISTORY_KEYS
from cnnlab.training.precision import FP32, NoScaler, autocast, make_scaler
from cnnlab.training.schedule import learning_rate

EVAL_BATCH = 1000  # evaluation needs no gradients: bigger batches, fewer calls...
# ... unless a batch's largest layer output outgrows this: net 1 of the seed study
# (26 x 26 x 512 values per image) evaluated ~1.5x faster in batches of 256 than of
# 1000, while the small nets were as fast or faster at 1000 (docs/benchmarks.md).
EVAL_ACTIVATION_BYTES = 384 * 2**20
MIN_EVAL_BATCH = 128
# Seconds between two progress reports and loss checks (each costs a host sync).
# By time, not by steps: a big net's step can take seconds on a small CPU,
# and a display that waits for 10 of them looks hung; a small net's
# thousands of steps per second would pay a sync each. The first step of an epoch
# is always reported, so even a slow net shows its speed after one step.
REPORT_SECONDS = 1.0


class TrainingDiverged(CnnlabError):
    """The loss or the weights became NaN or infinite; the epoch was abandoned."""

    def __init__(self, message: str, epoch: int, step: int) -> None:
        super().__init__(message)
        self.epoch = epoch
        self.step = step


class StopTraining(Exception):
    """Raised by an epoch callback to end training after `epoch` (a pruner's or a
    scheduler's decision): the run is scored as it stands and marked stopped early."""

    def __init__(self, epoch: int, reason: str = "") -> None:
        super().__init__(reason or f"stopped after epoch {epoch}")
        self.epoch = epoch


class _NonFinite(Exception):
    """Raised inside an epoch; `fit` turns it into a TrainingDiverged."""

    def __init__(self, step: int, value: float) -> None:
        super().__init__(step, value)
        self.step = step
        self.value = value


@dataclass
class History:
    """Per-epoch metrics, one dict per epoch, Keras's names (loss, acc, val_loss...).

    `loss` and `acc` are Keras's running means over the epoch's batches, taken in
    training mode (dropout on); `val_*` are measured after the epoch.
    """

    epochs: list[dict[str, float | int | None]] = field(default_factory=list)

    def column(self, key: str) -> list[Any]:
        return [row.get(key) for row in self.epochs]

    def as_dict(self) -> dict[str, list[Any]]:
        return {key: self.column(key) for key in HISTORY_KEYS}

    def __len__(self) -> int:
        return len(self.epochs)


class Reporter(Protocol):
    """What the loop tells a progress display; `cnnlab.progress` draws it."""

    def epoch_start(
        self, epoch: int, epochs: int, steps: int, samples: int
    ) -> None: ...
    def step(self, step: int, seen: int, loss: float, acc: float) -> None: ...
    def epoch_end(self, row: dict[str, Any]) -> None: ...


@dataclass
class TrainState:
    """Everything needed to continue training after epoch `epoch`."""

    epoch: int
    history: History
    optimizer: dict[str, Any]
    shuffle_rng: torch.Tensor
    torch_rng: torch.Tensor  # the CPU generator: dropout masks of a CPU model
    # Every CUDA device's generator (dropout masks on a GPU) when the model is on
    # CUDA; None on the CPU and in checkpoints written before it was kept.
    cuda_rng: list[torch.Tensor] | None = None
    # fp16's gradient scaler (its scale and growth count); None for fp32 and bf16
    # and in checkpoints written before precisions existed.
    scaler: dict[str, Any] | None = None


def make_optimizer(config: TrainConfig, params: Any) -> torch.optim.Optimizer:
    """The optimizer with Keras's defaults (see config.OPTIMIZER_DEFAULTS)."""
    d = OPTIMIZER_DEFAULTS[config.optimizer]
    lr = config.learning_rate
    # fused: one pass over each weight's memory instead of the foreach path's
    # several; the same update rule (preset 9's 6.75 M weights: +9% samples/s).
    if config.optimizer == "adam":
        return torch.optim.Adam(
            params, lr, betas=(d["beta_1"], d["beta_2"]), eps=d["epsilon"], fused=True
        )
    if config.optimizer == "adamw":
        betas = (d["beta_1"], d["beta_2"])
        return torch.optim.AdamW(
            params,
            lr,
            betas=betas,
            eps=d["epsilon"],
            weight_decay=d["weight_decay"],
            fused=True,
        )
    if config.optimizer == "sgd":
        return torch.optim.SGD(params, lr, momentum=d["momentum"])
    if config.optimizer == "rmsprop":
        return torch.optim.RMSprop(params, lr, alpha=d["rho"], eps=d["epsilon"])
    if config.optimizer == "adadelta":
        return torch.optim.Adadelta(params, lr, rho=d["rho"], eps=d["epsilon"])
    raise AssertionError(config.optimizer)


def as_input(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) or (N, H, W, C) uint8 -> (N, C, H, W) float in [0, 1],
    channels_last in memory.

    channels_last was the largest single speed-up for these nets on this CPU
    (3,299 -> 5,246 samples/s on preset 2, docs/benchmarks.md).
    """
    x = channels_first(x).float().div_(255.0)
    return x.contiguous(memory_format=torch.channels_last)


@dataclass(frozen=True)
class Scores:
    """A model's scores on a set of images, with its answer for each image."""

    loss: float  # mean cross-entropy
    acc: float
    predicted: torch.Tensor  # (N,) uint8: the predicted class of each image
    true_prob: torch.Tensor  # (N,) float32: the probability given to the true class


def eval_batch(info: ModelInfo) -> int:
    """Images per evaluation batch: EVAL_BATCH, fewer (not below MIN_EVAL_BATCH)
    where the largest layer output of a batch would pass EVAL_ACTIVATION_BYTES."""
    largest = max((math.prod(layer.output_shape) for layer in info.layers), default=1)
    fits = EVAL_ACTIVATION_BYTES // (largest * BYTES_PER_VALUE)
    return max(MIN_EVAL_BATCH, min(EVAL_BATCH, fits))


@torch.no_grad()
def class_probabilities(
    model: Network, xb: torch.Tensor, test_augment: str = "none", precision: str = FP32
) -> torch.Tensor:
    """(N, classes) float32 probabilities of a prepared batch (`as_input`); with
    test_augment "shift", the mean over the image and its four one-pixel moves.
    `precision`: the forward pass's (training.precision); softmax is float32."""
    views = [xb] if test_augment == "none" else shifted_views(xb)
    probs = []
    for view in views:
        with autocast(precision, view.device):
            logits = model(view)
        probs.append(logits.float().softmax(1))
    return probs[0] if len(probs) == 1 else torch.stack(probs).mean(0)


@torch.no_grad()
def score(
    model: Network,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None = None,
    test_augment: str = "none",
    precision: str = FP32,
) -> Scores:
    """Loss, accuracy and per-image answers of `model` on uint8 images `x`, labels
    `y`, in one pass (batches of `eval_batch(model.info)` unless given). With
    test_augment "shift" each image is scored by `class_probabilities`' mean over
    five views, and the loss is the cross-entropy of that mean. The forward pass
    runs in `precision` (mixed: autocast); the loss is float32 either way."""
    if batch_size is None:
        batch_size = eval_batch(model.info)
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    predicted, true_prob = [], []
    for start in range(0, len(x), batch_size):
        xb = as_input(x[start : start + batch_size].to(device))
        yb = y[start : start + batch_size].to(device)
        if test_augment == "none":  # from the logits: the stable form
            with autocast(precision, device):
                logits = model(xb)
            logits = logits.float()
            loss_sum += F.cross_entropy(logits, yb, reduction="sum")
            probs, answer = logits.float().softmax(1), logits.argmax(1)
        else:
            probs = class_probabilities(model, xb, test_augment, precision)
            tiny = torch.finfo(probs.dtype).tiny  # log(0) would be -inf
            loss_sum += F.nll_loss(probs.clamp_min(tiny).log(), yb, reduction="sum")
            answer = probs.argmax(1)
        predicted.append(answer.to(torch.uint8).cpu())
        true_prob.append(probs.gather(1, yb[:, None].long())[:, 0].cpu())
    model.train(was_training)
    pred = torch.cat(predicted) if predicted else torch.zeros(0, dtype=torch.uint8)
    probs = torch.cat(true_prob) if true_prob else torch.zeros(0)
    correct = (pred.long() == y.long().cpu()).sum().item()
    acc = correct / len(x) if len(x) else 0.0
    return Scores(loss_sum.item() / max(1, len(x)), acc, pred, probs)


def evaluate(
    model: Network,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int | None = None,
    test_augment: str = "none",
    precision: str = FP32,
) -> tuple[float, float]:
    """(mean cross-entropy, accuracy) of `model` on uint8 images `x`, labels `y`."""
    result = score(model, x, y, batch_size, test_augment, precision)
    return result.loss, result.acc


@dataclass(frozen=True)
class EpochPlan:
    """A recipe's per-step extras for one epoch; the default changes nothing.

    Every part is a function of (config, epoch), never of state carried between
    epochs, so a resumed run rebuilds the same plan (see `epoch_plan`).
    """

    lr_at: Callable[[int], float] | None = None  # 1-based step of the epoch -> lr
    shift: torch.Generator | None = None  # random_shift's generator; None: no shift
    label_smoothing: float = 0.0
    max_shift: int = MAX_SHIFT  # pixels, for `shift`
    augment: str = "shift"  # what `shift`'s generator drives (data.augment.AUGMENTS)

    def start_step(self, optimizer: torch.optim.Optimizer, step: int) -> None:
        if self.lr_at is not None:
            lr = self.lr_at(step)
            for group in optimizer.param_groups:
                group["lr"] = lr

    def images(self, xb: torch.Tensor) -> torch.Tensor:
        if self.shift is None:
            return xb
        return augment_batch(xb, self.augment, self.shift, self.max_shift)


def epoch_plan(config: TrainConfig, epoch: int, steps: int) -> EpochPlan:
    """The schedule's rates for epoch `epoch` (1-based) and its shift generator.

    The schedule spans `config.epochs` epochs of `steps` steps: resuming with a
    larger --epochs stretches what remains of it.
    """
    lr_at = None
    if config.schedule != "constant":
        total, before = config.epochs * steps, (epoch - 1) * steps
        peak = config.learning_rate

        def lr_at(step: int) -> float:
            return learning_rate(config.schedule, before + step - 1, total, peak)

    shift = None
    if config.augment != "none":
        shift = epoch_generator(config.seed, epoch)
    kind = {} if shift is None else {"augment": config.augment}
    return EpochPlan(lr_at, shift, config.label_smoothing, config.max_shift, **kind)


def train_epoch(
    model: Network,
    optimizer: torch.optim.Optimizer,
    x: torch.Tensor,
    y: torch.Tensor,
    batch_size: int,
    shuffle: torch.Generator,
    report: Callable[[int, int, float, float], None] | None = None,
    plan: EpochPlan = EpochPlan(),  # noqa: B008 (frozen, never mutated)
    precision: str = FP32,
    scaler: Any = None,
) -> tuple[float, float]:
    """One pass over (x, y) in shuffled batches; Keras's running (loss, acc).

    The forward pass runs in `precision` (training.precision: autocast for bf16 and
    fp16); the loss, the gradients' accumulation into the float32 weights and the
    optimizer step stay float32. `scaler`: fp16's gradient scaler (make_scaler).
    Raises _NonFinite at the first step whose loss is NaN or infinite.
    """
    if scaler is None:
        scaler = NoScaler()
    model.train()
    order = torch.randperm(len(x), generator=shuffle).to(x.device)
    steps = -(-len(x) // batch_size)
    losses = torch.empty(steps, device=x.device)  # per step, for the NaN check
    loss_sum = torch.zeros((), device=x.device)
    correct = torch.zeros((), device=x.device, dtype=torch.long)
    seen = checked = 0
    reported = -math.inf  # time.monotonic() of the last report: none yet
    for step, start in enumerate(range(0, len(x), batch_size), start=1):
        idx = order[start : start + batch_size]
        plan.start_step(optimizer, step)
        xb, yb = as_input(plan.images(x[idx])), y[idx]
        with autocast(precision, x.device):
            logits = model(xb)
        logits = logits.float()  # a no-op in fp32: the loss is float32 always
        loss = F.cross_entropy(logits, yb, label_smoothing=plan.label_smoothing)
        optimizer.zero_grad(set_to_none=True)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        # Accumulate on the device; reading a value forces a sync, so only the
        # loss check and the progress report do that, every REPORT_SECONDS.
        losses[step - 1] = loss.detach()
        loss_sum += loss.detach() * len(idx)
        correct += (logits.detach().argmax(1) == yb).sum()
        seen += len(idx)
        now = time.monotonic()  # ~50 ns: cheap enough for every step
        if now - reported >= REPORT_SECONDS or step == steps:
            _check_losses(losses, checked, step)
            checked, reported = step, time.monotonic()  # after the sync it waited
            if report is not None:
                report(step, seen, loss_sum.item() / seen, correct.item() / seen)
    return loss_sum.item() / seen, correct.item() / seen


def _check_losses(losses: torch.Tensor, done: int, step: int) -> None:
    """Raise _NonFinite for the first non-finite loss of steps done+1..step."""
    window = losses[done:step]
    bad = ~torch.isfinite(window)
    if bad.any():  # the one host sync per window
        first = int(bad.nonzero()[0])
        raise _NonFinite(done + first + 1, float(window[first]))


def fit(
    model: Network,
    split: Split,
    config: TrainConfig,
    state: TrainState | None = None,
    on_epoch_end: Callable[[TrainState], None] | None = None,
    reporter: Reporter | None = None,
) -> History:
    """Train `model` for `config.epochs` epochs, continuing from `state` if given.

    After each epoch `on_epoch_end` receives the state to checkpoint.
    """
    device = next(model.parameters()).device
    x, y = split.x_train.to(device), split.y_train.to(device)
    optimizer = make_optimizer(config, model.parameters())
    scaler = make_scaler(config.precision, device)
    shuffle = torch.Generator().manual_seed(config.seed)
    history = History()
    if state is None:
        torch.manual_seed(config.seed)  # dropout masks
    else:
        optimizer.load_state_dict(state.optimizer)
        if state.scaler:
            scaler.load_state_dict(state.scaler)
        shuffle.set_state(state.shuffle_rng)
        torch.set_rng_state(state.torch_rng)
        if device.type == "cuda":
            _restore_cuda_rng(state, config.seed)
        history = History([dict(row) for row in state.history.epochs])
    steps = -(-len(x) // config.batch_size)
    for epoch in range(len(history) + 1, config.epochs + 1):
        if reporter is not None:
            reporter.epoch_start(epoch, config.epochs, steps, len(x))
        started = time.perf_counter()
        report = reporter.step if reporter is not None else None
        try:
            plan = epoch_plan(config, epoch, steps)
            loss, acc = train_epoch(
                model,
                optimizer,
                x,
                y,
                config.batch_size,
                shuffle,
                report,
                plan,
                config.precision,
                scaler,
            )
        except _NonFinite as bad:
            raise _diverged(config, epoch, bad.step, steps, bad.value) from None
        row: dict[str, Any] = {"epoch": epoch, "loss": loss, "acc": acc}
        row["val_loss"], row["val_acc"] = None, None
        if split.x_val is not None:
            row["val_loss"], row["val_acc"] = evaluate(
                model,
                split.x_val,
                split.y_val,
                test_augment=config.test_augment,
                precision=config.precision,
            )
        _check_epoch(model, row, config, steps)  # never checkpoint broken weights
        row["seconds"] = time.perf_counter() - started
        history.epochs.append(row)
        if reporter is not None:
            reporter.epoch_end(row)
        if on_epoch_end is not None:
            on_epoch_end(
                TrainState(
                    epoch=epoch,
                    history=History([dict(r) for r in history.epochs]),
                    optimizer=optimizer.state_dict(),
                    shuffle_rng=shuffle.get_state(),
                    torch_rng=torch.get_rng_state(),
                    cuda_rng=cuda_rng_state(device),
                    scaler=scaler.state_dict() or None,
                )
            )
    return history


def cuda_rng_state(device: torch.device) -> list[torch.Tensor] | None:
    """The CUDA generators' states for a model on `device`; None on the CPU."""
    return torch.cuda.get_rng_state_all() if device.type == "cuda" else None


def _restore_cuda_rng(state: TrainState, seed: int) -> None:
    """Put the CUDA generators back as the checkpoint saved them.

    A checkpoint from a CPU run (or from before CUDA states were kept) has none:
    the generators are then seeded from (seed, epoch), so such a resumption is
    repeatable, though not the same as an uninterrupted run on the GPU.
    """
    if state.cuda_rng is None:
        torch.cuda.manual_seed_all((seed << 32) + state.epoch)  # seed < 2**32
        return
    for index, rng in enumerate(state.cuda_rng[: torch.cuda.device_count()]):
        torch.cuda.set_rng_state(rng, index)


def _check_epoch(
    model: Network, row: dict[str, Any], config: TrainConfig, steps: int
) -> None:
    """After an epoch: the weights and the metrics must all be finite."""
    finite = all(bool(torch.isfinite(t).all()) for t in model.state_dict().values())
    values = [row[k] for k in ("loss", "val_loss") if row[k] is not None]
    if not finite or not all(math.isfinite(v) for v in values):
        value = next((v for v in values if not math.isfinite(v)), math.nan)
        raise _diverged(config, row["epoch"], steps, steps, value, weights=True)


def _diverged(
    config: TrainConfig,
    epoch: int,
    step: int,
    steps: int,
    value: float,
    weights: bool = False,
) -> TrainingDiverged:
    """The error for a NaN or infinite loss: where it happened and likely causes."""
    kind = "NaN" if math.isnan(value) else "infinite"
    what = (
        "the weights or the validation loss became NaN or infinite after the "
        "epoch's last step"
        if weights
        else f"the loss became {kind}"
    )
    lr = config.learning_rate
    return TrainingDiverged(
        f"training diverged at epoch {epoch}, step {step} of {steps}: {what}. "
        f"Likely causes: a learning rate too high for this network ({config.optimizer}"
        f" with lr {lr:g}; try --lr {lr / 10:g} or smaller), or data it cannot "
        "handle (check the images and labels of --data).",
        epoch,
        step,
    )
