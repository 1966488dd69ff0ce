"""Keras code in (`cnnlab import model.py` or `notebook.ipynb`): the Sequential
models it builds become architecture files and a study, without running the code.

The code is parsed with `ast` (`source_code`), walked in order (`source_walk`) and
each layer call translated argument by argument (`source_layers`); each model then
goes through `parse_architecture` and shape inference like any architecture file.
What cannot be translated is reported as `file:line` (`file:cell N:line M` in a
notebook, cells counted from 1 with the markdown ones) and the other models are
still imported.

Model names, in order of appearance, each made unique with `-2`, `-3`...:
`Sequential(name='...')` if given; else the variable (or building function) when
it builds only one model; else, when a variable is reused, the nearest markdown
heading above the model in a notebook (slugged, lower case: `2.1-evaluating-model`)
or the variable again in a .py file (`model`, `model-2`, ...).
"""

from __future__ import annotations

import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import CnnlabError, SpecError
from cnnlab.interop.source_code import read_cells
from cnnlab.interop.source_walk import Build, Walker
from cnnlab.nn.shapes import infer
from cnnlab.nn.spec import (
    DEFAULT_INPUT_SHAPE,
    Architecture,
    dump_architecture,
    parse_architecture,
)
from cnnlab.training.config import TrainConfig
from cnnlab.util.fsio import atomic_write_text, sweep_stale_temps
from cnnlab.util.text import slug

SOURCE_SUFFIXES = (".py", ".ipynb")
STUDY_FILE = "study.yaml"
_TRAIN_ORDER = ("epochs", "batch_size", "optimizer", "lr", "validation")
MAX_NAME = 48  # a heading can be a sentence; names stay short enough to read
_LOCATION = re.compile(r":(?:cell (\d+):line )?(\d+): ")  # file:line / cell:line


@dataclass(frozen=True)
class SourceImport:
    """What `import_source` read (and wrote, when `out` is set)."""

    source: Path
    models: dict[str, Architecture]  # name -> architecture (`.source`: its location)
    problems: list[str]  # located: what was not imported, or not as written
    train: dict[str, Any]  # the study's training settings, from the code
    overrides: dict[str, dict[str, Any]] = field(default_factory=dict)  # per model
    out: Path | None = None
    study_path: Path | None = None

    def lines(self) -> list[str]:
        """What the import did, for a terminal: files, parameter totals, problems."""
        where = f" into {self.out}" if self.out else ""
        text = [f"Imported {len(self.models)} model(s) from {self.source}{where}:"]
        for name, arch in self.models.items():
            text.append(f"  {name}: {infer(arch).total:,} params")
        text += [f"Problem: {p}" for p in self.problems]
        if self.study_path is not None:
            text.append(f"Next: cnnlab study {self.study_path}")
        return text


def read_source(path: str | Path) -> SourceImport:
    """The Sequential models of a .py file or notebook, without writing anything."""
    path = Path(path)
    if path.suffix.lower() not in SOURCE_SUFFIXES:
        raise CnnlabError(f"{path}: give Keras code as a .py file or .ipynb notebook.")
    cells, problems = read_cells(path)
    walker = Walker(path)
    walker.walk_cells(cells)
    models: dict[str, Architecture] = {}
    trains: dict[str, dict[str, Any]] = {}
    for build, name in zip(walker.builds, _names(walker.builds), strict=True):
        try:
            models[name] = _architecture(build, name, path)
            trains[name] = _checked_train(build, name, problems)
        except SpecError as err:
            found = build.problems or [str(err)]
            problems += [f"{p} Model '{name}' is not imported." for p in found]
    problems = sorted(problems + walker.problems, key=_position)
    train, overrides = _protocol(trains)
    return SourceImport(path, models, problems, train, overrides)


def _checked_train(build: Build, name: str, problems: list[str]) -> dict[str, Any]:
    """The model's fit/compile settings a study accepts; each other one is left
    out with a located problem (the study would refuse it)."""
    kept = {}
    for key, value in build.train.items():
        try:
            TrainConfig().replace(**{key: value})
        except CnnlabError as err:
            problems.append(
                f"{build.where}: {err} The setting is left out of the study; model "
                f"'{name}' uses cnnlab's default."
            )
        else:
            kept[key] = value
    return kept


