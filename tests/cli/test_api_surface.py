"""Every command a thin layer over the Python API: the API knows what the command
knows (recipes, the presets' facts, the export signature, the rules about flags)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import cnnlab
from cnnlab.nn.shapes import infer
from cnnlab.training.config import TrainConfig
from helpers import run_cli

# The fast recipe validates on nothing (validation: none): no hold-out to size.
LIMITS = {"epochs": 1, "train_limit": 300, "test_limit": 100}


def test_a_recipe_name_trains_with_the_recipes_settings_in_the_api_as_in_the_cli(
    tmp_path: Path,
) -> None:
    config = cnnlab.train_config("fast", **LIMITS)
    recipe = cnnlab.train_config("fast")
    assert recipe != TrainConfig()  # the recipe sets its own schedule and shifts
    assert config == recipe.replace(**LIMITS)
    flags = [f"--{k.replace('_', '-')}={v}" for k, v in LIMITS.items()]
    result = run_cli("train", "fast", *flags, "--out", "run", cwd=tmp_path)
    assert result.code == 0, result.err
    first = result.out.splitlines()[0]
    assert first.startswith("Recipe fast: ") and "schedule onecycle" in first
    saved = json.loads((tmp_path / "run" / "run.json").read_text())["config"]
    assert TrainConfig.from_dict(saved) == config


def test_presets_give_the_facts_the_command_prints() -> None:
    facts = {f.name: f for f in cnnlab.presets()}
    notebook = [f for f in facts.values() if f.number is not None]
    assert [f.number for f in notebook] == list(range(1, len(notebook) + 1))
    assert len(notebook) >= 9
    small = facts["conv3-small"]
    info = infer(cnnlab.load("conv3-small"))
    assert (small.params, small.flops) == (info.total, info.flops)
    assert small.training == {}
    assert facts["fast"].number is None  # a recipe, not one of the notebook's
    assert facts["fast"].training == cnnlab.api.recipe_changes(
        "fast", cnnlab.train_config("fast")
    )


def test_val_size_with_test_validation_is_refused_for_a_study_too() -> None:
    with pytest.raises(cnnlab.CnnlabError) as err:
        cnnlab.load_study("seed", val_size=500)
    assert str(err.value) == (
        "--val-size sets the hold-out, but study seed (net conv3-512) has none "
        "(validation: test). Drop --val-size, or set validation: holdout there."
    )
    study = cnnlab.load_study("quickstart", val_size=500, epochs=1)
    assert {a.config.val_size for a in study.archs} == {500}


def test_study_overrides_are_trainconfigs_and_nothing_else() -> None:
    with pytest.raises(cnnlab.CnnlabError, match="cannot be overridden by 'lr'"):
        cnnlab.load_study("quickstart", lr=0.1)
    with pytest.raises(TypeError, match="seeds must be a list of integers"):
        cnnlab.load_study("quickstart", seeds="0,1")
