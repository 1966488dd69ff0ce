"""Run a study's trials in this process, recording each in the store as it goes."""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab import api
from cnnlab.data import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.progress import StudyProgress
from cnnlab.results import StudyInfo
from cnnlab.runs import CHECKPOINT_FILE, RUN_FILE, environment, now, open_run
from cnnlab.shapes import infer
from cnnlab.store import Store
from cnnlab.study import STORE_FILE, Study, Trial
from cnnlab.train import TrainState, pick_device

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


def _same_settings(saved: dict[str, Any], wanted: dict[str, Any]) -> list[str]:
    return [
        key
        for key in wanted
        if key not in _RESUMABLE_CHANGES and saved.get(key) != wanted[key]
    ]


def _trial_fields(trial: Trial, run_dir: Path) -> dict[str, Any]:
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


def run_trial(
    trial: Trial, study: Study, store: Store, study_dir: Path, reporter: Any = None
) -> TrialOutcome:
    """Train one trial, or resume it, or skip it if its run folder is complete."""
    run_dir = trial.run_dir(study_dir)
    fields = _trial_fields(trial, run_dir)
    trial_id = store.save_trial(
        study.name, trial.label, trial.seed, fields | {"status": "running"}
    )

    def on_epoch(state: TrainState) -> None:
        store.save_epochs(trial_id, state.history.epochs)

    hooks = api.Hooks(reporter=reporter, on_epoch=on_epoch, clean_train=True)
    if (run_dir / RUN_FILE).is_file():
        record = open_run(run_dir)
        changed = _same_settings(record.meta["config"], trial.config.to_dict())
        if changed:
            raise CnnlabError(
                f"{run_dir}: this trial was run with other settings "
                f"({', '.join(changed)}). Use another --out folder or study name, "
                f"or delete {run_dir}."
            )
        if (
            record.status == "completed"
            and record.meta["epochs_done"] >= trial.config.epochs
        ):
            _record_finished(store, trial_id, record.meta, record.history().epochs)
            return TrialOutcome(trial, "skipped")
        try:
            result = api.resume(run_dir, trial.config.epochs, hooks=hooks)
        except BaseException:
            store.update_trial(trial_id, status="interrupted", updated=now())
            raise
        _record_finished(store, trial_id, result.meta, result.history.epochs)
        return TrialOutcome(trial, "resumed")
    if run_dir.exists() and not (run_dir / CHECKPOINT_FILE).exists():
        shutil.rmtree(run_dir)  # a folder killed while being created: nothing to keep
    try:
        result = api.train(trial.arch, trial.config, run_dir, hooks=hooks)
    except BaseException:
        store.update_trial(trial_id, status="interrupted", updated=now())
        raise
    _record_finished(store, trial_id, result.meta, result.history.epochs)
    return TrialOutcome(trial, "trained")


def _record_finished(
    store: Store, trial_id: int, meta: dict[str, Any], history: list[dict[str, Any]]
) -> None:
    store.save_epochs(trial_id, history)
    test = meta.get("test") or {}
    clean = meta.get("train_clean") or {}
    store.update_trial(
        trial_id,
        status="completed",
        test_loss=test.get("loss"),
        test_acc=test.get("acc"),
        train_clean_loss=clean.get("loss"),
        train_clean_acc=clean.get("acc"),
        updated=now(),
    )


def run_study(
    study: Study, out: Path, progress: StudyProgress | None = None
) -> list[TrialOutcome]:
    """Run every trial of `study` under `out`, skipping finished ones."""
    check_study(study)
    study_dir = out / study.name
    trials = study.trials()
    device = pick_device(study.archs[0].config.device)
    with Store(out / STORE_FILE) as store:
        info = StudyInfo(
            study.name, study.description, study.to_dict(), environment(device)
        )
        store.save_study(info, now())
        outcomes = []
        if progress is not None:
            progress.study_start(study.name, len(trials))
        for k, trial in enumerate(trials, start=1):
            if progress is not None:
                progress.trial_start(k, len(trials), trial.label, trial.seed)
            outcomes.append(run_trial(trial, study, store, study_dir, progress))
            if progress is not None:
                progress.trial_end(outcomes[-1].status)
    return outcomes
