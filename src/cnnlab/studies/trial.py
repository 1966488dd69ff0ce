"""One trial's lifecycle, shared by every executor: plan, train or resume, finish.

    store row (RUNNING) -> run folder (train | resume | already complete: skip)
        -> finish_trial (one store transaction)   | mark_trial (interrupted/failed)

Crash safety: the run folder is written first (checkpoint, then history and run.json,
each atomically) and the store after it, so the store never holds an epoch the
checkpoint lacks; a trial's final epochs and scores are one transaction.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.data.datasets import check_own_holdout, load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import infer
from cnnlab.studies.store import Store
from cnnlab.studies.study import Study, Trial, data_name
from cnnlab.training.config import holdout_asked
from cnnlab.training.loop import Reporter, TrainState
from cnnlab.training.runs import (
    CHECKPOINT_FILE,
    RUN_FILE,
    RunRecord,
    load_predictions,
    now,
    open_run,
)
from cnnlab.training.session import Hooks, fitted_arch, resume_run, train_run
from cnnlab.training.status import Outcome, Status, status_for


@dataclass(frozen=True)
class TrialOutcome:
    trial: Trial
    outcome: Outcome

    @property
    def status(self) -> str:  # the name earlier versions used
        return self.outcome.value


def check_study(study: Study) -> None:
    """What can fail on input, checked before a file is written: every net must
    take its data's images (a cross-dataset study of a net with a fixed
    input_shape needs data of one shape) and score its classes; a hold-out size
    must not be asked of data with its own val/ folder."""
    from cnnlab.nn.adapt import adapt_to_data
    from cnnlab.nn.shapes import check_input
    from cnnlab.training.session import image_options

    loaded = {}
    for data in sorted({a.config.data for a in study.archs}):
        for a in study.archs:
            if a.config.data == data:
                options = image_options(a.config)
                if (data, options) not in loaded:
                    loaded[data, options] = load_dataset(data, options)
                dataset = loaded[data, options]
                check_own_holdout(dataset, a.config.validation, holdout_asked(a.config))
                classes = dataset.num_classes
                arch = adapt_to_data(a.arch, dataset.image_shape, classes)
                check_input(arch, dataset.image_shape, data_name(data))
                infer(arch, classes)


def trial_fields(
    trial: Trial, run_dir: Path, status: Status = Status.RUNNING
) -> dict[str, Any]:
    """The store row of a trial about to run (RUNNING) or planned (PENDING): its
    parameters and FLOPs are the net's as fitted to its data."""
    info = infer(fitted_arch(trial.arch, trial.config))
    return {
        "arch_name": trial.arch.name,
        "optimizer": trial.config.optimizer,
        "precision": trial.config.precision,
        "params": info.total,
        "flops": info.flops,
        "spec": trial.arch.to_dict(),
        "config": trial.config.to_dict(),
        "run_path": str(run_dir),
        "status": status,
        "stopped_epoch": None,
        "updated": now(),
    }


def existing_run(trial: Trial, run_dir: Path) -> RunRecord | None:
    """The trial's run folder if one was started, checked to match its settings."""
    if not (run_dir / RUN_FILE).is_file():
        return None
    record = open_run(run_dir)
    changed = trial.config.changed_from(record.meta["config"])
    if changed:
        raise CnnlabError(
            f"{run_dir}: this trial was run with other settings "
            f"({', '.join(changed)}). Use another --out folder or study name, "
            f"or delete {run_dir}."
        )
    return record


def check_not_shortened(trial: Trial, run_dir: Path) -> None:
    """A trial trained for more epochs than the study now asks (a re-run with a
    smaller --epochs) would be skipped and reported at its own length: say so."""
    if not (run_dir / RUN_FILE).is_file():
        return
    done = open_run(run_dir).meta.get("epochs_done") or 0
    if isinstance(done, int) and done > trial.config.epochs:
        raise CnnlabError(
            f"{run_dir}: this trial already trained {done} epochs, more than the "
            f"{trial.config.epochs} asked for now, so it would be skipped and "
            f"reported with its {done} epochs. Run with --epochs {done} (or more) "
            "to use it, or use another --out folder to train "
            f"{trial.config.epochs} epochs."
        )


