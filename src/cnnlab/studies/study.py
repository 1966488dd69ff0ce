"""Studies: architectures x seeds under one training protocol, run and recorded.

A study file (YAML):

    name: my-study
    description: what it compares
    data: mnist                               # or a list: [mnist, fashion-mnist]
    seeds: [0, 1, 2]
    train: {epochs: 4, batch_size: 128, optimizer: adam, validation: holdout}
    architectures:
      - conv5-medium                          # a preset name or number
      - nets/mine.yaml                        # a file, relative to the study file
      - {preset: conv3-512, label: "3x3 AdaDelta", train: {optimizer: adadelta}}
      - {label: tiny, spec: {layers: [Flatten, {Dense: {units: 10}}]}}

With a list of data sets the same nets train on each, labelled `<label>@<data>`,
and the report compares the rankings.

A `search:` block (a space to explore; `cnnlab search`, docs/search.md) may stand
instead of, or beside, `architectures:`; it is kept as written here and validated by
`cnnlab.search.space`.

Output, under the --out folder: `cnnlab.sqlite` (the store),
`<study>/runs/<label>-s<seed>/` (one run folder per trial) and `<study>/report/`.
Re-running a study skips its finished trials and resumes an interrupted one from
its last checkpoint.

Paths stay where the user put them. A study file may be someone else's, so the
paths it names (architecture files, a `data` folder) must resolve, after `..` and
symlinks, inside the study file's own folder, whether written relative or absolute.
To read anything else the study says so at the top, in one visible list:

    allow_paths: [../shared-nets, /data/emnist]   # relative to the study file

and a path inside one of those folders is accepted too. Anything else is refused
with a message naming the resolved path and the `allow_paths` entry that would
allow it. Presets are named, never paths. Callers that trust their own input (a
future `--allow-path` flag) pass extra folders as `allow=`.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from cnnlab.errors import CnnlabError, SpecError
from cnnlab.nn.presets import (
    NOTEBOOK_NETS,
    load_preset,
    names_file,
    preset_names,
    recipe_settings,
)
from cnnlab.nn.spec import (
    Architecture,
    load_architecture,
    parse_architecture,
    parse_yaml,
)
from cnnlab.studies.layout import DEFAULT_OUT as DEFAULT_OUT  # its home: layout
from cnnlab.studies.layout import RUNS_FOLDER, StudyLayout
from cnnlab.studies.layout import STORE_FILE as STORE_FILE  # its home: layout
from cnnlab.training.config import MAX_SEED, OVERRIDES, TrainConfig, overridden
from cnnlab.training.loop import TrainState
from cnnlab.util.fsio import check_inside
from cnnlab.util.messages import unknown_key
from cnnlab.util.text import (
    MAX_SLUG,
    did_you_mean,
    is_int,
    normalised,
    show_value,
    slug,
)

FINAL_SEEDS = [0, 1, 2, 3, 4]
_TOP_KEYS = (
    "name",
    "description",
    "data",
    "seeds",
    "train",
    "architectures",
    "allow_paths",
    "search",  # a space to search (cnnlab.search); architectures then optional
)
_DATA_NAMES = ("mnist", "fashion-mnist")  # data sets named, not paths
_FILE_SUFFIXES = (".yaml", ".yml", ".json")
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
    """One architecture trained with one seed: the seed is `config.seed`.

    `score_test` off: the trial never reads the test set (a search candidate,
    ranked on validation only). `on_epoch`, if set, hears of every epoch after its
    checkpoint and may raise `StopTraining` to end the trial as stopped early (a
    pruner); it must pickle, for worker processes.
    """

    label: str
    arch: Architecture
    config: TrainConfig
    score_test: bool = True
    on_epoch: Callable[[TrainState], None] | None = field(default=None, compare=False)

    @property
    def seed(self) -> int:
        return self.config.seed

    def run_dir(self, study_dir: Path) -> Path:
        path = study_dir / RUNS_FOLDER / f"{run_folder_name(self.label)}-s{self.seed}"
        return check_inside(path, study_dir)


@dataclass(frozen=True)
class Study:
    """A parsed, validated study."""

    name: str
    description: str
    archs: tuple[StudyArch, ...]
    seeds: tuple[int, ...]
    source: str
    # With a `search:` block: the block as written (cnnlab.search validates it) and
    # the study-level training settings its candidates start from.
    search: Mapping[str, Any] | None = None
    train: TrainConfig | None = None

    def trials(self) -> list[Trial]:
        """Seed-major order, so an early stop still leaves one seed of every net."""
        return [
            Trial(a.label, a.arch, a.config.replace(seed=seed))
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


def run_folder_name(label: str) -> str:
    """The run folder name of an architecture label (its slug; 'net' if empty)."""
    return slug(label) or "net"


def study_folder(out: Path, name: str) -> Path:
    """`out/<name>`, for a name checked by `check_study_name`, kept under `out`."""
    return StudyLayout(out).study(name)


def _fail(source: str, where: str, message: str) -> SpecError:
    return SpecError(f"{source}: {where}{': ' if where else ''}{message}")


def _check_keys(
    doc: Mapping, allowed: tuple[str, ...], source: str, where: str
) -> None:
    for key in doc:
        if key not in allowed:
            raise _fail(source, where, unknown_key(key, allowed))


def _train_config(base: TrainConfig, doc: Any, source: str, where: str) -> TrainConfig:
    if doc is None:
        return base
    if not isinstance(doc, Mapping):
        raise _fail(source, where, "'train' must be a mapping such as {epochs: 4}.")
    _check_keys(doc, _STUDY_TRAIN_KEYS, source, where + "train" if where else "train")
    for key, value in doc.items():
        _check_setting(value, source, f"{where}train.{key}")
    try:
        return dataclasses.replace(base, **doc)
    except CnnlabError as err:
        raise _fail(source, where + "train" if where else "train", str(err)) from err


def _check_setting(value: Any, source: str, where: str) -> None:
    """A training setting is one small value; TrainConfig then checks its meaning.

    Checked here, at the parse boundary, so no message ever echoes a huge or
    deeply nested value from a file.
    """
    if value is None or isinstance(value, bool | float):
        return
    if isinstance(value, int) and value.bit_length() <= 63:
        return
    if isinstance(value, str) and len(value) <= 200:
        return
    raise _fail(
        source,
        where,
        f"must be a single number, name or true/false. Received: {show_value(value)}.",
    )


@dataclass(frozen=True)
class _Places:
    """Where a study may read files: its own folder and the folders it allows."""

    base_dir: Path  # the study file's folder, resolved
    roots: tuple[Path, ...]  # base_dir first, then allow_paths and `allow`
    source: str

    def resolve(self, text: str, where: str) -> Path:
        """A path from the study, made absolute and checked to stay in `roots`."""
        path = _real_path(text, self.base_dir, self.source, where)
        if any(path.is_relative_to(root) for root in self.roots):
            return path
        suggestion = os.path.relpath(path.parent, self.base_dir)
        allowed = ", ".join(str(r) for r in self.roots[1:])
        also = f" or the allowed {allowed}" if allowed else ""
        raise _fail(
            self.source,
            where,
            f"{show_value(text)} resolves to {path}, outside the study's folder "
            f"{self.base_dir}{also}. A study reads only files under its own folder "
            "unless it says otherwise: move the file there, or add its folder to "
            f"the study's allow_paths, e.g. `allow_paths: [{suggestion}]`.",
        )


def _real_path(text: str, base_dir: Path, source: str, where: str) -> Path:
    """`text` relative to `base_dir` (or absolute), with `~`, `..` and links undone."""
    try:
        path = Path(text).expanduser()
        return (path if path.is_absolute() else base_dir / path).resolve()
    except (OSError, ValueError, RuntimeError) as err:  # NUL byte, symlink loop
        message = f"{show_value(text)} is not a usable path ({err})."
        raise _fail(source, where, message) from err


def _places(
    doc: Any, base_dir: Path, allow: Sequence[str | Path], source: str
) -> _Places:
    base = _real_path(str(base_dir), Path.cwd(), source, "")
    if doc is None:
        doc = []
    if not isinstance(doc, list) or not all(isinstance(p, str) and p for p in doc):
        example = "[../shared-nets, /data/emnist]"
        message = (
            f"must be a list of folders, e.g. {example}. Received: {show_value(doc)}."
        )
        raise _fail(source, "allow_paths", message)
    roots = [_real_path(p, base, source, "allow_paths") for p in doc]
    roots += [_real_path(str(p), Path.cwd(), source, "allow") for p in allow]
    return _Places(base, (base, *roots), source)


def _preset(value: Any, source: str, where: str) -> Architecture:
    """A preset by name or notebook number; a path-like name is refused, not read."""
    small = isinstance(value, int) and value.bit_length() < 64
    text = str(value) if isinstance(value, str) or small else None
    if isinstance(value, bool) or text is None:
        raise _fail(
            source,
            where,
            f"a preset is a name such as conv5-medium or a "
            f"number 1-9. Received: {show_value(value)}.",
        )
    numbers = [str(n) for n in NOTEBOOK_NETS]
    if text not in preset_names() and text not in numbers:
        hint = did_you_mean(text, preset_names())
        raise _fail(
            source,
            where,
            f"unknown preset {show_value(text)}.{hint} See "
            "`cnnlab presets` for the list, or give an architecture file "
            "with `file:`.",
        )
    return load_preset(text)


def _parse_arch(
    entry: Any, index: int, base: TrainConfig, places: _Places
) -> StudyArch:
    source, where = places.source, f"architectures[{index}]"
    if isinstance(entry, str | int) and not isinstance(entry, bool):
        if isinstance(entry, str) and names_file(entry, places.base_dir):
            path = places.resolve(entry, where)
            arch = load_architecture(path)
        else:
            arch, path = _preset(entry, source, where), str(entry)
        return StudyArch(arch.name, arch, _with_recipe(base, path, source, where))
    if not isinstance(entry, Mapping):
        raise _fail(
            source,
            where,
            "give a preset name, a file, or a mapping with "
            "preset/file/spec and an optional label and train.",
        )
    _check_keys(entry, _ARCH_KEYS, source, where)
    given = [k for k in ("preset", "file", "spec") if k in entry]
    if len(given) != 1:
        raise _fail(source, where, "give exactly one of preset, file or spec.")
    recipe: str | Path | None = None
    if "preset" in entry:
        arch = _preset(entry["preset"], source, where + ".preset")
        recipe = str(entry["preset"])
    elif "file" in entry:
        if not isinstance(entry["file"], str) or not entry["file"]:
            raise _fail(
                source,
                where,
                "'file' must be the path of an architecture "
                f"file. Received: {show_value(entry['file'])}.",
            )
        recipe = places.resolve(entry["file"], where + ".file")
        arch = load_architecture(recipe)
    else:
        spec = entry["spec"]
        label = entry.get("label")
        if isinstance(spec, Mapping) and "name" not in spec and isinstance(label, str):
            spec = {"name": label, **spec}
        arch = parse_architecture(spec, source=f"{source}: {where}.spec")
    label = entry.get("label", arch.name)
    if not isinstance(label, str) or not label.strip() or not label.isprintable():
        raise _fail(
            source,
            where,
            "'label' must be one line of printable text. "
            f"Received: {show_value(label)}.",
        )
    if recipe is not None:
        base = _with_recipe(base, recipe, source, where)
    config = _train_config(base, entry.get("train"), source, where + ".")
    return StudyArch(label.strip(), arch, config)


def _with_recipe(
    base: TrainConfig, name_or_path: str | Path, source: str, where: str
) -> TrainConfig:
    """The study's settings with a recipe's `train:` block on top: a recipe
    preset's (`fast`) or an architecture file's (a search's best.yaml), as
    `cnnlab train` uses it; the net's own `train:` in the study file goes on
    top of both."""
    settings = recipe_settings(name_or_path)
    if not settings:
        return base
    return _train_config(base, settings, source, f"{where} ({name_or_path}): ")


def _parse_seeds(doc: Any, source: str, where: str = "seeds") -> tuple[int, ...]:
    """The one check of a seed list, from a file or from --seeds."""
    seeds = doc if isinstance(doc, list) else [doc]
    if not seeds or not all(is_int(s) and 0 <= s <= MAX_SEED for s in seeds):
        raise _fail(
            source,
            where,
            f"must be a list of integers >= 0 (at most "
            f"{MAX_SEED}). Received: {show_value(doc)}.",
        )
    if len(set(seeds)) != len(seeds):
        dupes = sorted({s for s in seeds if seeds.count(s) > 1})
        raise _fail(
            source,
            where,
            f"has duplicates: {seeds} (seed "
            f"{', '.join(map(str, dupes))} twice). Give each seed once: each "
            "seed is one run folder.",
        )
    return tuple(seeds)


def parse_study(
    doc: Any,
    source: str = "<python>",
    base_dir: Path = Path("."),
    allow: Sequence[str | Path] = (),
) -> Study:
    """A parsed YAML document -> a validated `Study`.

    Paths in `doc` resolve against `base_dir` and must stay inside it, inside a
    folder of the document's `allow_paths`, or inside a folder of `allow`.
    """
    if not isinstance(doc, Mapping):
        raise _fail(
            source,
            "",
            "a study file must be a mapping with 'name' and 'architectures' keys.",
        )
    _check_keys(doc, _TOP_KEYS, source, "")
    name = doc.get("name", Path(source).stem)
    if not isinstance(name, str) or not slug(name) or slug(name, None) != name:
        message = "must be a simple name (letters, digits, '-', '_', '.'): it names "
        raise _fail(source, "name", f"{message}a folder. Got {show_value(name)}.")
    if len(name) > MAX_SLUG:
        raise _fail(
            source,
            "name",
            f"is {len(name)} characters long; a study name "
            f"names a folder, so at most {MAX_SLUG}.",
        )
    description = doc.get("description") or ""
    if not isinstance(description, str):
        raise _fail(source, "description", "must be a string (quote it).")
    places = _places(doc.get("allow_paths"), base_dir, allow, source)
    datas = _parse_data(doc.get("data", "mnist"), places)
    base = _train_config(TrainConfig(data=datas[0]), doc.get("train"), source, "")
    search = doc.get("search")
    if search is not None and not isinstance(search, Mapping):
        raise _fail(
            source,
            "search",
            "must be a mapping with 'space' and "
            "'architecture' keys (see docs/search.md).",
        )
    if search is not None and len(datas) > 1:
        raise _fail(
            source,
            "data",
            "a search explores one data set; give one, or run one search per data set.",
        )
    entries = doc.get("architectures", [] if search is not None else None)
    if not isinstance(entries, list) or (not entries and search is None):
        raise _fail(
            source,
            "architectures",
            "must be a non-empty list, e.g. [conv5-medium, conv3-small].",
        )
    archs = tuple(_parse_arch(e, i, base, places) for i, e in enumerate(entries))
    if len(datas) > 1:  # the same nets on each data set, labelled `<label>@<data>`
        archs = tuple(
            dataclasses.replace(
                a, label=data_label(a.label, d), config=a.config.replace(data=d)
            )
            for d in datas
            for a in archs
        )
    _check_labels([a.label for a in archs], source)
    return Study(
        name=name,
        description=description,
        archs=archs,
        # A search's finalists are re-trained over five seeds unless told otherwise.
        seeds=_parse_seeds(
            doc.get("seeds", [0] if search is None else FINAL_SEEDS), source
        ),
        source=source,
        search=search,
        train=base,
    )


def data_name(data: str) -> str:
    """A data set's short name: 'mnist', 'fashion-mnist' or an IDX folder's name."""
    return data if data in _DATA_NAMES else Path(data).name


def data_label(label: str, data: str) -> str:
    """The label of a net trained on one of a cross-dataset study's data sets."""
    return f"{label}@{data_name(data)}"


def base_label(label: str, data: str) -> str:
    """`label` without the data set `data_label` added to it."""
    suffix = f"@{data_name(data)}"
    return label[: -len(suffix)] if label.endswith(suffix) else label


def _parse_data(doc: Any, places: _Places) -> list[str]:
    """`data:` as one data set or a list of them (a cross-dataset study)."""
    source = places.source
    values = doc if isinstance(doc, list) else [doc]
    if not values or not all(isinstance(d, str) and d for d in values):
        raise _fail(
            source,
            "data",
            "must be 'mnist', 'fashion-mnist', a folder of "
            "IDX files, or a list of them such as [mnist, fashion-mnist]. "
            f"Received: {show_value(doc)}.",
        )
    datas = [
        d
        if d in _DATA_NAMES
        else str(places.resolve(d, f"data[{i}]" if isinstance(doc, list) else "data"))
        for i, d in enumerate(values)
    ]
    names = [data_name(d) for d in datas]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise _fail(
            source,
            "data",
            f"names {', '.join(dupes)} twice: give each data "
            "set once (folders must differ in name).",
        )
    return datas


def _check_labels(labels: list[str], source: str) -> None:
    """Labels name run folders: distinct, and distinct as folder names too."""
    dupes = sorted({x for x in labels if labels.count(x) > 1})
    if dupes:
        raise _fail(
            source,
            "architectures",
            f"labels must be unique; repeated: "
            f"{', '.join(dupes)}. Give each a distinct 'label'.",
        )
    seen: dict[str, str] = {}
    for label in labels:
        other = seen.setdefault(normalised(label), label)
        if other != label:
            raise _fail(
                source,
                "architectures",
                f"labels {other!r} and {label!r} "
                "are the same text once Unicode-normalised (NFKC): they look "
                "alike on screen, so cnnlab treats them as one name. Give "
                "them labels that differ in letters or digits.",
            )
    folders: dict[str, str] = {}
    for label in labels:
        if len(slug(label, None)) > MAX_SLUG:
            raise _fail(
                source,
                "architectures",
                f"label {show_value(label)} is too "
                f"long for a folder name (at most {MAX_SLUG} letters, digits "
                "and '-._'). Give it a shorter 'label'.",
            )
        folder = run_folder_name(label)
        other = folders.setdefault(folder.lower(), label)  # case-blind disks
        if other != label:
            raise _fail(
                source,
                "architectures",
                f"labels {other!r} and {label!r} "
                f"share the run folder name '{folder}'. Make them differ in "
                "letters or digits.",
            )


def builtin_studies() -> list[str]:
    folder = resources.files("cnnlab") / "studies"
    return sorted(p.name[:-5] for p in folder.iterdir() if p.name.endswith(".yaml"))


def load_study(name_or_path: str | Path, allow: Sequence[str | Path] = ()) -> Study:
    """A built-in study by name ('quickstart', 'seed') or a study YAML file.

    `allow`: folders outside the study file's folder that its paths may reach.
    """
    text = str(name_or_path)
    if text in builtin_studies():
        resource = resources.files("cnnlab") / "studies" / f"{text}.yaml"
        doc = yaml.safe_load(resource.read_text(encoding="utf-8"))
        return parse_study(doc, source=f"study {text}")
    path = Path(text)
    try:
        is_file = path.is_file()
    except (OSError, ValueError):
        is_file = False
    if not is_file:
        hint = did_you_mean(text, builtin_studies())
        raise SpecError(
            f"{text}: no such study file or built-in study.{hint} Built-in: "
            f"{', '.join(builtin_studies())}."
        )
    try:
        doc = parse_yaml(path.read_text(encoding="utf-8"), path)
    except (OSError, UnicodeDecodeError) as err:
        raise SpecError(f"{path}: cannot read the file ({err}).") from err
    return parse_study(doc, source=str(path), base_dir=path.parent, allow=allow)


def override(study: Study, **changes: Any) -> Study:
    """The study with training settings changed for every architecture (CLI flags).

    `seeds` replaces the study's seeds, checked as a study file's are; the other
    keys are TrainConfig's OVERRIDES, checked as flags are (training.config).
    """
    seeds = changes.pop("seeds", None)
    unknown = sorted(show_value(k) for k in changes if k not in OVERRIDES)
    if unknown:
        raise CnnlabError(
            f"a study's settings cannot be overridden by {', '.join(unknown)}; "
            f"the ones that can: seeds, {', '.join(OVERRIDES)}."
        )
    if seeds is not None:
        seeds = _parse_seeds(list(seeds), "--seeds", where="")
    archs = tuple(
        dataclasses.replace(
            a,
            config=overridden(a.config, changes, f"{study.source} (net {a.label})"),
        )
        for a in study.archs
    )
    train = (
        None if study.train is None else overridden(study.train, changes, study.source)
    )
    return dataclasses.replace(
        study, archs=archs, seeds=tuple(seeds) if seeds else study.seeds, train=train
    )
