"""A study report as a document: every heading, sentence and table of report.md,
report.html, the CSV files and the terminal summary, written once.

Reads the facts (`StudyReport`, from `report.analyse`) and decides nothing about
the numbers; the renderers in `render` and `console` decide nothing about the words.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import yaml

from cnnlab.nn.shapes import training_flops
from cnnlab.reporting.analysis import ArchRow, Stat, notebook_view
from cnnlab.reporting.crossdata import CrossData, agreement_text
from cnnlab.reporting.document import (
    Audience,
    Builder,
    Code,
    Column,
    Document,
    Figure,
    FigureKind,
    Paragraph,
    Style,
    Table,
    table,
)
from cnnlab.reporting.document import ColumnKind as K
from cnnlab.reporting.mistakes import ConfusedPair
from cnnlab.reporting.wording import comparison_text, count_text, test_check_text
from cnnlab.studies.results import precision_note, standardize_note
from cnnlab.util.units import format_flops

if TYPE_CHECKING:
    from cnnlab.reporting.report import StudyReport

FILES, TERMINAL = Audience.FILES, Audience.TERMINAL

METHODS = (
    "Mean ± sample std over seeds. The 95% CI is the t interval of the mean test "
    "accuracy over seeds; test SE is the binomial standard error of that accuracy "
    "on the test images (the test set's own sampling error). Running train metrics "
    "are Keras's (averaged over the epoch, dropout on); clean ones are measured "
    "after the last epoch with dropout off."
)


def study_document(report: StudyReport) -> Document:
    """The whole study report, in order."""
    info = report.info
    doc = Builder()
    chosen = "test set" if report.warning else "validation"
    caption = f"Study {info.name}: mean ± std over seeds (best chosen on {chosen})"
    doc.add(
        "Comparison",
        Paragraph(METHODS, audience=FILES),
        comparison_table(report.rows, caption),
        *(
            Paragraph(n)
            for n in (precision_note(report.trials), standardize_note(report.trials))
            if n
        ),
    )
    doc.add(
        "Is the difference real?",
        *(Paragraph(line) for line in protocol_lines(report)),
        *(Paragraph(comparison_text(c), style=Style.ITEM) for c in report.comparisons),
        *(Paragraph(test_check_text(c), style=Style.ITEM) for c in report.test_checks),
    )
    if report.epochs:
        doc.add("Best epoch and time to accuracy", EPOCHS, _epoch_table(report))
    doc.add("Where each net goes wrong", *_error_blocks(report))
    if report.diffs:
        doc.add(
            "What each net changes from the best", _diff_table(report), audience=FILES
        )
    if report.cross is not None:
        doc.add("Across data sets", *_cross_blocks(report.cross))
    doc.add(
        "The notebook's conclusion table", _notebook_table(report.rows), audience=FILES
    )
    doc.add("Diagnosis", *_diagnosis_blocks(report))
    doc.add("Figures", *_figures(report, FigureKind.TRAINING), audience=FILES)
    config = yaml.safe_dump(info.config, sort_keys=False, default_flow_style=None)
    doc.add("Study configuration", Code(config.rstrip(), "yaml"), audience=FILES)
    doc.add("Machine", Paragraph(_machine(report)), audience=FILES)
    return Document(
        f"Study {info.name}",
        _intro(report),
        tuple(doc.sections),
        page_title=f"cnnlab study {info.name}",
    )


EPOCHS = Paragraph(
    "Best epoch by validation loss against the last; times are training seconds "
    "until validation accuracy first reached each level."
)


def _intro(report: StudyReport) -> tuple[Paragraph, ...]:
    """The description, the protocol's warning, the trial count and test reads."""
    info = report.info
    intro = [Paragraph(info.description, audience=FILES)] if info.description else []
    if report.warning:
        intro.append(Paragraph(report.warning, style=Style.WARNING))
    reads = report.protocol.reads_text if report.protocol else None
    created = f"{len(report.trials)} trials; created {info.created}."
    intro.append(Paragraph(f"{created} {reads}" if reads else created, audience=FILES))
    return tuple(intro)


def protocol_lines(report: StudyReport) -> list[str]:
    """What chose the best, which tests compare with it, and the test-set reads."""
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
    correction = f", Holm-corrected over the {count_text(tests, 'comparison')}"
    if report.cross is not None:
        correction = (
            f", Holm-corrected within each data set ({count_text(tests, 'comparison')}"
            " in all)"
        )
    elif tests <= 1:
        correction = ""  # one test: nothing to correct for
    lines = [
        chosen,
        f"Comparisons with the best: Welch's t-test over seeds"
        f"{correction}; on the test images, McNemar's exact test.",
    ]
    if p.reads_text:
        lines.append(p.reads_text)
    return lines


