"""Run a study's trials on Ray: a local instance, or an existing cluster.

Ray Tune schedules the trials (architectures x seeds) as actors with the CPUs (and
GPU) each asks for, restarts a trial whose worker died (`FailureConfig`), and, opt-in,
stops weak trials early with ASHA. Ray is an optional extra, imported only inside the
functions here: `import cnnlab` never needs it.

What travels where:

- driver -> worker: one plain dict per trial (label, the architecture as
  `Architecture.to_dict()`, the `TrainConfig` as a dict, the run folder's absolute
  path, the driver's working directory, the cnnlab version, the thread count), sent
  once through Ray's object store. No tensors and no data: each worker loads the data
  set itself, the embedded MNIST from its own installed cnnlab, checked against its
  SHA-256 sums at every load; a `data` source (IDX or image folder, .npz, CIFAR)
  must exist at the same path everywhere. The payload carries the fingerprint of
  the data the driver read (`data.fingerprint`), and a worker whose copy decodes to
  other images or labels refuses the trial with one error.
- worker -> run folder: the worker trains with `cnnlab.training.session`, so the run
  folder (a checkpoint every epoch, history, weights, curves) is written where it
  trains. A retried trial resumes from that checkpoint, wherever Ray restarts it, so
  on a multi-node cluster `out` must be a shared filesystem at the same path on every
  node (it is the local disk on one machine).
- worker -> driver: a Tune result per epoch (its history row) and a final one with
  the test and clean-train scores. The driver alone writes the store, as the
  in-process executor does, so tables and reports cannot tell the executors apart.
"""

from __future__ import annotations

import contextlib
import logging
import os
import platform
import re
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, replace
from enum import StrEnum, unique
from pathlib import Path
from typing import Any

import torch

from cnnlab._version import __version__
from cnnlab.data.datasets import load_dataset
from cnnlab.data.fingerprint import check_fingerprint, fingerprint
from cnnlab.errors import CnnlabError
from cnnlab.nn.model import build_model
from cnnlab.nn.spec import parse_architecture
from cnnlab.studies.executors import StudyRun
from cnnlab.studies.study import Study, Trial
from cnnlab.studies.trial import (
    TrialOutcome,
    existing_run,
    finish_trial,
    mark_trial,
    remove_half_created,
    start_trial,
)
from cnnlab.training.config import TrainConfig
from cnnlab.training.loop import HISTORY_KEYS, TrainState
from cnnlab.training.progress import format_epoch_line
from cnnlab.training.runs import RUN_FILE, RunRecord, open_run
from cnnlab.training.session import (
    Hooks,
    batch_of,
    finish_run,
    image_options,
    load_split,
    resume_run,
    train_run,
    use_conv_path,
)
from cnnlab.training.status import Outcome, Status
from cnnlab.util.machine import pick_device
from cnnlab.util.messages import must_be_one_of

INSTALL_HINT = "install with: pip install 'cnnlab[ray]'"
EARLY_STOPPERS = ("asha",)
MAX_FAILURES = 3  # a trial whose worker dies is restarted this often, then fails
# ASHA ranks trials by validation loss at rungs of 1, 2, 4, 8... epochs and stops
# those outside the best 1/REDUCTION at each rung. 2 (Ray's default is 4) stops only
# the worse half: the seeds of one net compete too, and they differ by noise.
ASHA_METRIC = "val_loss"
ASHA_GRACE_EPOCHS = 1  # no trial stops before this many epochs
ASHA_REDUCTION = 2
_EXCEPTION_LINE = re.compile(r"^[\w.]*(Error|Exception|Exit|Interrupt)\b.*: ")


def import_ray() -> tuple[Any, Any]:
    """(ray, ray.tune), or a CnnlabError saying how to install them."""
    try:
        import ray
        from ray import tune
    except ImportError as err:
        raise CnnlabError(
            f"--executor ray needs Ray, which is not installed here ({err}); "
            f"{INSTALL_HINT}"
        ) from err
    return ray, tune


