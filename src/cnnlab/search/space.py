"""Search spaces: the `search:` block of a study file, validated, sampled and turned
into architectures and training settings.

    search:
      trials: 20                 # candidates to train (invalid points do not count)
      sampler: tpe               # tpe (default) | random | grid
      seed: 0                    # the sampler's seed and the candidates' training seed
      pruner: median             # none (default) | median | halving | hyperband
      objectives: [val_loss]     # or [val_acc], or two: [val_acc, flops] (NSGA-II)
      finalists: 5               # re-trained over the study's seeds
      space:
        lr: {float: [1.0e-4, 1.0e-2], log: true}
        width: {int: [4, 64], log: true}
        kernel: {choice: [3, 5]}
        blocks: {int: [1, 3]}
        bn: {choice: [true, false]}
      architecture:              # an architecture file's layers, with $parameters
        layers:
          - repeat: $blocks
            layers:
              - Conv2D: {filters: $width, kernel_size: $kernel, padding: same}
              - when: $bn
                layers: [BatchNormalization]
              - Activation: {activation: relu}
              - MaxPooling2D: {pool_size: 2}
          - Flatten
          - Dense: {units: 10, activation: softmax}

A parameter named like a training setting (lr, optimizer, batch_size, epochs,
schedule, augment, label_smoothing, ...) sets it; every other one must appear in the
architecture as `$name`. Nothing here trains or touches Optuna's storage: `sample`
takes any object with Optuna's `suggest_*` methods.
"""

from __future__ import annotations

import dataclasses
import hashlib
import itertools
import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError, SpecError
from cnnlab.nn.adapt import adapt_to_data
from cnnlab.nn.shapes import check_input, infer
from cnnlab.nn.spec import Architecture, parse_architecture
from cnnlab.studies.study import Study
from cnnlab.training.config import TrainConfig
from cnnlab.training.session import image_options
from cnnlab.util.messages import must_be_one_of, unknown_key
from cnnlab.util.text import did_you_mean, is_int, is_number, show_value

SAMPLERS = ("tpe", "random", "grid")
PRUNERS = ("none", "median", "halving", "hyperband")
# Objective -> Optuna direction. The first is a validation score (and, with one
# objective, what a pruner watches per epoch); a second is a cost (NSGA-II front).
OBJECTIVES = {"val_loss": "minimize", "val_acc": "maximize"}
COSTS = {"params": "minimize", "flops": "minimize"}
_KEYS = (
    "trials",
    "sampler",
    "seed",
    "pruner",
    "objectives",
    "finalists",
    "space",
    "architecture",
)
_KINDS = ("float", "int", "choice")
_TRAIN_PARAMS = tuple(
    f.name
    for f in dataclasses.fields(TrainConfig)
    if f.name not in ("seed", "data", "device", "threads", "split_seed")
)
# Settings a search may not vary: candidates are ranked on validation scores, and
# searching never reads the test set (validation: test would, none gives no score).
_UNSEARCHABLE = ("validation",)
# A space whose every point cannot be built is refused before anything trains;
# checked on its corners and choices, at most this many points.
MAX_CHECKED_POINTS = 4096
# Bounds that keep checking a space (and building a point) quick and small:
MAX_GRID_POINTS = 100_000  # sampler: grid; Optuna lists every point up front
MAX_REPEAT = 1000  # the largest `repeat:` count
MAX_FILLED = 10_000  # items of any list a filled template holds (layers)
MAX_TEMPLATE_NODES = 100_000  # values in the template, YAML aliases expanded
MAX_INT = 2**31 - 1  # int ranges and choices: a layer size, a count
MAX_FLOAT = 1e300  # float ranges: finite, with room for a log scale
Value = int | float | str | bool


@dataclass(frozen=True)
class Param:
    """One searched parameter: a float or int range (optionally log-scaled) or a
    list of choices."""

    name: str
    kind: str  # float | int | choice
    low: float = 0.0
    high: float = 0.0
    log: bool = False
    choices: tuple[Value, ...] = ()

    def corners(self) -> tuple[Value, ...]:
        """The values a validity check tries: the ends of a range, every choice."""
        if self.kind == "choice":
            return self.choices
        if self.kind == "int":
            return (int(self.low), int(self.high))
        return (self.low, self.high)