def remove_half_created(run_dir: Path) -> None:
    """Delete a run folder killed while being created (no run.json or no
    checkpoint yet): nothing in it is worth keeping, and a fresh start needs it gone.

    Only under the study's folder lock: no live process writes there.
    """
    started = (run_dir / RUN_FILE).is_file() and (run_dir / CHECKPOINT_FILE).exists()
    if run_dir.exists() and not started:
        shutil.rmtree(run_dir)


def plan_trials(
    store: Store, study: Study, trials: Sequence[Trial], study_dir: Path
) -> None:
    """PENDING store rows for the trials not yet there, in the study's order: the
    order of every table of results, whichever worker starts its trial first."""
    store.plan_trials(
        study.name,
        [
            (t.label, t.seed, trial_fields(t, t.run_dir(study_dir), Status.PENDING))
            for t in trials
        ],
    )


def start_trial(store: Store, study: Study, trial: Trial, study_dir: Path) -> int:
    """Write the trial's store row as RUNNING; returns its id."""
    run_dir = trial.run_dir(study_dir)
    fields = trial_fields(trial, run_dir)
    return store.save_trial(study.name, trial.label, trial.seed, fields)


def finish_trial(
    store: Store,
    trial_id: int,
    meta: dict[str, Any],
    history: list[dict[str, Any]],
    status: Status = Status.COMPLETED,
) -> None:
    """A finished trial's history, scores and status, in one store transaction."""
    test = meta.get("test") or {}
    clean = meta.get("train_clean") or {}
    stopped = meta.get("stopped_epoch") if status is Status.STOPPED_EARLY else None
    store.finish_trial(
        trial_id,
        history,
        load_predictions(store.run_path(trial_id)),
        status=status,
        test_reads=meta.get("test_reads"),
        test_loss=test.get("loss"),
        test_acc=test.get("acc"),
        train_clean_loss=clean.get("loss"),
        train_clean_acc=clean.get("acc"),
        stopped_epoch=stopped,
        updated=now(),
    )


def mark_trial(store: Store, trial_id: int, error: BaseException | None) -> Status:
    """Record a trial that stopped on `error` (None: stopped from outside, e.g. a
    worker that never reported): FAILED if it diverged, else INTERRUPTED."""
    status = Status.INTERRUPTED if error is None else status_for(error)
    store.update_trial(trial_id, status=status, updated=now())
    return status


def run_trial(
    trial: Trial,
    study: Study,
    store: Store,
    study_dir: Path,
    reporter: Reporter | None = None,
) -> TrialOutcome:
    """Train one trial, or resume it, or skip it if its run folder is complete."""
    run_dir = trial.run_dir(study_dir)
    record = existing_run(trial, run_dir)  # refuse before the store row changes
    trial_id = start_trial(store, study, trial, study_dir)
    if record is not None and record.is_complete(trial.config.epochs):
        finish_trial(store, trial_id, record.meta, record.history().epochs)
        return TrialOutcome(trial, Outcome.SKIPPED)

    def on_epoch(state: TrainState) -> None:
        store.save_epochs(trial_id, state.history.epochs)
        if trial.on_epoch is not None:
            trial.on_epoch(state)  # may raise StopTraining: a pruner's decision

    hooks = Hooks(
        reporter=reporter,
        on_epoch=on_epoch,
        clean_train=True,
        score_test=trial.score_test,
    )
    remove_half_created(run_dir)
    resuming = run_dir.exists()
    try:
        if resuming:
            result = resume_run(run_dir, trial.config.to_dict(), hooks)
        else:
            result = train_run(trial.arch, trial.config, run_dir, hooks=hooks)
    except BaseException as err:
        mark_trial(store, trial_id, err)
        raise
    finish_trial(store, trial_id, result.meta, result.history.epochs, result.status)
    if result.status is Status.STOPPED_EARLY:
        return TrialOutcome(trial, Outcome.STOPPED_EARLY)
    return TrialOutcome(trial, Outcome.RESUMED if resuming else Outcome.TRAINED)