# ---------------------------------------------------------------- the tables


def _fmt(stat: Stat | None, digits: int = 4, scale: float = 1.0) -> str:
    return "-" if stat is None else stat.format(digits, scale)


def _ci(stat: Stat | None, scale: float = 100.0) -> str:
    if stat is None or stat.ci_low is None or stat.ci_high is None:
        return "-"
    return f"[{stat.ci_low * scale:.2f}, {stat.ci_high * scale:.2f}]"


def _se(row: ArchRow) -> str:
    se = row.test_se
    return "-" if se is None else f"{se * 100:.2f}"


# Validation first: with a hold-out it chooses; test metrics stand beside it. The
# terminal shows the most telling columns under short headings, and on a narrow
# console leaves out the highest `drop` first.
COMPARISON: list[tuple[Column, object]] = [
    (Column("architecture", K.NAME, "net"), lambda r: r.label),
    (Column("seeds", terminal=False), lambda r: str(r.seeds)),
    (Column("params", drop=2), lambda r: f"{r.params:,}"),
    (
        Column("train FLOPs/sample", short="FLOPs", drop=5),
        lambda r: format_flops(training_flops(r.flops)),
    ),
    (Column("val acc %"), lambda r: _fmt(r.val_acc, 2, 100)),
    (Column("val loss", drop=4), lambda r: _fmt(r.val_loss)),
    (Column("test acc %"), lambda r: _fmt(r.test_acc, 2, 100)),
    (Column("test acc 95% CI", terminal=False), lambda r: _ci(r.test_acc)),
    (Column("test SE (points)", short="test SE", drop=3), _se),
    (Column("test loss", terminal=False), lambda r: _fmt(r.test_loss)),
    (Column("best epoch", short="best ep", drop=6), lambda r: _fmt(r.best_epoch, 1)),
    (
        Column("train acc % (clean)", short="clean acc %", drop=7),
        lambda r: _fmt(r.clean_acc, 2, 100),
    ),
    (Column("train loss (clean)", terminal=False), lambda r: _fmt(r.clean_loss)),
    (
        Column("train acc % (running)", terminal=False),
        lambda r: _fmt(r.final_acc, 2, 100),
    ),
    (
        Column("train loss (running)", short="train loss", drop=8),
        lambda r: _fmt(r.final_loss),
    ),
    (Column("s/epoch", drop=9), lambda r: _fmt(r.seconds_per_epoch, 1)),
]


def comparison_table(rows: Sequence[ArchRow], caption: str = "") -> Table:
    """The comparison table: one row per net."""
    cells = [[cell(r) for _, cell in COMPARISON] for r in rows]  # type: ignore[operator]
    return table("comparison", [c for c, _ in COMPARISON], cells, caption)


def _notebook_table(rows: Sequence[ArchRow]) -> Table:
    view = notebook_view(rows)
    metrics = [
        "Optimizer",
        "Train Accuracy",
        "Train Loss",
        "Test Accuracy",
        "Test Loss",
    ]
    headers = ["Metric", *(v["label"] for v in view)]
    cells = [[m, *(v[m] for v in view)] for m in metrics]
    return table(
        "notebook",
        [Column(h, K.NAME if i == 0 else K.NUMBER) for i, h in enumerate(headers)],
        cells,
    )


def _epoch_table(report: StudyReport) -> Table:
    onset = {d.label: d.overfit_from for d in report.diagnoses}
    thresholds = report.epochs[0].reaches if report.epochs else ()
    headers = [
        "net",
        "best epoch",
        "val loss best / last",
        "val acc % best / last",
        "overfitting from",
        *(f"to {r.threshold:.1%} val acc" for r in thresholds),
    ]
    rows = []
    for v in report.epochs:
        acc = "-"
        if v.best_val_acc is not None and v.last_val_acc is not None:
            acc = f"{v.best_val_acc.mean:.2%} / {v.last_val_acc.mean:.2%}"
        start = onset.get(v.label)
        rows.append(
            [
                v.label,
                f"{v.best_epoch.mean:.1f} of {v.last_epoch.mean:.0f}",
                f"{v.best_val_loss.mean:.4f} / {v.last_val_loss.mean:.4f}",
                acc.replace("%", ""),
                "-" if start is None else f"epoch {start}",
                *(r.text() for r in v.reaches),
            ]
        )
    kinds = [
        Column(h, K.NAME if i == 0 else K.NUMBER, drop=0 if i < 3 else i)
        for i, h in enumerate(headers)
    ]
    return table("epochs", kinds, rows)


