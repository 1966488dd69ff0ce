"""The search engine: Optuna asks for points, the one study runner trains them.

    parse (before any file) -> lock -> Optuna study in <out>/optuna.sqlite (resumed;
    trials a dead process left RUNNING are failed and their points asked again) ->
    batches: ask -> build + shape-infer (invalid: recorded, not trained) ->
    run_study(<name>, candidates, one seed, test set never read) -> tell ->
    finalists: the top k re-trained over the seeds as the study <name>-final, the
    only stage that scores the test set -> best.yaml and the report

Every candidate is an ordinary study trial: same run folders, same store rows.
"""

from __future__ import annotations

import dataclasses
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import training_flops
from cnnlab.search.space import (
    COSTS,
    OBJECTIVES,
    DataFacts,
    Point,
    SearchSpec,
    build_point,
    data_facts,
    sample,
    values_text,
)
from cnnlab.search.tuner import (
    OPTUNA_FILE,
    Pruning,
    import_optuna,
    make_pruner,
    make_sampler,
    open_storage,
    storage_url,
)
from cnnlab.studies.executors import Executor
from cnnlab.studies.layout import StudyLayout
from cnnlab.studies.results import TrialResult
from cnnlab.studies.runner import make_executor, run_study
from cnnlab.studies.store import Store
from cnnlab.studies.study import Study, StudyArch, Trial
from cnnlab.training.display import StudyDisplay, quieted
from cnnlab.training.status import Status
from cnnlab.util.fsio import folder_lock

FINAL_SUFFIX = "-final"
# Points drawn in a row that cannot be built before the search gives up: the space
# is then mostly invalid, and sampling on would only spin.
MAX_INVALID_IN_A_ROW = 200


@dataclass
class Tally:
    """What the search has done so far, for the progress line and the report."""

    trained: int = 0  # candidates that finished (completed or pruned)
    pruned: int = 0
    invalid: int = 0
    failed: int = 0  # diverged
    best: str = ""


@dataclass
class SearchResult:
    spec: SearchSpec
    out: Path
    tally: Tally
    finalists: list[str] = field(default_factory=list)  # labels, by search rank
    final_study: str = ""
    seconds: float = 0.0


def run_search(
    spec: SearchSpec,
    out: str | Path,
    *,
    executor: str = "local",
    workers: int | None = None,
    address: str | None = None,
    cpus_per_trial: float | None = None,
    trials: int | None = None,
    time_budget: float | None = None,
    progress: StudyDisplay | None = None,
    final: bool = True,
) -> SearchResult:
    """Search `spec`'s space under `out`, then (unless `final` is off) re-train its
    finalists over seeds."""
    optuna = import_optuna()
    out = Path(out)
    data = data_facts(spec.base)
    budget = trials if trials is not None else spec.budget()
    if executor == "ray":  # refuse bad Ray options before a file is written
        _executor(spec, [], executor, None, address, cpus_per_trial)
    started = time.perf_counter()
    say = progress.message if progress is not None else (lambda text: None)
    check_names(spec, out)  # before the lock creates a folder in the study's
    with folder_lock(StudyLayout(out).search(spec.name), f"search '{spec.name}'"):
        study = _open_optuna(optuna, spec, out)
        _recover(optuna, study, say)
        tally = _tally(optuna, study)
        run = _Searcher(spec, out, study, data, budget, tally, say)
        run.executor = lambda points: _executor(
            spec, points, executor, workers, address, cpus_per_trial
        )
        run.parallel = max(1, workers or (2 if executor == "ray" else 1))
        run.progress = progress
        run.loop(started, time_budget)
        if tally.trained == 0 and time_budget is not None:
            raise CnnlabError(
                f"--time-budget {time_budget:g} s ran out before the first candidate "
                "started, so there is nothing to rank. Give a budget of at least one "
                "candidate's training time, e.g. 10m."
            )
        finalists = pick_finalists(optuna, study, spec)
        result = SearchResult(spec, out, tally, [f.key for f in finalists])
        if finalists and final:
            finals = final_study(spec, finalists)
            seeds = len(finals.seeds)
            say(f"Final stage: {len(finals.archs)} net(s) x {seeds} seeds")
            local_workers = None if executor == "ray" else workers  # Ray: batch size
            chosen = make_executor(
                finals,
                executor,
                local_workers,
                address,
                None,  # type: ignore[arg-type]
                cpus_per_trial,
            )
            run_study(finals, out, chosen, progress)
            result.final_study = finals.name
    result.seconds = time.perf_counter() - started
    return result