class RayExecutor:
    """Trials as Ray Tune trials on a local instance (started for the study and
    stopped after it) or the cluster at `address`; an instance this process already
    started with `ray.init` is used as it is. `early_stop="asha"` stops weak trials
    early; they are recorded as STOPPED_EARLY with the epoch they stopped at."""

    def __init__(
        self,
        address: str | None = None,
        early_stop: str | None = None,
        cpus_per_trial: float = 1.0,
    ) -> None:
        self.address, self.early_stop, self.cpus = address, early_stop, cpus_per_trial

    def check(self, study: Study) -> None:
        """Refuse bad options, and say how to install Ray, before a file is written."""
        _check_options(study, self.early_stop, self.cpus)
        import_ray()

    def describe(self) -> str:
        where = self.address or "a local Ray instance"
        return f"Ray Tune on {where}, {self.cpus:g} CPU(s) per trial"

    def environment(self) -> dict[str, Any]:
        return {"executor": "ray", "cpus_per_trial": self.cpus}

    def run(self, run: StudyRun) -> list[TrialOutcome]:
        ray, tune = import_ray()
        if run.progress is not None:
            run.progress.study_start(run.study.name, len(run.trials))
        book = _Book(run, self.early_stop, self.cpus, run.finished)
        if book.jobs:
            _run_jobs(ray, tune, book, self.address)
        return book.close()


def _check_options(study: Study, early_stop: str | None, cpus: float) -> None:
    if early_stop is not None and early_stop not in EARLY_STOPPERS:
        received = f"early_stop={early_stop!r}"
        raise CnnlabError(
            must_be_one_of("early_stop", EARLY_STOPPERS, received, also=" or left out")
        )
    if not (isinstance(cpus, int | float) and 0 < cpus < float("inf")):
        raise CnnlabError(
            f"cpus_per_trial must be a positive number. Received: {cpus!r}."
        )
    blind = [a.label for a in study.archs if a.config.validation == "none"]
    if early_stop is not None and blind:
        raise CnnlabError(
            f"--early-stop {early_stop} ranks trials by their validation loss, but "
            f"{', '.join(blind)} train(s) with validation: none. Use validation: "
            "holdout (the default), or leave out --early-stop."
        )


# --------------------------------------------------------------------- the driver


@unique
class JobState(StrEnum):
    """What the driver has heard of a trial sent to Ray."""

    QUEUED = "queued"
    RUNNING = "running"
    STOPPED = "stopped"  # ASHA stopped it; scored after Tune ends
    FINISHED = "finished"  # recorded in the store
    FAILED = "failed"


@dataclass
class _Job:
    """One trial sent to Ray, and what the driver has heard of it so far."""

    k: int  # 1-based position in the study's trials
    trial: Trial
    trial_id: int
    payload: dict[str, Any]  # what the worker receives
    outcome: Outcome  # TRAINED or RESUMED, once it finishes
    state: JobState = JobState.QUEUED
    error: str = ""