def _confused_table(report: StudyReport) -> Table:
    headers = ["net", "most-confused (true -> predicted: images, share of class)"]
    rows = []
    for label, pairs in report.confused.items():
        names = report.class_names.get(label, [])
        rows.append([label, "; ".join(_pair_text(p, names) for p in pairs) or "-"])
    return table(
        "confused", [Column(headers[0], K.NAME), Column(headers[1], K.TEXT)], rows
    )


def _pair_text(pair: ConfusedPair, names: Sequence[str]) -> str:
    def name(c: int) -> str:
        return names[c] if c < len(names) else str(c)

    return (
        f"{name(pair.true)} -> {name(pair.predicted)}: {pair.count} ({pair.share:.1%})"
    )


def _diff_table(report: StudyReport) -> Table:
    metric = report.metric.replace("_", " ")
    headers = [
        "net",
        "vs",
        f"{metric} delta",
        "Holm p",
        "params delta",
        "train FLOPs delta",
        "layer changes",
    ]
    scale, unit = (100, " points") if report.metric.endswith("acc") else (1, "")
    rows = [
        [
            d.label,
            d.best_label,
            f"{d.difference * scale:+.2f}{unit}",
            "-" if d.p_holm is None else f"{d.p_holm:.2g}",
            f"{d.params:+,}",
            _signed_flops(d.flops),
            d.layers,
        ]
        for d in report.diffs
    ]
    kinds = [K.NAME, K.NAME, K.NUMBER, K.NUMBER, K.NUMBER, K.NUMBER, K.TEXT]
    return table(
        "diffs", [Column(h, k) for h, k in zip(headers, kinds, strict=True)], rows
    )


def _signed_flops(value: int) -> str:
    return ("-" if value < 0 else "+") + format_flops(abs(value))


def _cross_table(cross: CrossData) -> Table:
    what = "val acc %" if cross.metric == "val_acc" else "test acc %"
    headers = ["net"]
    for d in cross.datas:
        headers += (
            [f"{d} {what}", f"{d} test acc %"]
            if what != "test acc %"
            else [f"{d} test acc %"]
        )
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
    return table(
        "cross",
        [Column(h, K.NAME if i == 0 else K.NUMBER) for i, h in enumerate(headers)],
        rows,
    )


# ---------------------------------------------------------------- the prose


def _error_blocks(report: StudyReport) -> list[Paragraph | Table | Figure]:
    if not report.confused and not report.missing:
        return []
    blocks: list[Paragraph | Table | Figure] = []
    if report.confused:
        blocks.append(_confused_table(report))
    blocks += [
        Paragraph(
            f"{count} test images of {data} are wrong for every net and "
            "seed (figure hard-images)."
        )
        for data, count in report.hard.items()
    ]
    blocks += _figures(report, FigureKind.ERRORS)
    if report.missing:
        blocks.append(Paragraph(missing_text(report)))
    return blocks


def missing_text(report: StudyReport) -> str:
    return (
        f"No per-image test predictions for {', '.join(report.missing)} "
        "(recorded before they were kept): no McNemar test, confusion matrix or "
        "gallery for them. Re-run their trials to get them."
    )


def _cross_blocks(cross: CrossData) -> list[Paragraph | Table]:
    agreement = [
        Paragraph(agreement_text(a, b, r), style=Style.ITEM)
        for a, b, r in cross.agreement
    ]
    return [_cross_table(cross), *agreement]


def _diagnosis_blocks(report: StudyReport) -> list[Paragraph]:
    blocks = [
        Paragraph(d.text, lead=f"{d.label}: {d.verdict}.") for d in report.diagnoses
    ]
    return blocks + [Paragraph(note, style=Style.NOTE) for note in report.notes]


def _figures(report: StudyReport, kind: FigureKind) -> list[Figure]:
    kinds = report.figure_kinds
    return [
        Figure(name, path, kinds.get(name, FigureKind.TRAINING))
        for name, path in report.figures.items()
        if kinds.get(name, FigureKind.TRAINING) is kind
    ]


def _machine(report: StudyReport) -> str:
    env = report.info.environment
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
