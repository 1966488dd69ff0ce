"""Studies: architectures x seeds under one training protocol, run and recorded.

A study file (YAML):

    name: my-study
    description: what it compares
    data: mnist
    seeds: [0, 1, 2]
    train: {epochs: 4, batch_size: 128, optimizer: adam, validation: holdout}
    architectures:
      - conv5-medium                          # a preset name or number
      - nets/mine.yaml                        # a file, relative to the study file
      - {preset: conv3-512, label: "3x3 AdaDelta", train: {optimizer: adadelta}}
      - {label: tiny, spec: {layers: [Flatten, {Dense: {units: 10}}]}}

Output, under the --out folder: `cnnlab.sqlite` (the store),
`<study>/runs/<label>-s<seed>/` (one run folder per trial) and `<study>/report/`.
Re-running a study skips its finished trials and resumes an interrupted one from
its last checkpoint.
"""

from __future__ import annotations

import dataclasses
import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlab.config import TrainConfig
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.presets import load_preset, resolve_architecture
from cnnlab.spec import Architecture, load_architecture, parse_architecture

STORE_FILE = "cnnlab.sqlite"
_TOP_KEYS = ("name", "description", "data", "seeds", "train", "architectures")
_ARCH_KEYS = ("preset", "file", "spec", "label", "train")
_STUDY_TRAIN_KEYS = tuple(
    f.name for f in dataclasses.fields(TrainConfig) if f.name not in ("seed", "data")
)


@dataclass(frozen=True)
class StudyArch:
    """One architecture of a study, with its label and its training config."""

    label: str
    arch: Architecture
    config: TrainConfig  # seed filled in per trial


@dataclass(frozen=True)
class Trial:
    """One architecture trained with one seed."""

    label: str
    seed: int
    arch: Architecture
    config: TrainConfig

    def run_dir(self, study_dir: Path) -> Path:
        return study_dir / "runs" / f"{slug(self.label)}-s{self.seed}"


@dataclass(frozen=True)
class Study:
    """A parsed, validated study."""

    name: str
    description: str
    archs: tuple[StudyArch, ...]
    seeds: tuple[int, ...]
    source: str

    def trials(self) -> list[Trial]:
        """Seed-major order, so an early stop still leaves one seed of every net."""
        return [
            Trial(a.label, seed, a.arch, a.config.replace(seed=seed))
            for seed in self.seeds
            for a in self.archs
        ]

    def to_dict(self) -> dict[str, Any]:
        """The resolved study, as recorded in the store and the report."""
        return {
            "name": self.name,
            "description": self.description,
            "seeds": list(self.seeds),
            "architectures": [
                {
                    "label": a.label,
                    "spec": a.arch.to_dict(),
                    "train": a.config.to_dict(),
                }
                for a in self.archs
            ],
        }


def slug(text: str) -> str:
    """A file-name-safe form of a label: 'conv3 <x>/y' -> 'conv3-x-y'."""
    return re.sub(r"[^A-Za-z0-9._-]+", "-", text).strip("-.") or "net"


def _fail(source: str, where: str, message: str) -> SpecError:
    return SpecError(f"{source}: {where}{': ' if where else ''}{message}")


def _check_keys(
    doc: Mapping, allowed: tuple[str, ...], source: str, where: str
) -> None:
    for key in doc:
        if key not in allowed:
            close = difflib.get_close_matches(str(key), allowed, n=1)
            hint = f" Did you mean '{close[0]}'?" if close else ""
            raise _fail(
                source,
                where,
                f"unknown key '{key}'.{hint} Allowed: {', '.join(allowed)}.",
            )


def _train_config(base: TrainConfig, doc: Any, source: str, where: str) -> TrainConfig:
    if doc is None:
        return base
    if not isinstance(doc, Mapping):
        raise _fail(source, where, "'train' must be a mapping such as {epochs: 4}.")
    _check_keys(doc, _STUDY_TRAIN_KEYS, source, where + "train" if where else "train")
    try:
        return dataclasses.replace(base, **doc)
    except CnnlabError as err:
        raise _fail(source, where + "train" if where else "train", str(err)) from err


def _resolve_path(text: str, base_dir: Path) -> Path:
    path = Path(text)
    return path if path.is_absolute() else base_dir / path