def _executor(
    spec: SearchSpec,
    points: list[Point],
    executor: str,
    workers: int | None,
    address: str | None,
    cpus: float | None,
) -> Executor:
    batch = candidate_study(spec, points or [], [])
    if executor == "ray":
        early = "asha" if spec.pruner != "none" else None
        return make_executor(batch, "ray", None, address, early, cpus)
    return make_executor(batch, "local", workers)  # type: ignore[arg-type]


def check_names(spec: SearchSpec, out: Path) -> None:
    """Refuse a search whose study names (<name>, <name>-final) an ordinary study
    of the same store holds: its trials would mix with the candidates and its
    report be rewritten. A search's own studies are told by their descriptions."""
    path = StudyLayout(out).store
    if not path.is_file():
        return
    ours = {
        spec.name: search_description(spec.name),
        spec.name + FINAL_SUFFIX: final_description(spec.name),
    }
    with Store(path) as store:
        names = set(store.study_names())
        for name, description in ours.items():
            if name in names and store.study(name).description != description:
                raise CnnlabError(
                    f"{path}: the study '{name}' is an ordinary study, and the search "
                    f"'{spec.name}' would write its candidates or finalists into it. "
                    "Rename the search (its study file's name:) or use another --out."
                )


def search_description(name: str) -> str:
    return (
        f"search phase of {name}: one seed per candidate, ranked on validation; "
        "the test set is not read"
    )


def final_description(name: str) -> str:
    return f"finalists of the search {name}, re-trained over seeds"


def _open_optuna(optuna: Any, spec: SearchSpec, out: Path) -> Any:
    """The search's Optuna study, created or resumed; a file that is not a usable
    Optuna database (another file, a newer Optuna's schema) is one error."""
    try:
        return _optuna_study(optuna, spec, out)
    except CnnlabError:
        raise
    except Exception as err:  # sqlalchemy's DatabaseError, Optuna's RuntimeError
        reason = " ".join(str(err).split())[:160]
        raise CnnlabError(
            f"{out / OPTUNA_FILE}: not a usable Optuna database ({type(err).__name__}: "
            f"{reason}). Move the file away, or use another --out."
        ) from err


def _optuna_study(optuna: Any, spec: SearchSpec, out: Path) -> Any:
    directions = [OBJECTIVES[spec.objectives[0]]]
    directions += [COSTS[c] for c in spec.objectives[1:]]
    storage = open_storage(storage_url(out))
    asked = 0
    if spec.name in {s.study_name for s in storage.get_all_studies()}:
        asked = len(storage.get_all_trials(storage.get_study_id_from_name(spec.name)))
    study = optuna.create_study(
        study_name=spec.name,
        storage=storage,
        directions=directions,
        sampler=make_sampler(spec, asked),
        pruner=make_pruner(spec.pruner, spec.base.epochs),
        load_if_exists=True,
    )
    fingerprint = json.dumps(
        {
            "space": [dataclasses.asdict(p) for p in spec.params],
            "template": spec.template,
            "objectives": spec.objectives,
            "train": spec.base.to_dict(),
            "seed": spec.seed,
        },
        sort_keys=True,
        default=str,
    )
    recorded = study.user_attrs.get("fingerprint")
    if recorded is None:
        study.set_user_attr("fingerprint", fingerprint)
    elif recorded != fingerprint:
        raise CnnlabError(
            f"{out / OPTUNA_FILE}: the search '{spec.name}' was started with another "
            "space, template or settings. Use another --out folder or study name."
        )
    return study


def _recover(optuna: Any, study: Any, say: Callable[[str], None]) -> None:
    """Trials a dead process left RUNNING: failed, their points asked again so their
    run folders resume; finished trials are never repeated."""
    running = study.get_trials(states=(optuna.trial.TrialState.RUNNING,))
    for t in running:
        study._storage.set_trial_user_attr(t._trial_id, "interrupted", True)
        study._storage.set_trial_state_values(t._trial_id, optuna.trial.TrialState.FAIL)
        if t.params:
            study.enqueue_trial(t.params, skip_if_exists=False)
    if running:
        say(f"Resuming: {len(running)} interrupted trial(s) asked again")