class _Book:
    """The driver's bookkeeping: plans the trials, then records what Ray reports.

    Every store write of the Ray executor happens here, in the driver's process.
    """

    def __init__(
        self,
        run: StudyRun,
        early_stop: str | None,
        cpus: float,
        finished: Callable[[TrialOutcome], None],
    ) -> None:
        self.db, self.study, self.progress = run.store, run.study, run.progress
        self.finished = finished  # told of each trial once it is in the store
        self.early_stop, self.cpus = early_stop, cpus
        self.total = len(run.trials)
        self.outcomes: dict[int, TrialOutcome] = {}  # by position in the study
        self.jobs: list[_Job] = []
        self.fingerprints: dict[tuple, str] = {}  # by (data, image options)
        dirs = [t.run_dir(run.study_dir) for t in run.trials]
        records = [existing_run(t, d) for t, d in zip(run.trials, dirs, strict=True)]
        for k, trial in enumerate(run.trials, start=1):
            self._plan(k, trial, run, dirs[k - 1], records[k - 1])

    def _plan(
        self,
        k: int,
        trial: Trial,
        run: StudyRun,
        run_dir: Path,
        record: RunRecord | None,
    ) -> None:
        """Record a finished trial as it stands, or queue it as a job for Ray."""
        trial_id = start_trial(self.db, self.study, trial, run.study_dir)
        if record is not None and record.is_complete(trial.config.epochs):
            finish_trial(self.db, trial_id, record.meta, record.history().epochs)
            self._outcome(k, trial, Outcome.SKIPPED)
        elif (
            record is not None
            and record.status == Status.STOPPED_EARLY
            and self.early_stop is not None
        ):
            # ASHA judged it already; without --early-stop it trains to the end.
            history = record.history().epochs
            finish_trial(self.db, trial_id, record.meta, history, Status.STOPPED_EARLY)
            self._outcome(k, trial, Outcome.STOPPED_EARLY)
        else:
            payload = _payload(trial, run_dir, self.cpus, self._fingerprint(trial))
            outcome = Outcome.TRAINED if record is None else Outcome.RESUMED
            self.jobs.append(_Job(k, trial, trial_id, payload, outcome))

    def _fingerprint(self, trial: Trial) -> str:
        """The fingerprint of the data the trial trains on, as the driver reads it."""
        key = (trial.config.data, image_options(trial.config))
        if key not in self.fingerprints:
            self.fingerprints[key] = fingerprint(load_dataset(*key))
        return self.fingerprints[key]

    def _outcome(self, k: int, trial: Trial, status: Outcome) -> None:
        self.outcomes[k] = TrialOutcome(trial, status)
        self.finished(self.outcomes[k])
        if self.progress is not None:
            self.progress.trial_start(k, self.total, trial.label, trial.seed)
            self.progress.trial_end(k, status)

    def _say(self, job: _Job, text: str) -> None:
        if self.progress is not None:
            self.progress.message(f"  {job.trial.label}, seed {job.trial.seed}: {text}")

    # What Tune reports, through `_callback`, in the driver's thread.

    def started(self, i: int) -> None:
        job = self.jobs[i]
        if job.state is JobState.QUEUED and self.progress is not None:
            self.progress.trial_start(
                job.k, self.total, job.trial.label, job.trial.seed
            )
        job.state = JobState.RUNNING

    def result(self, i: int, result: dict[str, Any]) -> None:
        job = self.jobs[i]
        if "error" in result:  # a CnnlabError in the worker: retrying cannot help
            self.failed(i, result["error"])
            return
        if "test" in result:
            finish_trial(self.db, job.trial_id, result, result["history"])
            job.state = JobState.FINISHED
            self.outcomes[job.k] = TrialOutcome(job.trial, job.outcome)
            self.finished(self.outcomes[job.k])
            test = result["test"]  # None: a search candidate never reads the test set
            score = (
                "test set not read" if test is None else f"test acc {test['acc']:.4f}"
            )
            self._say(job, f"{job.outcome}, {score}")
            if self.progress is not None:
                self.progress.trial_end(job.k, job.outcome)
            return
        self.db.save_epochs(job.trial_id, result["history"])  # the whole history
        row = {key: result.get(key) for key in HISTORY_KEYS}
        self._say(job, format_epoch_line(row, job.trial.config.epochs))
        if result.get("done"):  # the scheduler's decision: stop here
            job.state = JobState.STOPPED

    def retried(self, i: int, error: str) -> None:
        job = self.jobs[i]
        self._say(job, f"{error.rstrip('.')}; retrying from its last checkpoint")

    def failed(self, i: int, error: str) -> None:
        job = self.jobs[i]
        job.state, job.error = JobState.FAILED, error
        mark_trial(self.db, job.trial_id, None)
        self._say(job, f"failed: {error}")

    def record_stopped(self, job: _Job, scored: dict[str, Any]) -> None:
        history = scored["history"]
        finish_trial(self.db, job.trial_id, scored, history, Status.STOPPED_EARLY)
        self.outcomes[job.k] = TrialOutcome(job.trial, Outcome.STOPPED_EARLY)
        self.finished(self.outcomes[job.k])
        self._say(job, f"stopped early at epoch {scored['stopped_epoch']} (ASHA)")
        if self.progress is not None:
            self.progress.trial_end(job.k, Outcome.STOPPED_EARLY)

    def mark_unfinished(self) -> None:
        """Jobs Ray did not finish -> 'interrupted', as the in-process executor does."""
        for job in self.jobs:
            if job.state in (JobState.QUEUED, JobState.RUNNING, JobState.STOPPED):
                mark_trial(self.db, job.trial_id, None)

    def close(self) -> list[TrialOutcome]:
        """The outcomes in the study's order; raise what went wrong, if anything."""
        self.mark_unfinished()
        failed = [j for j in self.jobs if j.state is JobState.FAILED]
        if failed:
            names = ", ".join(f"{j.trial.label} seed {j.trial.seed}" for j in failed)
            raise CnnlabError(
                f"{len(failed)} trial(s) failed on Ray ({names}): {failed[0].error} "
                "Finished trials are saved; fix the cause and run the study again."
            )
        if any(j.state in (JobState.QUEUED, JobState.RUNNING) for j in self.jobs):
            raise KeyboardInterrupt  # Tune ended the experiment early: Ctrl-C
        return [self.outcomes[k] for k in sorted(self.outcomes)]


