"""Built-in architectures: the notebook's nine networks, numbered as in its sections,
and recipes.

A recipe is a preset whose YAML file also holds a `train:` mapping of TrainConfig
settings (e.g. fast.yaml). The architecture keys parse as for any preset; the `train:`
settings become the defaults of `cnnlab train NAME`, under any flag given. In a study
a recipe preset contributes its architecture only: the study's `train:` rules.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import SpecError
from cnnlab.nn.spec import Architecture, load_architecture, parse_architecture

# Number -> name, in the notebook's order (DESIGN.md's table numbers them 1-9).
NOTEBOOK_NETS = {
    1: "conv3-512",
    2: "conv3-small",
    3: "conv5-tiny",
    4: "conv5-medium",
    5: "conv7-pool3",
    6: "conv7-pool2",
    7: "conv7-one-dense",
    8: "conv7-deep-dense",
    9: "conv7-dropout",
}
RECIPE_KEY = "train"  # the training-settings mapping of a recipe preset


def preset_names() -> list[str]:
    """All preset names, notebook nets first in notebook order."""
    folder = resources.files(__name__)
    found = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    ordered = list(NOTEBOOK_NETS.values())
    return ordered + [name for name in found if name not in ordered]


def recipe_names() -> list[str]:
    """The presets that carry training settings (a `train:` mapping)."""
    return [name for name in preset_names() if _preset_doc(name).get(RECIPE_KEY)]


def load_preset(name: str) -> Architecture:
    """A built-in architecture by name ('conv3-small') or notebook number ('2')."""
    doc = {k: v for k, v in _preset_doc(name).items() if k != RECIPE_KEY}
    return parse_architecture(doc, source=f"preset {_canonical(name)}")


def recipe_settings(name_or_path: str | Path) -> dict[str, Any]:
    """A recipe preset's `train:` mapping, as written; {} for files and other presets.

    `cnnlab.training.config.recipe_config` turns it into a TrainConfig.
    """
    text = str(name_or_path)
    if _looks_like_file(text) or text not in preset_names():
        return {}
    settings = _preset_doc(text).get(RECIPE_KEY) or {}
    if not isinstance(settings, dict):
        raise SpecError(f"preset {text}: '{RECIPE_KEY}' must be a mapping.")
    return settings


def _canonical(name: str) -> str:
    """A notebook number ('2') -> its name; names pass through."""
    if name.isdigit() and int(name) in NOTEBOOK_NETS:
        return NOTEBOOK_NETS[int(name)]
    return name


def _preset_doc(name: str) -> dict[str, Any]:
    """The parsed YAML document of a preset, by name or notebook number."""
    if name.isdigit() and int(name) in NOTEBOOK_NETS:
        name = NOTEBOOK_NETS[int(name)]
    resource = resources.files(__name__) / f"{name}.yaml"
    if not resource.is_file():
        names = preset_names()
        close = difflib.get_close_matches(name, names, n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpecError(
            f"unknown preset '{name}'.{hint} See `cnnlab presets` for the list, or "
            "give the path of an architecture YAML file."
        )
    return yaml.safe_load(resource.read_text(encoding="utf-8"))


def resolve_architecture(name_or_path: str | Path) -> Architecture:
    """A preset name or number, or the path of an architecture file."""
    text = str(name_or_path)
    if _looks_like_file(text):
        return load_architecture(text)
    return load_preset(text)


def _looks_like_file(text: str) -> bool:
    """Paths name files; a bare word is a preset unless such a file exists."""
    suffix = text.endswith((".yaml", ".yml", ".json"))
    return suffix or "/" in text or Path(text).is_file()
