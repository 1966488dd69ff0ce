"""The study store: one SQLite file indexing studies, trials and per-epoch history.

Artefacts (weights, checkpoints, curves) stay in the run folders; the store holds what
tables and reports query. It runs in WAL mode with a busy timeout, and every write is
one transaction, so two studies writing to one store at once both finish intact and a
killed process leaves the last committed state.

Also here, for the folders beside the store: `folder_lock` (one writer per study
folder, released by the kernel when its process dies, however it dies) and
`remove_temp_files` (what a killed atomic write leaves behind).
"""

from __future__ import annotations

import json
import os
import sqlite3
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import RunError
from cnnlab.util.fsio import lock_holders

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]
from cnnlab.studies.results import StudyInfo, TrialResult, TrialRow
from cnnlab.training.metrics import HISTORY_KEYS
from cnnlab.training.status import Status

SCHEMA_VERSION = 3  # 2: trials.test_reads, the predictions table; 3: precision
BUSY_TIMEOUT_S = 60  # a writer waits this long for another's transaction to end
BUSY_POLL_S = 2  # ... saying so once it has waited this long
_SCHEMA = """
CREATE TABLE IF NOT EXISTS studies (
    name TEXT PRIMARY KEY,
    description TEXT NOT NULL DEFAULT '',
    config TEXT NOT NULL,            -- the resolved study document, JSON
    environment TEXT NOT NULL,       -- machine and versions, JSON
    created TEXT NOT NULL,
    updated TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS trials (
    id INTEGER PRIMARY KEY,
    study TEXT NOT NULL REFERENCES studies(name) ON DELETE CASCADE,
    label TEXT NOT NULL,
    seed INTEGER NOT NULL,
    arch_name TEXT NOT NULL,
    optimizer TEXT NOT NULL,
    params INTEGER NOT NULL,
    flops INTEGER NOT NULL,
    spec TEXT NOT NULL,              -- the architecture, JSON
    config TEXT NOT NULL,            -- the training config, JSON
    run_path TEXT NOT NULL,
    status TEXT NOT NULL,            -- a cnnlab.training.status.Status value
    test_loss REAL, test_acc REAL,
    train_clean_loss REAL, train_clean_acc REAL,
    stopped_epoch INTEGER,
    updated TEXT NOT NULL,
    test_reads INTEGER,              -- times the run scored the test set
    precision TEXT,                  -- fp32, bf16 or fp16 (NULL in older rows: fp32)
    UNIQUE (study, label, seed)
);
CREATE TABLE IF NOT EXISTS epochs (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    epoch INTEGER NOT NULL,
    loss REAL, acc REAL, val_loss REAL, val_acc REAL, seconds REAL,
    PRIMARY KEY (trial_id, epoch)
);
CREATE TABLE IF NOT EXISTS predictions (
    trial_id INTEGER NOT NULL REFERENCES trials(id) ON DELETE CASCADE,
    split TEXT NOT NULL,             -- 'test' or 'val'
    labels BLOB NOT NULL,            -- uint8 per image
    predicted BLOB NOT NULL,         -- uint8 per image
    true_prob BLOB NOT NULL,         -- float16 per image
    PRIMARY KEY (trial_id, split)
);
"""
_UPGRADES = {  # from schema version N to N + 1
    1: ["ALTER TABLE trials ADD COLUMN test_reads INTEGER"],
    2: ["ALTER TABLE trials ADD COLUMN precision TEXT"],
}
_REQUIRED_COLUMNS = {  # what cnnlab reads, checked in a store it did not create
    "studies": ("name", "config", "environment", "created", "updated"),
    "trials": ("id", "study", "label", "seed", "status", "run_path", "config"),
    "epochs": ("trial_id", "epoch"),
}
_ARRAY_TYPES = {"labels": np.uint8, "predicted": np.uint8, "true_prob": np.float16}


