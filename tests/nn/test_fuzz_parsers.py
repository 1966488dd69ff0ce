"""Property-based fuzzing of the architecture and study parsers.

Random YAML-like trees and mutations of the real presets and studies (keys deleted,
duplicated, renamed or retyped; numbers negative, huge, fractional, NaN or bool;
random strings; deep nesting) go to `parse_architecture` + `shapes.infer` and to
`parse_study`. Whatever comes in, the only exception allowed out is a CnnlabError
with a one-line message.

The `ci` profile (tests/conftest.py) runs a few hundred examples in all; the
`fuzz` profile runs 10,000 per property:

    python3 -m pytest tests/nn/test_fuzz_parsers.py --hypothesis-profile=fuzz
"""

from __future__ import annotations

import copy
import json
import math
import tempfile
import warnings
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import given
from hypothesis import strategies as st

from cnnlab.errors import CnnlabError

# Hypothesis imports its patch writer (libcst) only to report a failure, and libcst
# warns a DeprecationWarning at import, which filterwarnings=error turns into an
# INTERNALERROR that hides the failing example. Import it now, warnings off.
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    try:
        import hypothesis.extra._patching  # noqa: F401
    except ImportError:  # no libcst: hypothesis then skips writing patches
        pass
from cnnlab.nn.shapes import infer
from cnnlab.nn.spec import dump_architecture, parse_architecture
from cnnlab.studies.study import load_study, parse_study
from helpers import TINY_NET, write_tiny_net

# ------------------------------------------------------------------- documents

# Words the parsers know, so random documents reach past the first check.
WORDS = [
    "name", "description", "input_shape", "layers", "type", "Conv2D", "conv2d",
    "MaxPooling2D", "max_pooling2d", "AveragePooling2D", "BatchNormalization",
    "Dropout", "Flatten", "Dense", "Activation", "LeakyReLU", "filters",
    "kernel_size", "strides", "padding", "activation", "use_bias", "pool_size",
    "momentum", "epsilon", "rate", "units", "negative_slope", "relu", "softmax",
    "linear", "same", "valid", "seeds", "train", "architectures", "data",
    "allow_paths", "preset", "file", "spec", "label", "epochs", "batch_size",
    "optimizer", "adam", "sgd", "lr", "validation", "holdout", "test", "none",
    "val_size", "split_seed", "train_limit", "test_limit", "device", "cpu",
    "threads", "mnist", "fashion-mnist", "conv5-tiny", "conv3-small", "4",
    "net.yaml", "../net.yaml", "/etc/passwd", "nets/x.yaml", "~/x.yaml", "a\x00b",
    "", " ", "\n", "<script>", "2001-02-30", "x" * 300,
]  # fmt: skip
NUMBERS = [0, 1, 2, -1, 3, 28, 2**31, 2**63, 2**64, 10**30, -(10**30)]


def huge(sign: int) -> int:
    """An integer past the 4,300 digits Python's str() accepts."""
    return sign * 10**5000


scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(),
    st.sampled_from(NUMBERS),
    st.sampled_from([1, -1]).map(huge),
    st.floats(allow_nan=True, allow_infinity=True),
    st.sampled_from([0.5, 1e-3, -0.5, 1.0, 1e300, float("nan"), float("inf")]),
    st.text(max_size=12),
    st.sampled_from(WORDS),
)
keys = st.one_of(st.sampled_from(WORDS), st.text(max_size=8), st.integers(), st.none())
trees = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=5),
        st.dictionaries(keys, inner, max_size=5),
    ),
    max_leaves=30,
)


def _builtin_docs(package: str) -> list[Any]:
    folder = resources.files(package)
    texts = [p.read_text("utf-8") for p in folder.iterdir() if p.name.endswith(".yaml")]
    return [yaml.safe_load(text) for text in sorted(texts)]


PRESETS = _builtin_docs("cnnlab.nn.presets")
STUDIES = _builtin_docs("cnnlab.studies") + [
    {
        "name": "mixed",
        "description": "every kind of entry",
        "data": "mnist",
        "seeds": [0, 1],
        "train": {"epochs": 2, "batch_size": 64, "lr": 0.01, "train_limit": 100},
        "architectures": [
            "conv5-tiny",
            4,
            {"preset": "conv3-small", "label": "small", "train": {"optimizer": "sgd"}},
            {"label": "linear", "spec": TINY_NET},
            {"file": "net.yaml", "label": "from a file"},
        ],
    }
]  # fmt: skip


def _paths(node: Any, path: tuple = ()) -> Iterator[tuple]:
    """Every position in a tree, the root first."""
    yield path
    if isinstance(node, dict):
        for key, value in node.items():
            yield from _paths(value, (*path, key))
    elif isinstance(node, list):
        for i, value in enumerate(node):
            yield from _paths(value, (*path, i))


def _get(node: Any, path: tuple) -> Any:
    for step in path:
        node = node[step]
    return node


def _as_text(value: Any) -> str:
    try:
        return str(value)[:50]
    except ValueError:  # an integer past str()'s 4,300 digits, somewhere inside
        return "9" * 50


