"""The `fast` recipe: its settings, the one-cycle schedule, shift augmentation, and
exact resume of a run that uses both. Speed is measured by
benchmarks/fast_recipe.py, not here."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from cnnlab import api
from cnnlab.data.augment import MAX_SHIFT, epoch_generator, random_shift
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.nn.model import build_model
from cnnlab.nn.presets import (
    NOTEBOOK_NETS,
    load_preset,
    preset_names,
    recipe_names,
)
from cnnlab.training.config import TrainConfig, recipe_config
from cnnlab.training.loop import EpochPlan, epoch_plan
from cnnlab.training.schedule import DIV_FACTOR, FINAL_DIV_FACTOR, onecycle_lr
from helpers import TINY_FLAGS_NO_HOLDOUT, run_cli

# What the recipe must set: the point of `fast` (see presets/fast.yaml).
RECIPE = {
    "schedule": "onecycle",
    "augment": "shift",
    "validation": "none",
    "optimizer": "adam",
}


# ------------------------------------------------------------------ the recipe


def test_fast_is_a_recipe_apart_from_the_notebook_nets() -> None:
    assert recipe_names() == ["fast"]
    assert preset_names()[:9] == list(NOTEBOOK_NETS.values())
    config = recipe_config("fast")
    assert {k: getattr(config, k) for k in RECIPE} == RECIPE
    assert config.learning_rate > TrainConfig().learning_rate  # one-cycle's peak
    # Notebook presets and files keep the notebook's protocol.
    assert recipe_config("conv5-medium") == TrainConfig()
    assert recipe_config("4") == TrainConfig()
    model = build_model(load_preset("fast"), 10, seed=0)
    assert model(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_train_fast_help_lists_the_recipe_flags(tmp_path: Path) -> None:
    result = run_cli("train", "fast", "--help", cwd=tmp_path)
    assert result.code == 0, result.err
    for flag in ("--schedule", "--augment", "--label-smoothing"):
        assert flag in result.out


@pytest.mark.slow
def test_train_fast_writes_the_recipe_settings_flags_on_top(tmp_path: Path) -> None:
    result = run_cli(
        "train", "fast", *TINY_FLAGS_NO_HOLDOUT, "--label-smoothing", "0.1",
        "--out", "RUN", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    assert "Recipe fast: " in result.out
    meta = json.loads((tmp_path / "RUN" / "run.json").read_text())
    expected = recipe_config("fast").replace(  # the values of TINY_FLAGS_NO_HOLDOUT
        epochs=1, train_limit=1000, test_limit=200, label_smoothing=0.1
    )
    assert meta["config"] == expected.to_dict()
    assert meta["status"] == "completed"
    assert meta["environment"]["val_samples"] == 0


def test_presets_lists_the_recipe_in_its_own_table(tmp_path: Path) -> None:
    result = run_cli("presets", cwd=tmp_path)
    assert result.code == 0, result.err
    recipes = result.out.split("Recipes")[1]
    assert "fast" in recipes and "schedule onecycle" in recipes
    # The notebook's table (rows framed by │) does not list it.
    assert not any("fast" in line for line in result.out.splitlines()
                   if line.startswith("│"))  # fmt: skip


# ------------------------------------------------------------------- settings


def test_new_settings_default_to_the_notebook_protocol() -> None:
    config = TrainConfig()
    assert (config.schedule, config.augment, config.label_smoothing) == (
        "constant",
        "none",
        0.0,
    )
    assert config.max_shift == MAX_SHIFT == 2  # what `shift` did before the setting
    plan = epoch_plan(config, 1, 10)
    assert plan == EpochPlan()


@pytest.mark.parametrize(
    ("changes", "phrase"),
    [
        ({"schedule": "cosine"}, "schedule must be one of constant, onecycle"),
        ({"augment": "mirror"}, "augment must be one of none, shift, flip"),
        ({"label_smoothing": 1.0}, "label_smoothing must be a number from 0"),
        ({"label_smoothing": -0.1}, "label_smoothing must be a number from 0"),
        ({"label_smoothing": "0.1"}, "label_smoothing must be a number from 0"),
        ({"max_shift": 0}, "max_shift must be an integer from 1 to 16"),
        ({"max_shift": 17}, "max_shift must be an integer from 1 to 16"),
        ({"max_shift": 1.0}, "max_shift must be an integer from 1 to 16"),
        ({"max_shift": True}, "max_shift must be an integer from 1 to 16"),
    ],
)
def test_bad_settings_are_refused(changes: dict[str, object], phrase: str) -> None:
    with pytest.raises(CnnlabError, match=phrase):
        TrainConfig(**changes)  # type: ignore[arg-type]


def test_settings_round_trip_and_old_configs_still_load() -> None:
    config = TrainConfig(
        schedule="onecycle", augment="shift", label_smoothing=0.1, max_shift=1
    )
    assert TrainConfig.from_dict(config.to_dict()) == config
    old = {k: v for k, v in TrainConfig().to_dict().items()
           if k not in ("schedule", "augment", "label_smoothing", "max_shift")}  # fmt: skip
    assert TrainConfig.from_dict(old) == TrainConfig()


# ------------------------------------------------------------------- schedule


def test_onecycle_warms_up_to_the_peak_then_anneals() -> None:
    total, peak = 100, 0.01  # warm-up: the first 30 steps
    rates = [onecycle_lr(step, total, peak) for step in range(total)]
    assert rates[0] == pytest.approx(peak / DIV_FACTOR)
    assert rates[15] == pytest.approx((peak + peak / DIV_FACTOR) / 2)  # cosine midway
    assert rates[30] == pytest.approx(peak) and max(rates) == rates[30]
    assert rates[-1] == pytest.approx(peak / DIV_FACTOR / FINAL_DIV_FACTOR)
    assert all(a < b for a, b in zip(rates[:30], rates[1:31], strict=True))
    assert all(a > b for a, b in zip(rates[30:-1], rates[31:], strict=True))


def test_epoch_plan_continues_the_schedule_across_epochs() -> None:
    config = TrainConfig(epochs=3, lr=0.01, schedule="onecycle")
    steps = 7
    rates = [
        epoch_plan(config, epoch, steps).lr_at(step)  # type: ignore[misc]
        for epoch in (1, 2, 3)
        for step in range(1, steps + 1)
    ]
    assert rates == [onecycle_lr(i, 3 * steps, 0.01) for i in range(3 * steps)]


# ---------------------------------------------------------------- augmentation


def test_shift_keeps_shape_dtype_and_pixels_and_is_seeded() -> None:
    images = load_dataset("mnist").x_train[:256]
    shifted = random_shift(images, epoch_generator(0, 1))
    assert shifted.shape == images.shape and shifted.dtype == torch.uint8
    # Digits whose 2-pixel frame is empty lose no ink when moved by <= 2 pixels.
    border = torch.ones(28, 28, dtype=torch.bool)
    border[MAX_SHIFT:-MAX_SHIFT, MAX_SHIFT:-MAX_SHIFT] = False
    inside = (images[:, border] == 0).all(1)
    assert inside.sum() > 200
    sums = lambda x: x[inside].flatten(1).long().sum(1)  # noqa: E731
    assert torch.equal(sums(shifted), sums(images))
    assert not torch.equal(shifted, images)
    # Same (seed, epoch): same shifts; another epoch: others.
    assert torch.equal(shifted, random_shift(images, epoch_generator(0, 1)))
    assert not torch.equal(shifted, random_shift(images, epoch_generator(0, 2)))


def test_shift_moves_each_image_by_at_most_two_pixels() -> None:
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 14, 14] = 255
    moved = random_shift(image.expand(500, 28, 28), epoch_generator(3, 1))
    where = moved.flatten(1).argmax(1)
    rows, cols = where // 28 - 14, where % 28 - 14
    assert rows.abs().max() == cols.abs().max() == MAX_SHIFT
    assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == 25


def test_max_shift_sets_how_far_the_training_images_move() -> None:
    image = torch.zeros(1, 28, 28, dtype=torch.uint8)
    image[0, 14, 14] = 255
    batch = image.expand(500, 28, 28)
    for max_shift, offsets in ((1, 9), (2, 25), (3, 49)):
        config = TrainConfig(augment="shift", max_shift=max_shift, seed=3)
        moved = epoch_plan(config, 1, 10).images(batch)
        where = moved.flatten(1).argmax(1)
        rows, cols = where // 28 - 14, where % 28 - 14
        assert rows.abs().max() == cols.abs().max() == max_shift
        assert len(set(zip(rows.tolist(), cols.tolist(), strict=True))) == offsets
    # Without augment=shift the setting changes nothing.
    plain = epoch_plan(TrainConfig(max_shift=1), 1, 10).images(batch)
    assert torch.equal(plain, batch)


# ------------------------------------------------------------------- resume


class _Stop(KeyboardInterrupt):
    """Ctrl-C after the first epoch, as a user would."""


def test_resumed_onecycle_shift_run_equals_an_uninterrupted_one(
    tmp_path: Path,
) -> None:
    config = recipe_config("fast").replace(
        epochs=2, batch_size=64, train_limit=640, test_limit=200, threads=1
    )
    whole = api.train("fast", config, tmp_path / "whole")

    def stop_after_first(state: object) -> None:
        raise _Stop

    with pytest.raises(_Stop):
        api.train(
            "fast", config, tmp_path / "cut", hooks=api.Hooks(on_epoch=stop_after_first)
        )
    resumed = api.resume(tmp_path / "cut")
    assert resumed.history.column("loss") == whole.history.column("loss")
    assert resumed.test_acc == whole.test_acc
    for key, value in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[key], value), key
