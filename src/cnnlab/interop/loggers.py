"""Finished runs and study trials copied to MLflow or TensorBoard.

    make_logger("mlflow" | "tensorboard", uri) -> RunLogger   (MlflowLogger or
        TensorBoardLogger; the backend is imported on first use)
    logger.log_run(run_dir, study=..., label=..., seed=...)   reads the run folder

Hooking them to studies, `cnnlab train` and `cnnlab export-study`, where a failure
must not stop training: `cnnlab.interop.study_logging`.

The store and the run folders stay the record; a logger only copies what a finished
run folder holds (run.json, history.csv, spec.yaml, curves.png), so a trial that
could not be logged is logged later from them, without retraining. Logging a trial
twice does not duplicate it: a trial already logged with the same run.json and
history.csv is skipped, an older copy of it is replaced.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
import sys
import threading
import time
import types
from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from importlib.util import find_spec
from pathlib import Path
from typing import Any, Protocol
from urllib.parse import quote, urlsplit

from cnnlab._version import __version__
from cnnlab.errors import CnnlabError
from cnnlab.nn.shapes import ModelInfo, infer
from cnnlab.nn.summary import format_summary
from cnnlab.training import runs
from cnnlab.training.metrics import HISTORY_KEYS
from cnnlab.training.status import Status
from cnnlab.util.fsio import atomic_write_text, check_inside
from cnnlab.util.messages import must_be_one_of
from cnnlab.util.text import slug

LOG_KINDS = ("mlflow", "tensorboard")
DEFAULT_MLFLOW_URI = "sqlite:///mlflow.db"  # MLflow's own default: `mlflow ui` finds it
DEFAULT_TB_DIR = "tb-logs"
SINGLE_RUNS = "cnnlab"  # the experiment (and TensorBoard folder) of `cnnlab train`
ARTIFACTS = (runs.SPEC_FILE, runs.RUN_FILE, runs.HISTORY_FILE, runs.CURVES_FILE)
EPOCH_METRICS = HISTORY_KEYS[1:]  # a history row's numbers, but the epoch
KEY_TAG = "cnnlab.run_key"  # a hash of the run folder's path: what finds a copy
FINGERPRINT_TAG = "cnnlab.fingerprint"  # set last: a half-logged copy has none
# MLflow retries a refused connection for about 4 minutes by default; a study waits
# at most a few seconds before it goes on without logging. MLflow would also print
# a "View run" link per run amid the study's output. The user's values win.
MLFLOW_ENV_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "30",
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}
_NEEDS = {"mlflow": ("mlflow", "MLflow"), "tensorboard": ("tensorboard", "TensorBoard")}
_MARKER = "cnnlab-run.json"  # in a TensorBoard trial folder: what was logged there


class RunLogger(Protocol):
    """Copies one finished run folder somewhere; `kind` and `where` name it."""

    kind: str  # "mlflow" | "tensorboard", as --log and --to spell it
    title: str  # "MLflow" | "TensorBoard", for messages
    where: str  # the tracking URI or the log folder

    def log_run(
        self, run_dir: Path, *, study: str | None, label: str | None, seed: int | None
    ) -> bool:
        """Log the run; False if the same record was logged before (skipped)."""
        ...


# ------------------------------------------------------------- the run folder


@dataclass(frozen=True)
class RunFacts:
    """What a logger copies from one finished run folder."""

    record: runs.RunRecord
    study: str | None
    label: str | None
    seed: int | None

    @property
    def path(self) -> Path:
        return self.record.path

    @property
    def name(self) -> str:
        """'<label>-s<seed>' for a study trial, else the run folder's name."""
        if self.label is None or self.seed is None:
            return self.path.name
        return f"{self.label}-s{self.seed}"

    @property
    def group(self) -> str:
        """The study's name, or 'cnnlab' for a single `cnnlab train` run."""
        return self.study or SINGLE_RUNS

    @cached_property
    def history(self) -> list[dict[str, Any]]:
        return self.record.history().epochs

    @cached_property
    def info(self) -> ModelInfo:
        env = self.record.meta.get("environment")
        names = env.get("class_names") if isinstance(env, dict) else None
        classes = len(names) if isinstance(names, list) and names else None
        return infer(self.record.architecture(), classes)

    @cached_property
    def summary(self) -> str:
        return format_summary(self.info)

    @cached_property
    def key(self) -> str:
        return hashlib.sha256(str(self.path).encode()).hexdigest()[:32]

    @cached_property
    def fingerprint(self) -> str:
        """A hash of run.json and history.csv: changes when the run does."""
        digest = hashlib.sha256()
        for name in (runs.RUN_FILE, runs.HISTORY_FILE):
            if (self.path / name).is_file():
                digest.update((self.path / name).read_bytes())
        return digest.hexdigest()[:32]

    def params(self) -> dict[str, str]:
        """The resolved training config, flattened, and the network's totals."""
        info = self.info
        totals = {"arch_name": info.arch.name, "params": info.total}
        return flatten(self.record.meta["config"] | totals | {"flops": info.flops})

    def final_metrics(self) -> dict[str, float]:
        """test_loss, test_acc, train_clean_loss, train_clean_acc where scored."""
        out = {}
        for part in ("test", "train_clean"):
            scores = self.record.meta.get(part) or {}
            for name in ("loss", "acc"):
                if isinstance(scores.get(name), int | float):
                    out[f"{part}_{name}"] = float(scores[name])
        return out

    def tags(self) -> dict[str, str]:
        """Study, label, seed, status, cnnlab version, and the run folder."""
        tags = {
            "cnnlab.study": self.study,
            "cnnlab.label": self.label,
            "cnnlab.seed": None if self.seed is None else str(self.seed),
            "cnnlab.status": str(self.record.meta.get("status")),
            "cnnlab.version": __version__,
            "cnnlab.run_path": str(self.path),
            KEY_TAG: self.key,
        }
        return {k: v for k, v in tags.items() if v is not None}

    @property
    def last_epoch(self) -> int:
        return int(self.record.meta.get("epochs_done") or len(self.history))


