"""Study reports: the comparison table (terminal, Markdown, CSV), figures, diagnosis,
and a self-contained HTML page, all rebuilt from the store without training.

Every file is written atomically (temporary name, then rename), one builder at a
time per report folder; a builder first clears the temporary files a killed one left.
"""

from __future__ import annotations

import base64
import csv
import dataclasses
import html
import io
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import quote

import yaml
from rich.console import Console
from rich.table import Table
from rich.text import Text

from cnnlab.data.datasets import Dataset, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import training_flops
from cnnlab.reporting.analysis import (
    ArchRow,
    Comparison,
    Protocol,
    Stat,
    TestSetCheck,
    compare_to_best,
    comparison_rows,
    notebook_view,
    protocol,
    test_set_checks,
)
from cnnlab.reporting.archdiff import diff_text
from cnnlab.reporting.crossdata import (
    CrossData,
    agreement_text,
    by_data,
    cross_dataset,
)
from cnnlab.reporting.diagnosis import Diagnosis, diagnose_all, shared_notes
from cnnlab.reporting.epochs import EpochView, epoch_views
from cnnlab.reporting.escape import csv_cell, md_fence, md_text
from cnnlab.reporting.figures import error_figures, study_figures
from cnnlab.reporting.mistakes import (
    ConfusedPair,
    confused_pairs,
    confusion_by_label,
    hard_images,
    missing_predictions,
)
from cnnlab.studies.results import StudyInfo, TrialResult
from cnnlab.studies.store import Store
from cnnlab.util.fsio import atomic_write_text, folder_lock, remove_temp_files
from cnnlab.util.terminal import print_table, shown
from cnnlab.util.units import format_flops


@dataclass(frozen=True)
class ArchDiff:
    """One net against the best of its data set: what changed and what it cost."""

    label: str
    best_label: str
    params: int  # this net's minus the best's
    flops: int  # training FLOPs per sample, this net's minus the best's
    difference: float  # on the choosing metric
    p_holm: float | None
    layers: str  # the layer changes, from the best net to this one


@dataclass(frozen=True)
class StudyReport:
    """Everything computed for a report, and where it was written."""

    info: StudyInfo
    trials: list[TrialResult]
    rows: list[ArchRow]
    comparisons: list[Comparison]  # within each data set, on `protocol.metric`
    diagnoses: list[Diagnosis]
    metric: str  # the metric that chose the best: protocol.metric
    folder: Path
    figures: dict[str, Path]
    protocol: Protocol | None = None
    test_checks: list[TestSetCheck] = field(default_factory=list)
    epochs: list[EpochView] = field(default_factory=list)
    confused: dict[str, list[ConfusedPair]] = field(default_factory=dict)
    class_names: dict[str, list[str]] = field(default_factory=dict)  # by label
    hard: dict[str, int] = field(default_factory=dict)  # data set -> images
    missing: list[str] = field(default_factory=list)  # labels without predictions
    diffs: list[ArchDiff] = field(default_factory=list)
    cross: CrossData | None = None
    notes: list[str] = field(default_factory=list)  # shared by several diagnoses

    @property
    def markdown_path(self) -> Path:
        return self.folder / "report.md"

    @property
    def html_path(self) -> Path:
        return self.folder / "report.html"

    @property
    def warning(self) -> str | None:
        return None if self.protocol is None else self.protocol.warning

    def _repr_html_(self) -> str:
        """The comparison, verdicts, diagnoses and figures, for a Jupyter cell."""
        return "\n".join(_html_body(self, heading="h3"))


def _fmt(stat: Stat | None, digits: int = 4, scale: float = 1.0) -> str:
    return "-" if stat is None else stat.format(digits, scale)


def _ci(stat: Stat | None, scale: float = 100.0) -> str:
    if stat is None or stat.ci_low is None or stat.ci_high is None:
        return "-"
    return f"[{stat.ci_low * scale:.2f}, {stat.ci_high * scale:.2f}]"


def _se(row: ArchRow) -> str:
    se = row.test_se
    return "-" if se is None else f"{se * 100:.2f}"


