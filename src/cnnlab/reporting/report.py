"""Study reports: the comparison table (terminal, Markdown, CSV), figures, diagnosis,
and a self-contained HTML page, all rebuilt from the store without training.

Every file is written atomically (temporary name, then rename), one builder at a
time per report folder; a builder first clears the temporary files a killed one left.
"""

from __future__ import annotations

import base64
import csv
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import yaml
from rich.table import Table

from cnnlab.reporting.analysis import (
    ArchRow,
    Comparison,
    Stat,
    compare_to_best,
    comparison_rows,
    notebook_view,
)
from cnnlab.reporting.diagnosis import Diagnosis, diagnose_all
from cnnlab.reporting.figures import study_figures
from cnnlab.studies.results import StudyInfo, TrialResult
from cnnlab.studies.store import Store
from cnnlab.util.fsio import atomic_write_text, folder_lock, remove_temp_files
from cnnlab.util.units import format_flops


@dataclass(frozen=True)
class StudyReport:
    """Everything computed for a report, and where it was written."""

    info: StudyInfo
    trials: list[TrialResult]
    rows: list[ArchRow]
    comparisons: list[Comparison]
    diagnoses: list[Diagnosis]
    metric: str
    folder: Path
    figures: dict[str, Path]

    @property
    def markdown_path(self) -> Path:
        return self.folder / "report.md"

    @property
    def html_path(self) -> Path:
        return self.folder / "report.html"

    def _repr_html_(self) -> str:
        """The comparison, verdicts, diagnoses and figures, for a Jupyter cell."""
        e = html.escape
        parts = [
            f"<h3>Study {e(self.info.name)}: mean ± std over seeds</h3>",
            '<div style="overflow-x: auto">',
            _html_table(*table_cells(self.rows), "comparison"),
            "</div>",
            *(f"<p>{e(c.verdict)}</p>" for c in self.comparisons),
            *(
                f"<p><b>{e(d.label)}: {e(d.verdict)}.</b> {e(d.text)}</p>"
                for d in self.diagnoses
            ),
            *(_embedded_image(path, name) for name, path in self.figures.items()),
        ]
        return "\n".join(parts)


def _fmt(stat: Stat | None, digits: int = 4, scale: float = 1.0) -> str:
    return "-" if stat is None else stat.format(digits, scale)


def _ci(stat: Stat | None, scale: float = 100.0) -> str:
    if stat is None or stat.ci_low is None or stat.ci_high is None:
        return "-"
    return f"[{stat.ci_low * scale:.2f}, {stat.ci_high * scale:.2f}]"


# (header, cell) pairs: one definition feeds the Markdown, HTML and CSV tables.
COLUMNS: list[tuple[str, object]] = [  # the headline metric first
    ("architecture", lambda r: r.label),
    ("seeds", lambda r: str(r.seeds)),
    ("params", lambda r: f"{r.params:,}"),
    ("train FLOPs/sample", lambda r: format_flops(3 * r.flops)),
    ("test acc %", lambda r: _fmt(r.test_acc, 2, 100)),
    ("test acc 95% CI", lambda r: _ci(r.test_acc)),
    ("test loss", lambda r: _fmt(r.test_loss)),
    ("val acc %", lambda r: _fmt(r.val_acc, 2, 100)),
    ("val loss", lambda r: _fmt(r.val_loss)),
    ("best epoch", lambda r: _fmt(r.best_epoch, 1)),
    ("train acc % (clean)", lambda r: _fmt(r.clean_acc, 2, 100)),
    ("train loss (clean)", lambda r: _fmt(r.clean_loss)),
    ("train acc % (running)", lambda r: _fmt(r.final_acc, 2, 100)),
    ("train loss (running)", lambda r: _fmt(r.final_loss)),
    ("s/epoch", lambda r: _fmt(r.seconds_per_epoch, 1)),
]
# The terminal shows the most telling columns under short headings.
_TERMINAL = {"architecture": "net", "params": "params", "train FLOPs/sample": "FLOPs",
             "s/epoch": "s/epoch", "best epoch": "best ep", "train loss (running)":
             "train loss", "train acc % (clean)": "clean acc %", "val loss": "val loss",
             "val acc %": "val acc %", "test acc %": "test acc %",
             "test acc 95% CI": "95% CI"}  # fmt: skip


def table_cells(rows: Sequence[ArchRow]) -> tuple[list[str], list[list[str]]]:
    headers = [h for h, _ in COLUMNS]
    return headers, [[cell(r) for _, cell in COLUMNS] for r in rows]  # type: ignore[operator]