class Suggester(Protocol):
    """What `sample` needs of an Optuna trial."""

    def suggest_float(
        self, name: str, low: float, high: float, *, log: bool
    ) -> float: ...

    def suggest_int(self, name: str, low: int, high: int, *, log: bool) -> int: ...

    def suggest_categorical(self, name: str, choices: Any) -> Any: ...


@dataclass(frozen=True)
class SearchSpec:
    """A validated search: the space, the template, the budget and the final stage."""

    study: Study  # its fixed architectures (if any) join the finalists as baselines
    params: tuple[Param, ...]
    template: Mapping[str, Any]  # architecture document with $references
    trials: int | None  # None: the whole grid
    sampler: str
    seed: int
    pruner: str
    objectives: tuple[str, ...]
    finalists: int
    source: str

    @property
    def name(self) -> str:
        return self.study.name

    @property
    def base(self) -> TrainConfig:
        return self.study.train or TrainConfig()

    def grid(self) -> dict[str, list[Value]]:
        """Optuna's GridSampler search space: every parameter's choices."""
        return {p.name: list(p.choices) for p in self.params}

    def grid_size(self) -> int:
        return math.prod(len(p.choices) for p in self.params)

    def budget(self) -> int:
        """Candidates to train: `trials`, or the whole grid; at most the grid."""
        if self.sampler != "grid":
            assert self.trials is not None
            return self.trials
        return min(self.trials or self.grid_size(), self.grid_size())


def _fail(source: str, where: str, message: str) -> SpecError:
    return SpecError(f"{source}: {where}: {message}")


def parse_search(study: Study) -> SearchSpec:
    """The study's `search:` block -> a validated `SearchSpec` (SpecError, located,
    on any mistake, including a space none of whose checked points can be built)."""
    doc, source = study.search, study.source
    if doc is None:
        raise SpecError(f"{source}: has no 'search' block; run it with cnnlab study.")
    for key in doc:
        if key not in _KEYS:
            raise _fail(source, "search", unknown_key(key, _KEYS))
    sampler = _one_of(doc.get("sampler", "tpe"), SAMPLERS, source, "search.sampler")
    params = _parse_space(doc.get("space"), sampler, source)
    template = doc.get("architecture")
    if not isinstance(template, Mapping) or "layers" not in template:
        raise _fail(
            source,
            "search.architecture",
            "must be an architecture with "
            "'layers', whose values may name parameters as $name.",
        )
    if sampler == "grid":
        _check_grid(params, source)
    _check_size(template, source)
    _check_references(template, params, source)
    _check_repeats(template, params, source)
    _check_validation(study, params, source)
    objectives = _parse_objectives(doc.get("objectives", ["val_loss"]), source)
    pruner = _one_of(doc.get("pruner", "none"), PRUNERS, source, "search.pruner")
    if pruner != "none" and len(objectives) > 1:
        raise _fail(
            source,
            "search.pruner",
            "pruning needs a single objective "
            "(Optuna cannot prune multi-objective studies): use pruner: none "
            "or one objective.",
        )
    if pruner != "none" and (study.train or TrainConfig()).validation == "none":
        raise _fail(
            source,
            "search.pruner",
            "prunes on the validation score, but "
            "train.validation is none. Use validation: holdout.",
        )
    spec = SearchSpec(
        study=study,
        params=params,
        template=template,
        trials=_count(doc, "trials", source, required=sampler != "grid"),
        sampler=sampler,
        seed=_count(doc, "seed", source, default=0, low=0) or 0,
        pruner=pruner,
        objectives=objectives,
        finalists=_count(doc, "finalists", source, default=5) or 5,
        source=source,
    )
    check_some_valid(spec, data_facts(spec.base))
    return spec