# (header, cell) pairs: one definition feeds the Markdown, HTML and CSV tables.
# Validation first: with a hold-out it chooses; test metrics stand beside it.
COLUMNS: list[tuple[str, object]] = [
    ("architecture", lambda r: r.label),
    ("seeds", lambda r: str(r.seeds)),
    ("params", lambda r: f"{r.params:,}"),
    ("train FLOPs/sample", lambda r: format_flops(training_flops(r.flops))),
    ("val acc %", lambda r: _fmt(r.val_acc, 2, 100)),
    ("val loss", lambda r: _fmt(r.val_loss)),
    ("test acc %", lambda r: _fmt(r.test_acc, 2, 100)),
    ("test acc 95% CI", lambda r: _ci(r.test_acc)),
    ("test SE (points)", _se),
    ("test loss", lambda r: _fmt(r.test_loss)),
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
             "test SE (points)": "test SE"}  # fmt: skip


def table_cells(rows: Sequence[ArchRow]) -> tuple[list[str], list[list[str]]]:
    headers = [h for h, _ in COLUMNS]
    return headers, [[cell(r) for _, cell in COLUMNS] for r in rows]  # type: ignore[operator]


def rich_table(report: StudyReport) -> Table:
    """The comparison table for the terminal (the most telling columns)."""
    headers, cells = table_cells(report.rows)
    keep = [i for i, h in enumerate(headers) if h in _TERMINAL]
    chosen = "test set" if report.warning else "validation"
    table = Table(
        title=f"Study {shown(report.info.name)}: mean ± std over seeds "
        f"(best chosen on {chosen})",
        title_justify="left",
    )
    for i in keep:
        justify = "left" if i == 0 else "right"
        table.add_column(_TERMINAL[headers[i]], justify=justify, no_wrap=i == 0)
    for row in cells:
        table.add_row(*(Text(shown(row[i])) for i in keep))
    return table


def print_summary(report: StudyReport, console: Console) -> None:
    """The report's terminal summary: warning, table, tests, best epochs, errors,
    diagnoses."""
    if report.warning:
        console.print(Text(report.warning, style="bold yellow"))
    print_table(console, rich_table(report))
    for line in _protocol_lines(report):
        console.print(Text(line))
    for comparison in report.comparisons:
        console.print(Text(shown(comparison.verdict)))
    for check in report.test_checks:
        console.print(Text(shown(check.text)))
    if report.epochs:
        table = _rich(*_epoch_table(report), "Best epoch (by validation loss)")
        print_table(console, table)
    if report.confused:
        table = _rich(*_confused_table(report), "Most-confused classes (test)")
        print_table(console, table)
    if report.missing:
        console.print(Text(_missing_text(report)))
    console.print()
    for d in report.diagnoses:
        console.print(Text.assemble((f"{shown(d.label)}: {d.verdict}.", "bold"),
                                    " ", shown(d.text)))  # fmt: skip
    for note in report.notes:
        console.print(Text(note, style="italic"))
    if report.cross is not None:
        print_table(console, _rich(*_cross_table(report.cross), "Across data sets"))
        for a, b, result in report.cross.agreement:
            console.print(Text(agreement_text(a, b, result)))