def rich_table(report: StudyReport) -> Table:
    """The comparison table for the terminal (the most telling columns)."""
    headers, cells = table_cells(report.rows)
    keep = [i for i, h in enumerate(headers) if h in _TERMINAL]
    table = Table(title=f"Study {report.info.name}: mean ± std over seeds")
    for i in keep:
        justify = "left" if i == 0 else "right"
        table.add_column(_TERMINAL[headers[i]], justify=justify, no_wrap=i == 0)
    for row in cells:
        table.add_row(*(row[i] for i in keep))
    return table


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    def esc(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    lines = ["| " + " | ".join(map(esc, headers)) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(map(esc, row)) + " |" for row in rows]
    return "\n".join(lines)


def comparison_csv(rows: Sequence[ArchRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    headers, cells = table_cells(rows)
    writer.writerow(headers)
    writer.writerows(cells)
    return buf.getvalue()


def _notebook_table(rows: Sequence[ArchRow]) -> tuple[list[str], list[list[str]]]:
    view = notebook_view(rows)
    metrics = [
        "Optimizer",
        "Train Accuracy",
        "Train Loss",
        "Test Accuracy",
        "Test Loss",
    ]
    headers = ["Metric", *(v["label"] for v in view)]
    return headers, [[m, *(v[m] for v in view)] for m in metrics]


def _machine(info: StudyInfo) -> str:
    env = info.environment
    keys = (
        "platform",
        "processor",
        "cpu_count",
        "threads",
        "device",
        "torch",
        "cnnlab",
    )
    return ", ".join(f"{k}: {env[k]}" for k in keys if env.get(k) is not None)


def build_report(store: Store, study: str, folder: Path) -> StudyReport:
    """Analyse a study from the store and write its figures, tables and reports."""
    info = store.study(study)
    trials = [t for t in store.trials(study) if t.history]
    metric = "test_acc" if any(t.test_acc is not None for t in trials) else "val_acc"
    with folder_lock(folder, f"a report of study '{study}'", wait=True):
        remove_temp_files(folder)
        remove_temp_files(folder / "figures")
        return _write_report(info, trials, metric, folder)


def _write_report(
    info: StudyInfo, trials: list[TrialResult], metric: str, folder: Path
) -> StudyReport:
    report = StudyReport(
        info=info,
        trials=trials,
        rows=comparison_rows(trials),
        comparisons=compare_to_best(trials, metric) if trials else [],
        diagnoses=diagnose_all(trials) if trials else [],
        metric=metric,
        folder=folder,
        figures=study_figures(trials, folder / "figures") if trials else {},
    )
    atomic_write_text(folder / "table.csv", comparison_csv(report.rows))
    atomic_write_text(
        folder / "table.md", markdown_table(*table_cells(report.rows)) + "\n"
    )
    atomic_write_text(report.markdown_path, to_markdown(report))
    atomic_write_text(report.html_path, to_html(report))
    return report


def _config_yaml(info: StudyInfo) -> str:
    return yaml.safe_dump(info.config, sort_keys=False, default_flow_style=None)


def to_markdown(report: StudyReport) -> str:
    info = report.info
    out = [f"# Study {info.name}", "", info.description, ""]
    out += [f"{len(report.trials)} trials; created {info.created}.", ""]
    out += ["## Comparison", "", "Mean ± sample std over seeds; 95% CI is the t",
            "interval of the mean test accuracy. Running train metrics are Keras's",
            "(averaged over the epoch, dropout on); clean ones are measured after",
            "the last epoch with dropout off.", ""]  # fmt: skip
    out += [markdown_table(*table_cells(report.rows)), ""]
    out += ["## Is the difference real?", ""]
    out += [f"- {c.verdict}" for c in report.comparisons] + [""]
    out += ["## The notebook's conclusion table", ""]
    out += [markdown_table(*_notebook_table(report.rows)), ""]
    out += ["## Diagnosis", ""]
    for d in report.diagnoses:
        out += [f"**{d.label}: {d.verdict}.** {d.text}", ""]
    out += ["## Figures", ""]
    for name, path in report.figures.items():
        out += [f"![{name}](figures/{path.name})", ""]
    out += [
        "## Study configuration",
        "",
        "```yaml",
        _config_yaml(info).rstrip(),
        "```",
        "",
    ]
    out += ["## Machine", "", _machine(info), ""]
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px;
       color: #222; line-height: 1.45; }
table { border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }
th, td { border: 1px solid #ccc; padding: 4px 8px; text-align: right;
         white-space: nowrap; }
.scroll { overflow-x: auto; }
th { background: #f2f2f2; } td:first-child, th:first-child { text-align: left; }
img { max-width: 100%; border: 1px solid #eee; margin: 0.5em 0; }
pre { background: #f7f7f7; padding: 1em; overflow-x: auto; }
.verdict { margin: 0.2em 0; }
"""


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f'<table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table>"
    )


def _embedded_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def to_html(report: StudyReport) -> str:
    """One self-contained page: every string escaped, every image embedded."""
    e = html.escape
    info = report.info
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>cnnlab study {e(info.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study {e(info.name)}</h1><p>{e(info.description)}</p>",
        f"<p>{len(report.trials)} trials; created {e(info.created)}.</p>",
        "<h2>Comparison</h2><p>Mean ± sample std over seeds; the 95% CI is the t "
        "interval of the mean test accuracy. Running train metrics are Keras's "
        "(averaged over the epoch, dropout on); clean ones are measured after the "
        "last epoch with dropout off.</p>",
        '<div class="scroll">',
        _html_table(*table_cells(report.rows), "comparison"),
        "</div>",
        "<h2>Is the difference real?</h2>",
        *(f'<p class="verdict">{e(c.verdict)}</p>' for c in report.comparisons),
        "<h2>The notebook's conclusion table</h2>",
        _html_table(*_notebook_table(report.rows), "notebook"),
        "<h2>Diagnosis</h2>",
        *(
            f"<p><b>{e(d.label)}: {e(d.verdict)}.</b> {e(d.text)}</p>"
            for d in report.diagnoses
        ),  # fmt: skip
        "<h2>Figures</h2>",
        *(_embedded_image(p, name) for name, p in report.figures.items()),
        f"<h2>Study configuration</h2><pre>{e(_config_yaml(info))}</pre>",
        f"<h2>Machine</h2><p>{e(_machine(info))}</p>",
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"


def html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    """A table of escaped cells, styled as the study reports' tables."""
    return _html_table(headers, rows, cls)


def to_html_page(title: str, body: Sequence[str], figures: dict[str, Path]) -> str:
    """A self-contained page in the study reports' style: `body` is HTML already
    escaped by the caller; every figure is embedded."""
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>",
        *body,
        *(_embedded_image(p, name) for name, p in figures.items()),
        "</body></html>",
    ]
    return "\n".join(parts) + "\n"