def _one_of(value: Any, choices: tuple[str, ...], source: str, where: str) -> str:
    if not isinstance(value, str) or value not in choices:
        hint = did_you_mean(value, choices) if isinstance(value, str) else ""
        message = must_be_one_of("", choices, show_value(value), hint)
        raise _fail(source, where, message)
    return value


def _count(
    doc: Mapping,
    key: str,
    source: str,
    default: int | None = None,
    required: bool = False,
    low: int = 1,
) -> int | None:
    value = doc.get(key, default)
    if value is None and not required:
        return None
    if not is_int(value) or value < low or value > 2**31 - 1:
        example = {"trials": "trials: 20", "finalists": "finalists: 5"}.get(key, "0")
        raise _fail(
            source,
            f"search.{key}",
            f"must be an integer >= {low}. "
            f"Received: {show_value(value)}. Example: {example}.",
        )
    return int(value)


def _parse_objectives(value: Any, source: str) -> tuple[str, ...]:
    where = "search.objectives"
    items = value if isinstance(value, list) else [value]
    ok = (
        1 <= len(items) <= 2
        and items[0] in OBJECTIVES
        and all(i in COSTS for i in items[1:])
    )
    if not ok:
        raise _fail(
            source,
            where,
            "must be one validation score (val_loss or "
            "val_acc), optionally followed by a cost (params or flops), e.g. "
            f"[val_acc, flops]. Received: {show_value(value)}.",
        )
    return tuple(items)


def _parse_space(doc: Any, sampler: str, source: str) -> tuple[Param, ...]:
    if not isinstance(doc, Mapping) or not doc:
        raise _fail(
            source,
            "search.space",
            "must map parameter names to ranges or "
            "choices, e.g. {lr: {float: [1.0e-4, 1.0e-2], log: true}, kernel: "
            "{choice: [3, 5]}}.",
        )
    params = tuple(_parse_param(k, v, source) for k, v in doc.items())
    if sampler == "grid":
        for p in params:
            if p.kind != "choice":
                where = f"search.space.{p.name}"
                raise _fail(
                    source,
                    where,
                    "sampler: grid takes the cartesian "
                    "product of listed values: write {choice: [...]} "
                    f"instead of a {p.kind} range.",
                )
    return params


def _parse_param(name: Any, doc: Any, source: str) -> Param:
    where = f"search.space.{name}"
    if not isinstance(name, str) or not name.isidentifier():
        raise _fail(
            source,
            "search.space",
            "parameter names are identifiers such "
            f"as width or lr. Received: {show_value(name)}.",
        )
    kinds = [k for k in _KINDS if isinstance(doc, Mapping) and k in doc]
    extra = set(doc) - {*_KINDS, "log"} if isinstance(doc, Mapping) else set()
    if len(kinds) != 1 or extra:
        raise _fail(
            source,
            where,
            "give one of {float: [low, high]}, {int: [low, "
            "high]} (either with log: true for a log scale) or {choice: "
            f"[a, b, ...]}}. Received: {show_value(doc)}.",
        )
    kind, value = kinds[0], doc[kinds[0]]
    log = doc.get("log", False)
    if not isinstance(log, bool):
        raise _fail(
            source, where, f"log must be true or false. Received: {show_value(log)}."
        )
    if kind == "choice":
        return _parse_choice(name, value, log, source, where)
    number = is_int if kind == "int" else is_number
    if not (isinstance(value, list) and len(value) == 2 and all(map(number, value))):
        raise _fail(
            source,
            where,
            f"{kind} must be a [low, high] pair of "
            f"{kind}s. Received: {show_value(value)}.",
        )
    low, high = value
    bound = MAX_INT if kind == "int" else MAX_FLOAT
    if not all(_within(v, bound) for v in value):
        shown = f"{bound:,}" if kind == "int" else f"{bound:g}"
        raise _fail(
            source,
            where,
            f"the range {_shown(value)} must hold finite "
            f"numbers between -{shown} and {shown}.",
        )
    if not low < high:
        what = "empty" if low == high else "inverted"
        raise _fail(
            source,
            where,
            f"the range {show_value(value)} is {what}: low "
            "must be below high. For a fixed value write it in the template "
            "instead.",
        )
    if log and low <= 0:
        raise _fail(
            source,
            where,
            f"a log-scaled range must be above 0. Received: {show_value(value)}.",
        )
    return Param(name, kind, low, high, log)