def _payload(
    trial: Trial, run_dir: Path, cpus: float, data_fingerprint: str
) -> dict[str, Any]:
    """Everything a worker needs to run one trial, as plain data."""
    return {
        "label": trial.label,
        "spec": trial.arch.to_dict(),
        # What the document leaves out: whether it is a preset (its source) and
        # whether it states its input_shape; a worker adapts it to the data as the
        # driver would (nn.adapt).
        "arch_source": trial.arch.source,
        "shape_given": trial.arch.shape_given,
        "config": trial.config.to_dict(),
        "run_dir": str(run_dir.resolve()),
        "cwd": os.getcwd(),  # relative `data` paths resolve as on the driver
        "cnnlab": __version__,
        "threads": max(1, int(cpus)),
        "score_test": trial.score_test,
        "data_fingerprint": data_fingerprint,  # of what the driver read
    }


def _run_jobs(ray: Any, tune: Any, book: _Book, address: str | None) -> None:
    """Run the book's jobs as one Tune experiment, then score the stopped ones."""
    started = _connect(ray, address, book.cpus)
    storage = tempfile.mkdtemp(prefix="cnnlab-tune-")  # Tune's own state: disposable
    try:
        trainable = tune.with_parameters(
            _train_job, jobs=[j.payload for j in book.jobs]
        )
        resources = {"cpu": book.cpus, "gpu": _gpus(ray, book.study)}
        scheduler = None
        if book.early_stop == "asha":
            scheduler = tune.schedulers.ASHAScheduler(
                time_attr="epoch",
                metric=ASHA_METRIC,
                mode="min",
                max_t=max(a.config.epochs for a in book.study.archs),
                grace_period=ASHA_GRACE_EPOCHS,
                reduction_factor=ASHA_REDUCTION,
            )
        tuner = tune.Tuner(
            tune.with_resources(trainable, resources),
            param_space={"index": tune.grid_search(list(range(len(book.jobs))))},
            tune_config=tune.TuneConfig(scheduler=scheduler, reuse_actors=True),
            run_config=tune.RunConfig(
                name=book.study.name,
                storage_path=storage,
                verbose=0,
                callbacks=[_callback(tune, book)],
                failure_config=tune.FailureConfig(max_failures=MAX_FAILURES),
            ),
        )
        # Tune's classic output honours verbose=0; its auto loggers would only write
        # copies of the results into `storage`, which is deleted; a failed trial is
        # one line from `book`, not Tune's traceback.
        with _environ(
            RAY_AIR_NEW_OUTPUT="0",
            TUNE_DISABLE_AUTO_CALLBACK_LOGGERS="1",
            TUNE_PRINT_ALL_TRIAL_ERRORS="0",
        ):
            tuner.fit()
        _score_stopped(ray, book)
    except BaseException:  # Ctrl-C, or Ray itself failing
        book.mark_unfinished()
        raise
    finally:
        shutil.rmtree(storage, ignore_errors=True)
        if started:
            ray.shutdown()