def _position(problem: str) -> tuple[int, int]:
    """(cell, line) of a located problem, to list problems in file order."""
    found = _LOCATION.search(problem)
    return (int(found[1] or 0), int(found[2])) if found else (0, 0)


def import_source(path: Path, out: Path | None = None) -> SourceImport:
    """Import the code's models into `out` (default imported/<file stem>/): one
    architecture YAML per model and a study.yaml that lists them."""
    result = read_source(path)
    if not result.models:
        found = "; ".join(result.problems) or (
            "no `Sequential()` with `.add(...)` calls and no `Sequential([...])` found"
        )
        raise CnnlabError(f"{path}: no Keras model could be imported: {found}")
    out = _default_out(path) if out is None else _checked_out(out, path)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise CnnlabError(
            f"{out}: cannot create the folder ({err.strerror}). Choose a writable "
            "--out."
        ) from err
    for name in [*(f"{n}.yaml" for n in result.models), STUDY_FILE]:
        sweep_stale_temps(out, name)  # what a killed import left
    for name, arch in result.models.items():
        header = f"{HEADER}{arch.source}\n"
        atomic_write_text(out / f"{name}.yaml", header + dump_architecture(arch))
    study = out / STUDY_FILE
    atomic_write_text(study, _study_text(result, study))
    return SourceImport(
        result.source,
        result.models,
        result.problems,
        result.train,
        result.overrides,
        out,
        study,
    )


HEADER = "# Imported by `cnnlab import` from "  # the first line of every file
SOURCE_LINE = "# Source: "  # study.yaml's line naming the imported file
MAX_DEFAULT_FOLDERS = 100  # imported/<stem>, <stem>-2, ... before giving up


def _default_out(path: Path) -> Path:
    """imported/<stem>/, or <stem>-2/, -3/... when a file of another path with the
    same stem was imported there: a folder is reused only for the same file."""
    base = Path("imported") / (slug(path.stem) or "code")
    for n in range(1, MAX_DEFAULT_FOLDERS + 1):
        out = base if n == 1 else base.with_name(f"{base.name}-{n}")
        if _usable(out, path) is None:
            return out
    raise CnnlabError(
        f"{base}: {MAX_DEFAULT_FOLDERS} folders of this name are taken. Give the "
        "folder to write with --out."
    )


def _checked_out(out: Path, path: Path) -> Path:
    """`out`, if it is missing, empty or a previous import of the same file."""
    problem = _usable(out, path)
    if problem is not None:
        raise CnnlabError(
            f"{out}: {problem}; refusing to write into it. Choose another --out (a "
            "new or empty folder)."
        )
    return out


def _usable(out: Path, path: Path) -> str | None:
    """None if an import of `path` may write `out`; else why not. Only a folder
    every file of which this import wrote (the HEADER line first) and whose
    study.yaml names the same source may be written again: its files are ours to
    replace, anything else is the user's."""
    try:
        if not out.exists() and not out.is_symlink():
            return None
        if not out.is_dir():
            return "exists and is not a folder"
        entries = [e for e in out.iterdir() if not e.name.startswith(".")]
    except OSError as err:
        return f"cannot be read ({err.strerror})"
    if not entries:
        return None
    for entry in entries:
        if not _ours(entry):
            return f"already holds {entry.name}, which cnnlab import did not write"
    source = _first_lines(out / STUDY_FILE, 4)
    wanted = f"{SOURCE_LINE}{_source_id(path)}"
    if wanted not in source:
        named = next((ln for ln in source if ln.startswith(SOURCE_LINE)), "")
        other = named.removeprefix(SOURCE_LINE) or "another file"
        return f"holds the import of {other}"
    return None


def _source_id(path: Path) -> str:
    """The imported file's absolute path, quoted (a name may hold a newline)."""
    return json.dumps(str(path.resolve()))


def _ours(entry: Path) -> bool:
    """True for a regular .yaml file whose first line is this module's HEADER."""
    if entry.is_symlink() or not entry.is_file() or entry.suffix != ".yaml":
        return False
    lines = _first_lines(entry, 1)
    return bool(lines) and lines[0].startswith(HEADER)