def _parse_choice(name: str, value: Any, log: bool, source: str, where: str) -> Param:
    simple = isinstance(value, list) and all(
        isinstance(v, str | bool) or is_number(v) for v in value
    )
    if not simple:
        raise _fail(
            source,
            where,
            "choice must be a list of numbers, names or "
            f"true/false. Received: {show_value(value)}.",
        )
    if len(value) < 2:
        raise _fail(
            source,
            where,
            f"a choice needs at least two values. Received: "
            f"{show_value(value)}. For a fixed value write it in the "
            "template instead.",
        )
    numbers = [v for v in value if is_number(v) and not isinstance(v, bool)]
    if not all(_within(v, MAX_INT if is_int(v) else MAX_FLOAT) for v in numbers):
        raise _fail(
            source,
            where,
            "choice values must be finite numbers of "
            f"magnitude at most {MAX_INT:,} (whole) or {MAX_FLOAT:g} "
            "(decimal). "
            f"Received: {_shown(value)}.",
        )
    if len({json.dumps(v) for v in value}) != len(value):
        raise _fail(source, where, f"has repeated values: {show_value(value)}.")
    if log:
        raise _fail(source, where, "log: true is for float and int ranges.")
    return Param(name, "choice", choices=tuple(value))


def _within(value: Any, bound: float) -> bool:
    """True for a finite number of magnitude at most `bound` (huge ints included:
    comparing an int is exact, converting it to float would overflow)."""
    if isinstance(value, float) and not math.isfinite(value):
        return False
    return -bound <= value <= bound


def _shown(value: Any) -> str:
    """show_value, with integers of thousands of digits shortened first."""
    if isinstance(value, list):
        return "[" + ", ".join(_shown(v) for v in value) + "]"
    if isinstance(value, int) and value.bit_length() > 64:
        return f"<an integer of {len(hex(value)) - 2} hex digits>"
    return show_value(value)


# ------------------------------------------------------------- the template


def _references(doc: Any, where: str) -> Iterator[tuple[str, str]]:
    """Every ($name, location) in a template document."""
    if isinstance(doc, str) and doc.startswith("$"):
        yield doc[1:], where
    elif isinstance(doc, Mapping):
        for key, value in doc.items():
            yield from _references(value, f"{where}.{key}")
    elif isinstance(doc, list):
        for i, value in enumerate(doc):
            yield from _references(value, f"{where}[{i}]")


def _check_references(
    template: Mapping, params: tuple[Param, ...], source: str
) -> None:
    names = [p.name for p in params]
    used = set()
    for name, where in _references(template, "search.architecture"):
        if name not in names:
            hint = did_you_mean(name, names)
            raise _fail(
                source,
                where,
                f"${name} is not a parameter of search.space."
                f"{hint} Defined: {', '.join(names)}.",
            )
        used.add(name)
    for p in params:
        if p.name not in used and p.name not in _TRAIN_PARAMS:
            raise _fail(
                source,
                f"search.space.{p.name}",
                "is defined but never used: "
                f"write ${p.name} in search.architecture, or name a training "
                f"setting ({', '.join(_TRAIN_PARAMS)}).",
            )


def _check_size(template: Any, source: str) -> None:
    """Refuse a template of more than MAX_TEMPLATE_NODES values once YAML aliases
    are expanded (nine nested aliases of ten are 10^9 values in a 1 KB file):
    counted on the document as loaded, where an alias is one shared object, so
    the count stops at the limit without expanding anything."""
    count, todo = 0, [template]
    while todo:
        node = todo.pop()
        count += 1
        if count > MAX_TEMPLATE_NODES:
            raise _fail(
                source,
                "search.architecture",
                "holds more than "
                f"{MAX_TEMPLATE_NODES:,} values once its YAML aliases "
                "(*name) are expanded. Write the layers out, or use "
                "repeat: blocks.",
            )
        if isinstance(node, Mapping):
            todo.extend(node.values())
        elif isinstance(node, list):
            todo.extend(node)


