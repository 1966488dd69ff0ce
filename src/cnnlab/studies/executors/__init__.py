"""Executors: how a study's trials get trained. One interface (`Executor`), one
module each: `local` (this process), `pool` (worker processes), `ray` (Ray Tune).

The study runner (`cnnlab.studies.runner`) does everything they share before and
after; an executor only trains the trials it is handed, through the lifecycle in
`cnnlab.studies.trial`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

from cnnlab.studies.layout import StudyLayout
from cnnlab.studies.store import Store
from cnnlab.studies.study import Study, Trial
from cnnlab.studies.trial import TrialOutcome
from cnnlab.training.display import StudyDisplay


@dataclass
class StudyRun:
    """What the runner hands an executor: the study, its trials in order, the open
    store and the display. The runner holds the study folder's lock meanwhile."""

    study: Study
    trials: list[Trial]
    out: Path
    store: Store
    progress: StudyDisplay | None = None
    # Called in this process with each trial once it is finished and recorded in
    # the store (trained, resumed, skipped or stopped early), e.g. to log it.
    on_finished: Callable[[TrialOutcome], None] | None = None
    # Each trial's expected seconds, in order (`cnnlab.studies.estimate`), for a
    # study ETA weighted by cost; None: not estimated (every trial weighs the same).
    costs: list[float] | None = None

    def finished(self, outcome: TrialOutcome) -> None:
        """Tell `on_finished`, if set, that a trial is finished and recorded."""
        if self.on_finished is not None:
            self.on_finished(outcome)

    @property
    def study_dir(self) -> Path:
        return StudyLayout(self.out).study(self.study.name)


class Executor(Protocol):
    """Trains a study's trials; finished ones are skipped, started ones resumed."""

    def describe(self) -> str:
        """One line for the study's start: where and how the trials run."""
        ...

    def environment(self) -> dict[str, Any]:
        """What the study's recorded environment should add (workers, threads)."""
        ...

    def run(self, run: StudyRun) -> list[TrialOutcome]:
        """Train `run.trials`; on Ctrl-C or an error, stop at the last checkpoints
        (each trial marked by `cnnlab.studies.trial`) and raise."""
        ...
