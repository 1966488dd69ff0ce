"""The search report: what the search tried, what the seeds said of its finalists,
and the winner as a ready architecture file (best.yaml with its `train:` block).

Facts first (`search_facts`), then figures and text. The finalists' own study
report (tables, verdicts, diagnosis) is built by `cnnlab.reporting.report`.
"""

from __future__ import annotations

import html
import json
import math
import warnings
from dataclasses import dataclass, field
from itertools import combinations
from pathlib import Path
from typing import Any

import yaml

from cnnlab.reporting.analysis import compare_to_best, comparison_rows
from cnnlab.reporting.report import (
    StudyReport,
    build_report,
    markdown_table,
    table_cells,
)
from cnnlab.search.engine import SearchResult, ranked
from cnnlab.search.tuner import import_optuna, storage_url
from cnnlab.studies.layout import StudyLayout
from cnnlab.studies.store import Store
from cnnlab.training.config import TrainConfig
from cnnlab.training.curves import save_figure
from cnnlab.util.fsio import atomic_write_text
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

    @property
    def markdown_path(self) -> Path:
        return self.folder / "report.md"

    @property
    def html_path(self) -> Path:
        return self.folder / "report.html"


def _candidate_rows(trials: list[Any]) -> list[list[str]]:
    """The best candidates of the search phase, best first."""
    rows = []
    for rank, t in enumerate(trials[:TOP_SHOWN], start=1):
        values = ", ".join(f"{k}={_short(v)}" for k, v in t.params.items())
        acc = t.user_attrs.get("val_acc")
        rows.append([str(rank), t.user_attrs["label"], str(t.number), values,
                     f"{t.values[0]:.4f}", "-" if acc is None else f"{100 * acc:.2f}",
                     f"{t.user_attrs.get('params', 0):,}",
                     format_flops(t.user_attrs.get("train_flops", 0))])  # fmt: skip
    return rows


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


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
    train = {k: v for k, v in config.items()
             if k != "seed" and (k in _ALWAYS or v != default[k])}  # fmt: skip
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
    trials = ranked(optuna, study, spec)
    final = None
    best_file = None
    flips = (0, 0)
    verdicts: list[str] = []
    final_rows: list[list[str]] = []
    with Store(layout.store) as store:
        if result.final_study:
            final = build_report(
                store, result.final_study, layout.report(result.final_study)
            )
            val = compare_to_best(final.trials, "val_acc")
            means = {r.label: r.val_acc.mean for r in comparison_rows(final.trials)
                     if r.val_acc is not None}  # fmt: skip
            flips = overturned(result.finalists, means)
            verdicts = [c.verdict for c in val]
            best = next((c.best_label for c in val), None)
            if best is not None:
                best_file = write_best(result, store, best, out / spec.name / BEST_FILE)
            final_rows = _final_rows(result, final, val, trials)
    figures = _figures(optuna, study, spec, folder / "figures")
    counts = (
        f"{result.tally.trained} candidates trained ({result.tally.pruned} pruned, "
        f"{result.tally.failed} diverged), "
        f"{result.tally.invalid} invalid points; sampler {spec.sampler}, pruner "
        f"{spec.pruner}, objectives {', '.join(spec.objectives)}"
    )
    overturn = (
        f"The seeds overturned {flips[0]} of the {flips[1]} pairwise orders of the "
        "search's single-seed ranking of the finalists."
    )
    report = SearchReport(folder, best_file, [counts, overturn, *verdicts], final,
                          flips, figures)  # fmt: skip
    headers = ["rank", "candidate", "trial", "values", spec.objectives[0], "val acc %",
               "params", "train FLOPs/sample"]  # fmt: skip
    fheaders = [
        "finalist",
        "search rank",
        "search " + spec.objectives[0],
        "val acc % (mean ± std)",
        "seeds",
        "test acc % (mean)",
        "vs best",
    ]
    parts = {
        "counts": counts,
        "candidates": (headers, _candidate_rows(trials)),
        "finalists": (fheaders, final_rows),
        "overturn": overturn,
        "verdicts": verdicts,
        "best": best_file.read_text(encoding="utf-8") if best_file else "",
        "invalid": _invalid_rows(optuna, study),
    }
    atomic_write_text(report.markdown_path, _markdown(result, report, parts))
    atomic_write_text(report.html_path, _html(result, report, parts))
    return report


