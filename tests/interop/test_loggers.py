"""Runs and studies logged to MLflow (a real `mlflow server` over HTTP) and to
TensorBoard event files, read back with each backend's own reader; a logger that
fails (server down) never stops a study; export-study logs without retraining."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from helpers import TINY_NET, Result, error_line

SEEDS = (0, 1)
TRAIN = {"epochs": 2, "train_limit": 1000, "test_limit": 200, "val_size": 200}
ARTIFACTS = {"curves.png", "history.csv", "run.json", "spec.yaml", "summary.txt"}
SERVER_START_S = 120  # bounded wait for `mlflow server` to answer /health


# ------------------------------------------------------------------ helpers


def free_port() -> int:
    """A TCP port nothing listens on (bound to port 0, then released)."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def write_study(folder: Path, name: str, **train: object) -> Path:
    """A two-seed study of the one-Dense-layer net, as a YAML file in `folder`;
    `train` changes some of TRAIN."""
    doc = {
        "name": name,
        "seeds": list(SEEDS),
        "train": TRAIN | train,
        "architectures": [{"label": "dense", "spec": TINY_NET}],
    }
    path = folder / f"{name}.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def run_study(folder: Path, name: str, log: Any = None) -> Path:
    """Train the study under folder/studies (with `log`, if given); its --out."""
    from cnnlab import api

    out = folder / "studies"
    api.run_study(write_study(folder, name), out, log=log)
    return out


def stored(out: Path, study: str) -> dict[int, Any]:
    """The store's trials of `study`, by seed."""
    from cnnlab.studies.store import Store

    with Store(out / "cnnlab.sqlite") as store:
        return {t.seed: t for t in store.trials(study)}


def mtimes(out: Path) -> dict[str, int]:
    """Every file's modification time under the study's run folders."""
    return {str(p): p.stat().st_mtime_ns for p in sorted(out.rglob("runs/**/*"))}


