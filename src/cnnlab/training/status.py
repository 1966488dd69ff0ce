"""The one vocabulary for where a run (and the study trial it belongs to) stands,
and for what running a trial did.

run.json, the study store, `cnnlab runs --status`, the reports and every executor
use these values; `finished` is the one rule for "needs no more training".
"""

from __future__ import annotations

from enum import StrEnum, unique

from cnnlab.training.loop import TrainingDiverged


@unique
class Status(StrEnum):
    """A run's state. The legal order: PENDING -> RUNNING -> one of the others; an
    INTERRUPTED run goes back to RUNNING when it resumes."""

    PENDING = "pending"  # a trial planned in the store, no process has started it
    RUNNING = "running"  # a live process trains it (or one died: see mark_interrupted)
    COMPLETED = "completed"  # every epoch trained, test scored, final weights saved
    STOPPED_EARLY = "stopped_early"  # a scheduler (ASHA) stopped it; scored as is
    INTERRUPTED = "interrupted"  # Ctrl-C, a kill or a fixable error: resumable
    FAILED = "failed"  # training diverged: resuming would diverge again

    @property
    def finished(self) -> bool:
        """No more training wanted: it completed, or a scheduler stopped it."""
        return self in (Status.COMPLETED, Status.STOPPED_EARLY)

    @property
    def resumable(self) -> bool:
        return self in (Status.RUNNING, Status.INTERRUPTED)


@unique
class Outcome(StrEnum):
    """What running a study's trial did (the executors report it, the displays
    show it)."""

    TRAINED = "trained"  # from scratch
    RESUMED = "resumed"  # from its last checkpoint
    SKIPPED = "skipped"  # already complete: recorded as it stands
    STOPPED_EARLY = "stopped_early"  # a scheduler stopped it (Ray + ASHA)


def status_for(error: BaseException) -> Status:
    """What a run that stopped on `error` becomes: FAILED if it diverged (resuming
    would diverge again), INTERRUPTED otherwise (Ctrl-C, a kill, a full disk)."""
    return Status.FAILED if isinstance(error, TrainingDiverged) else Status.INTERRUPTED
