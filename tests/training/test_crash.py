"""Crash safety: SIGKILL at random moments, then resume; and the pieces that make it
safe (one transaction per finished trial, stale rows and temporary files swept,
one writer per study folder).

The full kill test (>= 24 kills at random moments) is `python3 scripts/kill_test.py`;
a short run of it (one round, one kill at each kind of moment) is the first test here.
"""

from __future__ import annotations

import csv
import importlib.util
import json
import os
import signal
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnnlab import api
from cnnlab.errors import CnnlabError, RunError
from cnnlab.reporting.report import build_report
from cnnlab.studies.results import StudyInfo
from cnnlab.studies.runner import run_study
from cnnlab.studies.store import Store
from cnnlab.studies.study import parse_study
from cnnlab.studies.trial import run_trial
from cnnlab.training import runs as runs_module
from cnnlab.training.config import TrainConfig
from cnnlab.training.runs import create_run
from cnnlab.util.fsio import folder_lock, remove_temp_files
from helpers import ROOT, TINY_NET, run_cli

TRAIN = {"epochs": 2, "train_limit": 300, "val_size": 100, "test_limit": 100}


def _kill_test():  # scripts/ is not a package
    spec = importlib.util.spec_from_file_location("kill_test", ROOT / "scripts" / "kill_test.py")  # fmt: skip
    module = importlib.util.module_from_spec(spec)
    sys.modules["kill_test"] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
def test_sigkill_at_random_moments_then_resume_gives_the_same_results(
    tmp_path: Path,
) -> None:
    kill_test = _kill_test()
    # Training's moments first, then the report's, then anywhere in the last launch.
    kinds = ["checkpoint", "store", "run-json", "report", "delay"]
    assert sorted(kinds) == sorted(kill_test.TARGETS)
    figures = kill_test.run(kills=len(kinds), seed=4, work=tmp_path,
                            per_round=len(kinds), seeds=(0,), targets=kinds)  # fmt: skip
    print(figures.report())
    assert figures.differences == []
    assert figures.kills == len(kinds) and figures.resumes == len(kinds)
    assert figures.records > 50  # rows, files and tensors read back and compared


# ------------------------------------------------------------------ the store


def _study(tmp_path: Path, **train: object) -> object:
    doc = {"name": "s", "seeds": [0], "train": TRAIN | train,
           "architectures": [{"label": "net", "spec": TINY_NET}]}  # fmt: skip
    return parse_study(doc, source="s.yaml", base_dir=tmp_path)


def _row(store: Store, study: str = "s") -> dict[str, Any]:
    (row,) = store.trial_rows(study)
    return row.as_dict()


def test_a_refused_trial_leaves_its_row_as_it_was(tmp_path: Path) -> None:
    first, changed = _study(tmp_path), _study(tmp_path, train_limit=200)
    trial = first.trials()[0]
    study_dir = tmp_path / "out" / "s"
    create_run(trial.run_dir(study_dir), trial.arch, trial.config, {})
    with Store(tmp_path / "out" / "cnnlab.sqlite") as store:
        store.save_study(StudyInfo("s", "", {}), "t")
        store.save_trial("s", "net", 0, {"arch_name": "net", "optimizer": "adam",
                         "params": 7850, "flops": 15680, "spec": "{}",
                         "config": json.dumps(trial.config.to_dict()),
                         "run_path": "x", "status": "completed", "updated": "t"})  # fmt: skip
        with pytest.raises(CnnlabError, match=r"other settings \(train_limit\)"):
            run_trial(changed.trials()[0], changed, store, study_dir)
        row = _row(store)
        assert row["status"] == "completed"
        assert json.loads(row["config"])["train_limit"] == 300


def _store_with_trial(path: Path) -> tuple[Store, int]:
    store = Store(path)
    store.save_study(StudyInfo("s", "", {}), "t")
    trial_id = store.save_trial("s", "net", 0, {"arch_name": "net", "optimizer": "adam",
                                "params": 1, "flops": 1, "spec": "{}", "config": "{}",
                                "run_path": "x", "status": "running", "updated": "t"})  # fmt: skip
    return store, trial_id


def _epochs(n: int) -> list[dict]:
    return [{"epoch": e, "loss": 1.0 / e, "acc": 0.5, "val_loss": None,
             "val_acc": None, "seconds": 1.0} for e in range(1, n + 1)]  # fmt: skip


def test_epochs_are_replaced_not_merged(tmp_path: Path) -> None:
    store, trial_id = _store_with_trial(tmp_path / "s.sqlite")
    with store:
        store.save_epochs(trial_id, _epochs(3))
        store.save_epochs(trial_id, _epochs(2))  # a run restarted from scratch
        assert [r["epoch"] for r in store.history(trial_id)] == [1, 2]


def test_finishing_a_trial_is_one_transaction(tmp_path: Path) -> None:
    store, trial_id = _store_with_trial(tmp_path / "s.sqlite")
    with store:
        store.save_epochs(trial_id, _epochs(1))
        with pytest.raises(sqlite3.OperationalError):  # fails after the epochs
            store.finish_trial(trial_id, _epochs(2), no_such_column=1)
        assert len(store.history(trial_id)) == 1 and _row(store)["status"] == "running"
        store.finish_trial(trial_id, _epochs(2), status="completed", test_acc=0.9)
        assert len(store.history(trial_id)) == 2
        assert _row(store)["status"] == "completed" and not store.integrity_problems()


def test_running_rows_of_a_dead_process_become_interrupted(tmp_path: Path) -> None:
    store, _ = _store_with_trial(tmp_path / "s.sqlite")
    with store:
        assert store.mark_interrupted("other", "t") == 0
        assert store.mark_interrupted("s", "t2") == 1
        assert _row(store)["status"] == "interrupted" and _row(store)["updated"] == "t2"


