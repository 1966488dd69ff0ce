"""Optuna's side of a search: its storage beside the cnnlab store, the samplers and
pruners a search block names, and `Pruning`, the epoch hook that lets a pruner stop
a candidate (in this process or in a worker). Optuna is imported here, lazily: it is
the `search` extra, and `import cnnlab` never needs it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnlab.errors import CnnlabError
from cnnlab.search.space import SearchSpec
from cnnlab.training.loop import StopTraining, TrainState

INSTALL_HINT = "pip install 'cnnlab[search]'"
OPTUNA_FILE = "optuna.sqlite"  # beside the cnnlab store
SQLITE_TIMEOUT_S = 60  # worker processes report epochs to the same Optuna file


def import_optuna() -> Any:
    try:
        import optuna
    except ImportError as err:
        raise CnnlabError(
            f"search needs Optuna, which is not installed here; {INSTALL_HINT}"
        ) from err
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna


def storage_url(out: Path) -> str:
    return f"sqlite:///{(out / OPTUNA_FILE).resolve()}"


_STORAGES: dict[str, Any] = {}  # one per process and file: engines are costly


def open_storage(url: str) -> Any:
    optuna = import_optuna()
    if url not in _STORAGES:
        _STORAGES[url] = optuna.storages.RDBStorage(
            url, engine_kwargs={"connect_args": {"timeout": SQLITE_TIMEOUT_S}}
        )
    return _STORAGES[url]


def make_pruner(name: str, epochs: int) -> Any:
    optuna = import_optuna()
    p = optuna.pruners
    # Startup 2 / warm-up 0: searches here are tens of trials of a few epochs.
    return {
        "none": lambda: p.NopPruner(),
        "median": lambda: p.MedianPruner(n_startup_trials=2, n_warmup_steps=0),
        "halving": lambda: p.SuccessiveHalvingPruner(min_resource=1),
        "hyperband": lambda: p.HyperbandPruner(min_resource=1, max_resource=epochs),
    }[name]()


def make_sampler(spec: SearchSpec, asked: int = 0) -> Any:
    """The sampler, seeded by the search's seed and the number of trials already
    asked: a resumed search must not draw its first points again."""
    s = import_optuna().samplers
    seed = spec.seed if asked == 0 else spec.seed * 1_000_003 + asked
    if spec.sampler == "grid":

        class Grid(s.GridSampler):  # type: ignore[misc, name-defined]
            """Optuna's grid, without its `study.stop()` once the grid is done:
            that works only inside `optimize`, and the search loop asks and tells
            (it sees the grid is done itself)."""

            def after_trial(self, *args: Any, **kwargs: Any) -> None:
                pass

        return Grid(spec.grid(), seed=seed)
    if spec.sampler == "random":
        return s.RandomSampler(seed=seed)
    if len(spec.objectives) > 1:
        return s.NSGAIISampler(seed=seed)
    return s.TPESampler(seed=seed)


@dataclass(frozen=True)
class Pruning:
    """A candidate's epoch hook: report the epoch's validation score to Optuna and
    stop the trial if its pruner says so. Plain data: it pickles into workers."""

    url: str
    study: str
    trial_id: int
    metric: str  # val_loss | val_acc
    pruner: str
    epochs: int

    def __call__(self, state: TrainState) -> None:
        optuna = import_optuna()
        study = optuna.load_study(
            study_name=self.study,
            storage=open_storage(self.url),
            pruner=make_pruner(self.pruner, self.epochs),
        )
        trial = optuna.Trial(study, self.trial_id)
        trial.report(float(state.history.epochs[-1][self.metric]), state.epoch)
        if trial.should_prune():
            raise StopTraining(state.epoch, f"pruned after epoch {state.epoch}")