def _connect(ray: Any, address: str | None, cpus: float) -> bool:
    """Join the cluster at `address`, or start a local instance; True if started."""
    if ray.is_initialized():
        return False
    options: dict[str, Any] = {
        "include_dashboard": False,
        "log_to_driver": False,  # trials talk through Tune results, not prints
        "logging_level": logging.ERROR,
    }
    try:
        ray.init(address=address or "local", **options)
    except ConnectionError as err:
        raise CnnlabError(
            f"cannot connect to a Ray cluster at {address} ({err}). Start one with "
            "`ray start --head` on the head node and pass the address it prints, "
            "or leave out --address for a local instance."
        ) from err
    total = ray.cluster_resources().get("CPU", 0)
    if address is None and cpus > total:
        ray.shutdown()
        raise CnnlabError(
            f"cpus_per_trial={cpus} is more than the {total:g} CPUs of the local "
            f"Ray instance. Use {total:g} or fewer."
        )
    return True


def _gpus(ray: Any, study: Study) -> int:
    """1 GPU per trial when the study asks for CUDA, or for 'auto' on GPU nodes."""
    devices = {a.config.device for a in study.archs}
    has_gpus = ray.cluster_resources().get("GPU", 0) > 0
    return int("cuda" in devices or ("auto" in devices and has_gpus))


def _callback(tune: Any, book: _Book) -> Any:
    """A Tune callback passing trial events, by job index, to `book`."""

    class Recorder(tune.Callback):
        def __init__(self, book: _Book) -> None:
            self.book = book

        def __getstate__(self) -> dict[str, Any]:
            # Tuner pickles its settings for Tuner.restore, which cnnlab never
            # uses (it resumes from run folders); the store cannot be pickled.
            return {}

        def on_trial_start(self, iteration: int, trials: Any, trial: Any, **_: Any):
            self.book.started(trial.config["index"])

        def on_trial_result(
            self, iteration: int, trials: Any, trial: Any, result: dict, **_: Any
        ):
            self.book.result(trial.config["index"], result)

        def on_trial_recover(self, iteration: int, trials: Any, trial: Any, **_: Any):
            self.book.retried(trial.config["index"], _error_text(trial))

        def on_trial_error(self, iteration: int, trials: Any, trial: Any, **_: Any):
            self.book.failed(trial.config["index"], _error_text(trial))

    return Recorder(book)


def _error_text(trial: Any) -> str:
    """The failure that ended a Tune trial's last attempt, in one line."""
    path = trial.error_file
    lines = []
    if path and os.path.isfile(path):
        with open(path, encoding="utf-8", errors="replace") as fh:
            lines = [line.strip() for line in fh if line.strip()]
    starts = [i for i, line in enumerate(lines) if line.startswith("Failure # ")]
    last = lines[starts[-1] + 1 :] if starts else lines  # one section per attempt
    # A crash in the trial ends its traceback with "ValueError: ..."; a dead worker
    # is "The actor died unexpectedly before finishing this task." and details.
    raised = [line for line in last if _EXCEPTION_LINE.match(line)]
    text = raised[-1] if raised else last[0] if last else "the trial's worker failed"
    return text if len(text) <= 200 else text[:197] + "..."


def _score_stopped(ray: Any, book: _Book) -> None:
    """Score the trials ASHA stopped, in Ray tasks, once Tune has ended their actors.

    Not sooner: Tune stops a trial by raising SystemExit in its training thread when
    its actor ends, and on the way out `api` marks the run folder 'interrupted'.
    After `fit()` returns, those actors are gone, so 'stopped_early' is written last.
    """
    stopped = [j for j in book.jobs if j.state is JobState.STOPPED]
    if not stopped:
        return
    task = ray.remote(
        num_cpus=book.cpus, num_gpus=_gpus(ray, book.study), max_retries=MAX_FAILURES
    )(_score_job)
    for job, scored in zip(
        stopped, ray.get([task.remote(j.payload) for j in stopped]), strict=True
    ):
        book.record_stopped(job, scored)
        job.state = JobState.FINISHED