def _tally(optuna: Any, study: Any) -> Tally:
    state = optuna.trial.TrialState
    tally = Tally()
    for t in study.get_trials(deepcopy=False):
        if t.state in (state.COMPLETE, state.PRUNED):
            tally.trained += 1
            tally.pruned += t.state == state.PRUNED
        elif t.user_attrs.get("invalid"):
            tally.invalid += 1
        elif t.user_attrs.get("failed"):
            tally.trained += 1
            tally.failed += 1
    return tally


def candidate_trial(spec: SearchSpec, point: Point, hook: Any = None) -> Trial:
    assert point.arch is not None and point.config is not None
    config = point.config.replace(seed=spec.seed)
    return Trial(point.key, point.arch, config, score_test=False, on_epoch=hook)


def candidate_study(spec: SearchSpec, points: list[Point], seen: list[Point]) -> Study:
    """The search phase as a study: every candidate so far, one seed."""
    archs: dict[str, StudyArch] = {}
    for p in [*seen, *points]:
        assert p.arch is not None and p.config is not None
        archs[p.key] = StudyArch(p.key, p.arch, p.config)
    return Study(
        name=spec.name,
        description=search_description(spec.name),
        archs=tuple(archs.values()) or spec.study.archs,
        seeds=(spec.seed,),
        source=spec.source,
    )


class _Searcher:
    """The ask-train-tell loop, a batch of `parallel` candidates at a time."""

    executor: Callable[[list[Point]], Executor]
    parallel: int = 1
    progress: StudyDisplay | None = None

    def __init__(
        self,
        spec: SearchSpec,
        out: Path,
        study: Any,
        data: DataFacts,
        budget: int,
        tally: Tally,
        say: Callable[[str], None],
    ) -> None:
        self.optuna = import_optuna()
        self.spec, self.out, self.study, self.data = spec, out, study, data
        self.budget, self.tally, self.say = budget, tally, say
        self.seen: list[Point] = []  # every candidate trained in this process

    def loop(self, started: float, time_budget: float | None) -> None:
        while self.tally.trained < self.budget and not self._grid_done():
            if time_budget is not None and time.perf_counter() - started > time_budget:
                self.say(f"Time budget of {time_budget:.0f} s reached")
                return
            batch = self._ask(min(self.parallel, self.budget - self.tally.trained))
            if batch:
                self._train(batch)

    def _grid_done(self) -> bool:
        if self.spec.sampler != "grid":
            return False
        finished = [
            t
            for t in self.study.get_trials(deepcopy=False)
            if t.state.is_finished() and not t.user_attrs.get("interrupted")
        ]
        points = {json.dumps(t.params, sort_keys=True) for t in finished}
        return len(points) >= self.spec.grid_size()

    def _ask(self, n: int) -> list[tuple[Any, Point]]:
        batch: list[tuple[Any, Point]] = []
        in_a_row = 0
        while len(batch) < n and not self._grid_done():
            trial = self.study.ask()
            try:
                point = build_point(self.spec, sample(self.spec, trial), self.data)
            except BaseException:  # never leave a trial RUNNING for every re-run
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                raise
            if point.invalid:
                trial.set_user_attr("invalid", point.invalid)
                self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
                self.tally.invalid += 1
                in_a_row += 1
                self.say(f"  invalid point {point.values}: {point.invalid}")
                if in_a_row >= MAX_INVALID_IN_A_ROW:
                    raise CnnlabError(
                        f"{self.spec.source}: search.space: {in_a_row} points in a "
                        "row could not be built (last: "
                        f"{point.invalid}). Narrow the ranges or change the template."
                    )
                continue
            in_a_row = 0
            trial.set_user_attr("label", point.key)
            batch.append((trial, point))
        return batch

    def _train(self, batch: list[tuple[Any, Point]]) -> None:
        spec, url = self.spec, storage_url(self.out)
        hooks = [
            None
            if spec.pruner == "none"
            else Pruning(
                url,
                spec.name,
                t._trial_id,
                spec.objectives[0],
                spec.pruner,
                spec.base.epochs,
            )
            for t, _ in batch
        ]
        points = [p for _, p in batch]
        trials = [
            candidate_trial(spec, p, h) for p, h in zip(points, hooks, strict=True)
        ]
        unique = list({t.label: t for t in trials}.values())  # a point asked twice
        study = candidate_study(spec, points, self.seen)
        error: CnnlabError | None = None
        try:
            with quieted(self.progress):  # the search says which candidate runs
                run_study(
                    study,
                    self.out,
                    self.executor(points),
                    self.progress,
                    trials=unique,
                    estimate=False,
                )
        except CnnlabError as err:  # a diverged candidate: the others are recorded
            error = err
        self.seen.extend(points)
        with Store(StudyLayout(self.out).store) as store:
            rows = {r.label: r for r in store.trials(spec.name)}
        settled = [_settled(rows[p.key].status) for p in points if p.key in rows]
        if error is not None and not (len(settled) == len(points) and all(settled)):
            raise error
        for trial, point in batch:
            self._tell(trial, point, rows[point.key], error)

    def _tell(
        self, trial: Any, point: Point, row: TrialResult, error: CnnlabError | None
    ) -> None:
        state = self.optuna.trial.TrialState
        metric = self.spec.objectives[0]
        last = row.history[-1] if row.history else {}
        value = last.get(metric)
        if row.status is Status.FAILED:  # diverged: a real result, not a budget leak
            trial.set_user_attr("failed", str(error or "training diverged"))
            self.study.tell(trial, state=state.FAIL)
            self.tally.trained += 1
            self.tally.failed += 1
            self.say(
                f"Candidate {self.tally.trained}/{self.budget} {point.label}: "
                "training diverged"
            )
            return
        self.tally.trained += 1
        k = self.tally.trained
        if row.status is Status.STOPPED_EARLY or value is None:
            self.study.tell(trial, state=state.PRUNED)
            self.tally.pruned += 1
            what = f"pruned after epoch {len(row.history)}"
        else:
            costs = {"params": row.params, "flops": training_flops(row.flops)}
            values = [value, *(costs[c] for c in self.spec.objectives[1:])]
            trial.set_user_attr("val_acc", last.get("val_acc"))
            trial.set_user_attr("params", row.params)
            trial.set_user_attr("train_flops", training_flops(row.flops))
            self.study.tell(trial, values)
            what = f"{metric} {value:.4f}, val acc {last.get('val_acc') or 0:.2%}"
        self.tally.best = _best_text(self.optuna, self.study, metric)
        self.say(
            f"Candidate {k}/{self.budget} {point.label}: {what}"
            f" | best {self.tally.best} | pruned {self.tally.pruned}, "
            f"invalid {self.tally.invalid}"
        )