def _rich(headers: Sequence[str], rows: Sequence[Sequence[str]], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for i, header in enumerate(headers):
        table.add_column(header, justify="left" if i == 0 else "right")
    for row in rows:
        table.add_row(*(Text(shown(c)) for c in row))
    return table


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A Markdown table; every cell shows its text literally (md_text)."""
    lines = ["| " + " | ".join(map(md_text, headers)) + " |"]
    lines.append("|" + "|".join("---" for _ in headers) + "|")
    lines += ["| " + " | ".join(map(md_text, row)) + " |" for row in rows]
    return "\n".join(lines)


def comparison_csv(rows: Sequence[ArchRow]) -> str:
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    headers, cells = table_cells(rows)
    writer.writerow(headers)
    writer.writerows([[csv_cell(c) for c in row] for row in cells])
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


def _epoch_table(report: StudyReport) -> tuple[list[str], list[list[str]]]:
    onset = {d.label: d.overfit_from for d in report.diagnoses}
    thresholds = report.epochs[0].reaches if report.epochs else ()
    headers = ["net", "best epoch", "val loss best / last", "val acc % best / last",
               "overfitting from",
               *(f"to {r.threshold:.1%} val acc" for r in thresholds)]  # fmt: skip
    rows = []
    for v in report.epochs:
        acc = "-"
        if v.best_val_acc is not None and v.last_val_acc is not None:
            acc = f"{v.best_val_acc.mean:.2%} / {v.last_val_acc.mean:.2%}"
        start = onset.get(v.label)
        rows.append([
            v.label,
            f"{v.best_epoch.mean:.1f} of {v.last_epoch.mean:.0f}",
            f"{v.best_val_loss.mean:.4f} / {v.last_val_loss.mean:.4f}",
            acc.replace("%", ""),
            "-" if start is None else f"epoch {start}",
            *(r.text() for r in v.reaches),
        ])  # fmt: skip
    return headers, rows


def _confused_table(report: StudyReport) -> tuple[list[str], list[list[str]]]:
    headers = ["net", "most-confused (true -> predicted: images, share of class)"]
    rows = []
    for label, pairs in report.confused.items():
        names = report.class_names.get(label, [])
        rows.append([label, "; ".join(_pair_text(p, names) for p in pairs) or "-"])
    return headers, rows


def _pair_text(pair: ConfusedPair, names: Sequence[str]) -> str:
    def name(c: int) -> str:
        return names[c] if c < len(names) else str(c)

    return (
        f"{name(pair.true)} -> {name(pair.predicted)}: {pair.count} ({pair.share:.1%})"
    )


def _diff_table(report: StudyReport) -> tuple[list[str], list[list[str]]]:
    metric = report.metric.replace("_", " ")
    headers = ["net", "vs", f"{metric} delta", "Holm p", "params delta",
               "train FLOPs delta", "layer changes"]  # fmt: skip
    scale, unit = (100, " points") if report.metric.endswith("acc") else (1, "")
    rows = [
        [d.label, d.best_label, f"{d.difference * scale:+.2f}{unit}",
         "-" if d.p_holm is None else f"{d.p_holm:.2g}", f"{d.params:+,}",
         _signed_flops(d.flops), d.layers]
        for d in report.diffs
    ]  # fmt: skip
    return headers, rows


def _signed_flops(value: int) -> str:
    return ("-" if value < 0 else "+") + format_flops(abs(value))


def _cross_table(cross: CrossData) -> tuple[list[str], list[list[str]]]:
    what = "val acc %" if cross.metric == "val_acc" else "test acc %"
    headers = ["net"]
    for d in cross.datas:
        headers += [f"{d} {what}", f"{d} test acc %"] if what != "test acc %" else [
            f"{d} test acc %"]  # fmt: skip
    first, *rest = cross.datas
    headers += [f"change {first} -> {d} (points)" for d in rest]
    rows = []
    for r in cross.rows:
        cells = [r.label]
        for d in cross.datas:
            cells.append(_fmt(r.ranked[d], 2, 100))
            if what != "test acc %":
                cells.append(_fmt(r.test[d], 2, 100))
        for d in rest:
            a, b = r.ranked[first], r.ranked[d]
            cells.append(
                "-" if a is None or b is None else f"{(b.mean - a.mean) * 100:+.2f}"
            )
        rows.append(cells)
    return headers, rows


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


def _protocol_lines(report: StudyReport) -> list[str]:
    p = report.protocol
    if p is None:
        return []
    chosen = {
        "val_acc": "The best net of each data set is chosen on validation accuracy "
        "(a hold-out of the training images); test metrics are reported beside it "
        "and choose nothing.",
        "test_acc": "The best net is chosen on test accuracy.",
    }.get(p.metric, f"The best net is chosen on {p.metric}.")
    tests = sum(c.label != c.best_label for c in report.comparisons)
    family = f"over the {tests} comparisons"
    if report.cross is not None:
        family = f"within each data set ({tests} comparisons in all)"
    lines = [chosen, "Comparisons with the best: Welch's t-test over seeds, "
             f"Holm-corrected {family}; on the test images, McNemar's exact "
             "test."]  # fmt: skip
    if p.reads_text:
        lines.append(p.reads_text)
    return lines


def _missing_text(report: StudyReport) -> str:
    return (
        f"No per-image test predictions for {', '.join(map(shown, report.missing))} "
        "(recorded before they were kept): no McNemar test, confusion matrix or "
        "gallery for them. Re-run their trials to get them."
    )


# ------------------------------------------------------------------ building


def build_report(store: Store, study: str, folder: Path) -> StudyReport:
    """Analyse a study from the store and write its figures, tables and reports."""
    info = store.study(study)
    trials = [t for t in store.trials(study) if t.history]
    with folder_lock(folder, f"a report of study '{study}'", wait=True):
        remove_temp_files(folder)
        remove_temp_files(folder / "figures")
        return _write_report(info, trials, folder)


def analyse(info: StudyInfo, trials: list[TrialResult], folder: Path) -> StudyReport:
    """Every number of the report, computed within each data set."""
    chosen = protocol(trials)
    comparisons: list[Comparison] = []
    checks: list[TestSetCheck] = []
    diffs: list[ArchDiff] = []
    confused: dict[str, list[ConfusedPair]] = {}
    names: dict[str, list[str]] = {}
    hard: dict[str, int] = {}
    for data, group in by_data(trials).items():
        compared = compare_to_best(group, chosen.metric) if group else []
        comparisons += compared
        if not compared:
            continue
        best = compared[0].best_label
        checks += test_set_checks(group, best)
        diffs += _diffs(group, compared, best)
        class_names = _class_names(group)
        for label, matrix in confusion_by_label(group).items():
            confused[label] = confused_pairs(matrix)
            names[label] = class_names
        wrong = hard_images(group) if len({t.label for t in group}) > 1 else []
        if wrong:
            hard[data] = len(wrong)
    diagnoses = [  # each net measured against the best of its own data set
        _with_confusion(d, confused.get(d.label), names.get(d.label, []))
        for group in by_data(trials).values()
        for d in diagnose_all(group)
    ]
    return StudyReport(
        info=info,
        trials=trials,
        rows=comparison_rows(trials),
        comparisons=comparisons,
        diagnoses=diagnoses,
        metric=chosen.metric,
        folder=folder,
        figures={},
        protocol=chosen,
        test_checks=checks,
        epochs=epoch_views(trials),
        confused=confused,
        class_names=names,
        hard=hard,
        missing=missing_predictions(trials),
        diffs=diffs,
        cross=cross_dataset(trials, chosen.metric),
        notes=shared_notes(diagnoses),
    )


def _with_confusion(
    d: Diagnosis, pairs: list[ConfusedPair] | None, names: Sequence[str]
) -> Diagnosis:
    """The diagnosis with the net's most-confused class pair as one more finding."""
    if not pairs:
        return d
    pair = pairs[0]

    def name(c: int) -> str:
        return names[c] if c < len(names) else str(c)

    finding = (
        f"Most confused on the test set: {name(pair.true)} taken for "
        f"{name(pair.predicted)} ({pair.count} times, {pair.share:.1%} of the "
        f"{name(pair.true)} images)."
    )
    findings = (*d.findings, finding)
    return dataclasses.replace(
        d, findings=findings, text=" ".join((*findings, d.advice))
    )


def _diffs(
    group: list[TrialResult], compared: list[Comparison], best: str
) -> list[ArchDiff]:
    first = {}
    for t in group:
        first.setdefault(t.label, t)
    base = first[best]
    return [
        ArchDiff(
            label=c.label,
            best_label=best,
            params=first[c.label].params - base.params,
            flops=training_flops(first[c.label].flops - base.flops),
            difference=c.difference,
            p_holm=c.p_holm,
            layers=diff_text(base.spec, first[c.label].spec),
        )
        for c in compared
        if c.label != best
    ]


def _dataset_of(config: dict) -> Dataset:
    """The data set a trial trained on, read with its image settings (size,
    colour, test split) when its config can still be read."""
    from cnnlab.training.config import TrainConfig
    from cnnlab.training.session import image_options

    try:
        options = image_options(TrainConfig.from_dict(config))
    except (CnnlabError, TypeError):
        options = None
    return load_dataset(config.get("data", "mnist"), options)


def _class_names(group: list[TrialResult]) -> list[str]:
    try:
        return list(_dataset_of(group[0].config).class_names)
    except CnnlabError:  # the data set has gone since the study ran
        classes = max((int(t.predictions["test"]["labels"].max()) for t in group
                       if "test" in t.predictions), default=9) + 1  # fmt: skip
        return [str(c) for c in range(classes)]


def _error_figures(trials: list[TrialResult], folder: Path) -> tuple[dict, list[str]]:
    """Confusion matrices and galleries; a data set that cannot be loaded any more
    is named instead."""
    images, names, gone = {}, {}, []
    configs = {t.config.get("data", "mnist"): t.config for t in trials
               if "test" in t.predictions}  # fmt: skip
    for data, config in configs.items():
        try:
            dataset = _dataset_of(config)
        except CnnlabError as err:
            gone.append(f"No error figures for data set {data}: {err}")
            continue
        images[data] = dataset.x_test.numpy()
        names[data] = list(dataset.class_names)
    usable = [t for t in trials if t.config.get("data", "mnist") in images]
    return error_figures(usable, images, names, folder), gone


def _write_report(
    info: StudyInfo, trials: list[TrialResult], folder: Path
) -> StudyReport:
    report = analyse(info, trials, folder)
    figures = study_figures(trials, folder / "figures") if trials else {}
    errors, gone = _error_figures(trials, folder / "figures") if trials else ({}, [])
    report = dataclasses.replace(
        report, figures=figures | errors, notes=report.notes + gone
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


# ------------------------------------------------------------------ Markdown


def to_markdown(report: StudyReport) -> str:
    info = report.info
    out = [f"# Study {md_text(info.name)}", ""]
    if info.description:
        out += [md_text(info.description, line_start=True), ""]
    if report.warning:
        out += [f"> **{md_text(report.warning)}**", ""]
    reads = f" {report.protocol.reads_text}" if report.protocol and \
        report.protocol.reads_text else ""  # fmt: skip
    out += [f"{len(report.trials)} trials; created {md_text(info.created)}.{reads}", ""]
    out += ["## Comparison", "", "Mean ± sample std over seeds. The 95% CI is the t",
            "interval of the mean test accuracy over seeds; test SE is the binomial",
            "standard error of that accuracy on the test images (the test set's own",
            "sampling error). Running train metrics are Keras's (averaged over the",
            "epoch, dropout on); clean ones are measured after the last epoch with",
            "dropout off.", ""]  # fmt: skip
    out += [markdown_table(*table_cells(report.rows)), ""]
    out += ["## Is the difference real?", ""]
    out += [md_text(line, line_start=True) for line in _protocol_lines(report)]
    out += [""]
    out += [f"- {md_text(c.verdict)}" for c in report.comparisons]
    out += [f"- {md_text(c.text)}" for c in report.test_checks] + [""]
    if report.epochs:
        out += ["## Best epoch and time to accuracy", "",
                "Best epoch by validation loss against the last; times are training",
                "seconds until validation accuracy first reached each level.", "",
                markdown_table(*_epoch_table(report)), ""]  # fmt: skip
    out += _errors_markdown(report)
    if report.diffs:
        out += ["## What each net changes from the best", "",
                markdown_table(*_diff_table(report)), ""]  # fmt: skip
    if report.cross is not None:
        out += ["## Across data sets", "", markdown_table(*_cross_table(report.cross)),
                ""]  # fmt: skip
        out += [f"- {md_text(agreement_text(a, b, r))}"
                for a, b, r in report.cross.agreement] + [""]  # fmt: skip
    out += ["## The notebook's conclusion table", ""]
    out += [markdown_table(*_notebook_table(report.rows)), ""]
    out += ["## Diagnosis", ""]
    for d in report.diagnoses:
        out += [f"**{md_text(d.label)}: {d.verdict}.** {md_text(d.text)}", ""]
    out += [f"*{md_text(note)}*" for note in report.notes]
    out += ["", "## Figures", ""]
    for name, path in report.figures.items():
        out += [f"![{md_text(name)}](figures/{quote(path.name)})", ""]
    out += ["## Study configuration", "", md_fence(_config_yaml(info).rstrip(), "yaml"),
            ""]  # fmt: skip
    out += ["## Machine", "", md_text(_machine(info)), ""]
    return "\n".join(out)


def _errors_markdown(report: StudyReport) -> list[str]:
    if not report.confused and not report.missing:
        return []
    out = ["## Where each net goes wrong", ""]
    if report.confused:
        out += [markdown_table(*_confused_table(report)), ""]
    for data, count in report.hard.items():
        out += [f"{count} test images of {md_text(data)} are wrong for every net and "
                "seed (figure hard-images).", ""]  # fmt: skip
    if report.missing:
        out += [md_text(_missing_text(report)), ""]
    return out


# ------------------------------------------------------------------ HTML

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
.warning { background: #fff3cd; border: 1px solid #e0b000; padding: 0.6em 1em;
           font-weight: bold; }
td.wrap { white-space: normal; text-align: left; min-width: 20em; }
"""


def _html_table(headers: Sequence[str], rows: Sequence[Sequence[str]], cls: str) -> str:
    e = html.escape
    head = "".join(f"<th>{e(h)}</th>" for h in headers)
    body = "".join(
        "<tr>" + "".join(f"<td>{e(c)}</td>" for c in row) + "</tr>" for row in rows
    )
    return (
        f'<div class="scroll"><table class="{cls}"><thead><tr>{head}</tr></thead>'
        f"<tbody>{body}</tbody></table></div>"
    )


def _embedded_image(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img alt="{html.escape(alt)}" src="data:image/png;base64,{data}">'


def _html_body(report: StudyReport, heading: str = "h2") -> list[str]:
    """The report's sections as HTML, every string escaped, every image embedded."""
    e, h = html.escape, heading
    parts = []
    if report.warning:
        parts.append(f'<p class="warning">{e(report.warning)}</p>')
    parts += [
        f"<{h}>Comparison</{h}><p>Mean ± sample std over seeds. The 95% CI is the t "
        "interval of the mean test accuracy over seeds; test SE is the binomial "
        "standard error of that accuracy on the test images (the test set's own "
        "sampling error). Running train metrics are Keras's (averaged over the "
        "epoch, dropout on); clean ones are measured after the last epoch with "
        f"dropout off.</p>",
        _html_table(*table_cells(report.rows), "comparison"),
        f"<{h}>Is the difference real?</{h}>",
        *(f"<p>{e(line)}</p>" for line in _protocol_lines(report)),
        *(f'<p class="verdict">{e(c.verdict)}</p>' for c in report.comparisons),
        *(f'<p class="verdict">{e(c.text)}</p>' for c in report.test_checks),
    ]
    if report.epochs:
        parts += [f"<{h}>Best epoch and time to accuracy</{h}>",
                  _html_table(*_epoch_table(report), "epochs")]  # fmt: skip
    if report.confused or report.missing:
        parts.append(f"<{h}>Where each net goes wrong</{h}>")
        if report.confused:
            parts.append(_html_table(*_confused_table(report), "confused"))
        parts += [f"<p>{n} test images of {e(d)} are wrong for every net and seed.</p>"
                  for d, n in report.hard.items()]  # fmt: skip
        parts += [_embedded_image(p, name) for name, p in report.figures.items()
                  if name.startswith(_ERROR_FIGURES)]  # fmt: skip
        if report.missing:
            parts.append(f"<p>{e(_missing_text(report))}</p>")
    if report.diffs:
        parts += [f"<{h}>What each net changes from the best</{h}>",
                  _html_table(*_diff_table(report), "diffs")]  # fmt: skip
    if report.cross is not None:
        parts += [f"<{h}>Across data sets</{h}>",
                  _html_table(*_cross_table(report.cross), "cross"),
                  *(f"<p>{e(agreement_text(a, b, r))}</p>"
                    for a, b, r in report.cross.agreement)]  # fmt: skip
    parts += [
        f"<{h}>The notebook's conclusion table</{h}>",
        _html_table(*_notebook_table(report.rows), "notebook"),
        f"<{h}>Diagnosis</{h}>",
        *(f"<p><b>{e(d.label)}: {e(d.verdict)}.</b> {e(d.text)}</p>"
          for d in report.diagnoses),
        *(f"<p><i>{e(note)}</i></p>" for note in report.notes),
        f"<{h}>Figures</{h}>",
        *(_embedded_image(p, name) for name, p in report.figures.items()
          if not name.startswith(_ERROR_FIGURES)),
    ]  # fmt: skip
    return parts


_ERROR_FIGURES = ("confusion-", "mistakes-", "hard-images")


def to_html(report: StudyReport) -> str:
    """One self-contained page: every string escaped, every image embedded."""
    e = html.escape
    info = report.info
    reads = report.protocol.reads_text if report.protocol else None
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        f"<title>cnnlab study {e(info.name)}</title><style>{_CSS}</style></head><body>",
        f"<h1>Study {e(info.name)}</h1><p>{e(info.description)}</p>",
        f"<p>{len(report.trials)} trials; created {e(info.created)}."
        f"{' ' + e(reads) if reads else ''}</p>",
        *_html_body(report),
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