def _retype(value: Any, draw: Callable) -> Any:
    """The same content in another type: the slips a hand-written file makes."""
    forms: list[Callable[[Any], Any]] = [
        lambda v: [v],
        lambda v: {"value": v},
        _as_text,
        lambda v: None,
        lambda v: -v if isinstance(v, int | float) else v,
        lambda v: huge(1) if isinstance(v, int) else v,
        lambda v: float(v) if isinstance(v, int) and abs(v) < 2**60 else v,
        lambda v: bool(v) if not isinstance(v, list | dict) else v,
    ]
    return draw(st.sampled_from(forms))(value)


def _deep(value: Any, depth: int) -> Any:
    for _ in range(depth):
        value = [value]
    return value


def mutate(doc: Any, draw: Callable, rounds: int) -> Any:
    """`doc` (copied) after `rounds` random edits anywhere in its tree."""
    doc = copy.deepcopy(doc)
    for _ in range(rounds):
        places = list(_paths(doc))
        path = draw(st.sampled_from(places))
        if not path:
            continue  # the root itself stays a document
        parent, key = _get(doc, path[:-1]), path[-1]
        edit = draw(st.sampled_from(
            ["delete", "duplicate", "replace", "retype", "rename", "add", "deep"]))  # fmt: skip
        value = parent[key]
        if edit == "delete":
            del parent[key]
        elif edit == "duplicate" and isinstance(parent, list):
            parent.insert(key, copy.deepcopy(value))
        elif edit == "replace":
            parent[key] = draw(trees)
        elif edit == "retype":
            parent[key] = _retype(value, draw)
        elif edit == "rename" and isinstance(parent, dict):
            parent[draw(keys)] = parent.pop(key)
        elif edit == "add" and isinstance(parent, dict):
            parent[draw(keys)] = draw(trees)
        elif edit == "add":
            parent.append(draw(trees))
        elif edit == "deep":
            parent[key] = _deep(value, draw(st.integers(1, 200)))
    return doc


# -------------------------------------------------------------------- checking


def assert_clean_error(err: CnnlabError) -> None:
    """The project's errors are one line that says something."""
    message = str(err)
    assert message.strip(), f"empty message from {type(err).__name__}"
    assert "\n" not in message and "\r" not in message, f"multi-line: {message!r}"


def check_architecture(doc: Any) -> None:
    """parse + infer, and a parsed net survives its round trip through YAML."""
    try:
        arch = parse_architecture(doc, source="fuzz.yaml")
        infer(arch, 10)
    except CnnlabError as err:
        assert_clean_error(err)
        return
    again = parse_architecture(yaml.safe_load(dump_architecture(arch)), "again.yaml")
    assert again == arch, "the run folder's spec.yaml would not load back the same"


@pytest.fixture(scope="module")
def study_dir() -> Iterator[Path]:
    """An empty folder (plus net.yaml) for the studies' relative paths."""
    with tempfile.TemporaryDirectory() as folder:
        write_tiny_net(Path(folder) / "net.yaml")
        yield Path(folder)


def check_study(doc: Any, folder: Path) -> None:
    try:
        study = parse_study(doc, source=str(folder / "fuzz.yaml"), base_dir=folder)
    except CnnlabError as err:
        assert_clean_error(err)
        return
    json.dumps(study.to_dict(), allow_nan=False)  # as the store records it
    assert study.trials()


# ------------------------------------------------------------------ properties


@given(trees)
def test_random_architecture_documents(doc: Any) -> None:
    check_architecture(doc)


@given(st.data())
def test_mutated_presets(data: st.DataObject) -> None:
    preset = data.draw(st.sampled_from(PRESETS))
    doc = mutate(preset, data.draw, data.draw(st.integers(1, 4)))
    check_architecture(doc)


@given(trees)
def test_random_study_documents(study_dir: Path, doc: Any) -> None:
    check_study(doc, study_dir)


@given(st.data())
def test_mutated_studies(study_dir: Path, data: st.DataObject) -> None:
    study = data.draw(st.sampled_from(STUDIES))
    doc = mutate(study, data.draw, data.draw(st.integers(1, 4)))
    check_study(doc, study_dir)


# Characters that move YAML's structure around, plus tags and anchors.
YAML_BITS = st.sampled_from(
    [":", "-", " ", "\n", "[", "]", "{", "}", ",", "'", '"', "#", "&a", "*a", "!!",
     "!!python/object/apply:os.system", "!!binary", "!!timestamp", "2001-02-30",
     "\t", "?", "|", ">", "%", "@", "\x00", "1e400", "0x", "~"])  # fmt: skip


@given(st.data())
def test_mutated_study_files(study_dir: Path, data: st.DataObject) -> None:
    """Text-level edits of a study file: whatever YAML makes of them."""
    text = yaml.safe_dump(data.draw(st.sampled_from(STUDIES)))
    for _ in range(data.draw(st.integers(1, 5))):
        at = data.draw(st.integers(0, len(text)))
        cut = data.draw(st.integers(0, 3))
        text = text[:at] + data.draw(YAML_BITS | st.text(max_size=3)) + text[at + cut :]
    path = study_dir / "fuzz.yaml"
    path.write_text(text, encoding="utf-8")
    try:
        study = load_study(path)
    except CnnlabError as err:
        assert_clean_error(err)
        return
    assert all(math.isfinite(a.config.learning_rate) for a in study.archs)
