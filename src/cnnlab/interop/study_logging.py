"""Loggers hooked to studies and runs: a logger's failure never stops training.

    StudyLogging(logger, study, out)   the study runner's on_finished: never raises
    log_single_run(logger, run_dir)    after `cnnlab train`: a warning on failure
    export_trials(logger, trials, study, out)      `cnnlab export-study`: raises

A failure while a study trains is one warning line; the study goes on, and at its
end one more line says how many trials were not logged and the `cnnlab
export-study` command that logs them from the store and run folders.
"""

from __future__ import annotations

import re
import shlex
import sys
from collections.abc import Callable, Iterable
from pathlib import Path

from cnnlab.errors import CnnlabError
from cnnlab.interop.loggers import RunLogger
from cnnlab.studies.results import TrialResult
from cnnlab.studies.trial import TrialOutcome
from cnnlab.training.runs import RUN_FILE

MAX_REASON = 300  # characters of a backend's message kept in one line


def failure_reason(err: BaseException) -> str:
    """A logger's error in a few words: the OS error with its file if there is
    one, else the backend's message (its first sentence if it is long)."""
    for cause in _chain(err):
        if isinstance(cause, OSError) and cause.strerror and cause.filename:
            return f"{cause.strerror}: {cause.filename}"
    text = " ".join(str(err).split()) or type(err).__name__
    errno = re.search(r"\[Errno -?\d+\] [^\"')]+", text)
    if errno:
        return errno.group(0).strip()
    if len(text) > MAX_REASON:
        first = re.match(r"(.{20,}?[.!?])\s", text)
        text = first[1] if first and len(first[1]) <= MAX_REASON else text
    return text if len(text) <= MAX_REASON else text[: MAX_REASON - 3] + "..."


def _chain(err: BaseException) -> list[BaseException]:
    """The error and its causes, at most ten deep."""
    out: list[BaseException] = []
    current: BaseException | None = err
    while current is not None and len(out) < 10:
        out.append(current)
        current = current.__cause__ or current.__context__
    return out


_UNREACHABLE = (
    "connection refused",
    "max retries exceeded",
    "timed out",
    "name or service not known",
    "temporary failure in name resolution",
    "connection reset",
    "failed to establish",
)


def unreachable(err: BaseException) -> bool:
    """True if the backend did not answer (worth a retry later); False for an
    error a retry would only repeat (a bad URI, a setting, a read-only folder)."""
    for cause in _chain(err):
        if isinstance(cause, ConnectionError | TimeoutError):
            return True
        text = str(cause).lower()
        if any(phrase in text for phrase in _UNREACHABLE):
            return True
    return False


def _stderr(line: str) -> None:
    print(line, file=sys.stderr, flush=True)


def _failed(logger: RunLogger, reason: str) -> str:
    return f"logging to {logger.title} at {logger.where} failed ({reason})"


def export_command(logger: RunLogger, study: str, out: Path) -> str:
    """The `cnnlab export-study` line that logs the study's trials later."""
    words = ["export-study", study, "--to", logger.kind, "--log-uri", logger.where]
    return "cnnlab " + shlex.join([*words, "--out", str(out)])


class StudyLogging:
    """The study runner's `on_finished`: logs each finished trial, never raises.

    The first failure is one warning line and stops logging for the rest of the
    study (a server that is down is not asked again for every trial); `finish`
    then says how many trials were not logged and how to log them later.
    """

    def __init__(
        self,
        logger: RunLogger,
        study: str,
        out: Path,
        warn: Callable[[str], None] = _stderr,
    ) -> None:
        self.logger, self.study, self.out, self.warn = logger, study, Path(out), warn
        self.logged = self.failed = 0
        self.error: str | None = None  # the first failure; no more attempts after it

    def __call__(self, outcome: TrialOutcome) -> None:
        trial = outcome.trial
        if self.error is not None:
            self.failed += 1
            return
        run_dir = trial.run_dir(self.out / self.study)
        try:
            self.logger.log_run(
                run_dir, study=self.study, label=trial.label, seed=trial.seed
            )
        except Exception as err:  # a logger must never stop the study
            self.failed += 1
            self.error = failure_reason(err)
            self.warn(
                f"warning: {_failed(self.logger, self.error)}; study '{self.study}' "
                "goes on without it, its store and run folders are intact."
            )
        else:
            self.logged += 1

    def finish(self) -> None:
        """After the study: the count of trials not logged and the command for it."""
        if self.failed:
            self.warn(
                f"warning: {self.failed} trial(s) of study '{self.study}' were not "
                f"logged to {self.logger.title}; log them later with: "
                f"{export_command(self.logger, self.study, self.out)}"
            )


def log_single_run(
    logger: RunLogger, run_dir: Path, warn: Callable[[str], None] = _stderr
) -> bool:
    """Log one `cnnlab train` run; a failure is a warning line, not an error."""
    try:
        logger.log_run(Path(run_dir), study=None, label=None, seed=None)
    except Exception as err:  # the run is trained and saved: never fail it now
        reason = failure_reason(err)
        warn(f"warning: {_failed(logger, reason)}; the run folder {run_dir} is intact.")
        return False
    return True


def trial_run_dir(trial: TrialResult, out: Path) -> Path:
    """A stored trial's run folder under `out` (the store's path if moved)."""
    here = Path(out) / trial.study / "runs" / Path(trial.run_path).name
    return here if (here / RUN_FILE).is_file() else Path(trial.run_path)


def export_trials(
    logger: RunLogger, trials: Iterable[TrialResult], study: str, out: Path
) -> int:
    """Log a study's finished trials from the store's records and run folders;
    returns how many the backend now holds (logged now or before)."""
    done = [t for t in trials if t.status.finished]
    for k, trial in enumerate(done):
        run_dir = trial_run_dir(trial, out)
        try:
            logger.log_run(run_dir, study=study, label=trial.label, seed=trial.seed)
        except CnnlabError:
            raise
        except Exception as err:
            fix = (
                "run the command again once it answers"
                if unreachable(err)
                else "fix the location or the settings it names, then run the "
                "command again"
            )
            raise CnnlabError(
                f"{_failed(logger, failure_reason(err))} after {k} of {len(done)} "
                f"trials. The store and run folders are intact; {fix}."
            ) from err
    return len(done)