# ------------------------------------------------------------ study folders


def test_one_writer_per_folder_and_a_dead_holder_frees_it(tmp_path: Path) -> None:
    folder = tmp_path / "study"
    with folder_lock(folder, "study 's'"):
        with pytest.raises(RunError, match="study 's' is already running in another"):
            with folder_lock(folder, "study 's'"):
                pass
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path; "
         "from cnnlab.util.fsio import folder_lock\n"
         "with folder_lock(Path(sys.argv[1]), 'x'):\n"
         "    print('locked', flush=True); time.sleep(60)", str(folder)],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    assert holder.stdout.readline().strip() == "locked"
    with pytest.raises(RunError, match="already running"):
        with folder_lock(folder, "x"):
            pass
    os.kill(holder.pid, signal.SIGKILL)
    holder.wait()
    holder.stdout.close()
    with folder_lock(folder, "x"):  # the kernel dropped the dead holder's lock
        assert not [p for p in folder.iterdir()]  # and no lock file is left


def test_a_study_already_running_elsewhere_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "s.yaml"
    path.write_text(yaml.safe_dump({"name": "s", "architectures": ["conv5-tiny"]}))
    with folder_lock(tmp_path / "out" / "s", "study 's'"):
        result = run_cli("study", path, "--out", "out", "--epochs", "1", cwd=tmp_path)
    assert result.code == 2
    assert "already running in another process" in result.err
    assert not (tmp_path / "out" / "s" / "runs").exists()


def test_temporary_files_of_killed_writers_are_swept(tmp_path: Path) -> None:
    names = [".run.json.tmp-123", ".curves.png.0a1b2c3d.tmp", ".report.html.tmp-9"]
    kept = ["run.json", "notes.tmp", ".hidden", "x.tmp-1"]
    for name in names + kept:
        (tmp_path / name).write_text("x")
    assert sorted(p.name for p in remove_temp_files(tmp_path)) == sorted(names)
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(kept)


def test_a_report_build_sweeps_what_a_killed_build_left(tmp_path: Path) -> None:
    store, trial_id = _store_with_trial(tmp_path / "s.sqlite")
    report = tmp_path / "report"
    (report / "figures").mkdir(parents=True)
    leftovers = [
        report / ".report.html.tmp-99",
        report / "figures" / ".a.png.1234abcd.tmp",
    ]
    for path in leftovers:
        path.write_text("torn")
    with store:
        store.finish_trial(trial_id, _epochs(3), status="completed", test_acc=0.9,
                           test_loss=0.3)  # fmt: skip
        built = build_report(store, "s", report)
    assert not any(p.exists() for p in leftovers)
    assert built.html_path.read_text().endswith("</html>\n")
    assert not [p for p in report.rglob("*") if ".tmp" in p.name]


def test_run_study_sweeps_and_marks_before_it_starts(tmp_path: Path) -> None:
    """A finished trial is skipped; what a killed process left is cleaned up."""
    study = _study(tmp_path, epochs=1)
    trial = study.trials()[0]
    run = create_run(
        trial.run_dir(tmp_path / "out" / "s"), trial.arch, trial.config, {}
    )
    (run.path / "history.csv").write_text(
        "epoch,loss,acc,val_loss,val_acc,seconds\n1,0.5,0.8,0.6,0.7,1.0\n")  # fmt: skip
    run.save_meta(status="completed", epochs_done=1, test={"loss": 0.4, "acc": 0.9})
    (run.path / ".checkpoint.pt.tmp-4242").write_bytes(b"torn")
    with Store(tmp_path / "out" / "cnnlab.sqlite") as store:
        store.save_study(StudyInfo("s", "", {}), "t")
        store.save_trial("s", "gone", 0, {"arch_name": "g", "optimizer": "adam",
                         "params": 1, "flops": 1, "spec": "{}", "config": "{}",
                         "run_path": "x", "status": "running", "updated": "t"})  # fmt: skip
    outcomes = run_study(study, tmp_path / "out")
    assert [o.status for o in outcomes] == ["skipped"]
    assert not (run.path / ".checkpoint.pt.tmp-4242").exists()
    with Store(tmp_path / "out" / "cnnlab.sqlite") as store:
        status = {r.label: r.status for r in store.trial_rows("s")}
        assert status == {"gone": "interrupted", "net": "completed"}
        assert store.history(store.trial_rows("s", "net")[0].id)[0]["loss"] == 0.5


# ------------------------------------------ found here, in files others own


class Killed(BaseException):
    """Stands in for SIGKILL: nothing after it runs (but `except BaseException`)."""


def test_a_kill_between_checkpoint_and_history_heals_on_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    write = runs_module.atomic_write_text

    def dies_after_the_last_checkpoint(path: Path, text: str) -> None:
        if path.name == "history.csv" and text.count("\n") == 3:  # header + 2 epochs
            raise Killed
        write(path, text)

    monkeypatch.setattr(
        runs_module, "atomic_write_text", dies_after_the_last_checkpoint
    )
    config = TrainConfig(epochs=2, train_limit=300, val_size=100, test_limit=100)
    with pytest.raises(Killed):
        api.train("conv5-tiny", config, out=tmp_path / "run")
    monkeypatch.setattr(runs_module, "atomic_write_text", write)
    api.resume(tmp_path / "run")
    meta = json.loads((tmp_path / "run" / "run.json").read_text())
    with open(tmp_path / "run" / "history.csv") as fh:
        rows = list(csv.DictReader(fh))
    assert (meta["status"], meta["epochs_done"], len(rows)) == ("completed", 2, 2)
