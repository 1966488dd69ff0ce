"""Training configuration: a frozen dataclass, defaults from the notebook and Keras."""

from __future__ import annotations

import dataclasses
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.data.augment import AUGMENTS, MAX_SHIFT, SHIFT_LIMIT, TEST_AUGMENTS
from cnnlab.data.folders import COLORS
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.nn.model import MAX_SEED as MAX_SEED  # one limit for every seed
from cnnlab.nn.presets import RECIPE_KEY, preset_names, recipe_settings
from cnnlab.training.precision import PRECISIONS
from cnnlab.training.schedule import SCHEDULES
from cnnlab.util.messages import must_be_one_of, received
from cnnlab.util.text import is_int, is_number, show_value

VALIDATIONS = ("holdout", "test", "none")
DEVICES = ("auto", "cpu", "cuda")
MAX_COUNT = 2**31 - 1  # epochs, batch size, limits, threads: far past any real run
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


def setting(
    default: Any,
    help: str,
    *,
    kind: str = "text",
    choices: tuple[str, ...] = (),
    group: str = "training",
    override: bool = False,
    flag: bool = True,
) -> Any:
    """A TrainConfig field with what the command line and the docs say about it.

    `kind` picks the flag's parser (count: a positive integer, seed: an integer >= 0,
    rate: a positive number, number: any number, fraction: a number in (0, 1),
    size: two positive integers H W, switch: on when given, choice: one of
    `choices`, text);
    `override`: studies and searches may set it for every net (--epochs ...);
    `flag`: False for settings only files and the API set.
    """
    meta = {"help": help, "kind": kind, "choices": choices, "group": group}
    return field(default=default, metadata=meta | {"override": override, "flag": flag})


@dataclass(frozen=True)
class TrainConfig:
    """How to train one network. Every default is the notebook's or Keras's.

    Each field's `help` is the one description of the setting: `--help`, the study
    overrides and the flags table in docs/training.md are made from it.
    """

    # The notebook trains every net for 12 epochs, batch 128, with Adam().
    epochs: int = setting(12, "epochs to train", kind="count", override=True)
    batch_size: int = setting(128, "samples per step", kind="count")
    optimizer: str = setting(
        "adam",
        "optimizer with Keras 3's defaults",
        kind="choice",
        choices=tuple(OPTIMIZER_DEFAULTS),
    )
    # None: the optimizer's Keras default (OPTIMIZER_DEFAULTS)
    lr: float | None = setting(
        None, "learning rate (default: the optimizer's Keras default)", kind="rate"
    )
    seed: int = setting(0, "initial weights, data order and dropout", kind="seed")
    data: str = setting(
        "mnist",
        "mnist (embedded), fashion-mnist (Debian's dataset-fashion-mnist), a "
        "folder of IDX files, CIFAR binary files or class folders of images, or an "
        ".npz archive (docs/data.md)",
        group="data",
    )
    validation: str = setting(
        "holdout",
        "holdout: a seeded hold-out of the training set; test: validate on the "
        "test set every epoch, as the notebook does; none",
        kind="choice",
        choices=VALIDATIONS,
        group="data",
    )
    # images held out of training when validation=holdout
    val_size: int = setting(
        10_000, "hold-out size", kind="count", group="data", override=True
    )
    # which images are held out; fixed across seeds
    split_seed: int = setting(0, "which images are held out", kind="seed", flag=False)
    train_limit: int | None = setting(
        None,
        "train on only the first N training images (default: all)",
        kind="count",
        group="data",
        override=True,
    )
    test_limit: int | None = setting(
        None,
        "test on only the first N test images (default: all)",
        kind="count",
        group="data",
        override=True,
    )
    device: str = setting(
        "auto",
        "auto: CUDA when PyTorch sees a GPU, else CPU",
        kind="choice",
        choices=DEVICES,
        group="machine",
        override=True,
    )
    # None: PyTorch's default (all cores)
    threads: int | None = setting(
        None,
        "CPU threads (default: all cores)",
        kind="count",
        group="machine",
        override=True,
    )
    # Additions for recipes such as `fast`; the defaults are the notebook's protocol.
    schedule: str = setting(
        "constant",
        "learning rate per step: constant, or onecycle (warm-up to --lr over the "
        "first 30% of steps, then anneal)",
        kind="choice",
        choices=SCHEDULES,
    )
    augment: str = setting(
        "none",
        "shift: random translations of up to --max-shift pixels, per image; flip: "
        "mirror half the images left-right; crop: pad 4 and crop back at random; "
        "crop+flip",
        kind="choice",
        choices=AUGMENTS,
    )
    label_smoothing: float = setting(
        0.0, "cross-entropy label smoothing, from 0 up to 1", kind="number"
    )
    max_shift: int = setting(
        MAX_SHIFT,
        f"largest shift in pixels for --augment shift, 1 to {SHIFT_LIMIT}",
        kind="count",
    )
    # data.augment.TEST_SHIFTS
    test_augment: str = setting(
        "none",
        "shift: score every image (validation, test, predict) as the mean class "
        "probabilities of itself and its four 1-pixel moves; 5x the scoring work",
        kind="choice",
        choices=TEST_AUGMENTS,
    )
    # training.precision; fixed once a run has started (not RESUMABLE)
    precision: str = setting(
        "fp32",
        "fp32 (Keras's float32); bf16: mixed precision, float32 weights, on a CPU "
        "with native bf16 (avx512_bf16, amx_bf16) or a GPU; fp16: mixed, CUDA only",
        kind="choice",
        choices=PRECISIONS,
        group="machine",
        override=True,
    )
    # Image folders, .npz archives and CIFAR files (data.folders, docs/data.md).
    image_size: tuple[int, int] | None = setting(
        None,
        "image folders: resize every image to H x W (bilinear filter)",
        kind="size",
        group="images",
    )
    color: str | None = setting(
        None,
        "image folders: convert every image to rgb or grayscale",
        kind="choice",
        choices=COLORS,
        group="images",
    )
    skip_bad_images: bool = setting(
        False,
        "image folders: skip (and count) unreadable image files",
        kind="switch",
        group="images",
    )
    standardize: bool = setting(
        False,
        "standardise each channel with the training split's mean and std, kept "
        "with the run (docs/data.md)",
        kind="switch",
        group="images",
    )
    test_fraction: float = setting(
        0.2,
        "a folder of class folders only: the stratified share tested on",
        kind="fraction",
        group="images",
    )
    val_fraction: float = setting(
        0.1,
        "the stratified hold-out share: the default for image folders, .npz and "
        "CIFAR without val/ (--val-size N sets a count instead); IDX data such as "
        "MNIST hold out --val-size images unless this is given",
        kind="fraction",
        group="images",
    )

    def __post_init__(self) -> None:
        _check_image_settings(self)
        for name in ("epochs", "batch_size", "val_size"):
            _check_positive(name, getattr(self, name))
        if len(holdout_asked(self)) == 2:
            raise CnnlabError(
                "val_size and val_fraction both size the hold-out; set one of them. "
                f"Received: val_size={self.val_size}, "
                f"val_fraction={show_value(self.val_fraction)}. "
                "Example: --val-size 500 (a count) or --val-fraction 0.2 (a share)."
            )
        for name in ("train_limit", "test_limit", "threads"):
            if getattr(self, name) is not None:
                _check_positive(name, getattr(self, name))
        _check_choice("optimizer", self.optimizer, tuple(OPTIMIZER_DEFAULTS))
        _check_choice("validation", self.validation, VALIDATIONS)
        _check_choice("device", self.device, DEVICES)
        _check_choice("schedule", self.schedule, SCHEDULES)
        _check_choice("augment", self.augment, AUGMENTS)
        _check_choice("test_augment", self.test_augment, TEST_AUGMENTS)
        _check_choice("precision", self.precision, PRECISIONS)
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