def _first_lines(path: Path, count: int) -> list[str]:
    """The first `count` lines of a small text file (at most 4 KB read)."""
    try:
        with open(path, "rb") as fh:
            head = fh.read(4096)
    except OSError:
        return []
    return head.decode("utf-8", "replace").splitlines()[:count]


def _names(builds: list[Build]) -> list[str]:
    """One unique, file-safe name per model, by the rule of the module docstring;
    never `study`, the study file's name."""
    uses = Counter(b.var for b in builds)
    names: list[str] = []
    reserved = {Path(STUDY_FILE).stem}
    for build in builds:
        if build.given_name:
            base = build.given_name
        elif uses[build.var] > 1 and build.heading:
            base = build.heading.lower()
        else:
            base = build.var
        base = _cut(slug(base)) or "model"
        name, n = base, 1
        while name in names or name in reserved:
            n += 1
            name = f"{base}-{n}"
        names.append(name)
    return names


def _cut(name: str) -> str:
    """At most MAX_NAME characters, cut at a '-'."""
    if len(name) <= MAX_NAME:
        return name
    head = name[:MAX_NAME]
    return (head.rsplit("-", 1)[0] if "-" in head else head).strip("-.")


def _architecture(build: Build, name: str, path: Path) -> Architecture:
    """The validated, shape-checked Architecture of a model, or a located SpecError."""
    if build.problems:
        raise SpecError(build.problems[0])
    if not build.layers:
        raise SpecError(f"{build.where}: the model has no layers.")
    place = build.where.removeprefix(f"{path}:").replace(":", " ")
    place = f"line {place}" if place.isdigit() else place
    described = f"imported from {path.name}, {place}"
    if build.heading:
        described += f", under '{build.heading}'"
    shape = build.input_shape or list(DEFAULT_INPUT_SHAPE)
    doc = {"name": name, "description": described, "input_shape": shape}
    arch = parse_architecture(doc | {"layers": build.layers}, source=build.where)
    infer(arch)  # a layer that does not fit its input is a located SpecError
    return arch


def _protocol(
    trains: dict[str, dict[str, Any]],
) -> tuple[dict[str, Any], dict[str, dict[str, Any]]]:
    """The most common fit/compile settings for the study, and each model's
    differences from them."""
    fitted = {n: t for n, t in trains.items() if t}
    counts = Counter(tuple(sorted(t.items())) for t in fitted.values())
    base = dict(counts.most_common(1)[0][0]) if counts else {}
    base = {k: base[k] for k in _TRAIN_ORDER if k in base}
    overrides = {}
    for name, train in fitted.items():
        differ = {k: v for k, v in train.items() if base.get(k, v) != v}
        if differ:
            overrides[name] = differ
    return base, overrides


def _study_text(result: SourceImport, study: Path) -> str:
    """study.yaml: the models as files, the code's protocol, comments saying why."""
    name = slug(result.source.stem) or "imported"
    flow = {"default_flow_style": None, "sort_keys": False}
    entries = [
        {"file": f"{n}.yaml"}
        | ({"train": result.overrides[n]} if n in result.overrides else {})
        for n in result.models
    ]
    text = [
        f"{HEADER}{result.source.name}: its Keras",
        "# Sequential models, read from the code without running it.",
        f"{SOURCE_LINE}{_source_id(result.source)}",
        f"# Run it with: cnnlab study {study}",
        yaml.safe_dump({"name": name, "seeds": [0]}, **flow).rstrip(),
    ]
    train = dict(result.train)
    if train.get("validation") == "holdout":
        del train["validation"]  # the default: 10,000 training images held out
    if train.get("validation") == "test":
        text += [
            "# The code validates on the test set (validation_data=(x_test, y_test)),",
            "# so this study does too, to reproduce it. For a fair choice between",
            "# models set validation: holdout (10,000 training images held out) and",
            "# keep the test set for the final score.",
        ]
    if train:
        text.append(yaml.safe_dump({"train": train}, width=88, **flow).rstrip())
    text.append(yaml.safe_dump({"architectures": entries}, **flow).rstrip())
    return "\n".join(text) + "\n"