class Store:
    """An open study store; use as a context manager or call `close`."""

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # isolation_level=None: no implicit transactions; `transaction` does all.
            # The short timeout is one wait of `_waiting`'s loop, not the whole wait.
            self.db = sqlite3.connect(
                self.path, timeout=BUSY_POLL_S, isolation_level=None
            )
            self.db.row_factory = sqlite3.Row
            self._waiting(self._check_tables)  # before any write: it may not be ours
            self._waiting(lambda: self.db.execute("PRAGMA journal_mode=WAL"))
            self.db.execute("PRAGMA foreign_keys=ON")
            self._migrate()
        except sqlite3.DatabaseError as err:
            raise self._fault(err, "open") from err
        except OSError as err:
            raise RunError(
                f"{self.path}: cannot create the store ({err.strerror}). Choose a "
                "writable --out."
            ) from err

    def _migrate(self) -> None:
        version = self.db.execute("PRAGMA user_version").fetchone()[0]
        if version > SCHEMA_VERSION:
            raise RunError(
                f"{self.path}: store schema {version} is newer than this cnnlab "
                f"understands ({SCHEMA_VERSION}). Upgrade cnnlab."
            )
        if version == SCHEMA_VERSION:  # up to date: no write, so a reader never waits
            return
        with self.transaction():
            has_trials = self.db.execute(
                "SELECT 1 FROM sqlite_master WHERE type='table' AND name='trials'"
            ).fetchone()
            if has_trials:
                for step in range(max(version, 1), SCHEMA_VERSION):
                    for statement in _UPGRADES[step]:
                        self.db.execute(statement)
            for statement in _SCHEMA.split(";"):  # executescript would COMMIT early
                if statement.strip():
                    self.db.execute(statement)
            self.db.execute(f"PRAGMA user_version={SCHEMA_VERSION}")

    def _check_tables(self) -> None:
        """Tables of cnnlab's names must have cnnlab's columns: a database of
        another program may well have a table called `trials`."""
        for table, columns in _REQUIRED_COLUMNS.items():
            have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
            missing = [c for c in columns if c not in have]
            if have and missing:
                raise RunError(
                    f"{self.path}: not a cnnlab store: its table '{table}' lacks the "
                    f"columns {', '.join(missing)} (another program's database?). "
                    "Point --out at another folder."
                )

    def _waiting(self, statement: Any) -> Any:
        """Run `statement`, waiting (and saying so) while another process holds the
        store's write lock; after BUSY_TIMEOUT_S a RunError says who holds it."""
        start = time.monotonic()
        told = False
        while True:
            try:
                return statement()
            except sqlite3.OperationalError as err:
                waited = time.monotonic() - start
                if not _is_busy(err) or waited >= BUSY_TIMEOUT_S:
                    raise
                if not told:
                    told = True
                    print(
                        f"waiting for {self.path}: {self._holders()} is writing to "
                        f"it (waiting up to {BUSY_TIMEOUT_S} s)...",
                        file=sys.stderr,
                        flush=True,
                    )
                time.sleep(0.1)  # some busy errors return at once, without waiting

    def _holders(self) -> str:
        """'process 4242' (or 'another process'): who holds locks on the store."""
        files = []
        for suffix in ("", "-wal", "-shm"):
            try:
                st = os.stat(f"{self.path}{suffix}")
            except OSError:
                continue
            files.append((st.st_dev, st.st_ino))
        pids = lock_holders(files)
        if not pids:
            return "another process"
        return ("process " if len(pids) == 1 else "processes ") + ", ".join(
            map(str, pids)
        )

    def _fault(self, err: sqlite3.DatabaseError, doing: str) -> RunError:
        """A RunError for an SQLite failure: busy, disk full, or not a store."""
        text = " ".join(str(err).split())
        if _is_busy(err):
            return RunError(
                f"{self.path}: still busy after {BUSY_TIMEOUT_S} s: {self._holders()} "
                f"holds its write lock. The store is not damaged; wait for that "
                "process to finish (or stop it), then run the command again."
            )
        if _is_fault(err):
            return RunError(
                f"{self.path}: cannot {doing} the store ({text}). Free some disk "
                "space, then run the same command again: the store keeps its last "
                "complete state, and a study re-run records what this one could not."
            )
        if doing == "open":
            return RunError(
                f"{self.path}: not a usable cnnlab store ({text}). Point --out at "
                "another folder, or move the file away."
            )
        return RunError(f"{self.path}: cannot {doing} the store ({text}).")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """BEGIN IMMEDIATE ... COMMIT: take the write lock first, roll back on error.

        An SQLite failure (disk full, busy past the timeout) becomes a RunError."""
        try:
            self._waiting(lambda: self.db.execute("BEGIN IMMEDIATE"))
        except sqlite3.DatabaseError as err:
            raise self._fault(err, "write to") from err
        try:
            yield self.db
            self.db.execute("COMMIT")
        except BaseException as err:
            if self.db.in_transaction:
                try:
                    self.db.execute("ROLLBACK")
                except sqlite3.DatabaseError:
                    pass  # SQLite rolled back already (e.g. disk full)
            if isinstance(err, sqlite3.OperationalError) and _is_fault(err):
                raise self._fault(err, "write to") from err
            raise  # anything else is a bug: keep its traceback

    def close(self) -> None:
        self.db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # ------------------------------------------------------------------ writes

    def save_study(self, info: StudyInfo, now: str) -> None:
        with self.transaction() as db:
            db.execute(
                "INSERT INTO studies (name, description, config, environment, created,"
                " updated) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT(name) DO UPDATE SET"
                " description=excluded.description, config=excluded.config,"
                " environment=excluded.environment, updated=excluded.updated",
                (
                    info.name,
                    info.description,
                    json.dumps(info.config),
                    json.dumps(info.environment),
                    now,
                    now,
                ),
            )

    def save_trial(
        self, study: str, label: str, seed: int, fields: dict[str, Any]
    ) -> int:
        """Insert or update one trial's row; returns its id."""
        fields = _encoded(fields)
        names = ", ".join(fields)
        marks = ", ".join("?" for _ in fields)
        updates = ", ".join(f"{k}=excluded.{k}" for k in fields)
        with self.transaction() as db:
            db.execute(
                f"INSERT INTO trials (study, label, seed, {names}) VALUES (?, ?, ?,"
                f" {marks}) ON CONFLICT(study, label, seed) DO UPDATE SET {updates}",
                (study, label, seed, *fields.values()),
            )
            row = db.execute(
                "SELECT id FROM trials WHERE study=? AND label=? AND seed=?",
                (study, label, seed),
            ).fetchone()
        return int(row["id"])

    def plan_trials(
        self, study: str, planned: Sequence[tuple[str, int, dict[str, Any]]]
    ) -> None:
        """Rows for the (label, seed, fields) trials the store does not hold yet, in
        the given order, in one transaction; rows already there stay as they are.
        Rows then keep the study's order however its workers race to start them."""
        with self.transaction() as db:
            for label, seed, given in planned:
                fields = _encoded(given)
                db.execute(
                    f"INSERT INTO trials (study, label, seed, {', '.join(fields)}) "
                    f"VALUES (?, ?, ?, {', '.join('?' for _ in fields)}) "
                    "ON CONFLICT(study, label, seed) DO NOTHING",
                    (study, label, seed, *fields.values()),
                )

    def update_trial(self, trial_id: int, **fields: Any) -> None:
        """Change some columns of an existing trial row."""
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as db:
            db.execute(
                f"UPDATE trials SET {sets} WHERE id=?", (*fields.values(), trial_id)
            )

    def save_epochs(self, trial_id: int, rows: Sequence[dict[str, Any]]) -> None:
        """Replace a trial's history with `rows`, its whole history so far."""
        with self.transaction() as db:
            _replace_epochs(db, trial_id, rows)

    def finish_trial(
        self,
        trial_id: int,
        rows: Sequence[dict[str, Any]],
        predictions: dict[str, dict[str, np.ndarray]] | None = None,
        **fields: Any,
    ) -> None:
        """A trial's final history, per-image predictions and columns, in one
        transaction: a kill leaves either the old row or the finished one, never a
        finished row whose epochs are missing."""
        sets = ", ".join(f"{k}=?" for k in fields)
        with self.transaction() as db:
            _replace_epochs(db, trial_id, rows)
            db.execute("DELETE FROM predictions WHERE trial_id=?", (trial_id,))
            for split, arrays in (predictions or {}).items():
                blobs = [
                    np.asarray(arrays[k], dtype=t).tobytes()
                    for k, t in _ARRAY_TYPES.items()
                ]
                db.execute(
                    "INSERT INTO predictions (trial_id, split, labels, predicted,"
                    " true_prob) VALUES (?, ?, ?, ?, ?)",
                    (trial_id, split, *blobs),
                )
            db.execute(
                f"UPDATE trials SET {sets} WHERE id=?", (*fields.values(), trial_id)
            )

    def mark_interrupted(self, study: str, now: str) -> int:
        """Trials of `study` left 'running' by a dead process -> 'interrupted'.

        Call it only while holding the study's `folder_lock`: then no live process
        is running them. Returns how many rows changed.
        """
        with self.transaction() as db:
            cursor = db.execute(
                "UPDATE trials SET status=?, updated=? WHERE study=? AND status=?",
                (Status.INTERRUPTED, now, study, Status.RUNNING),
            )
        return cursor.rowcount

    def integrity_problems(self) -> list[str]:
        """SQLite's own check plus foreign keys; empty when the file is sound."""
        problems = [r[0] for r in self.db.execute("PRAGMA integrity_check")]
        problems = [p for p in problems if p != "ok"]
        for row in self.db.execute("PRAGMA foreign_key_check"):
            problems.append(f"row {row[1]} of {row[0]} points at a missing {row[2]}")
        return problems

    # ------------------------------------------------------------------- reads

    def study(self, name: str) -> StudyInfo:
        row = self.db.execute("SELECT * FROM studies WHERE name=?", (name,)).fetchone()
        if row is None:
            known = ", ".join(self.study_names()) or "none yet"
            raise RunError(
                f"{self.path}: no study named '{name}' (studies here: {known}). Run "
                f"`cnnlab study {name}` first, or pass the --out folder it used."
            )
        return StudyInfo(
            name=row["name"],
            description=row["description"],
            config=json.loads(row["config"]),
            environment=json.loads(row["environment"]),
            created=row["created"],
        )

    def study_names(self) -> list[str]:
        return [
            r["name"]
            for r in self.db.execute("SELECT name FROM studies ORDER BY created")
        ]

    def trial_rows(
        self,
        study: str | None = None,
        label: str | None = None,
        status: str | None = None,
    ) -> list[TrialRow]:
        """Trial rows filtered by study, label and status, in insertion order."""
        sql, args = "SELECT * FROM trials WHERE 1=1", []
        for column, value in (("study", study), ("label", label), ("status", status)):
            if value is not None:
                sql += f" AND {column}=?"
                args.append(value)
        rows = self.db.execute(sql + " ORDER BY id", args)
        return [TrialRow.from_columns(dict(r)) for r in rows]

    def history(self, trial_id: int) -> tuple[dict[str, Any], ...]:
        rows = self.db.execute(
            "SELECT * FROM epochs WHERE trial_id=? ORDER BY epoch", (trial_id,)
        )
        return tuple({k: r[k] for k in HISTORY_KEYS} for r in rows)

    def run_path(self, trial_id: int) -> Path:
        row = self.db.execute("SELECT run_path FROM trials WHERE id=?", (trial_id,))
        return Path(row.fetchone()["run_path"])

    def predictions(self, trial_id: int) -> dict[str, dict[str, np.ndarray]]:
        """A trial's per-image answers by split; {} for trials recorded without."""
        rows = self.db.execute(
            "SELECT * FROM predictions WHERE trial_id=?", (trial_id,)
        )
        return {
            r["split"]: {
                k: np.frombuffer(r[k], dtype=t) for k, t in _ARRAY_TYPES.items()
            }
            for r in rows
        }

    def trials(self, study: str) -> list[TrialResult]:
        """Every trial of a study with its history, as analysis and reports use them."""
        return [
            r.result(self.history(r.id), self.predictions(r.id))
            for r in self.trial_rows(study)
        ]


