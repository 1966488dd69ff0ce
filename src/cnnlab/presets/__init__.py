"""Built-in architectures: the notebook's nine networks, numbered as in its sections."""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path

import yaml

from cnnlab.errors import SpecError
from cnnlab.spec import Architecture, load_architecture, parse_architecture

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


def preset_names() -> list[str]:
    """All preset names, notebook nets first in notebook order."""
    folder = resources.files(__name__)
    found = sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))
    ordered = list(NOTEBOOK_NETS.values())
    return ordered + [name for name in found if name not in ordered]


def load_preset(name: str) -> Architecture:
    """A built-in architecture by name ('conv3-small') or notebook number ('2')."""
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
    doc = yaml.safe_load(resource.read_text(encoding="utf-8"))
    return parse_architecture(doc, source=f"preset {name}")


def resolve_architecture(name_or_path: str | Path) -> Architecture:
    """A preset name or number, or the path of an architecture file."""
    text = str(name_or_path)
    looks_like_file = text.endswith((".yaml", ".yml", ".json")) or "/" in text
    if looks_like_file or Path(text).is_file():
        return load_architecture(text)
    return load_preset(text)
