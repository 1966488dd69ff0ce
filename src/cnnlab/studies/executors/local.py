"""Run a study's trials in this process, recording each in the store as it goes.

Crash safety: the run folder is written first (checkpoint, then history and run.json,
each atomically) and the store after it, so the store never holds an epoch the
checkpoint lacks; a trial's final epochs and metrics are one transaction. One process
at a time runs a study (`folder_lock` on its folder); on start it sweeps the
temporary files and the 'running' trial rows a killed process left.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab import api
from cnnlab.batched import SeedDiverged, train_seeds
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import infer
from cnnlab.studies.results import StudyInfo
from cnnlab.studies.store import Store
from cnnlab.studies.study import STORE_FILE, Study, Trial
from cnnlab.training.config import TrainConfig
from cnnlab.training.loop import TrainingDiverged, TrainState
from cnnlab.training.progress import StudyProgress
from cnnlab.training.runs import CHECKPOINT_FILE, RUN_FILE, RunRecord, now, open_run
from cnnlab.util.fsio import folder_lock, remove_temp_files
from cnnlab.util.machine import environment, pick_device, set_threads

# Settings that may differ between the first run of a trial and its resumption
# without changing its results (machine settings) or that extend it (epochs).
_RESUMABLE_CHANGES = ("epochs", "device", "threads")


@dataclass(frozen=True)
class TrialOutcome:
    trial: Trial
    status: str  # "trained", "resumed" or "skipped" (already complete)


def check_study(study: Study) -> None:
    """Everything that can fail on input, checked before a file is written."""
    for data in sorted({a.config.data for a in study.archs}):
        classes = load_dataset(data).num_classes
        for a in study.archs:
            if a.config.data == data:
                infer(a.arch, classes)


def changed_settings(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    """Settings of `wanted` that differ from a run's saved config, but for those a
    resumption may change. A key the saved config lacks (written by an older cnnlab)
    counts as its default, which is what that run used."""
    try:
        saved = TrainConfig.from_dict(saved).to_dict()
    except CnnlabError:
        pass  # compared as saved: every unreadable key shows up as changed
    return [
        key
        for key in wanted
        if key not in _RESUMABLE_CHANGES and saved.get(key) != wanted[key]
    ]


def trial_fields(trial: Trial, run_dir: Path) -> dict[str, Any]:
    info = infer(trial.arch)
    return {
        "arch_name": trial.arch.name,
        "optimizer": trial.config.optimizer,
        "params": info.total,
        "flops": info.flops,
        "spec": trial.arch.to_dict(),
        "config": trial.config.to_dict(),
        "run_path": str(run_dir),
        "updated": now(),
    }


def existing_run(trial: Trial, run_dir: Path) -> RunRecord | None:
    """The trial's run folder if one was started, checked to match its settings."""
    if not (run_dir / RUN_FILE).is_file():
        return None
    record = open_run(run_dir)
    changed = changed_settings(record.meta["config"], trial.config.to_dict())
    if changed:
        raise CnnlabError(
            f"{run_dir}: this trial was run with other settings "
            f"({', '.join(changed)}). Use another --out folder or study name, "
            f"or delete {run_dir}."
        )
    return record


def run_trial(
    trial: Trial, study: Study, store: Store, study_dir: Path, reporter: Any = None
) -> TrialOutcome:
    """Train one trial, or resume it, or skip it if its run folder is complete."""
    run_dir = trial.run_dir(study_dir)
    record = existing_run(trial, run_dir)  # refuse before the store row changes
    fields = trial_fields(trial, run_dir)
    trial_id = store.save_trial(
        study.name, trial.label, trial.seed, fields | {"status": "running"}
    )
    if (
        record is not None
        and record.status == "completed"
        and record.meta.get("epochs_done", 0) >= trial.config.epochs
    ):
        _record_finished(store, trial_id, record.meta, record.history().epochs)
        return TrialOutcome(trial, "skipped")

    def on_epoch(state: TrainState) -> None:
        store.save_epochs(trial_id, state.history.epochs)

    hooks = api.Hooks(reporter=reporter, on_epoch=on_epoch, clean_train=True)
    if record is None and run_dir.exists() and not (run_dir / CHECKPOINT_FILE).exists():
        shutil.rmtree(run_dir)  # a folder killed while being created: nothing to keep
    try:
        if record is not None:
            result = api.resume(run_dir, trial.config.epochs, hooks=hooks)
        else:
            result = api.train(trial.arch, trial.config, run_dir, hooks=hooks)
    except BaseException as err:
        # A diverged run would diverge again if resumed: its run.json says so too.
        status = "failed" if isinstance(err, TrainingDiverged) else "interrupted"
        store.update_trial(trial_id, status=status, updated=now())
        raise
    _record_finished(store, trial_id, result.meta, result.history.epochs)
    return TrialOutcome(trial, "trained" if record is None else "resumed")