def _check_repeats(
    template: Any, params: tuple[Param, ...], source: str, where: str = ""
) -> None:
    """Every `repeat:` count, fixed or a parameter, is at most MAX_REPEAT."""
    where = where or "search.architecture"
    if isinstance(template, Mapping):
        block = _block(template)
        if block is not None and block[0] == "repeat":
            _check_count(block[1], params, source, f"{where}.repeat")
        for key, value in template.items():
            _check_repeats(value, params, source, f"{where}.{key}")
    elif isinstance(template, list):
        for i, value in enumerate(template):
            _check_repeats(value, params, source, f"{where}[{i}]")


def _check_count(
    count: Any, params: tuple[Param, ...], source: str, where: str
) -> None:
    by_name = {p.name: p for p in params}
    param = by_name.get(count[1:]) if isinstance(count, str) else None
    if param is None:
        largest = count if is_number(count) else 0
    elif param.kind == "choice":
        largest = max((v for v in param.choices if is_number(v)), default=0)
    else:
        largest = param.high
    if largest > MAX_REPEAT:
        what = f"${param.name} reaches {_shown(largest)}" if param else _shown(count)
        raise _fail(
            source,
            where,
            f"a repeat count is at most {MAX_REPEAT:,}; {what}. Narrow the range.",
        )


def _check_validation(study: Study, params: tuple[Param, ...], source: str) -> None:
    """Candidates are ranked on a hold-out's scores: never on the test set, never
    without a score."""
    for p in params:
        if p.name in _UNSEARCHABLE:
            raise _fail(
                source,
                f"search.space.{p.name}",
                "cannot be searched: "
                "candidates are ranked on validation scores of a hold-out, "
                "and a search never reads the test set. Remove it from "
                "search.space (train.validation: holdout is the "
                "default).",
            )
    validation = (study.train or TrainConfig()).validation
    if validation in ("test", "none"):
        why = (
            (
                "would validate every candidate on the test set, which a search "
                "never reads"
            )
            if validation == "test"
            else ("gives no validation score to rank candidates by")
        )
        raise _fail(
            source,
            "train.validation",
            f"{validation} {why}. Use validation: holdout (the default) for a search.",
        )


def _check_grid(params: tuple[Param, ...], source: str) -> None:
    """The grid's size, as a product, without listing it."""
    size = math.prod(len(p.choices) for p in params)  # small ints: instant
    if size > MAX_GRID_POINTS:
        raise _fail(
            source,
            "search.space",
            f"the grid of {len(params)} parameters "
            f"has {size:,} points, over "
            f"the limit of {MAX_GRID_POINTS:,} for sampler: grid (even with "
            "--trials). Use sampler: tpe or random with trials: N, or fewer "
            "choices.",
        )


def fill(template: Any, values: Mapping[str, Value]) -> Any:
    """The template with every $name replaced, `repeat` blocks repeated and `when`
    blocks kept only when their value is true."""
    if isinstance(template, str) and template.startswith("$"):
        return values[template[1:]]
    if isinstance(template, Mapping):
        return {k: fill(v, values) for k, v in template.items()}
    if not isinstance(template, list):
        return template
    out: list[Any] = []
    for item in template:
        block = _block(item)
        if block is None:
            out.append(fill(item, values))
            continue
        key, count_doc, layers = block
        count = fill(count_doc, values)
        times = (1 if count else 0) if key == "when" else count
        if not is_int(times) or times < 0:
            raise SpecError(f"repeat: must be a whole number >= 0, got {count!r}")
        filled = fill(layers, values) if times else []
        if len(out) + len(filled) * times > MAX_FILLED:
            raise SpecError(
                f"repeat: {times} x {len(filled)} layers would make more than "
                f"{MAX_FILLED:,} layers in one list"
            )
        out.extend(filled * times)
    return out