# Settings a study or search may change for every net (`cnnlab study --epochs 2`).
OVERRIDES = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.metadata["override"]
)


def overridden(
    base: TrainConfig, changes: dict[str, Any], where: str = ""
) -> TrainConfig:
    """`base` with the given settings changed (None: unchanged), as flags change it.

    A hold-out size needs a hold-out: `val_size` with `validation` other than
    holdout is an error, never ignored. `where` names the file `base` came from.
    """
    config = base.replace(**changes)
    if changes.get("val_size") is not None and config.validation != "holdout":
        if not where:
            raise CnnlabError(
                "--val-size sets the hold-out, but --validation is "
                f"{config.validation}: there is none. Drop --val-size, or use "
                "--validation holdout."
            )
        raise CnnlabError(
            f"--val-size sets the hold-out, but {where} has none (validation: "
            f"{config.validation}). Drop --val-size, or set validation: holdout there."
        )
    return config


def holdout_asked(config: TrainConfig) -> dict[str, Any]:
    """The hold-out sizes `config` sets apart from the defaults, {name: value}: what
    a user asked for with --val-size or --val-fraction (a value equal to the default
    cannot be told from no value)."""
    defaults = {f.name: f.default for f in dataclasses.fields(TrainConfig)}
    return {
        name: getattr(config, name)
        for name in ("val_size", "val_fraction")
        if getattr(config, name) != defaults[name]
    }


def _check_image_settings(config: TrainConfig) -> None:
    """image_size, color, skip_bad_images, standardize and the two fractions."""
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
    if not isinstance(config.standardize, bool):
        raise CnnlabError(
            "standardize must be true or false. "
            f"Received: standardize={show_value(config.standardize)}."
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
        raise CnnlabError(must_be_one_of(name, choices, received(name, value)))


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