def _settled(status: Status) -> bool:
    """A candidate with a result to tell: finished, or diverged (a real result)."""
    return status.finished or status is Status.FAILED


def _best_text(optuna: Any, study: Any, metric: str) -> str:
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    if not done:
        return "-"
    if len(study.directions) > 1:
        return f"{len(study.best_trials)} on the Pareto front"
    best = study.best_trial
    return f"{values_text(best.params)} {metric} {best.value:.4f}"


def ranked(optuna: Any, study: Any, spec: SearchSpec) -> list[Any]:
    """Completed candidates, best first: by the validation objective, Pareto-front
    members first when there is a second objective."""
    done = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
    sign = -1 if OBJECTIVES[spec.objectives[0]] == "maximize" else 1
    front = set()
    if len(spec.objectives) > 1 and done:
        front = {t.number for t in study.best_trials}
    done.sort(key=lambda t: (t.number not in front, sign * t.values[0], t.number))
    unique: dict[str, Any] = {}
    for t in done:
        unique.setdefault(t.user_attrs["label"], t)
    return list(unique.values())


def pick_finalists(optuna: Any, study: Any, spec: SearchSpec) -> list[Point]:
    data = data_facts(spec.base)
    top = ranked(optuna, study, spec)[: spec.finalists]
    return [build_point(spec, t.params, data) for t in top]


def final_study(spec: SearchSpec, finalists: list[Point]) -> Study:
    """The finalists (and the study's fixed architectures, as baselines) over the
    study's seeds: an ordinary study, scored on the test set once per trial."""
    archs = tuple(StudyArch(p.key, p.arch, p.config) for p in finalists)  # type: ignore[arg-type]
    return Study(
        name=spec.name + FINAL_SUFFIX,
        description=final_description(spec.name),
        archs=archs + spec.study.archs,
        seeds=spec.study.seeds,
        source=spec.source,
    )