def _record_finished(
    store: Store, trial_id: int, meta: dict[str, Any], history: list[dict[str, Any]]
) -> None:
    test = meta.get("test") or {}
    clean = meta.get("train_clean") or {}
    store.finish_trial(
        trial_id,
        history,
        status="completed",
        test_loss=test.get("loss"),
        test_acc=test.get("acc"),
        train_clean_loss=clean.get("loss"),
        train_clean_acc=clean.get("acc"),
        updated=now(),
    )


def run_study(
    study: Study,
    out: Path,
    progress: StudyProgress | None = None,
    workers: int | None = None,
    batch_seeds: bool = False,
) -> list[TrialOutcome]:
    """Run every trial of `study` under `out`, skipping finished ones.

    `workers` > 1 runs trials in that many processes (cnnlab.parallel); None lets
    cnnlab split the CPUs between workers and threads. `batch_seeds` trains the
    not-yet-started seeds of each net together in this process (cnnlab.batched).
    """
    from cnnlab import parallel  # it imports this module

    if batch_seeds:
        if workers not in (None, 1):
            raise CnnlabError(
                f"--batch-seeds trains in one process, but --workers is {workers}. "
                "Drop --workers, or drop --batch-seeds."
            )
        workers = 1
    check_study(study)
    study_dir = out / study.name
    trials = study.trials()
    device = pick_device(study.archs[0].config.device)
    split = parallel.study_split(study, workers, device.type)
    lock = folder_lock(study_dir, f"study '{study.name}'")
    with lock, Store(out / STORE_FILE) as store:
        _sweep(study_dir)
        env = environment(device) | {"workers": split.workers, "threads": split.threads}
        info = StudyInfo(study.name, study.description, study.to_dict(), env)
        store.save_study(info, now())
        store.mark_interrupted(study.name, now())
        if progress is not None:
            progress.message(split.describe())
        if split.workers > 1:
            console = progress.console if progress is not None else None
            return parallel.run_pool(study, trials, out, split, console)
        set_threads(split.threads)  # a trial's own `threads` setting overrides it
        outcomes = []
        if progress is not None:
            progress.study_start(study.name, len(trials))
        if batch_seeds:
            for group in _fresh_seed_groups(trials, study_dir):
                outcomes += _run_seed_group(group, study, store, study_dir, progress)
            done = {(o.trial.label, o.trial.seed) for o in outcomes}
            trials = [t for t in trials if (t.label, t.seed) not in done]
        for k, trial in enumerate(trials, start=1):
            if progress is not None:
                progress.trial_start(k, len(trials), trial.label, trial.seed)
            outcomes.append(run_trial(trial, study, store, study_dir, progress))
            if progress is not None:
                progress.trial_end(outcomes[-1].status)
    return outcomes


def _fresh_seed_groups(trials: list[Trial], study_dir: Path) -> list[list[Trial]]:
    """Per net, its trials with no run folder yet, when there are two or more.

    Started trials are left to `run_trial`, which resumes them one by one.
    """
    groups: dict[str, list[Trial]] = {}
    for trial in trials:
        if not (trial.run_dir(study_dir) / RUN_FILE).is_file():
            groups.setdefault(trial.label, []).append(trial)
    return [group for group in groups.values() if len(group) > 1]


def _run_seed_group(
    group: list[Trial],
    study: Study,
    store: Store,
    study_dir: Path,
    progress: StudyProgress | None,
) -> list[TrialOutcome]:
    """Train one net's seeds as one batched computation, one run folder each."""
    run_dirs = [trial.run_dir(study_dir) for trial in group]
    ids = [
        store.save_trial(
            study.name, t.label, t.seed, trial_fields(t, d) | {"status": "running"}
        )
        for t, d in zip(group, run_dirs, strict=True)
    ]
    for run_dir in run_dirs:
        if run_dir.exists():  # killed while being created: nothing to keep
            shutil.rmtree(run_dir)
    if progress is not None:
        seeds = ", ".join(str(t.seed) for t in group)
        progress.message(f"{group[0].label}: seeds {seeds} trained together")

    def on_epoch(index: int, state: TrainState) -> None:
        store.save_epochs(ids[index], state.history.epochs)

    first = group[0]
    try:
        results = train_seeds(
            first.arch,
            first.config,
            [t.seed for t in group],
            run_dirs,
            on_epoch=on_epoch,
            clean_train=True,
        )
    except BaseException as err:
        for index, trial_id in enumerate(ids):
            failed = isinstance(err, SeedDiverged) and err.index == index
            status = "failed" if failed else "interrupted"
            store.update_trial(trial_id, status=status, updated=now())
        raise
    for trial_id, result in zip(ids, results, strict=True):
        _record_finished(store, trial_id, result.meta, result.history.epochs)
    return [TrialOutcome(trial, "trained") for trial in group]


def _sweep(study_dir: Path) -> None:
    """Delete the temporary files killed runs left in the study's run folders."""
    runs = study_dir / "runs"
    if runs.is_dir():
        for run_dir in runs.iterdir():
            remove_temp_files(run_dir)