def _final_rows(
    result: SearchResult, final: StudyReport, val: list, trials: list[Any]
) -> list[list[str]]:
    search_rank = {
        t.user_attrs["label"]: (i, t.values[0]) for i, t in enumerate(trials, start=1)
    }
    verdict = {c.label: c for c in val}
    rows = []
    for r in final.rows:
        rank, value = search_rank.get(r.label, (None, None))
        c = verdict.get(r.label)
        tell = (
            "best"
            if c is not None and c.label == c.best_label
            else (
                "-"
                if c is None or c.significant is None
                else ("worse" if c.significant else "cannot be told apart")
            )
        )
        rows.append([
            r.label, "baseline" if rank is None else str(rank),
            "-" if value is None else f"{value:.4f}",
            "-" if r.val_acc is None else r.val_acc.format(2, 100),
            str(r.seeds),
            "-" if r.test_acc is None else f"{100 * r.test_acc.mean:.2f}",
            tell,
        ])  # fmt: skip
    return rows


def _invalid_rows(optuna: Any, study: Any) -> list[list[str]]:
    fail = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.FAIL,))
    return [[str(t.number), json.dumps(t.params), t.user_attrs["invalid"]]
            for t in fail if t.user_attrs.get("invalid")][:TOP_SHOWN]  # fmt: skip


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
            ax.plot([t.number], [list(t.intermediate_values.values())[-1]], "x",
                    color="grey")  # fmt: skip
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


# -------------------------------------------------------------------- text


def _markdown(result: SearchResult, report: SearchReport, parts: dict[str, Any]) -> str:
    spec = result.spec
    out = [f"# Search {spec.name}", "", parts["counts"] + ".", ""]
    out += ["## Candidates (search phase: one seed each, validation only)", ""]
    out += [markdown_table(*parts["candidates"]), ""]
    if parts["invalid"]:
        out += ["## Invalid points (not trained)", ""]
        out += [markdown_table(["trial", "values", "why"], parts["invalid"]), ""]
    out += ["## Finalists (re-trained over seeds; the only test-set reads)", ""]
    if parts["finalists"][1]:
        out += [markdown_table(*parts["finalists"]), ""]
        out += [parts["overturn"], ""]
        out += [f"- {v}" for v in parts["verdicts"]] + [""]
        assert report.final is not None
        out += [
            "Full comparison (validation-selected, test scored once per trial):",
            "",
        ]
        out += [markdown_table(*table_cells(report.final.rows)), ""]
        out += [f"The finalists' study report: {report.final.markdown_path}", ""]
    else:
        out += ["No candidate completed: no finalists.", ""]
    if parts["best"]:
        out += [
            f"## The winner: {BEST_FILE}",
            "",
            "```yaml",
            parts["best"].rstrip(),
            "```",
            "",
        ]
    out += ["## Figures", ""]
    for name, path in report.figures.items():
        out += [f"![{name}](figures/{path.name})", ""]
    return "\n".join(out)


def _html(result: SearchResult, report: SearchReport, parts: dict[str, Any]) -> str:
    from cnnlab.reporting.report import to_html_page

    e = html.escape
    body = [f"<h1>Search {e(result.spec.name)}</h1><p>{e(parts['counts'])}.</p>",
            "<h2>Candidates (search phase: one seed each, validation only)</h2>",
            to_html_table(*parts["candidates"])]  # fmt: skip
    if parts["invalid"]:
        invalid = to_html_table(["trial", "values", "why"], parts["invalid"])
        body += ["<h2>Invalid points (not trained)</h2>", invalid]
    body.append("<h2>Finalists (re-trained over seeds; the only test-set reads)</h2>")
    if parts["finalists"][1]:
        body += [to_html_table(*parts["finalists"]), f"<p>{e(parts['overturn'])}</p>"]
        body += [f'<p class="verdict">{e(v)}</p>' for v in parts["verdicts"]]
    if parts["best"]:
        body.append(f"<h2>The winner: {BEST_FILE}</h2><pre>{e(parts['best'])}</pre>")
    body.append("<h2>Figures</h2>")
    return to_html_page(f"cnnlab search {result.spec.name}", body, report.figures)


def to_html_table(headers: list[str], rows: list[list[str]]) -> str:
    from cnnlab.reporting.report import html_table

    return html_table(headers, rows, "comparison")
