"""Built-in architectures: the notebook's nine networks, numbered as in its sections,
and recipes.

A recipe is a preset whose YAML file also holds a `train:` mapping of TrainConfig
settings (e.g. fast.yaml). The architecture keys parse as for any preset; the `train:`
settings become the defaults of `cnnlab train NAME`, under any flag given. In a study
a recipe preset contributes its architecture only: the study's `train:` rules.

One naming rule, the same for `cnnlab train`, `cnnlab summary`, the Python API and
the architectures of a study (`names_file`):

- text with a path separator or a .yaml/.yml/.json suffix is a file;
- a bare word that names a preset (or a notebook number 1-9) is that preset, unless
  a file of exactly that name exists too: that is an error that says to write
  ./NAME for the file or to rename it;
- any other bare word is a file if one of that name exists, else an unknown preset.
"""

from __future__ import annotations

import difflib
import os
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import SpecError
from cnnlab.nn.spec import (
    Architecture,
    file_recipe,
    load_architecture,
    parse_architecture,
)

# Number -> name, in the notebook's order (as docs/architectures.md numbers them).
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
    """A recipe's `train:` mapping, as written: a recipe preset's, or an architecture
    file's (such as a search's best.yaml); {} for other presets and files.

    `cnnlab.training.config.recipe_config` turns it into a TrainConfig.
    """
    # No look at the disk: a bare preset name that is also a file is an error when
    # the architecture is resolved (`names_file`), before its recipe is asked for.
    text = str(name_or_path)
    if isinstance(name_or_path, Path) or text not in preset_names():
        if names_file(name_or_path) and Path(text).expanduser().is_file():
            return file_recipe(Path(text).expanduser())
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


def resolve_architecture(
    name_or_path: str | Path, base_dir: str | Path | None = None
) -> Architecture:
    """A preset name or number, or an architecture file, by the rule of `names_file`.

    A relative file is read relative to `base_dir` (default: the current folder).
    """
    if not names_file(name_or_path, base_dir):
        return load_preset(str(name_or_path))
    path = Path(name_or_path)
    if base_dir is not None and not path.expanduser().is_absolute():
        path = Path(base_dir) / path
    return load_architecture(path)


FILE_SUFFIXES = (".yaml", ".yml", ".json")


def names_file(name_or_path: str | Path, base_dir: str | Path | None = None) -> bool:
    """Whether `name_or_path` names an architecture file (True) or a preset (False).

    A Path, or text with a path separator or a .yaml/.yml/.json suffix, is a file.
    A bare word that names a preset or notebook number is the preset, and an error
    (SpecError) when a file of exactly that name also exists in `base_dir` (default:
    the current folder). Any other bare word is a file if it exists there; if not,
    it is taken as a preset name, whose loading reports it unknown.
    """
    if isinstance(name_or_path, Path) or _file_form(name_or_path):
        return True
    text = name_or_path
    folder = Path.cwd() if base_dir is None else Path(base_dir)
    try:
        exists = (folder / text).is_file()
    except (OSError, ValueError):  # a NUL byte, a name too long
        exists = False
    if not _is_preset(text):
        return exists
    if exists:
        raise SpecError(
            f"'{text}' is both a preset and a file in {folder}; write ./{text} for "
            "the file, or rename the file to use the preset."
        )
    return False


def _file_form(text: str) -> bool:
    """Written as a file: a path separator or an architecture file's suffix."""
    separators = [s for s in ("/", os.sep, os.altsep) if s]
    return text.endswith(FILE_SUFFIXES) or any(s in text for s in separators)


def _is_preset(text: str) -> bool:
    """A preset name or a notebook number 1-9."""
    return text in preset_names() or text in (str(n) for n in NOTEBOOK_NETS)