def _block(item: Any) -> tuple[str, Any, list] | None:
    """('repeat' | 'when', count or flag, layers) if `item` is such a block."""
    if not isinstance(item, Mapping) or set(item) - {"repeat", "when", "layers"}:
        return None
    keys = [k for k in ("repeat", "when") if k in item]
    if len(keys) == 1 and isinstance(item.get("layers"), list):
        return keys[0], item[keys[0]], item["layers"]
    return None


@dataclass(frozen=True)
class Point:
    """One sampled point: its values, and what they build (or why they cannot)."""

    values: dict[str, Value]
    arch: Architecture | None
    config: TrainConfig | None
    invalid: str = ""  # why the point cannot be built; "" if it can

    @property
    def key(self) -> str:
        """A short name that depends only on the values: the run folder's label."""
        text = json.dumps(self.values, sort_keys=True)
        return "c-" + hashlib.sha256(text.encode()).hexdigest()[:10]

    @property
    def label(self) -> str:
        """The values as a reader knows the candidate: 'width=16 lr=0.003'."""
        return values_text(self.values)


def values_text(values: Mapping[str, Any]) -> str:
    """'width=16 lr=0.003': each value, floats to 3 significant digits."""
    return " ".join(
        f"{k}={v:.3g}" if isinstance(v, float) else f"{k}={v}"
        for k, v in values.items()
    )


@dataclass(frozen=True)
class DataFacts:
    """What every point is fitted to and checked against: the search's data."""

    name: str
    shape: tuple[int, int, int]  # (H, W, C)
    classes: int


def data_facts(config: TrainConfig) -> DataFacts:
    """The image shape and class count of the data `config` trains on."""
    dataset = load_dataset(config.data, image_options(config))
    return DataFacts(config.data, dataset.image_shape, dataset.num_classes)


def build_point(
    spec: SearchSpec, values: Mapping[str, Value], data: DataFacts
) -> Point:
    """Build the architecture and training config of `values`, fitted to the data
    (`adapt_to_data`, as training fits it) and shape-inferred; a point that cannot
    be built comes back with `invalid` saying why."""
    values = dict(values)
    train = {k: v for k, v in values.items() if k in _TRAIN_PARAMS}
    name = "search-" + Point(values, None, None).key[2:]
    try:
        doc = fill(spec.template, values)
        arch = parse_architecture({"name": name, **doc}, source=f"{spec.name} point")
        arch = adapt_to_data(arch, data.shape, data.classes)
        check_input(arch, data.shape, data.name)
        infer(arch, data.classes)
        config = spec.base.replace(**train)
    except CnnlabError as err:  # SpecError (shapes, layer arguments) and settings
        return Point(values, None, None, invalid=_reason(str(err)))
    return Point(values, arch, config)


def _reason(message: str) -> str:
    return message.split(" point: ", 1)[-1]


def sample(spec: SearchSpec, trial: Suggester) -> dict[str, Value]:
    """The point an Optuna trial suggests."""
    values: dict[str, Value] = {}
    for p in spec.params:
        if p.kind == "float":
            values[p.name] = trial.suggest_float(p.name, p.low, p.high, log=p.log)
        elif p.kind == "int":
            low, high = int(p.low), int(p.high)
            values[p.name] = trial.suggest_int(p.name, low, high, log=p.log)
        else:
            values[p.name] = trial.suggest_categorical(p.name, list(p.choices))
    return values


def check_some_valid(spec: SearchSpec, data: DataFacts) -> None:
    """Refuse a space none of whose checked points (the grid, or the corners of
    every range with every choice) can be built for `data`."""
    lists = [p.corners() for p in spec.params]
    reasons: list[str] = []
    for checked, combo in enumerate(itertools.product(*lists), start=1):
        point = build_point(
            spec, dict(zip([p.name for p in spec.params], combo, strict=True)), data
        )
        if not point.invalid:
            return
        reasons.append(point.invalid)
        if checked >= MAX_CHECKED_POINTS:
            break
    raise _fail(
        spec.source,
        "search.space",
        f"no point can be built: all "
        f"{len(reasons)} checked point(s) are invalid, e.g. "
        f"{reasons[0]} Widen the ranges or change the template.",
    )