def read_run(
    run_dir: Path, study: str | None, label: str | None, seed: int | None
) -> RunFacts:
    """Open a run folder for logging (read only: nothing in it changes)."""
    record = runs.open_run(Path(run_dir).resolve())
    return RunFacts(record, study, label, seed)


def flatten(doc: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """{'a': {'b': 1}} -> {'a.b': '1'}: nested settings as MLflow params."""
    out: dict[str, str] = {}
    for key, value in doc.items():
        if isinstance(value, Mapping):
            out |= flatten(value, f"{prefix}{key}.")
        else:
            out[f"{prefix}{key}"] = str(value)
    return out


# ----------------------------------------------------------------------- MLflow


class MlflowLogger:
    """Each run one MLflow run, through MlflowClient with explicit run ids."""

    kind, title = "mlflow", "MLflow"

    def __init__(self, tracking_uri: str | None = None, experiment: str | None = None):
        env = os.environ.get("MLFLOW_TRACKING_URI")
        self.where = tracking_uri or env or DEFAULT_MLFLOW_URI
        self.experiment = experiment  # None: the study's name, or 'cnnlab'
        self._lock = threading.Lock()
        self._client: Any = None
        self._experiments: dict[str, str] = {}

    def client(self) -> Any:
        """The MlflowClient, made on first use (a bad URI fails there, not before)."""
        with self._lock:
            if self._client is None:
                for name, value in MLFLOW_ENV_DEFAULTS.items():
                    os.environ.setdefault(name, value)
                from mlflow.tracking import MlflowClient

                self._client = MlflowClient(tracking_uri=self.where)
            return self._client

    def experiment_id(self, name: str) -> str:
        """The id of the experiment `name`, created (or restored) if need be."""
        if name in self._experiments:
            return self._experiments[name]
        client = self.client()
        found = client.get_experiment_by_name(name)
        if found is None:
            exp_id = client.create_experiment(name)
        else:
            exp_id = found.experiment_id
            if found.lifecycle_stage == "deleted":  # runs there would be hidden
                client.restore_experiment(exp_id)
        self._experiments[name] = exp_id
        return exp_id

    def log_run(
        self, run_dir: Path, *, study: str | None, label: str | None, seed: int | None
    ) -> bool:
        """One MLflow run for the run folder; False if it is there already."""
        facts = read_run(run_dir, study, label, seed)
        client = self.client()
        exp_id = self.experiment_id(self.experiment or facts.group)
        query = f"tags.`{KEY_TAG}` = '{facts.key}'"
        copies = client.search_runs([exp_id], filter_string=query)
        if any(r.data.tags.get(FINGERPRINT_TAG) == facts.fingerprint for r in copies):
            return False
        for old in copies:  # an older or half-logged copy of this run
            client.delete_run(old.info.run_id)
        run = client.create_run(exp_id, tags=facts.tags(), run_name=facts.name)
        _fill_mlflow_run(client, run.info.run_id, facts)
        return True


def _fill_mlflow_run(client: Any, run_id: str, facts: RunFacts) -> None:
    """Params, per-epoch and final metrics, artifacts; then mark it finished."""
    from mlflow.entities import Metric, Param, RunTag

    stamp = int(time.time() * 1000)
    params = [Param(k, v) for k, v in facts.params().items()]
    metrics = [
        Metric(key, float(row[key]), stamp, int(row["epoch"]))
        for row in facts.history
        for key in EPOCH_METRICS
        if row.get(key) is not None
    ]
    metrics += [
        Metric(key, value, stamp, facts.last_epoch)
        for key, value in facts.final_metrics().items()
    ]
    for i in range(0, len(params), 100):  # MLflow's limits per log_batch request
        client.log_batch(run_id, params=params[i : i + 100])
    for i in range(0, len(metrics), 1000):
        client.log_batch(run_id, metrics=metrics[i : i + 1000])
    client.log_text(run_id, facts.summary + "\n", "summary.txt")
    for name in ARTIFACTS:
        if (facts.path / name).is_file():
            client.log_artifact(run_id, str(facts.path / name))
    client.log_batch(run_id, tags=[RunTag(FINGERPRINT_TAG, facts.fingerprint)])
    status = facts.record.status
    finished = isinstance(status, Status) and status.finished
    client.set_terminated(run_id, "FINISHED" if finished else "FAILED")


# ------------------------------------------------------------------ TensorBoard


def tb_tag(key: str) -> str:
    """A metric's TensorBoard tag: loss -> train/loss, val_acc -> val/acc,
    seconds -> train/seconds, test_loss -> test/loss, train_clean_acc ->
    train_clean/acc."""
    group, _, name = key.rpartition("_")
    return f"{group or 'train'}/{name}"


def summary_writer_class() -> Any:
    """torch's SummaryWriter, writing with tensorboard's own TF-free event code.

    Without the `notf` marker tensorboard imports TensorFlow when it is installed,
    which takes seconds and is not needed to write event files.
    """
    if "tensorflow" not in sys.modules:
        marker = "tensorboard.compat.notf"
        sys.modules.setdefault(marker, types.ModuleType(marker))
    from torch.utils.tensorboard import SummaryWriter

    return SummaryWriter


class TensorBoardLogger:
    """Event files per run under `<log_dir>/<study or 'cnnlab'>/<run folder name>/`."""

    kind, title = "tensorboard", "TensorBoard"

    def __init__(self, log_dir: str | Path = DEFAULT_TB_DIR) -> None:
        self.log_dir = Path(log_dir)
        self.where = str(log_dir)

    def folder(self, facts: RunFacts) -> Path:
        """Names from a store are untrusted: both parts go by the slug rule."""
        path = self.log_dir / (slug(facts.group) or SINGLE_RUNS)
        return check_inside(path / (slug(facts.path.name) or "run"), self.log_dir)

    def log_run(
        self, run_dir: Path, *, study: str | None, label: str | None, seed: int | None
    ) -> bool:
        """Scalars per epoch, final scores and texts; False if logged already."""
        facts = read_run(run_dir, study, label, seed)
        folder = self.folder(facts)
        marker = {"run_path": str(facts.path), "fingerprint": facts.fingerprint}
        if _read_marker(folder / _MARKER) == marker:
            return False
        (folder / _MARKER).unlink(missing_ok=True)
        for old in folder.glob("events.out.tfevents.*"):
            old.unlink()
        writer = summary_writer_class()(log_dir=str(folder))
        try:
            _write_events(writer, facts)
        finally:
            writer.close()
        atomic_write_text(folder / _MARKER, json.dumps(marker) + "\n")
        return True


def _read_marker(path: Path) -> Any:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None


def _write_events(writer: Any, facts: RunFacts) -> None:
    for row in facts.history:
        for key in EPOCH_METRICS:
            if row.get(key) is not None:
                writer.add_scalar(tb_tag(key), float(row[key]), int(row["epoch"]))
    for key, value in facts.final_metrics().items():
        writer.add_scalar(tb_tag(key), value, facts.last_epoch)
    writer.add_text("summary", f"```\n{facts.summary}\n```")
    config = json.dumps(facts.record.meta["config"], indent=2)
    writer.add_text("config", f"```\n{config}\n```")
    lines = [f"- {k}: {v}" for k, v in facts.tags().items() if k != KEY_TAG]
    writer.add_text("run", "\n".join(lines))


# -------------------------------------------------------------- choosing one


def log_location(kind: str, uri: str | None = None) -> str:
    """Where a logger of `kind` writes: the tracking URI, or the log folder."""
    if kind == "mlflow":
        return uri or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_MLFLOW_URI
    return uri or DEFAULT_TB_DIR


def make_logger(kind: str, uri: str | None = None, flag: str = "--log") -> RunLogger:
    """The logger `--log KIND [--log-uri URI]` asks for; its package must be there."""
    if kind not in LOG_KINDS:
        raise CnnlabError(must_be_one_of(flag, LOG_KINDS, repr(kind)))
    module, name = _NEEDS[kind]
    if find_spec(module) is None:
        raise CnnlabError(f"{flag} {kind} needs {name}: pip install 'cnnlab[interop]'")
    if kind == "mlflow":
        check_mlflow_uri(log_location(kind, uri), "--log-uri" if uri else None)
        return MlflowLogger(uri)
    return TensorBoardLogger(uri or DEFAULT_TB_DIR)


# MLflow's tracking URI schemes (mlflow.tracking: its store registry), a database
# dialect written with its driver as well: postgresql+psycopg2://...
MLFLOW_SCHEMES = (
    "http",
    "https",
    "file",
    "sqlite",
    "postgresql",
    "mysql",
    "mssql",
    "databricks",
    "databricks-uc",
    "uc",
)
# Database files cnnlab itself owns: MLflow would add its tables to them.
OWN_DATABASES = ("cnnlab.sqlite", "optuna.sqlite")


def check_mlflow_uri(uri: str, flag: str | None) -> None:
    """Refuse a tracking URI MLflow cannot use, before anything is trained: an
    unknown scheme, a plain path naming a file (MLflow wants a folder there), or
    a database cnnlab owns. `flag` names where it came from (None: the variable
    MLFLOW_TRACKING_URI)."""
    where = f"{flag} {uri}" if flag else f"MLFLOW_TRACKING_URI={uri}"
    example = (
        "Give http://HOST:PORT (a tracking server), sqlite:///mlflow.db (a "
        "database file) or a folder"
    )
    scheme = urlsplit(uri).scheme.lower() if "://" in uri else ""
    if "://" in uri and scheme.split("+")[0] not in MLFLOW_SCHEMES:
        raise CnnlabError(
            f"{where}: MLflow does not know the scheme '{scheme}'. {example}."
        )
    if not scheme:
        path = Path(uri)
        if path.exists() and not path.is_dir():
            raise CnnlabError(
                f"{where}: is a file; a plain path is the folder MLflow keeps its "
                f"runs in. {example}."
            )
        if ":" in uri:
            raise CnnlabError(f"{where}: is neither a URI nor a folder. {example}.")
        return
    if scheme == "sqlite":
        # sqlite:///NAME: the file NAME, relative unless it starts with / itself
        path = Path(uri.split(":///", 1)[-1].split("?", 1)[0])
        if path.name in OWN_DATABASES or _is_cnnlab_store(path):
            raise CnnlabError(
                f"{where}: is cnnlab's own database; MLflow would add its tables to "
                "it. Give MLflow a file of its own, e.g. sqlite:///mlflow.db."
            )


def _is_cnnlab_store(path: Path) -> bool:
    """True for an existing SQLite file holding cnnlab's tables (read only)."""
    if not path.is_file():
        return False
    try:
        target = quote(str(path.resolve()))
        with sqlite3.connect(f"file:{target}?mode=ro", uri=True) as db:
            rows = db.execute("SELECT name FROM sqlite_master WHERE type='table'")
            tables = {r[0] for r in rows}
    except sqlite3.Error:
        return False
    return {"studies", "trials"} <= tables and "experiments" not in tables
