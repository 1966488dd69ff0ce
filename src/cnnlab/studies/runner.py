"""The one study runner: everything every executor shares, then the executor.

    run_study(study, out, executor=...)
      check the study (before any file is written) -> lock the study folder ->
      open the store -> sweep temporary files killed writers left -> record the
      study -> mark trials a dead process left RUNNING as INTERRUPTED -> plan the
      trials not yet in the store as PENDING rows, in the study's order -> say how
      the trials run and how long they should take (studies.estimate) ->
      executor.run(trials)  (local | pool | ray; each trial through studies.trial)

A study re-run skips finished trials and resumes interrupted ones.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Literal

from cnnlab.errors import CnnlabError
from cnnlab.studies.cpus import study_split
from cnnlab.studies.estimate import estimate_study
from cnnlab.studies.executors import Executor, StudyRun
from cnnlab.studies.executors.local import LocalExecutor
from cnnlab.studies.executors.pool import PoolExecutor
from cnnlab.studies.layout import STORE_FILE, StudyLayout
from cnnlab.studies.results import StudyInfo
from cnnlab.studies.store import Store
from cnnlab.studies.study import Study, Trial
from cnnlab.studies.trial import (
    TrialOutcome,
    check_not_shortened,
    check_study,
    plan_trials,
)
from cnnlab.training.display import StudyDisplay
from cnnlab.training.precision import check_precision
from cnnlab.training.runs import is_run_folder, now
from cnnlab.util.fsio import folder_lock, remove_temp_files
from cnnlab.util.machine import environment, pick_device
from cnnlab.util.messages import must_be_one_of

EXECUTORS = ("local", "ray")


def make_executor(
    study: Study,
    executor: Literal["local", "ray"] = "local",
    workers: int | None = None,
    address: str | None = None,
    early_stop: str | None = None,
    cpus_per_trial: float | None = None,
) -> Executor:
    """The executor for `study`: 'local' runs in this process, or in worker
    processes when the CPU split says so (`cnnlab.studies.cpus`); 'ray' on Ray."""
    if executor not in EXECUTORS:
        received = f"executor={executor!r}"
        raise CnnlabError(must_be_one_of("executor", EXECUTORS, received))
    ray_only = {"address": address, "early_stop": early_stop}
    ray_only["cpus_per_trial"] = cpus_per_trial
    if executor == "ray":
        if workers is not None:
            raise CnnlabError(
                "--workers is for the local executor; with --executor ray use "
                "--cpus-per-trial, or drop --executor ray."
            )
        from cnnlab.studies.executors.ray import RayExecutor  # Ray: optional extra

        cpus = 1.0 if cpus_per_trial is None else cpus_per_trial
        ray = RayExecutor(address, early_stop, cpus)
        ray.check(study)
        return ray
    given = [name for name, value in ray_only.items() if value is not None]
    if given:
        flag = "--" + given[0].replace("_", "-")
        raise CnnlabError(f"{flag} needs --executor ray; add it, or drop {flag}.")
    device = pick_device(study.archs[0].config.device)
    split = study_split(study, workers, device.type)
    return LocalExecutor(split) if split.workers == 1 else PoolExecutor(split)


def check_study_out(out: Path) -> None:
    """A study's --out must not lie inside a run folder, nor inside the folders of
    another study output (a folder holding a store): their writers would clash and
    an --overwrite or re-run there would delete or mix in the other's files."""
    real = Path(out).resolve()  # links undone: a link into a run folder counts
    for folder in (real, *real.parents):
        if is_run_folder(folder):
            raise CnnlabError(
                f"{out}: is inside the run folder {_shown(folder)}; a study there "
                "would be deleted by `cnnlab train --overwrite`. Choose an --out "
                "outside it."
            )
        if folder != real and StudyLayout(folder).store.is_file():
            raise CnnlabError(
                f"{out}: is inside {_shown(folder)}, the output folder of other "
                f"studies (it holds {STORE_FILE}). Use --out {_shown(folder)} to add "
                "the study there, or choose an --out outside it."
            )


def _shown(folder: Path) -> Path:
    """`folder` relative to the current folder when inside it, as a user wrote it."""
    cwd = Path.cwd().resolve()
    return folder.relative_to(cwd) if folder.is_relative_to(cwd) else folder


def run_study(
    study: Study,
    out: str | Path,
    executor: Executor | None = None,
    progress: StudyDisplay | None = None,
    on_finished: Callable[[TrialOutcome], None] | None = None,
    trials: Sequence[Trial] | None = None,
    estimate: bool = True,
) -> list[TrialOutcome]:
    """Run every trial of `study` under `out` with `executor` (default: the local
    one `make_executor` picks), skipping finished trials; `on_finished` hears of
    each trial once it is finished and recorded in the store. `trials`: only these
    (a search runs its candidates a batch at a time), default all of the study's.
    `estimate`: with a `progress` display, first say how long the trials should
    take (a search's batches do not: it says how far it is itself)."""
    out = Path(out)
    executor = executor or make_executor(study)
    check_study(study)
    if isinstance(executor, LocalExecutor | PoolExecutor):  # Ray's: other machines
        for arch in study.archs:
            check_precision(arch.config.precision, pick_device(arch.config.device))
    check_study_out(out)
    layout = StudyLayout(out)
    study_dir = layout.study(study.name)
    trials = study.trials() if trials is None else list(trials)
    for trial in trials:  # before the store changes
        check_not_shortened(trial, trial.run_dir(study_dir))
    device = pick_device(study.archs[0].config.device)
    with (
        folder_lock(study_dir, f"study '{study.name}'"),
        Store(layout.store) as store,
    ):
        for trial in trials:
            remove_temp_files(trial.run_dir(study_dir))  # what killed writes left
        env = environment(device) | executor.environment()
        store.save_study(
            StudyInfo(study.name, study.description, study.to_dict(), env), now()
        )
        store.mark_interrupted(study.name, now())
        plan_trials(store, study, trials, study_dir)
        costs = None
        if progress is not None:
            progress.message(executor.describe())
            if estimate:
                costs = _estimate(executor, trials, study_dir, progress)
        run = StudyRun(study, trials, out, store, progress, on_finished, costs)
        return executor.run(run)


def _estimate(
    executor: Executor, trials: list[Trial], study_dir: Path, progress: StudyDisplay
) -> list[float] | None:
    """Print the study's time estimate; each trial's expected seconds, or None.

    Only for this machine's executors: Ray's trials may run on other machines.
    """
    if not isinstance(executor, LocalExecutor | PoolExecutor):
        return None
    pool = isinstance(executor, PoolExecutor)
    try:
        found = estimate_study(trials, study_dir, executor.split, pool)
    except CnnlabError:
        return None  # a trial that cannot run says why when it runs, as always
    if found is None:  # every trial is complete: nothing to wait for
        return None
    for line in found.lines():
        progress.message(line)
    return found.costs
