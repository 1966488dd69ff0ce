"""Training configuration: a frozen dataclass, defaults from the notebook and Keras."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.data.augment import AUGMENTS, MAX_SHIFT, SHIFT_LIMIT, TEST_AUGMENTS
from cnnlab.data.folders import COLORS
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.nn.presets import RECIPE_KEY, preset_names, recipe_settings
from cnnlab.training.schedule import SCHEDULES
from cnnlab.util.text import is_int, is_number, show_value

VALIDATIONS = ("holdout", "test", "none")
DEVICES = ("auto", "cpu", "cuda")
MAX_COUNT = 2**31 - 1  # epochs, batch size, limits, threads: far past any real run
MAX_SEED = 2**32 - 1  # torch takes seeds < 2**64, numpy's legacy seeding < 2**32
# Settings a resumed run may change: they extend it (epochs) or pick the machine it
# runs on (device, threads) without changing its results. Every other field is fixed
# once a run has started.
RESUMABLE = ("epochs", "device", "threads")

# Keras 3's optimizer defaults (keras.optimizers.*): learning rate and epsilon.
# Adadelta follows Keras 3 / tf.keras 2.x (learning_rate=0.001, rho=0.95,
# epsilon=1e-7); the 2019-era Keras 2.2 the notebook ran used lr=1.0, which
# `--lr 1.0` reproduces.
OPTIMIZER_DEFAULTS: dict[str, dict[str, float]] = {
    "adam": {"lr": 1e-3, "beta_1": 0.9, "beta_2": 0.999, "epsilon": 1e-7},
    "adamw": {
        "lr": 1e-3,
        "beta_1": 0.9,
        "beta_2": 0.999,
        "epsilon": 1e-7,
        "weight_decay": 0.004,
    },
    "sgd": {"lr": 0.01, "momentum": 0.0},
    "rmsprop": {"lr": 1e-3, "rho": 0.9, "epsilon": 1e-7},
    "adadelta": {"lr": 1e-3, "rho": 0.95, "epsilon": 1e-7},
}


@dataclass(frozen=True)
class TrainConfig:
    """How to train one network. Every default is the notebook's or Keras's."""

    epochs: int = 12  # the notebook trains every net for 12 epochs
    batch_size: int = 128  # the notebook's batch size
    optimizer: str = "adam"  # the notebook compiles every net with Adam()
    lr: float | None = None  # None: the optimizer's Keras default (above)
    seed: int = 0  # initial weights, shuffling and dropout
    data: str = "mnist"  # "mnist", "fashion-mnist" or an IDX folder
    validation: str = "holdout"  # holdout | test (the notebook's) | none
    val_size: int = 10_000  # images held out of training when validation=holdout
    split_seed: int = 0  # which images are held out; fixed across seeds
    train_limit: int | None = None  # use only this many training images
    test_limit: int | None = None  # use only this many test images
    device: str = "auto"  # auto: CUDA when present, else CPU
    threads: int | None = None  # CPU threads; None: PyTorch's default (all cores)
    # Additions for recipes such as `fast`; the defaults are the notebook's protocol.
    schedule: str = "constant"  # constant | onecycle (training.schedule), per step
    augment: str = "none"  # none | shift | flip | crop | crop+flip (data.augment)
    label_smoothing: float = 0.0  # PyTorch's cross_entropy label_smoothing, [0, 1)
    max_shift: int = MAX_SHIFT  # augment=shift: largest move in pixels, 1 to 16
    # none | shift: score each image (validation, test, predict) as the mean class
    # probabilities of itself and its four 1-pixel moves (data.augment.TEST_SHIFTS)
    test_augment: str = "none"
    # Image folders, .npz archives and CIFAR files (data.folders, docs/data.md).
    image_size: tuple[int, int] | None = None  # [H, W]: resize images to this
    color: str | None = None  # rgb | grayscale: convert images to this
    skip_bad_images: bool = False  # skip (and count) unreadable image files
    test_fraction: float = 0.2  # class folders only: stratified share for testing
    val_fraction: float = 0.1  # stratified hold-out share of non-IDX data sets

    def __post_init__(self) -> None:
        _check_image_settings(self)
        for name in ("epochs", "batch_size", "val_size"):
            _check_positive(name, getattr(self, name))
        for name in ("train_limit", "test_limit", "threads"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        _check_choice("optimizer", self.optimizer, tuple(OPTIMIZER_DEFAULTS))
        _check_choice("validation", self.validation, VALIDATIONS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("augment", self.augment, AUGMENTS)
        _check_choice("test_augment", self.test_augment, TEST_AUGMENTS)
        smoothing = self.label_smoothing
        if not (is_number(smoothing) and 0 <= smoothing < 1):
            raise CnnlabError(
                "label_smoothing must be a number from 0 up to (not including) 1. "
                f"Received: label_smoothing={show_value(smoothing)}. "
                "Example: --label-smoothing 0.1."
            )
        shift = self.max_shift
        if not is_int(shift) or not 1 <= shift <= SHIFT_LIMIT:
            raise CnnlabError(
                f"max_shift must be an integer from 1 to {SHIFT_LIMIT} (pixels). "
                f"Received: max_shift={show_value(shift)}. "
                "Example: max_shift: 1 in a recipe's train: settings."
            )
        lr = self.lr
        if lr is not None and not (is_number(lr) and 0 < lr <= sys.float_info.max):
            raise CnnlabError(
                f"lr must be a positive number. Received: lr={show_value(lr)}. "
                "Example: --lr 0.001."
            )
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if not is_int(value) or not 0 <= value <= MAX_SEED:
                raise CnnlabError(
                    f"{name} must be an integer from 0 to {MAX_SEED}. "
                    f"Received: {name}={show_value(value)}."
                )

    @property
    def learning_rate(self) -> float:
        """The learning rate in use: the given one, or the optimizer's default."""
        return (
            self.lr if self.lr is not None else OPTIMIZER_DEFAULTS[self.optimizer]["lr"]
        )

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, doc: dict[str, Any]) -> TrainConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(show_value(k) for k in doc if k not in known)
        if unknown:
            raise CnnlabError(
                f"unknown training setting(s): {', '.join(unknown)}. "
                f"Known: {', '.join(sorted(known))}."
            )
        return cls(**doc)

    def replace(self, **changes: Any) -> TrainConfig:
        """A copy with the given fields changed; `None` values are ignored."""
        return dataclasses.replace(
            self, **{k: v for k, v in changes.items() if v is not None}
        )

    def resume_with(self, changes: dict[str, Any]) -> TrainConfig:
        """This (saved) config with the RESUMABLE settings of `changes` applied;
        other keys of `changes` must equal the saved values."""
        fixed = sorted(
            k
            for k, v in changes.items()
            if k not in RESUMABLE and v is not None and getattr(self, k) != v
        )
        if fixed:
            raise CnnlabError(
                f"a resumed run keeps its settings; {', '.join(fixed)} cannot change "
                f"(only {', '.join(RESUMABLE)} may)."
            )
        return self.replace(**{k: changes.get(k) for k in RESUMABLE})

    def changed_from(self, saved: dict[str, Any]) -> list[str]:
        """Settings of this config that differ from a run's saved config, but for
        those a resumption may change. A key the saved config lacks (written by an
        older cnnlab) counts as its default, which is what that run used."""
        try:
            saved = TrainConfig.from_dict(saved).to_dict()
        except CnnlabError:
            pass  # compared as saved: every unreadable key shows up as changed
        wanted = self.to_dict()
        return [
            key
            for key in wanted
            if key not in RESUMABLE and saved.get(key) != wanted[key]
        ]