def stop_group(proc: subprocess.Popen[bytes]) -> None:
    """SIGTERM the process's whole group (server and workers), SIGKILL if slow."""
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=30)
    except ProcessLookupError:
        pass
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=30)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:  # the group's other members, too
        try:
            os.killpg(proc.pid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    os.killpg(proc.pid, signal.SIGKILL)


def wait_until_up(url: str, proc: subprocess.Popen[bytes], log: Path) -> None:
    """Poll /health until it answers 200; fail with the server's log if it dies."""
    deadline = time.monotonic() + SERVER_START_S
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            pytest.fail(f"mlflow server exited: {log.read_text()[-2000:]}")
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as answer:
                if answer.status == 200:
                    return
        except OSError:
            pass
        time.sleep(0.3)
    pytest.fail(
        f"mlflow server not up in {SERVER_START_S} s: {log.read_text()[-2000:]}"
    )


def client(uri: str) -> Any:
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def mlflow_runs(uri: str, experiment: str) -> dict[int, Any]:
    """The experiment's active runs, by their cnnlab.seed tag."""
    exp = client(uri).get_experiment_by_name(experiment)
    assert exp is not None, f"no experiment {experiment!r}"
    runs = client(uri).search_runs([exp.experiment_id])
    return {int(r.data.tags["cnnlab.seed"]): r for r in runs}


def check_mlflow_record(uri: str, run: Any, trial: Any) -> None:
    """One MLflow run against the store's trial: params, metrics, tags, artifacts."""
    c = client(uri)
    assert run.info.run_name == f"dense-s{trial.seed}"
    assert run.info.status == "FINISHED"
    params = run.data.params
    assert params["epochs"] == "2" and params["train_limit"] == "1000"
    assert params["seed"] == str(trial.seed) and params["optimizer"] == "adam"
    assert (params["params"], params["flops"]) == (str(trial.params), str(trial.flops))
    tags = run.data.tags
    assert tags["cnnlab.study"] == trial.study and tags["cnnlab.label"] == "dense"
    assert tags["cnnlab.status"] == "completed"
    assert tags["cnnlab.run_path"] == str(Path(trial.run_path).resolve())
    history = c.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == trial.column("val_loss")
    assert run.data.metrics["test_acc"] == trial.test_acc
    assert run.data.metrics["train_clean_acc"] == trial.train_clean_acc
    assert {a.path for a in c.list_artifacts(run.info.run_id)} == ARTIFACTS


def tb_events(folder: Path) -> Any:
    from tensorboard.backend.event_processing.event_accumulator import (
        EventAccumulator,
    )

    events = EventAccumulator(str(folder))
    events.Reload()
    return events


def check_tb_record(log_dir: Path, study: str, trial: Any) -> None:
    """One trial's event files against the store's trial and its history.csv."""
    from cnnlab.training.runs import open_run

    events = tb_events(log_dir / study / f"dense-s{trial.seed}")
    rows = open_run(trial.run_path).history().epochs
    for key, tag in (("loss", "train/loss"), ("acc", "train/acc"),
                     ("val_loss", "val/loss"), ("val_acc", "val/acc")):  # fmt: skip
        scalars = events.Scalars(tag)
        assert [s.step for s in scalars] == [1, 2]
        assert [s.value for s in scalars] == pytest.approx([r[key] for r in rows])
    assert events.Scalars("test/acc")[-1].value == pytest.approx(trial.test_acc)
    text = events.Tensors("summary/text_summary")[0].tensor_proto.string_val[0]
    assert b"Total params: 7,850" in text and b"dense" in text


# ----------------------------------------------------------------- fixtures


@pytest.fixture(autouse=True)
def quick_mlflow_retries(monkeypatch: pytest.MonkeyPatch) -> None:
    """The retry settings MlflowLogger sets by default, undone after each test."""
    from cnnlab.interop.loggers import MLFLOW_ENV_DEFAULTS

    for name, value in MLFLOW_ENV_DEFAULTS.items():
        monkeypatch.setenv(name, os.environ.get(name, value))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture(scope="module")
def mlflow_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A real `mlflow server` on 127.0.0.1 (SQLite backend in a temp folder).

    Without its job execution (GenAI jobs and trace rollups, which cnnlab never
    asks for): that starts a job runner and seven huey consumers, each a process
    importing MLflow, beside the tracking server the tests talk to.
    """
    pytest.importorskip("mlflow")
    root = tmp_path_factory.mktemp("mlflow-server")
    port = free_port()
    log = root / "server.log"
    cmd = [sys.executable, "-m", "mlflow", "server", "--host", "127.0.0.1",
           "--port", str(port), "--workers", "1",
           "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
           "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with open(log, "wb") as sink:
        proc = subprocess.Popen(cmd, cwd=root, env=env, stdout=sink,
                                stderr=subprocess.STDOUT, start_new_session=True)  # fmt: skip
    try:
        url = f"http://127.0.0.1:{port}"
        wait_until_up(url, proc, log)
        yield url
    finally:
        stop_group(proc)


@pytest.fixture(scope="module")
def tb_study(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished study ('later', under folder/studies), logged as it ran to
    TensorBoard event files under folder/logs. Tests only read it (export-study
    leaves the run folders as they are, which its test checks)."""
    pytest.importorskip("tensorboard")
    from cnnlab.interop.loggers import TensorBoardLogger

    folder = tmp_path_factory.mktemp("tb-study")
    run_study(folder, "later", TensorBoardLogger(folder / "logs"))
    return folder


# -------------------------------------------------------------------- MLflow


@pytest.mark.slow
def test_a_study_logs_each_trial_to_a_real_mlflow_server(
    tmp_path: Path, mlflow_uri: str
) -> None:
    from cnnlab.interop.loggers import MlflowLogger

    out = run_study(tmp_path, "tiny", MlflowLogger(mlflow_uri))
    trials = stored(out, "tiny")
    runs = mlflow_runs(mlflow_uri, "tiny")
    assert sorted(runs) == list(SEEDS)
    for seed in SEEDS:
        check_mlflow_record(mlflow_uri, runs[seed], trials[seed])
    summary = client(mlflow_uri).download_artifacts(
        runs[0].info.run_id, "summary.txt", str(tmp_path)
    )
    assert "Total params: 7,850" in Path(summary).read_text()

    run_study(tmp_path, "tiny", MlflowLogger(mlflow_uri))  # a re-run: all skipped
    again = mlflow_runs(mlflow_uri, "tiny")
    assert {s: r.info.run_id for s, r in again.items()} == {
        s: r.info.run_id for s, r in runs.items()
    }


@pytest.mark.slow
def test_a_study_with_the_mlflow_server_down_completes_with_a_warning(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    pytest.importorskip("mlflow")
    uri = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    study = write_study(tmp_path, "down", epochs=1)  # what is logged is not read
    result = cli("study", study, "--log", "mlflow", "--log-uri", uri)
    assert result.code == 0, result.err
    warnings = [line for line in result.err.splitlines() if "warning" in line]
    assert len(warnings) == 2, result.err
    assert "Connection refused" in warnings[0] and "intact" in warnings[0]
    assert warnings[1].endswith(
        f"2 trial(s) of study 'down' were not logged to MLflow; log them later "
        f"with: cnnlab export-study down --to mlflow --log-uri {uri} --out studies"
    )
    trials = stored(tmp_path / "studies", "down")
    assert [t.status for t in trials.values()] == ["completed", "completed"]


@pytest.mark.slow
def test_export_study_logs_a_finished_study_without_retraining(
    tmp_path: Path, mlflow_uri: str, cli: Callable[..., Result], tb_study: Path
) -> None:
    out = tb_study / "studies"  # logged live to other event files: tb_study/logs
    before = mtimes(out)
    trials = stored(out, "later")
    for to, uri in (("mlflow", mlflow_uri), ("tensorboard", str(tmp_path / "tb"))):
        for _ in range(2):  # the second export finds every trial logged already
            result = cli("export-study", "later", "--to", to, "--log-uri", uri,
                         "--out", out)  # fmt: skip
            assert result.code == 0, result.err
            assert f"2 finished trial(s) of study 'later' logged to {uri}" in result.out
    runs = mlflow_runs(mlflow_uri, "later")
    assert sorted(runs) == list(SEEDS)
    for seed in SEEDS:
        check_mlflow_record(mlflow_uri, runs[seed], trials[seed])
        check_tb_record(tmp_path / "tb", "later", trials[seed])
        events = list((tmp_path / "tb" / "later" / f"dense-s{seed}").glob("events.*"))
        assert len(events) == 1
    assert mtimes(out) == before


# --------------------------------------------------------------- TensorBoard


@pytest.mark.slow
def test_a_study_logs_event_files_tensorboard_reads(tb_study: Path) -> None:
    trials = stored(tb_study / "studies", "later")
    assert sorted(trials) == list(SEEDS)
    for trial in trials.values():
        check_tb_record(tb_study / "logs", "later", trial)


@pytest.mark.slow
def test_train_logs_its_run_to_tensorboard(
    cli: Callable[..., Result], tiny_net: Path, tmp_path: Path
) -> None:
    pytest.importorskip("tensorboard")
    result = cli("train", tiny_net, "--epochs", "2", "--train-limit", "1000",
                 "--test-limit", "200", "--val-size", "200", "--out", "run",
                 "--log", "tensorboard", "--log-uri", "logs")  # fmt: skip
    assert result.code == 0, result.err
    events = tb_events(tmp_path / "logs" / "cnnlab" / "run")
    assert [s.step for s in events.Scalars("val/loss")] == [1, 2]


# ---------------------------------------------------------- without training


def test_a_missing_extra_is_one_line_before_any_training(
    cli: Callable[..., Result], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from cnnlab.interop import loggers

    monkeypatch.setattr(loggers, "find_spec", lambda name: None)
    result = cli("study", write_study(tmp_path, "nope"), "--log", "mlflow")
    error_line(result, "--log mlflow needs MLflow: pip install 'cnnlab[interop]'")
    assert not (tmp_path / "studies").exists()


def test_log_uri_without_log_is_refused(
    cli: Callable[..., Result], tiny_net: Path
) -> None:
    error_line(cli("train", tiny_net, "--log-uri", "x"), "--log-uri needs --log")


def test_a_failing_logger_is_one_warning_then_a_count(tmp_path: Path) -> None:
    from types import SimpleNamespace

    from cnnlab.interop.study_logging import StudyLogging

    class Refused:
        kind, title, where = "mlflow", "MLflow", "http://127.0.0.1:1"
        calls = 0

        def log_run(self, run_dir: Path, **_: Any) -> bool:
            self.calls += 1
            raise ConnectionError("[Errno 111] Connection refused")

    lines: list[str] = []
    logger = Refused()
    logging = StudyLogging(logger, "s", tmp_path, warn=lines.append)
    trial = SimpleNamespace(label="a", seed=0, run_dir=lambda d: d / "runs" / "a-s0")
    for _ in range(3):
        logging(SimpleNamespace(trial=trial))
    logging.finish()
    assert logger.calls == 1  # not asked again once it failed
    assert len(lines) == 2 and "(ConnectionError" not in lines[0]
    assert "failed ([Errno 111] Connection refused)" in lines[0]
    assert "3 trial(s) of study 's' were not logged" in lines[1]
    assert "cnnlab export-study s --to mlflow --log-uri http://127.0.0.1:1" in lines[1]


def test_tensorboard_tags_name_the_split() -> None:
    from cnnlab.interop.loggers import tb_tag

    assert [tb_tag(k) for k in ("loss", "val_acc", "test_loss", "train_clean_acc")] == [
        "train/loss", "val/acc", "test/loss", "train_clean/acc"
    ]  # fmt: skip