def _encoded(fields: dict[str, Any]) -> dict[str, Any]:
    """A trial row's values as stored: the spec and config as JSON text."""
    return {
        k: json.dumps(v) if k in ("spec", "config") and not isinstance(v, str) else v
        for k, v in fields.items()
    }


def _is_busy(err: sqlite3.DatabaseError) -> bool:
    text = str(err).lower()
    return "locked" in text or "busy" in text


def _is_fault(err: sqlite3.DatabaseError) -> bool:
    """A failure of the machine, not of cnnlab's SQL: busy, disk full, I/O."""
    text = str(err).lower()
    return _is_busy(err) or "full" in text or "disk i/o" in text


def _replace_epochs(
    db: sqlite3.Connection, trial_id: int, rows: Sequence[dict[str, Any]]
) -> None:
    # Delete first: epochs beyond `rows` (a run restarted from scratch, or a shorter
    # history) must not survive from an earlier attempt.
    db.execute("DELETE FROM epochs WHERE trial_id=?", (trial_id,))
    db.executemany(
        "INSERT INTO epochs (trial_id, epoch, loss, acc, val_loss, val_acc, seconds)"
        " VALUES (?, ?, ?, ?, ?, ?, ?)",
        [(trial_id, *(row.get(k) for k in HISTORY_KEYS)) for row in rows],
    )


# ------------------------------------------------------------ the study folders
