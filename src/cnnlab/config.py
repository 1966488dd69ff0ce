"""Training configuration: a frozen dataclass, defaults from the notebook and Keras."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from cnnlab.errors import CnnlabError

VALIDATIONS = ("holdout", "test", "none")
DEVICES = ("auto", "cpu", "cuda")

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

    def __post_init__(self) -> None:
        for name in ("epochs", "batch_size", "val_size"):
            _check_positive(name, getattr(self, name))
        for name in ("train_limit", "test_limit", "threads"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        _check_choice("optimizer", self.optimizer, tuple(OPTIMIZER_DEFAULTS))
        _check_choice("validation", self.validation, VALIDATIONS)
        _check_choice("device", self.device, DEVICES)
        if self.lr is not None and not (
            isinstance(self.lr, int | float) and 0 < self.lr < float("inf")
        ):
            raise CnnlabError(
                f"lr must be a positive number. Received: lr={self.lr!r}. "
                "Example: --lr 0.001."
            )
        for name in ("seed", "split_seed"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 0:
                raise CnnlabError(
                    f"{name} must be an integer >= 0. Received: {name}={value!r}."
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
        unknown = sorted(set(doc) - known)
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


def _check_positive(name: str, value: Any) -> None:
    if not isinstance(value, int) or isinstance(value, bool) or value <= 0:
        flag = name.replace("_", "-")
        raise CnnlabError(
            f"{name} must be a positive integer. Received: {name}={value!r}. "
            f"Example: --{flag} 10."
        )


def _check_choice(name: str, value: Any, choices: tuple[str, ...]) -> None:
    if value not in choices:
        raise CnnlabError(
            f"{name} must be one of {', '.join(choices)}. Received: {name}={value!r}."
        )
