"""Checking and starting a search stays bounded and never mixes with other work:
the template's repeat blocks are capped while filled, a search refuses study names
an ordinary study holds, an optuna.sqlite that is no usable Optuna database is one
error, and a time budget over before the first candidate says so. (The space's
own limits are rows of the bad-input matrix, tests/cli/test_bad_input.py.)"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest
import yaml

from helpers import snapshot, tiny_net_doc

optuna = pytest.importorskip("optuna")

import cnnlab  # noqa: E402
from cnnlab.errors import SpecError  # noqa: E402
from cnnlab.search.space import MAX_FILLED, fill  # noqa: E402

TINY_TRAIN = {"epochs": 1, "train_limit": 300, "test_limit": 100, "val_size": 100}
DENSE = {"layers": ["Flatten", {"Dense": {"units": "$units", "activation": "relu"}},
                    {"Dense": {"units": 10, "activation": "softmax"}}]}  # fmt: skip


def write_search(folder: Path, name: str = "s") -> Path:
    search = {"trials": 1, "finalists": 1, "space": {"units": {"int": [4, 8]}},
              "architecture": DENSE}  # fmt: skip
    doc = {"name": name, "train": TINY_TRAIN, "seeds": [0], "search": search}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def ordinary_study(folder: Path, out: Path, name: str) -> None:
    """A real one-trial study named `name` in the store of `out`."""
    doc = {"name": name, "train": TINY_TRAIN, "seeds": [0],
           "architectures": [{"label": "net", "spec": tiny_net_doc()}]}  # fmt: skip
    path = folder / f"study-{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    cnnlab.run_study(path, out, progress=None)


def test_nested_repeats_are_capped_while_filled() -> None:
    template = [{"repeat": "$n", "layers": [{"repeat": "$n", "layers": ["Flatten"]}]}]
    assert len(fill(template, {"n": 10})) == 100
    with pytest.raises(SpecError, match=f"more than {MAX_FILLED:,} layers"):
        fill(template, {"n": 1000})  # 10^6 layers: refused, never built


@pytest.mark.parametrize("taken", ["s", "s-final"])
def test_a_search_refuses_the_name_of_an_ordinary_study(
    taken: str, tmp_path: Path
) -> None:
    out = tmp_path / "out"
    ordinary_study(tmp_path, out, taken)
    before = snapshot(out)
    with pytest.raises(cnnlab.CnnlabError, match=f"the study '{taken}' is an ordin"):
        cnnlab.run_search(write_search(tmp_path), out, progress=None)
    assert snapshot(out) == before


@pytest.mark.parametrize("kind", ["not-a-database", "newer-schema"])
def test_an_unusable_optuna_file_is_one_error(kind: str, tmp_path: Path) -> None:
    out = tmp_path / "out"
    out.mkdir()
    path = out / "optuna.sqlite"
    if kind == "not-a-database":
        path.write_text("x\n")
    else:
        optuna.create_study(storage=f"sqlite:///{path}", study_name="other")
        with sqlite3.connect(path) as db:
            db.execute("UPDATE alembic_version SET version_num='v9.9.9'")
    before = path.read_bytes()
    with pytest.raises(cnnlab.CnnlabError, match="not a usable Optuna database"):
        cnnlab.run_search(write_search(tmp_path), out, progress=None)
    assert path.read_bytes() == before


def test_a_time_budget_over_before_the_first_candidate_says_so(
    tmp_path: Path,
) -> None:
    with pytest.raises(cnnlab.CnnlabError, match="before the first candidate"):
        cnnlab.run_search(write_search(tmp_path), tmp_path / "out",
                          time_budget=1e-300, progress=None)  # fmt: skip
