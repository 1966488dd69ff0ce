"""The in-process executor: the trials one after another, in this process."""

from __future__ import annotations

from typing import Any

from cnnlab.studies.cpus import CpuSplit
from cnnlab.studies.executors import StudyRun
from cnnlab.studies.trial import TrialOutcome, run_trial
from cnnlab.util.machine import set_threads


class LocalExecutor:
    """Trials one by one in this process, with the split's threads (a trial's own
    `threads` setting overrides it)."""

    def __init__(self, split: CpuSplit) -> None:
        self.split = split

    def describe(self) -> str:
        return self.split.describe()

    def environment(self) -> dict[str, Any]:
        return {"workers": 1, "threads": self.split.threads}

    def run(self, run: StudyRun) -> list[TrialOutcome]:
        set_threads(self.split.threads)
        progress, total = run.progress, len(run.trials)
        if progress is not None:
            progress.study_start(run.study.name, total, run.costs)
        outcomes = []
        for k, trial in enumerate(run.trials, start=1):
            if progress is not None:
                progress.trial_start(k, total, trial.label, trial.seed)
            outcome = run_trial(trial, run.study, run.store, run.study_dir, progress)
            outcomes.append(outcome)
            run.finished(outcome)
            if progress is not None:
                progress.trial_end(k, outcome.outcome)
        return outcomes
