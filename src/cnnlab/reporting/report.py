"""Study reports: the comparison table (terminal, Markdown, CSV), figures, diagnosis,
and a self-contained HTML page, all rebuilt from the store without training.

The facts come first (`analyse` -> `StudyReport`); `study_document` words them once
as a document, which `render` writes as Markdown, HTML and CSV and `console` prints.
Every file is written atomically (temporary name, then rename), one builder at a
time per report folder; a builder first clears the temporary files a killed one left.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.data.datasets import Dataset, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import training_flops
from cnnlab.reporting import render
from cnnlab.reporting.analysis import (
    ArchRow,
    Comparison,
    Protocol,
    TestSetCheck,
    compare_to_best,
    comparison_rows,
    protocol,
    test_set_checks,
)
from cnnlab.reporting.archdiff import diff_text
from cnnlab.reporting.console import print_document
from cnnlab.reporting.crossdata import CrossData, by_data, cross_dataset
from cnnlab.reporting.diagnosis import Diagnosis, diagnose_all, shared_notes
from cnnlab.reporting.document import Document, FigureKind
from cnnlab.reporting.epochs import EpochView, epoch_views
from cnnlab.reporting.figures import error_figures, study_figures
from cnnlab.reporting.mistakes import (
    ConfusedPair,
    confused_pairs,
    confusion_by_label,
    hard_images,
    missing_predictions,
)
from cnnlab.reporting.study_document import comparison_table, study_document
from cnnlab.studies.results import StudyInfo, TrialResult
from cnnlab.studies.store import Store
from cnnlab.util.fsio import atomic_write_text, folder_lock, remove_temp_files


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
    figure_kinds: dict[str, FigureKind] = field(default_factory=dict)  # by name

    @property
    def markdown_path(self) -> Path:
        return self.folder / "report.md"

    @property
    def html_path(self) -> Path:
        return self.folder / "report.html"

    @property
    def warning(self) -> str | None:
        return None if self.protocol is None else self.protocol.warning

    def document(self) -> Document:
        return study_document(self)

    def __repr__(self) -> str:
        """One line (a REPL shows it): the study, its size, the best and the file."""
        best = ", ".join(dict.fromkeys(c.best_label for c in self.comparisons))
        return (
            f"<StudyReport {self.info.name!r}: {len(self.rows)} labels, "
            f"{len(self.trials)} trials, best on {self.metric}: {best or '-'}; "
            f"{self.markdown_path}>"
        )

    def _repr_html_(self) -> str:
        """The report's sections, for a Jupyter cell."""
        return "\n".join(render.html_body(self.document(), heading="h3"))


def print_summary(report: StudyReport, console: Any) -> None:
    """The report's terminal summary, fitted to the console's width."""
    print_document(study_document(report), console)


def to_markdown(report: StudyReport) -> str:
    return render.to_markdown(study_document(report))


def to_html(report: StudyReport) -> str:
    return render.to_html(study_document(report))


def comparison_csv(rows: Sequence[ArchRow]) -> str:
    return render.to_csv(comparison_table(rows))


# ------------------------------------------------------------------ building


def build_report(
    store: Store, study: str, folder: Path, names: Mapping[str, str] | None = None
) -> StudyReport:
    """Analyse a study from the store and write its figures, tables and reports.
    `names` shows some labels under other names (a search's candidates by their
    parameters)."""
    info = store.study(study)
    trials = [t for t in store.trials(study) if t.history]
    with folder_lock(folder, f"a report of study '{study}'", wait=True):
        remove_temp_files(folder)
        remove_temp_files(folder / "figures")
        return _write_report(info, trials, folder, names)


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
        classes = (
            max(
                (
                    int(t.predictions["test"]["labels"].max())
                    for t in group
                    if "test" in t.predictions
                ),
                default=9,
            )
            + 1
        )
        return [str(c) for c in range(classes)]


def _error_figures(trials: list[TrialResult], folder: Path) -> tuple[dict, list[str]]:
    """Confusion matrices and galleries; a data set that cannot be loaded any more
    is named instead."""
    images, names, gone = {}, {}, []
    configs = {
        t.config.get("data", "mnist"): t.config
        for t in trials
        if "test" in t.predictions
    }
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
    info: StudyInfo,
    trials: list[TrialResult],
    folder: Path,
    names: Mapping[str, str] | None = None,
) -> StudyReport:
    if names:  # labels as a reader knows them; the store keeps its keys
        trials = [
            dataclasses.replace(t, label=names.get(t.label, t.label)) for t in trials
        ]
    report = analyse(info, trials, folder)
    figures = study_figures(trials, folder / "figures") if trials else {}
    errors, gone = _error_figures(trials, folder / "figures") if trials else ({}, [])
    kinds = dict.fromkeys(figures, FigureKind.TRAINING)
    kinds |= dict.fromkeys(errors, FigureKind.ERRORS)
    report = dataclasses.replace(
        report, figures=figures | errors, notes=report.notes + gone, figure_kinds=kinds
    )
    write_document(report.document(), folder)
    return report


def write_document(doc: Document, folder: Path) -> None:
    """report.md, report.html and report.csv (every table) into `folder`, and the
    first table alone as table.csv and table.md."""
    first = doc.tables()[0] if doc.tables() else None
    if first is not None:
        atomic_write_text(folder / "table.csv", render.to_csv(first))
        atomic_write_text(
            folder / "table.md", render.markdown_table(first.headers, first.rows) + "\n"
        )
    atomic_write_text(folder / "report.csv", render.document_csv(doc))
    atomic_write_text(folder / "report.md", render.to_markdown(doc))
    atomic_write_text(folder / "report.html", render.to_html(doc))
