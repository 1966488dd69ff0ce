"""Honest comparisons, end to end through the CLI on real MNIST subsets: the best is
chosen on validation, the warning appears exactly when the test set chose, the test
set is read once per trial, McNemar and the best-epoch view reach every format, old
stores still report, and a cross-dataset study compares MNIST with Fashion-MNIST."""

from __future__ import annotations

import csv
import re
import sqlite3
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from markdown_it import MarkdownIt

from helpers import Result, main_in_folder, run_chromium

NETS = [
    {"label": "dense", "spec": {"layers": ["Flatten", {"Dense": {"units": 10,
                                                                  "activation": "softmax"}}]}},
    {"label": "mlp", "spec": {"layers": ["Flatten", {"Dense": {"units": 32, "activation": "relu"}},
                                         {"Dense": {"units": 10, "activation": "softmax"}}]}},
]  # fmt: skip
SMALL = {"epochs": 3, "train_limit": 1500, "test_limit": 400, "val_size": 400}
WARNING = "chosen on the test set"


def write_study(folder: Path, name: str, **extra: object) -> Path:
    train = SMALL | extra.pop("train", {})  # type: ignore[operator]
    doc = {"name": name, "seeds": [0, 1], "train": train, "architectures": NETS}
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc | extra), encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def holdout(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A study with a hold-out: dense and mlp, 2 seeds each."""
    folder = tmp_path_factory.mktemp("holdout")
    result = main_in_folder(
        folder, "study", write_study(folder, "held"), "--out", "out"
    )
    assert result.code == 0, result.err
    (folder / "stdout.txt").write_text(result.out)
    return folder


def test_holdout_chooses_on_validation_and_says_so(holdout: Path) -> None:
    out = (holdout / "stdout.txt").read_text()
    assert WARNING not in out
    assert "best chosen on validation" in out
    assert "chosen on validation accuracy" in out
    assert "Each trial read the test set 1 time." in out
    assert "Welch's t-test" in out and "McNemar's exact test" in out
    assert "Holm" not in out  # one comparison: nothing to correct for
    md = (holdout / "out/held/report/report.md").read_text()
    assert WARNING not in md and "best val\\_acc" not in md and "best val_acc" in md
    assert "## Best epoch and time to accuracy" in md
    assert "## Where each net goes wrong" in md
    assert "## What each net changes from the best" in md
    assert "binomial SE on 400 images" in md


def test_the_test_set_is_read_once_per_trial(holdout: Path) -> None:
    db = sqlite3.connect(holdout / "out/cnnlab.sqlite")
    reads = [r[0] for r in db.execute("SELECT test_reads FROM trials")]
    assert reads == [1, 1, 1, 1]
    runs = sorted((holdout / "out/held/runs").iterdir())
    assert all((r / "predictions.npz").is_file() for r in runs)


def test_mcnemar_counts_match_the_stored_predictions(holdout: Path) -> None:
    from cnnlab.reporting.analysis import test_set_checks
    from cnnlab.studies.store import Store

    with Store(holdout / "out/cnnlab.sqlite") as store:
        trials = store.trials("held")
    (check,) = test_set_checks(trials, "mlp")
    by = {(t.label, t.seed): t.predictions["test"] for t in trials}
    only_dense = only_mlp = 0
    for seed in (0, 1):
        d, m = by["dense", seed], by["mlp", seed]
        right_d, right_m = d["predicted"] == d["labels"], m["predicted"] == m["labels"]
        only_dense += int((right_d & ~right_m).sum())
        only_mlp += int((~right_d & right_m).sum())
    assert check.pooled is not None
    assert (check.pooled.only_a, check.pooled.only_b) == (only_dense, only_mlp)
    assert [seed for seed, _ in check.per_seed] == [0, 1]


def test_warning_appears_when_validation_is_the_test_set(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    # One net: the warning is about how the best was chosen, not how many competed.
    study = write_study(tmp_path, "ontest", train={"validation": "test", "epochs": 1},
                        architectures=NETS[:1])  # fmt: skip
    result = cli("study", study, "--out", "out", "--seeds", "0")
    assert result.code == 0, result.err
    assert WARNING in result.out and "best chosen on test set" in result.out
    report = tmp_path / "out/ontest/report"
    assert WARNING in (report / "report.md").read_text()
    assert WARNING in (report / "report.html").read_text()
    # rebuilt from the store without training: the same warning
    again = cli("report", "ontest", "--out", "out")
    assert again.code == 0 and WARNING in again.out


def test_old_store_without_predictions_still_reports(
    holdout: Path, tmp_path: Path, cli: Callable[..., Result]
) -> None:
    import shutil

    shutil.copy(holdout / "out/cnnlab.sqlite", tmp_path / "cnnlab.sqlite")
    db = sqlite3.connect(tmp_path / "cnnlab.sqlite")
    db.execute("DELETE FROM predictions")
    db.execute("UPDATE trials SET test_reads = NULL")
    db.commit()
    db.close()
    result = cli("report", "held", "--out", tmp_path)
    assert result.code == 0, result.err
    assert "No per-image test predictions for dense, mlp" in result.out
    md = (tmp_path / "held/report/report.md").read_text()
    assert "No per-image test predictions" in md and "Each trial read" not in md


def test_schema_1_store_is_upgraded_in_place(holdout: Path, tmp_path: Path) -> None:
    """A store written before predictions were kept: its trials read back, empty."""
    import shutil

    from cnnlab.studies.store import SCHEMA_VERSION, Store

    path = tmp_path / "cnnlab.sqlite"
    shutil.copy(holdout / "out/cnnlab.sqlite", path)
    db = sqlite3.connect(path)
    db.execute("DROP TABLE predictions")
    db.execute("ALTER TABLE trials DROP COLUMN test_reads")
    db.execute("ALTER TABLE trials DROP COLUMN precision")
    db.execute("PRAGMA user_version=1")
    db.commit()
    db.close()
    with Store(path) as store:
        trials = store.trials("held")
        version = store.db.execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION and len(trials) == 4
    assert all(t.predictions == {} and t.test_reads is None for t in trials)
    assert all(t.precision == "fp32" for t in trials)  # as every run was then


def test_schema_2_store_gains_the_precision_column(
    holdout: Path, tmp_path: Path
) -> None:
    import shutil

    from cnnlab.studies.store import SCHEMA_VERSION, Store

    path = tmp_path / "cnnlab.sqlite"
    shutil.copy(holdout / "out/cnnlab.sqlite", path)
    db = sqlite3.connect(path)
    assert {r[0] for r in db.execute("SELECT precision FROM trials")} == {"fp32"}
    db.execute("ALTER TABLE trials DROP COLUMN precision")
    db.execute("PRAGMA user_version=2")
    db.commit()
    db.close()
    with Store(path) as store:
        trials = store.trials("held")
        version = store.db.execute("PRAGMA user_version").fetchone()[0]
    assert version == SCHEMA_VERSION and [t.precision for t in trials] == ["fp32"] * 4


HOSTILE = {
    "label": '<img src=x onerror="alert(1)"> [x](javascript:alert(2)) # H | =SUM(1)',
    "description": '<script>alert(3)</script>\n```\n# Not a heading\n=HYPERLINK("x")',
}


def test_user_strings_are_inert_in_markdown_csv_and_html(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    nets = [NETS[0] | {"label": HOSTILE["label"]}, NETS[1] | {"label": "@SUM(A1)"}]
    doc = {"name": "hostile", "description": HOSTILE["description"], "seeds": [0],
           "train": SMALL | {"epochs": 1}, "architectures": nets}  # fmt: skip
    (tmp_path / "s.yaml").write_text(yaml.safe_dump(doc), encoding="utf-8")
    result = cli("study", "s.yaml", "--out", "out")
    assert result.code == 0, result.err
    report = tmp_path / "out/hostile/report"

    # Markdown, rendered by a CommonMark library: no HTML, link, image or heading
    # came from a user string
    tokens = (
        MarkdownIt("commonmark")
        .enable("table")
        .parse((report / "report.md").read_text())
    )
    kinds = {t.type for t in tokens} | {
        c.type for t in tokens for c in t.children or []
    }
    assert "html_inline" not in kinds and "html_block" not in kinds
    assert "link_open" not in kinds
    images = [c for t in tokens for c in t.children or [] if c.type == "image"]
    assert all(str(c.attrGet("src") or "").startswith("figures/") for c in images)
    headings = [tokens[i + 1].content for i, t in enumerate(tokens)
                if t.type == "heading_open"]  # fmt: skip
    assert "Not a heading" not in headings and not any("H |" in h for h in headings)
    rendered = (
        MarkdownIt("commonmark")
        .enable("table")
        .render((report / "report.md").read_text())
    )
    assert "<script>" not in rendered and "<img src=x" not in rendered
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in rendered

    # CSV, read by Python's csv module: formula-looking cells are text
    with (report / "table.csv").open(newline="", encoding="utf-8") as fh:
        rows = list(csv.reader(fh))
    assert [row[0] for row in rows[1:]] == [HOSTILE["label"], "'@SUM(A1)"]
    assert all(not cell.startswith(("=", "@", "+")) for row in rows for cell in row)

    # HTML, in Chromium: the strings are text, no element came from them
    dom = run_chromium(report / "report.html", tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    assert "<script>" not in dom.stdout
    assert not re.search(r"<[a-z]+[^>]*\sonerror=", dom.stdout)  # text, not an element
    assert "&lt;script&gt;alert(3)&lt;/script&gt;" in dom.stdout
    assert not re.search(r"<img[^>]*src=\"?x", dom.stdout)


def test_new_sections_render_in_chromium(holdout: Path, tmp_path: Path) -> None:
    page = holdout / "out/held/report/report.html"
    dom = run_chromium(page, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    html = dom.stdout
    for heading in ("Best epoch and time to accuracy", "Where each net goes wrong",
                    "What each net changes from the best"):  # fmt: skip
        assert f">{heading}</h2>" in html
    for cls in ("epochs", "confused", "diffs"):
        assert f'class="{cls}"' in html
    figures = sorted(p.name for p in (page.parent / "figures").iterdir())
    assert "confusion-mlp.png" in figures and "mistakes-dense.png" in figures
    assert html.count("<img") == len(figures)
    shot = tmp_path / "report.png"
    result = run_chromium(page, tmp_path, f"--screenshot={shot}",
                          "--window-size=1280,6000", "--hide-scrollbars")  # fmt: skip
    assert result.returncode == 0 and shot.is_file(), result.stderr


@pytest.mark.slow
def test_cross_dataset_study_through_the_cli(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    from cnnlab.data.datasets import FASHION_MNIST_DIR

    if not (FASHION_MNIST_DIR / "t10k-images-idx3-ubyte.gz").is_file():
        pytest.skip("needs Debian's dataset-fashion-mnist (.ci/run installs it)")
    study = write_study(tmp_path, "both", data=["mnist", "fashion-mnist"],
                        train={"epochs": 1})  # fmt: skip
    result = cli("study", study, "--out", "out", "--seeds", "0")
    assert result.code == 0, result.err
    assert "Across data sets" in result.out and "Kendall's tau" in result.out
    runs = sorted(p.name for p in (tmp_path / "out/both/runs").iterdir())
    assert len(runs) == 4  # 2 nets x 2 data sets x 1 seed
    from cnnlab.studies.store import Store

    with Store(tmp_path / "out/cnnlab.sqlite") as store:
        trials = store.trials("both")
    datas = {t.label: t.config["data"] for t in trials}
    assert datas["dense@mnist"] == "mnist"
    assert datas["dense@fashion-mnist"] == "fashion-mnist"
    md = (tmp_path / "out/both/report/report.md").read_text()
    assert "## Across data sets" in md and "fashion-mnist val acc %" in md
    # each data set has its own best, compared within it
    assert "for mlp@mnist" in md or "for dense@mnist" in md
    assert "for mlp@fashion-mnist" in md or "for dense@fashion-mnist" in md
    # Fashion-MNIST's class names reach the confusion table
    assert any(name in md for name in ("Shirt", "T-shirt/top", "Pullover", "Coat"))