@contextlib.contextmanager
def _environ(**values: str) -> Iterator[None]:
    """Set environment variables for the duration of a block, then restore them."""
    saved = {key: os.environ.get(key) for key in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


# --------------------------------------------------------------------- the workers


def _open_job(job: dict[str, Any]) -> tuple[Trial, Path]:
    """The worker's side of a payload: check the node and its copy of the data,
    rebuild the trial."""
    if job["cnnlab"] != __version__:
        raise CnnlabError(
            f"node {platform.node()} has cnnlab {__version__}, the driver "
            f"{job['cnnlab']}. Install the same cnnlab on every node of the cluster."
        )
    if os.path.isdir(job["cwd"]):
        os.chdir(job["cwd"])
    torch.set_num_threads(job["threads"])  # a config's own `threads` overrides it
    source = f"study trial {job['label']!r}"
    arch = replace(
        parse_architecture(job["spec"], source=source),
        source=job["arch_source"],
        shape_given=job["shape_given"],
    )
    config = TrainConfig.from_dict(job["config"])
    trial = Trial(job["label"], arch, config, score_test=job["score_test"])
    check_data(config, job["data_fingerprint"])
    return trial, Path(job["run_dir"])


def check_data(config: TrainConfig, expected: str) -> None:
    """Refuse to train on data other than what the driver read (its fingerprint
    is `expected`); the data set is loaded as training will load it."""
    dataset = load_dataset(config.data, image_options(config))
    check_fingerprint(dataset, expected, f"node {platform.node()}")


def _train_job(config: dict[str, Any], jobs: list[dict[str, Any]]) -> None:
    """Tune's trainable: train or resume one trial, reporting every epoch."""
    from ray import tune

    try:
        trial, run_dir = _open_job(jobs[config["index"]])
        epochs = trial.config.epochs

        def on_epoch(state: TrainState) -> None:
            # Called after the checkpoint: a reported epoch is never trained again
            # by a retry. The last epoch goes with the test scores, so that ASHA
            # cannot stop a trial between its last epoch and its scoring.
            if state.epoch < epochs:
                rows = state.history.epochs
                tune.report(dict(rows[-1]) | {"history": rows})

        hooks = Hooks(on_epoch=on_epoch, clean_train=True, score_test=trial.score_test)
        remove_half_created(run_dir)  # killed while being created: nothing to keep
        record = open_run(run_dir) if (run_dir / RUN_FILE).is_file() else None
        if record is None:
            meta = train_run(trial.arch, trial.config, run_dir, hooks=hooks).meta
        elif record.is_complete(epochs):
            meta = record.meta  # killed after finishing, before reporting
        else:
            meta = resume_run(run_dir, trial.config.to_dict(), hooks).meta
        history = open_run(run_dir).history().epochs
    except CnnlabError as err:
        tune.report({"error": str(err)})
        return
    tune.report(
        dict(history[-1])
        | {
            "history": history,
            "test": meta["test"],
            "train_clean": meta["train_clean"],
            "test_reads": meta.get("test_reads"),
        }
    )


def _score_job(job: dict[str, Any]) -> dict[str, Any]:
    """Score a trial ASHA stopped, from its last checkpoint, as a finished one is."""
    trial, run_dir = _open_job(job)
    record = open_run(run_dir)
    config = record.config
    dataset, split = load_split(config)
    model = build_model(record.architecture(), dataset.num_classes, seed=config.seed)
    device = pick_device(config.device)
    model = model.to(device)
    use_conv_path(model, device, batch_of(config, split), record.conv_path)
    state = record.load_checkpoint(model)
    if state is None:
        raise CnnlabError(f"{run_dir}: stopped before its first checkpoint.")
    extra = {"stopped_epoch": state.epoch}
    hooks = Hooks(clean_train=True, score_test=trial.score_test)
    finish_run(record, model, split, hooks, Status.STOPPED_EARLY, **extra)
    return record.meta | {"history": state.history.epochs}
