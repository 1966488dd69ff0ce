"""The report document: one set of sections rendered as Markdown, HTML, CSV and
terminal text; hostile names inert in each; terminal tables within 80 and 120
columns (in-process and through `cnnlab report` and `cnnlab runs`)."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

import pytest
from markdown_it import MarkdownIt
from rich.console import Console

from cnnlab.reporting.console import print_document, print_trials
from cnnlab.reporting.document import Audience, Column, ColumnKind, Document, Section
from cnnlab.reporting.document import table as make_table
from cnnlab.reporting.render import document_csv, html_body, to_html, to_markdown
from cnnlab.reporting.report import analyse, print_summary
from cnnlab.reporting.study_document import protocol_lines, study_document
from cnnlab.studies.results import StudyInfo, TrialResult
from cnnlab.studies.store import Store
from cnnlab.util.terminal import Col, fit_columns
from helpers import run_cli

HOSTILE = "<script>x</script> [a](javascript:b) =SUM(1) \x1b[2J"
LONG = "a-rather-long-architecture-label-for-wrapping"


def history(train: list[float], val: list[float]) -> tuple[dict, ...]:
    return tuple(
        {
            "epoch": i + 1,
            "loss": t,
            "acc": 1 - t / 2,
            "val_loss": v,
            "val_acc": 1 - v / 2,
            "seconds": 1.0,
        }
        for i, (t, v) in enumerate(zip(train, val, strict=True))
    )


SHAPES = {  # label -> (train losses, val losses, test accuracy)
    "good": ([0.3, 0.1, 0.06, 0.04], [0.12, 0.07, 0.05, 0.04], 0.990),
    LONG: ([0.2, 0.05, 0.02, 0.005], [0.06, 0.05, 0.07, 0.09], 0.985),
    HOSTILE: ([1.9, 1.2, 1.0, 0.9], [1.5, 1.1, 0.9, 0.85], 0.80),
}


def trials() -> list[TrialResult]:
    return [
        TrialResult(
            study="demo",
            label=label,
            seed=seed,
            arch_name=label,
            optimizer="adam",
            params=123_456 * (i + 1),
            flops=9_876_543,
            history=history(t, v),
            status="completed",
            test_acc=acc + 0.002 * seed,
            test_loss=v[-1],
            train_clean_acc=acc,
            train_clean_loss=t[-1] * 0.8,
        )
        for i, (label, (t, v, acc)) in enumerate(SHAPES.items())
        for seed in (0, 1)
    ]


@pytest.fixture(scope="module")
def document(tmp_path_factory: pytest.TempPathFactory) -> Document:
    info = StudyInfo("demo", "a <b>demo</b>", {"seeds": [0, 1]}, {"device": "cpu"})
    report = analyse(info, trials(), tmp_path_factory.mktemp("doc"))
    return study_document(report)


def terminal_text(doc: Document, width: int) -> str:
    console = Console(width=width, record=True, file=io.StringIO())
    print_document(doc, console)
    return console.export_text()


def test_the_same_sections_reach_every_format(document: Document) -> None:
    files = [
        s.heading for s in document.sections if s.audience is not Audience.TERMINAL
    ]
    md = to_markdown(document)
    assert re.findall(r"^## (.+)$", md, flags=re.M) == files
    page = to_html(document)
    assert re.findall(r"<h2>(.+?)</h2>", page) == [
        h.replace("'", "&#x27;") for h in files
    ]
    terminal = [s.heading for s in document.sections if s.audience is Audience.ALL]
    shown = [line.strip() for line in terminal_text(document, 120).splitlines()]
    assert [h for h in shown if h in files] == terminal
    # the prose the Markdown always had now reaches the HTML too
    assert "Best epoch by validation loss against the last" in page
    assert md.count("Mean ± sample std over seeds") == 1
    assert page.count("Mean ± sample std over seeds") == 1


def test_every_table_reaches_the_csv(document: Document) -> None:
    rows = list(csv.DictReader(io.StringIO(document_csv(document))))
    names = {t.name for t in document.tables()}
    assert {r["table"] for r in rows} == names >= {"comparison", "epochs", "notebook"}
    first = [r for r in rows if r["table"] == "comparison" and r["row"] == "1"]
    assert [r["column"] for r in first][:3] == ["architecture", "seeds", "params"]


def test_hostile_names_are_inert_in_every_renderer(document: Document) -> None:
    md = to_markdown(document)
    tokens = MarkdownIt("commonmark").enable("table").parse(md)
    kinds = {t.type for t in tokens} | {
        c.type for t in tokens for c in t.children or []
    }
    assert not kinds & {"html_inline", "html_block", "link_open"}
    page = "\n".join(html_body(document))
    assert "<script>" not in page and "&lt;script&gt;x&lt;/script&gt;" in page
    assert "<b>demo</b>" not in to_html(document)
    text = terminal_text(document, 200)
    assert "\x1b" not in text and "\\x1b[2J" in text
    cells = [r["value"] for r in csv.DictReader(io.StringIO(document_csv(document)))]
    formulas = [c for c in cells if c.startswith(("=", "@", "+", "-"))]
    assert all(re.fullmatch(r"[-+][\d.,]+", c) for c in formulas)  # numbers only
    assert any(c.startswith("<script>x</script>") for c in cells)


@pytest.mark.parametrize("width", [80, 120])
def test_terminal_summary_fits_the_width(document: Document, width: int) -> None:
    lines = terminal_text(document, width).splitlines()
    assert max(len(line) for line in lines) <= width
    assert LONG in "".join(line.strip("│ ") for line in lines)  # wrapped, not cut
    if width == 80:  # the least telling columns are left out, and named
        text = " ".join(lines)
        left_out = text[text.index("(left out at 80") :].split(")")[0]
        assert "s/epoch" in left_out and "val acc" not in left_out
    wide = terminal_text(document, 200)
    assert "s/epoch" in wide and "(left out" not in wide


def test_fit_columns_drops_the_highest_first_and_wraps_text() -> None:
    cols = [
        Col("name", "name"),
        Col("a", drop=1),
        Col("b", drop=2),
        Col("note", "text"),
    ]
    rows = [["x" * 10, "1" * 10, "2" * 10, "word " * 20]]
    keep, widths = fit_columns(cols, rows, 50) or ([], [])
    assert keep == [0, 1, 3]  # b (drop 2) went first
    assert sum(widths) + 3 * len(keep) + 1 == 50
    assert fit_columns(cols, rows, 10) is None  # never-dropped columns do not fit


def test_one_comparison_has_no_holm_wording(tmp_path: Path) -> None:
    two = [t for t in trials() if t.label != HOSTILE]
    info = StudyInfo("two", "", {}, {})
    report = analyse(info, two, tmp_path)
    lines = " ".join(protocol_lines(report))
    assert "Welch's t-test over seeds;" in lines and "Holm" not in lines
    many = analyse(info, trials(), tmp_path)
    assert "Holm-corrected over the 2 comparisons" in " ".join(protocol_lines(many))


def test_runs_table_shows_run_paths_whole_at_80_columns() -> None:
    path = "studies/" + "a-long-study-name/runs/" + LONG + "-s0"
    rows = [
        {
            "study": "a-long-study-name",
            "label": LONG,
            "seed": 0,
            "status": "completed",
            "epochs": 4,
            "test_acc": 0.9876,
            "run_path": path,
        }
    ]
    console = Console(width=80, record=True, file=io.StringIO())
    print_trials(console, "studies/cnnlab.sqlite", rows)
    lines = console.export_text().splitlines()
    assert max(map(len, lines)) <= 80
    run_column = "".join(
        line.rsplit("│", 2)[1].strip() for line in lines if line.count("│") > 2
    )
    assert path in run_column and "…" not in "".join(lines)


def test_a_table_with_no_terminal_column_prints_its_caption_only() -> None:
    t = make_table("t", [Column("x", ColumnKind.NAME, terminal=False)], [["1"]])
    doc = Document("d", (), (Section("S", (t,)),))
    console = Console(width=80, record=True, file=io.StringIO())
    print_document(doc, console)
    assert "S" in console.export_text()


@pytest.mark.slow
def test_cnnlab_report_fits_80_columns(tmp_path: Path) -> None:
    width = "80"
    with Store(tmp_path / "cnnlab.sqlite") as store:
        store.save_study(StudyInfo("demo", "", {"seeds": [0, 1]}, {}), "2026-12-01")
        for t in trials():
            trial_id = store.save_trial(
                "demo",
                t.label,
                t.seed,
                {
                    "arch_name": t.label,
                    "optimizer": "adam",
                    "params": t.params,
                    "flops": t.flops,
                    "spec": {},
                    "config": {},
                    "run_path": f"r/{t.seed}",
                    "status": "completed",
                    "updated": "2026-12-01",
                    "test_acc": t.test_acc,
                    "test_loss": t.test_loss,
                    "train_clean_acc": t.train_clean_acc,
                    "train_clean_loss": t.train_clean_loss,
                },
            )
            store.save_epochs(trial_id, list(t.history))
    result = run_cli(
        "report", "demo", "--out", tmp_path, cwd=tmp_path, env={"COLUMNS": width}
    )
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert max(map(len, lines)) <= int(width)
    assert "best chosen on validation" in result.out and "\x1b" not in result.out
    assert (tmp_path / "demo/report/report.csv").is_file()


def test_print_summary_and_the_markdown_agree(tmp_path: Path) -> None:
    """The files and the terminal come from one document: each diagnosis the
    terminal prints is the one in report.md."""
    report = analyse(StudyInfo("s", "", {}, {}), trials()[:4], tmp_path)
    console = Console(width=400, record=True, file=io.StringIO())
    print_summary(report, console)
    md = to_markdown(report.document())
    terminal = " ".join(console.export_text().split())
    for d in report.diagnoses:
        assert f"**{d.label}: {d.verdict}.** {d.text}" in md
        assert f"{d.label}: {d.verdict}. {d.text}" in terminal


def test_search_candidates_are_labelled_by_their_values() -> None:
    from types import SimpleNamespace

    from cnnlab.search.report import labels_by_key

    def trial(key: str, **params: object) -> SimpleNamespace:
        return SimpleNamespace(user_attrs={"label": key}, params=params)

    names = labels_by_key(
        [
            trial("c-1", width=16, lr=0.003),
            trial("c-2", width=8, lr=0.0031234),
            trial("c-3", width=8, lr=0.0031236),  # the same to 3 digits: key kept
            SimpleNamespace(user_attrs={}, params={}),  # an invalid point: no key
        ]
    )
    assert names == {
        "c-1": "width=16 lr=0.003",
        "c-2": "width=8 lr=0.00312 (c-2)",
        "c-3": "width=8 lr=0.00312 (c-3)",
    }