def _check_image_settings(config: TrainConfig) -> None:
    """image_size, color, skip_bad_images and the two fractions."""
    size = config.image_size
    if size is not None:
        ok = (
            isinstance(size, list | tuple)
            and len(size) == 2
            and all(is_int(v) and 1 <= v <= 4096 for v in size)
        )
        if not ok:
            raise CnnlabError(
                "image_size must be two integers [height, width] from 1 to 4096. "
                f"Received: image_size={show_value(size)}. Example: --image-size 32 32."
            )
        object.__setattr__(config, "image_size", (int(size[0]), int(size[1])))
    if config.color is not None:
        _check_choice("color", config.color, COLORS)
    if not isinstance(config.skip_bad_images, bool):
        raise CnnlabError(
            "skip_bad_images must be true or false. "
            f"Received: skip_bad_images={show_value(config.skip_bad_images)}."
        )
    for name in ("test_fraction", "val_fraction"):
        value = getattr(config, name)
        if not (is_number(value) and 0 < value < 1):
            raise CnnlabError(
                f"{name} must be a number between 0 and 1 (exclusive). "
                f"Received: {name}={show_value(value)}. Example: {name}: 0.2."
            )


def _check_positive(name: str, value: Any) -> None:
    if not is_int(value) or not 0 < value <= MAX_COUNT:
        flag = name.replace("_", "-")
        raise CnnlabError(
            f"{name} must be a positive integer (at most {MAX_COUNT:,}). "
            f"Received: {name}={show_value(value)}. Example: --{flag} 10."
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if not isinstance(value, str) or value not in choices:
        raise CnnlabError(
            f"{name} must be one of {', '.join(choices)}. "
            f"Received: {name}={show_value(value)}."
        )


def recipe_config(name_or_path: str | Path) -> TrainConfig:
    """The training defaults for `cnnlab train NAME`: a recipe's, else TrainConfig().

    Non-recipe presets, and files without a `train:` mapping, train with the
    notebook's protocol.
    """
    settings = recipe_settings(name_or_path)
    if not settings:
        return TrainConfig()
    try:
        return TrainConfig.from_dict(TrainConfig().to_dict() | settings)
    except CnnlabError as err:
        text = str(name_or_path)
        what = f"preset {text}" if text in preset_names() else text  # or a file
        raise SpecError(f"{what}: {RECIPE_KEY}: {err}") from err