def _parse_arch(
    entry: Any, index: int, base: TrainConfig, source: str, base_dir: Path
) -> StudyArch:
    where = f"architectures[{index}]"
    if isinstance(entry, str | int) and not isinstance(entry, bool):
        text = str(entry)
        if text.endswith((".yaml", ".yml", ".json")):
            arch = load_architecture(_resolve_path(text, base_dir))
        else:
            arch = resolve_architecture(text)
        return StudyArch(arch.name, arch, base)
    if not isinstance(entry, Mapping):
        raise _fail(source, where, "give a preset name, a file, or a mapping with "
                    "preset/file/spec and an optional label and train.")  # fmt: skip
    _check_keys(entry, _ARCH_KEYS, source, where)
    given = [k for k in ("preset", "file", "spec") if k in entry]
    if len(given) != 1:
        raise _fail(source, where, "give exactly one of preset, file or spec.")
    if "preset" in entry:
        arch = load_preset(str(entry["preset"]))
    elif "file" in entry:
        arch = load_architecture(_resolve_path(str(entry["file"]), base_dir))
    else:
        spec = entry["spec"]
        if isinstance(spec, Mapping) and "name" not in spec and "label" in entry:
            spec = {"name": str(entry["label"]), **spec}
        arch = parse_architecture(spec, source=f"{source}: {where}.spec")
    label = entry.get("label", arch.name)
    if not isinstance(label, str) or not label.strip():
        raise _fail(source, where, "'label' must be a non-empty string.")
    config = _train_config(base, entry.get("train"), source, where + ".")
    return StudyArch(label.strip(), arch, config)


def _parse_seeds(doc: Any, source: str) -> tuple[int, ...]:
    seeds = doc if isinstance(doc, list) else [doc]
    if not seeds or not all(
        isinstance(s, int) and not isinstance(s, bool) and s >= 0 for s in seeds
    ):
        raise _fail(
            source, "seeds", f"must be a list of integers >= 0. Received: {doc!r}."
        )
    if len(set(seeds)) != len(seeds):
        raise _fail(source, "seeds", f"has duplicates: {seeds}.")
    return tuple(seeds)


def parse_study(
    doc: Any, source: str = "<python>", base_dir: Path = Path(".")
) -> Study:
    """A parsed YAML document -> a validated `Study`."""
    if not isinstance(doc, Mapping):
        raise _fail(source, "", "a study file must be a mapping with 'name' and "
                    "'architectures' keys.")  # fmt: skip
    _check_keys(doc, _TOP_KEYS, source, "")
    name = doc.get("name", Path(source).stem)
    if not isinstance(name, str) or not slug(name) or slug(name) != name:
        raise _fail(source, "name", "must be a simple name (letters, digits, "
                    f"'-', '_', '.'): it names a folder. Got {name!r}.")  # fmt: skip
    data = doc.get("data", "mnist")
    if not isinstance(data, str):
        raise _fail(source, "data", "must be 'mnist', 'fashion-mnist' or a folder.")
    if data not in ("mnist", "fashion-mnist"):
        data = str(_resolve_path(data, base_dir))
    base = _train_config(TrainConfig(data=data), doc.get("train"), source, "")
    entries = doc.get("architectures")
    if not isinstance(entries, list) or not entries:
        raise _fail(source, "architectures", "must be a non-empty list, e.g. "
                    "[conv5-medium, conv3-small].")  # fmt: skip
    archs = tuple(
        _parse_arch(e, i, base, source, base_dir) for i, e in enumerate(entries)
    )
    labels = [a.label for a in archs]
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise _fail(source, "architectures", f"labels must be unique; repeated: "
                    f"{', '.join(dupes)}. Give each a distinct 'label'.")  # fmt: skip
    return Study(
        name=name,
        description=str(doc.get("description", "") or ""),
        archs=archs,
        seeds=_parse_seeds(doc.get("seeds", [0]), source),
        source=source,
    )


def builtin_studies() -> list[str]:
    folder = resources.files("cnnlab") / "studies"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_study(name_or_path: str | Path) -> Study:
    """A built-in study by name ('quickstart', 'seed') or a study YAML file."""
    text = str(name_or_path)
    if text in builtin_studies():
        resource = resources.files("cnnlab") / "studies" / f"{text}.yaml"
        doc = yaml.safe_load(resource.read_text(encoding="utf-8"))
        return parse_study(doc, source=f"study {text}")
    path = Path(text)
    if not path.is_file():
        close = difflib.get_close_matches(text, builtin_studies(), n=1)
        hint = f" Did you mean '{close[0]}'?" if close else ""
        raise SpecError(
            f"{text}: no such study file or built-in study.{hint} Built-in: "
            f"{', '.join(builtin_studies())}."
        )
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(
            f"{path}: invalid YAML{at}. Fix the syntax and try again."
        ) from err
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read the file ({err}).") from err
    return parse_study(doc, source=str(path), base_dir=path.parent)


def override(study: Study, **changes: Any) -> Study:
    """The study with training settings changed for every architecture (CLI flags)."""
    seeds = changes.pop("seeds", None)
    archs = tuple(
        dataclasses.replace(a, config=a.config.replace(**changes)) for a in study.archs
    )
    return dataclasses.replace(
        study, archs=archs, seeds=tuple(seeds) if seeds else study.seeds
    )
