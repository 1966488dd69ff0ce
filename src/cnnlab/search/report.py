"""The search report: what the search tried, what the seeds said of its finalists,
and the winner as a ready architecture file (best.yaml with its `train:` block).

Facts first (`search_facts` -> `SearchFacts`, read from Optuna and the store), then
best.yaml and the figures, then one document (`search_document`) that
`cnnlab.reporting.render` writes as Markdown, HTML and CSV. Candidates are shown by
their values ('units=8 lr=0.003'); their keys (`c-24dafb79c7`) stay the labels of
the store and the run folders. The finalists' own study report (tables, verdicts,
diagnosis) is built by `cnnlab.reporting.report`.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml

from cnnlab.reporting.analysis import Comparison, Stat, compare_to_best, comparison_rows
from cnnlab.reporting.document import (
    Audience,
    Builder,
    Code,
    Column,
    ColumnKind,
    Document,
    Figure,
    FigureKind,
    Paragraph,
    Style,
    Table,
    table,
)
from cnnlab.reporting.report import StudyReport, build_report, write_document
from cnnlab.reporting.study_document import comparison_table
from cnnlab.reporting.wording import comparison_text
from cnnlab.search.engine import SearchResult, ranked
from cnnlab.search.space import values_text
from cnnlab.search.tuner import import_optuna, storage_url
from cnnlab.studies.layout import StudyLayout
from cnnlab.studies.store import Store
from cnnlab.training.config import TrainConfig
from cnnlab.util.fsio import atomic_write_text, save_figure
from cnnlab.util.units import format_flops

BEST_FILE = "best.yaml"
TOP_SHOWN = 10  # candidates listed in the report
# Settings best.yaml always states, even at their defaults: what a reader looks for.
_ALWAYS = ("epochs", "batch_size", "optimizer", "lr")


@dataclass
class SearchReport:
    folder: Path
    best_file: Path | None
    lines: list[str]  # the terminal summary
    final: StudyReport | None
    overturned: tuple[int, int] = (0, 0)  # (pairs whose order flipped, pairs)
    figures: dict[str, Path] = field(default_factory=dict)
    facts: SearchFacts | None = None  # every number the report shows

    @property
    def markdown_path(self) -> Path:
        return self.folder / "report.md"

    @property
    def html_path(self) -> Path:
        return self.folder / "report.html"


@dataclass(frozen=True)
class Candidate:
    """One completed candidate of the search phase."""

    rank: int
    label: str  # its values, 'units=8 lr=0.003'
    key: str  # its label in the store and its run folder's name
    trial: int  # Optuna's trial number
    objective: float
    val_acc: float | None
    params: int
    train_flops: int


@dataclass(frozen=True)
class Finalist:
    """One net of the final stage, re-trained over the seeds."""

    label: str
    search_rank: int | None  # None for a baseline (a fixed architecture)
    search_value: float | None
    val_acc: Stat | None
    seeds: int
    test_acc: float | None
    comparison: Comparison | None  # on validation accuracy, against the best


@dataclass(frozen=True)
class SearchFacts:
    """Every number of the search report."""

    name: str
    objectives: tuple[str, ...]
    sampler: str
    pruner: str
    trained: int
    pruned: int
    failed: int
    invalid: int
    candidates: list[Candidate]
    invalid_points: list[tuple[int, dict[str, Any], str]]  # trial, values, why
    finalists: list[Finalist]
    comparisons: list[Comparison]  # the finalists on validation accuracy
    overturned: tuple[int, int]
    best_key: str | None  # the winner's store label
    final: StudyReport | None


def overturned(
    search_order: list[str], final_means: dict[str, float]
) -> tuple[int, int]:
    """Pairs of finalists whose single-seed search order the seeds' mean reversed,
    out of all pairs."""
    labels = [x for x in search_order if x in final_means]
    pairs = list(combinations(labels, 2))  # (better in the search, worse)
    flips = sum(final_means[b] > final_means[a] for a, b in pairs)
    return flips, len(pairs)


def write_best(result: SearchResult, store: Store, label: str, path: Path) -> Path:
    """The winner as an architecture file with the `train:` block it was trained
    with (the finalists' settings; `cnnlab train best.yaml` trains it again)."""
    row = next(r for r in store.trial_rows(result.final_study) if r.label == label)
    spec, config = row.spec, row.config
    default = TrainConfig().to_dict()
    train = {
        k: v
        for k, v in config.items()
        if k != "seed" and (k in _ALWAYS or v != default[k])
    }
    doc = {"name": label, **{k: v for k, v in spec.items() if k != "name"}}
    doc["description"] = (
        f"winner of the search {result.spec.name} (validation mean over seeds)"
    )
    head = (
        f"# Found by `cnnlab search` ({result.spec.name}); train it: "
        f"cnnlab train {path.name}\n"
    )
    text = yaml.safe_dump(
        doc | {"train": train}, sort_keys=False, default_flow_style=None
    )
    atomic_write_text(path, head + text)
    return path


def build_search_report(result: SearchResult) -> SearchReport:
    """Build the finalists' study report, best.yaml and the search report."""
    optuna = import_optuna()
    spec, out = result.spec, result.out
    layout = StudyLayout(out)
    folder = layout.report(spec.name)
    study = optuna.load_study(study_name=spec.name, storage=storage_url(out))
    with Store(layout.store) as store:
        facts = search_facts(result, optuna, study, store)
        best_file = None
        if facts.best_key is not None:
            best_file = write_best(
                result, store, facts.best_key, out / spec.name / BEST_FILE
            )
    figures = _figures(optuna, study, spec, folder / "figures")
    best = best_file.read_text(encoding="utf-8") if best_file else ""
    write_document(search_document(facts, best, figures), folder)
    lines = summary_lines(facts)
    return SearchReport(
        folder, best_file, lines, facts.final, facts.overturned, figures, facts
    )


def search_facts(
    result: SearchResult, optuna: Any, study: Any, store: Store
) -> SearchFacts:
    """What the search tried and what the seeds said, read from Optuna and the store;
    the finalists' study report is built on the way (it is their facts)."""
    spec, tally = result.spec, result.tally
    trials = ranked(optuna, study, spec)
    names = labels_by_key(study.get_trials(deepcopy=False))
    final, val, flips, best_key = None, [], (0, 0), None
    if result.final_study:
        final = build_report(
            store, result.final_study, result.out / result.final_study / "report", names
        )
        val = compare_to_best(final.trials, "val_acc")
        means = {
            r.label: r.val_acc.mean
            for r in comparison_rows(final.trials)
            if r.val_acc is not None
        }
        order = [names.get(key, key) for key in result.finalists]
        flips = overturned(order, means)
        keys = {label: key for key, label in names.items()}
        best_key = next((keys.get(c.best_label, c.best_label) for c in val), None)
    return SearchFacts(
        name=spec.name,
        objectives=tuple(spec.objectives),
        sampler=spec.sampler,
        pruner=spec.pruner,
        trained=tally.trained,
        pruned=tally.pruned,
        failed=tally.failed,
        invalid=tally.invalid,
        candidates=_candidates(trials, names),
        invalid_points=_invalid(optuna, study),
        finalists=_finalists(final, val, trials, names),
        comparisons=val,
        overturned=flips,
        best_key=best_key,
        final=final,
    )


def labels_by_key(trials: list[Any]) -> dict[str, str]:
    """Each candidate's key -> its values as text; a key stays where two
    candidates' texts would read alike (values equal to 3 digits)."""
    texts = {
        t.user_attrs["label"]: values_text(t.params)
        for t in trials
        if "label" in t.user_attrs
    }
    seen: dict[str, int] = {}
    for text in texts.values():
        seen[text] = seen.get(text, 0) + 1
    return {
        key: text if seen[text] == 1 else f"{text} ({key})"
        for key, text in texts.items()
    }


def _candidates(trials: list[Any], names: dict[str, str]) -> list[Candidate]:
    """The best candidates of the search phase, best first."""
    return [
        Candidate(
            rank,
            names.get(t.user_attrs["label"], t.user_attrs["label"]),
            t.user_attrs["label"],
            t.number,
            t.values[0],
            t.user_attrs.get("val_acc"),
            t.user_attrs.get("params", 0),
            t.user_attrs.get("train_flops", 0),
        )
        for rank, t in enumerate(trials[:TOP_SHOWN], start=1)
    ]


def _finalists(
    final: StudyReport | None,
    val: list[Comparison],
    trials: list[Any],
    names: dict[str, str],
) -> list[Finalist]:
    if final is None:
        return []
    search_rank = {
        names.get(t.user_attrs["label"], t.user_attrs["label"]): (i, t.values[0])
        for i, t in enumerate(trials, start=1)
    }
    verdict = {c.label: c for c in val}
    rows = []
    for r in final.rows:
        rank, value = search_rank.get(r.label, (None, None))
        test = None if r.test_acc is None else r.test_acc.mean
        rows.append(
            Finalist(
                r.label, rank, value, r.val_acc, r.seeds, test, verdict.get(r.label)
            )
        )
    return rows


def _invalid(optuna: Any, study: Any) -> list[tuple[int, dict[str, Any], str]]:
    fail = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    return [
        (t.number, dict(t.params), t.user_attrs["invalid"])
        for t in fail
        if t.user_attrs.get("invalid")
    ][:TOP_SHOWN]


# -------------------------------------------------------------------- words


def summary_lines(facts: SearchFacts) -> list[str]:
    """The end-of-search lines: what ran, whether the seeds overturned the order,
    and each finalist against the best."""
    lines = [_counts(facts)]
    if facts.final is not None:
        lines.append(_overturn(facts))
    return lines + [comparison_text(c) for c in facts.comparisons]


def _counts(f: SearchFacts) -> str:
    return (
        f"{f.trained} candidates trained ({f.pruned} pruned, {f.failed} diverged), "
        f"{f.invalid} invalid points; sampler {f.sampler}, pruner {f.pruner}, "
        f"objectives {', '.join(f.objectives)}"
    )


def _overturn(f: SearchFacts) -> str:
    flips, pairs = f.overturned
    return (
        f"The seeds overturned {flips} of the {pairs} pairwise orders of the "
        "search's single-seed ranking of the finalists."
    )


def search_document(
    facts: SearchFacts, best: str, figures: dict[str, Path]
) -> Document:
    """The search report, in order: counts, candidates, invalid points, finalists,
    the winner's file, figures."""
    doc = Builder()
    doc.add(
        "Candidates (search phase: one seed each, validation only)",
        _candidate_table(facts),
    )
    if facts.invalid_points:
        doc.add("Invalid points (not trained)", _invalid_table(facts))
    doc.add(
        "Finalists (re-trained over seeds; the only test-set reads)",
        *_finalist_blocks(facts),
    )
    if best:
        doc.add(f"The winner: {BEST_FILE}", Code(best.rstrip(), "yaml"))
    doc.add(
        "Figures",
        *(Figure(name, path, FigureKind.SEARCH) for name, path in figures.items()),
    )
    return Document(
        f"Search {facts.name}",
        (Paragraph(_counts(facts) + "."),),
        tuple(doc.sections),
        page_title=f"cnnlab search {facts.name}",
    )


def _candidate_table(facts: SearchFacts) -> Table:
    columns = [
        Column("rank"),
        Column("candidate", ColumnKind.NAME),
        Column(facts.objectives[0]),
        Column("val acc %"),
        Column("params", drop=1),
        Column("train FLOPs/sample", drop=2),
        Column("key", ColumnKind.NAME, drop=3),
    ]
    return table("candidates", columns, [_candidate_row(c) for c in facts.candidates])


def _invalid_table(facts: SearchFacts) -> Table:
    columns = [
        Column("trial"),
        Column("values", ColumnKind.TEXT),
        Column("why", ColumnKind.TEXT),
    ]
    rows = [[str(n), values_text(v), why] for n, v, why in facts.invalid_points]
    return table("invalid", columns, rows)


def _candidate_row(c: Candidate) -> list[str]:
    acc = "-" if c.val_acc is None else f"{100 * c.val_acc:.2f}"
    return [
        str(c.rank),
        c.label,
        f"{c.objective:.4f}",
        acc,
        f"{c.params:,}",
        format_flops(c.train_flops),
        c.key,
    ]


_STANDING = {True: "worse", False: "cannot be told apart"}


def _finalist_blocks(facts: SearchFacts) -> list[Any]:
    if not facts.finalists or facts.final is None:
        return [Paragraph("No candidate completed: no finalists.")]
    objective = facts.objectives[0]
    columns = [
        Column("finalist", ColumnKind.NAME),
        Column("search rank"),
        Column("search " + objective),
        Column("val acc % (mean ± std)"),
        Column("seeds"),
        Column("test acc % (mean)"),
        Column("vs best", ColumnKind.NAME),
    ]
    rows = []
    for f in facts.finalists:
        c = f.comparison
        tell = "-" if c is None or c.significant is None else _STANDING[c.significant]
        if c is not None and c.label == c.best_label:
            tell = "best"
        rows.append(
            [
                f.label,
                "baseline" if f.search_rank is None else str(f.search_rank),
                "-" if f.search_value is None else f"{f.search_value:.4f}",
                "-" if f.val_acc is None else f.val_acc.format(2, 100),
                str(f.seeds),
                "-" if f.test_acc is None else f"{100 * f.test_acc:.2f}",
                tell,
            ]
        )
    return [
        table("finalists", columns, rows),
        Paragraph(_overturn(facts)),
        *(Paragraph(comparison_text(c), style=Style.ITEM) for c in facts.comparisons),
        Paragraph(
            "Full comparison (validation-selected, test scored once per trial):",
            audience=Audience.FILES,
        ),
        comparison_table(facts.final.rows),
        Paragraph(
            f"The finalists' study report: {facts.final.markdown_path}",
            audience=Audience.FILES,
        ),
    ]


# ----------------------------------------------------------------- figures


def _figures(optuna: Any, study: Any, spec: Any, folder: Path) -> dict[str, Path]:
    from matplotlib.figure import Figure

    state = optuna.trial.TrialState
    done = study.get_trials(deepcopy=False, states=(state.COMPLETE,))
    figures: dict[str, Path] = {}
    if not done:
        return figures
    metric = spec.objectives[0]
    sign = 1 if spec.objectives[0] == "val_acc" else -1
    xs = [t.number for t in done]
    ys = [t.values[0] for t in done]
    best = [max(ys[: i + 1], key=lambda v: sign * v) for i in range(len(ys))]
    fig = Figure(figsize=(7, 4), layout="constrained")
    ax = fig.add_subplot()
    ax.plot(xs, ys, "o", label="candidate")
    ax.step(xs, best, where="post", label="best so far")
    pruned = study.get_trials(deepcopy=False, states=(state.PRUNED,))
    for t in pruned:
        if t.intermediate_values:
            ax.plot(
                [t.number],
                [list(t.intermediate_values.values())[-1]],
                "x",
                color="grey",
            )
    ax.set(
        xlabel="trial", ylabel=metric, title=f"Optimisation history ({spec.sampler})"
    )
    ax.legend()
    figures["history"] = save_figure(fig, folder / "history.png")
    figures |= _importances(optuna, study, folder)
    figures["parallel"] = _parallel(done, spec, folder / "parallel.png")
    if len(spec.objectives) > 1:
        front = {t.number for t in study.best_trials}
        fig = Figure(figsize=(6, 4), layout="constrained")
        ax = fig.add_subplot()
        ax.plot(
            [t.values[1] for t in done], ys, "o", color="lightgrey", label="candidate"
        )
        pts = sorted((t.values[1], t.values[0]) for t in done if t.number in front)
        ax.plot(*zip(*pts, strict=True), "o-", label="Pareto front")
        ax.set(
            xscale="log", xlabel=spec.objectives[1], ylabel=metric, title="Pareto front"
        )
        ax.legend()
        figures["pareto"] = save_figure(fig, folder / "pareto.png")
    return figures


def _importances(optuna: Any, study: Any, folder: Path) -> dict[str, Path]:
    from matplotlib.figure import Figure

    sign = -1.0 if study.directions[0].name == "MAXIMIZE" else 1.0
    try:
        with warnings.catch_warnings():  # PED-ANOVA says it ranks for low targets
            warnings.simplefilter("ignore")
            found = optuna.importance.get_param_importances(
                study, target=lambda t: sign * t.values[0]
            )
    except (ValueError, RuntimeError, ZeroDivisionError):  # too few trials
        return {}
    if not found:
        return {}
    fig = Figure(figsize=(6, 0.5 + 0.4 * len(found)), layout="constrained")
    ax = fig.add_subplot()
    names = list(found)[::-1]
    ax.barh(names, [found[n] for n in names])
    ax.set(
        xlabel="importance (Optuna's default evaluator)", title="Parameter importances"
    )
    return {"importances": save_figure(fig, folder / "importances.png")}


def _parallel(done: list[Any], spec: Any, path: Path) -> Path:
    """Parallel coordinates: each candidate a line through its scaled values."""
    from matplotlib import colormaps
    from matplotlib.figure import Figure

    names = [p.name for p in spec.params]
    fig = Figure(figsize=(max(5, 1.4 * len(names)), 4), layout="constrained")
    ax = fig.add_subplot()
    values = [t.values[0] for t in done]
    lo, hi = min(values), max(values)
    cmap = colormaps["viridis" if spec.objectives[0] == "val_acc" else "viridis_r"]
    for t in done:
        ys = [_scaled(p, t.params.get(p.name)) for p in spec.params]
        shade = 0.5 if hi == lo else (t.values[0] - lo) / (hi - lo)
        ax.plot(range(len(names)), ys, color=cmap(shade), alpha=0.8)
    ax.set_xticks(range(len(names)), names)
    ax.set(
        ylabel="scaled value (low to high)",
        title=f"Candidates, coloured by {spec.objectives[0]}",
    )
    return save_figure(fig, path)


def _scaled(param: Any, value: Any) -> float:
    if value is None:
        return math.nan
    if param.kind == "choice":
        index = list(param.choices).index(value)
        return index / max(1, len(param.choices) - 1)
    if param.log:
        return (math.log(value) - math.log(param.low)) / (
            math.log(param.high) - math.log(param.low)
        )
    return (value - param.low) / (param.high - param.low)
