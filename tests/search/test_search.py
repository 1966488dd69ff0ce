"""cnnlab search: real searches on MNIST subsets, a few tiny candidates each.

Candidates are small nets (one Dense, or one conv) trained 1-2 epochs on 600-1,000
images; the Optuna file and the cnnlab store are read back to check the records.
"""

from __future__ import annotations

import itertools
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml

from helpers import CLI_ENV, Result, cli_command, run_cli

optuna = pytest.importorskip("optuna")

import cnnlab  # noqa: E402
from cnnlab.search.tuner import OPTUNA_FILE  # noqa: E402

TINY_TRAIN = {"epochs": 1, "train_limit": 400, "test_limit": 100, "val_size": 100}
DENSE = {"layers": ["Flatten", {"Dense": {"units": "$units", "activation": "relu"}},
                    {"Dense": {"units": 10, "activation": "softmax"}}]}  # fmt: skip


def test_template_fills_values_repeats_blocks_and_keeps_optional_layers() -> None:
    from cnnlab.search.space import fill

    template = {"layers": [
        {"repeat": "$blocks", "layers": [
            {"Conv2D": {"filters": "$width", "kernel_size": 3}},
            {"when": "$bn", "layers": ["BatchNormalization"]},
            {"MaxPooling2D": {"pool_size": 2}}]},
        "Flatten", {"Dense": {"units": 10}}]}  # fmt: skip
    conv, pool = (
        {"Conv2D": {"filters": 8, "kernel_size": 3}},
        {"MaxPooling2D": {"pool_size": 2}},
    )
    assert fill(template, {"blocks": 2, "width": 8, "bn": False})["layers"] == [
        conv, pool, conv, pool, "Flatten", {"Dense": {"units": 10}}]  # fmt: skip
    assert fill(template, {"blocks": 1, "width": 8, "bn": True})["layers"] == [
        conv, "BatchNormalization", pool, "Flatten", {"Dense": {"units": 10}}]  # fmt: skip


def write_search(folder: Path, search: dict, train: dict | None = None, **top) -> Path:
    doc = {"name": "s", "train": train or TINY_TRAIN, "seeds": [0], **top,
           "search": search}  # fmt: skip
    path = folder / "s.yaml"
    path.write_text(yaml.safe_dump(doc, sort_keys=False))
    return path


def optuna_trials(out: Path, name: str = "s") -> list:
    study = optuna.load_study(study_name=name, storage=f"sqlite:///{out / OPTUNA_FILE}")
    return study.get_trials(deepcopy=False)


def store_rows(out: Path) -> list[tuple]:
    with sqlite3.connect(out / "cnnlab.sqlite") as db:
        return db.execute(
            "SELECT study, label, seed, status, test_reads FROM trials ORDER BY id"
        ).fetchall()


@pytest.fixture(scope="module")
def grid_search(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A 2 x 2 grid, two finalists over two seeds: the shared search of this module."""
    folder = tmp_path_factory.mktemp("grid")
    space = {"units": {"choice": [4, 8]}, "lr": {"choice": [0.01, 0.003]}}
    search = {"sampler": "grid", "finalists": 2, "space": space, "architecture": DENSE}
    path = write_search(folder, search, seeds=[0, 1])
    return folder / "out", cnnlab.run_search(path, folder / "out", progress=None)


def test_grid_is_the_cartesian_product_and_only_finalists_read_the_test_set(
    grid_search: tuple[Path, object],
) -> None:
    out, report = grid_search
    tried = sorted((t.params["units"], t.params["lr"]) for t in optuna_trials(out))
    assert tried == sorted(itertools.product([4, 8], [0.01, 0.003]))
    rows = store_rows(out)
    search_rows = [r for r in rows if r[0] == "s"]
    final_rows = [r for r in rows if r[0] == "s-final"]
    assert len(search_rows) == 4 and {r[4] for r in search_rows} == {0}
    assert len(final_rows) == 2 * 2 and {r[4] for r in final_rows} == {1}
    assert report.best_file is not None and report.best_file.is_file()
    text = report.markdown_path.read_text()
    assert "overturned" in text and "## Finalists" in text
    # finalists are shown by their values; their keys stay the store's labels
    finalists = text.split("## Finalists")[1].split("\n\n")[1].splitlines()[2:]
    assert len(finalists) == 2 and all(r.startswith("| units=") for r in finalists)
    assert all(" lr=0.0" in r for r in finalists)
    assert not any("c-" in line for line in report.lines)
    assert {r[1][:2] for r in final_rows} == {"c-"}


@pytest.mark.slow
def test_cli_search_records_an_invalid_point_and_best_yaml_trains(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    # Both commands in process: what is checked is their output and files (the
    # process boundary of `cnnlab search` is the SIGTERM and SIGKILL tests').
    conv = {"layers": [{"Conv2D": {"filters": 4, "kernel_size": "$kernel",
                                   "activation": "relu"}},
                       {"MaxPooling2D": {"pool_size": 2}}, "Flatten",
                       {"Dense": {"units": 10, "activation": "softmax"}}]}  # fmt: skip
    search = {"trials": 2, "sampler": "grid", "finalists": 1,
              "space": {"kernel": {"choice": [3, 5, 40]}}, "architecture": conv}  # fmt: skip
    write_search(tmp_path, search)
    result = cli("search", "s.yaml", "--out", "out")
    assert result.code == 0, result.err
    assert "Winner: out/s/best.yaml" in result.out
    invalid = [
        t for t in optuna_trials(tmp_path / "out") if t.user_attrs.get("invalid")
    ]
    assert [t.params["kernel"] for t in invalid] == [40]
    assert (
        "kernel_size [40, 40] is larger than its input"
        in invalid[0].user_attrs["invalid"]
    )
    assert "invalid" in (tmp_path / "out/s/report/report.md").read_text()
    trained = cli("train", "out/s/best.yaml", "--out", "again")
    assert trained.code == 0, trained.err
    config = json.loads((tmp_path / "again/run.json").read_text())["config"]
    assert config["train_limit"] == 400 and config["epochs"] == 1


def test_same_seed_same_sequence_and_nsga_front(tmp_path: Path) -> None:
    space = {"units": {"int": [2, 32], "log": True}, "lr": {"float": [1e-3, 1e-2]}}
    search = {"trials": 3, "seed": 7, "finalists": 1, "space": space,
              "architecture": DENSE, "objectives": ["val_acc", "params"]}  # fmt: skip
    sequences = []
    for run in ("a", "b"):
        (tmp_path / run).mkdir()
        path = write_search(tmp_path / run, search)
        report = cnnlab.run_search(path, tmp_path / run / "out", progress=None)
        sequences.append([t.params for t in optuna_trials(tmp_path / run / "out")])
    assert sequences[0] == sequences[1] and len(sequences[0]) == 3
    assert "pareto" in report.figures and report.figures["pareto"].is_file()


@pytest.mark.parametrize("workers", [None, pytest.param(2, marks=pytest.mark.slow)])
def test_pruner_stops_a_weak_candidate(tmp_path: Path, workers: int | None) -> None:
    # lr 1e-7 barely moves the weights: after epoch 1 its validation loss is far
    # above the median of the candidates before it, so the median pruner stops it.
    # Seed 5 draws it last of the three; with 2 workers, alone in the second batch.
    space = {"lr": {"choice": [0.01, 0.005, 1.0e-7]}}
    search = {"sampler": "grid", "seed": 5, "pruner": "median", "finalists": 1,
              "space": space, "architecture": {"layers": DENSE["layers"][:1] + DENSE["layers"][2:]}}  # fmt: skip
    train = TINY_TRAIN | {"epochs": 2}
    path = write_search(tmp_path, search, train)
    cnnlab.run_search(path, tmp_path / "out", workers=workers, progress=None)
    trials = optuna_trials(tmp_path / "out")
    order = [t.params["lr"] for t in sorted(trials, key=lambda t: t.number)]
    assert order.index(1.0e-7) >= 2  # after the pruner's two startup trials
    pruned = [t for t in trials if t.state.name == "PRUNED"]
    assert 1.0e-7 in [t.params["lr"] for t in pruned]
    assert any(t.state.name == "COMPLETE" for t in trials)
    weak = next(t for t in pruned if t.params["lr"] == 1.0e-7)
    assert list(weak.intermediate_values) == [1]  # stopped after its first epoch
    statuses = [r[3] for r in store_rows(tmp_path / "out") if r[0] == "s"]
    assert statuses.count("stopped_early") == len(pruned)


@pytest.mark.slow
def test_sigkill_mid_search_then_rerun_resumes(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    space = {"units": {"int": [8, 64]}}
    search = {"trials": 4, "finalists": 1, "space": space, "architecture": DENSE}
    train = {"epochs": 3, "train_limit": 3000, "test_limit": 200, "val_size": 500}
    write_search(tmp_path, search, train)
    args = ("search", "s.yaml", "--out", "out")
    env = os.environ | CLI_ENV
    proc = subprocess.Popen(cli_command(*args), cwd=tmp_path, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)  # fmt: skip
    db = tmp_path / "out" / OPTUNA_FILE
    deadline = time.monotonic() + 240
    try:
        while time.monotonic() < deadline:
            time.sleep(0.3)
            if not db.exists():
                continue
            try:  # Optuna creates the file a moment before its tables
                with sqlite3.connect(db) as con:
                    rows = con.execute("SELECT state FROM trials").fetchall()
            except sqlite3.OperationalError:
                continue
            states = [s for (s,) in rows]
            if states.count("COMPLETE") >= 1 and "RUNNING" in states:
                epochs = list((tmp_path / "out/s/runs").glob("*/checkpoint.pt"))
                if len(epochs) >= 2:  # the running one has a checkpoint
                    break
        else:
            pytest.fail("the search never reached its second candidate")
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    before = {t.number: t.state.name for t in optuna_trials(tmp_path / "out")}
    done_before = sorted(n for n, s in before.items() if s == "COMPLETE")
    result = cli(*args)  # the re-run in process: its output and files are checked
    assert result.code == 0, result.err
    assert "Resuming: 1 interrupted trial(s) asked again" in result.out + result.err
    after = optuna_trials(tmp_path / "out")
    complete = [t for t in after if t.state.name in ("COMPLETE", "PRUNED")]
    assert len(complete) == 4
    labels = [t.user_attrs["label"] for t in complete]
    assert len(set(labels)) == len(labels)  # nothing trained twice
    assert all(before[n] == "COMPLETE" for n in done_before)
    interrupted = [t for t in after if t.user_attrs.get("interrupted")]
    assert len(interrupted) == 1
    again = [t for t in complete if t.params == interrupted[0].params]
    assert len(again) == 1  # the same point, resumed from its run folder
    run_dir = next((tmp_path / "out/s/runs").glob(f"{again[0].user_attrs['label']}-s0"))
    meta = json.loads((run_dir / "run.json").read_text())
    assert meta["status"] == "completed"
    with sqlite3.connect(tmp_path / "out/cnnlab.sqlite") as con:
        assert (
            con.execute(
                "SELECT SUM(test_reads) FROM trials WHERE study='s'"
            ).fetchone()[0]
            == 0
        )


def test_search_report_renders_in_chromium(
    grid_search: tuple[Path, object], tmp_path: Path
) -> None:
    from helpers import run_chromium

    report = grid_search[1]
    dom = run_chromium(report.html_path, tmp_path, "--dump-dom")
    assert dom.returncode == 0, dom.stderr
    assert dom.stdout.count("<img") == len(report.figures) >= 2
    assert "Finalists" in dom.stdout and "best.yaml" in dom.stdout


def test_missing_search_block_and_study_with_only_a_search(tmp_path: Path) -> None:
    space = {"units": {"choice": [4, 8]}}
    write_search(tmp_path, {"sampler": "grid", "space": space, "architecture": DENSE})
    result = run_cli("study", "s.yaml", "--out", "out", cwd=tmp_path)
    assert result.code == 2 and "run it with `cnnlab search`" in result.err
    assert not (tmp_path / "out").exists()
    assert sys.executable  # the CLI ran as a real process


def test_without_optuna_one_line_says_how_to_install(tmp_path: Path) -> None:
    space = {"units": {"choice": [4, 8]}}
    write_search(tmp_path, {"sampler": "grid", "space": space, "architecture": DENSE})
    code = (
        "import sys; sys.modules['optuna'] = None; from cnnlab.cli import main; "
        "sys.exit(main(['search', 's.yaml', '--out', 'out']))"
    )
    result = subprocess.run([sys.executable, "-c", code], cwd=tmp_path,
                            capture_output=True, text=True, timeout=120)  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        "error: search needs Optuna, which is not installed here; "
        "pip install 'cnnlab[search]'"
    ]
    assert not (tmp_path / "out").exists()


def test_a_diverging_candidate_is_recorded_and_the_search_goes_on(
    tmp_path: Path,
) -> None:
    space = {"lr": {"choice": [0.01, 1.0e30]}}
    search = {"sampler": "grid", "finalists": 1, "space": space,
              "architecture": {"layers": [DENSE["layers"][0], {"Dense": {"units": 16,
                               "activation": "relu"}}, DENSE["layers"][2]]}}  # fmt: skip
    path = write_search(tmp_path, search, TINY_TRAIN | {"optimizer": "sgd"})
    report = cnnlab.run_search(path, tmp_path / "out", progress=None)
    states = {t.params["lr"]: t.state.name for t in optuna_trials(tmp_path / "out")}
    assert states == {0.01: "COMPLETE", 1.0e30: "FAIL"}
    assert "1 diverged" in report.lines[0]
    assert report.best_file is not None


def test_time_budget_stops_sampling_then_the_finalists_run(tmp_path: Path) -> None:
    space = {"units": {"int": [4, 64]}}
    search = {"trials": 50, "finalists": 1, "space": space, "architecture": DENSE}
    path = write_search(tmp_path, search)
    # A tiny trial takes a fraction of a second: 50 of them can fit in 10 s.
    report = cnnlab.run_search(path, tmp_path / "out", time_budget=2, progress=None)
    trained = [t for t in optuna_trials(tmp_path / "out") if t.state.name == "COMPLETE"]
    assert 1 <= len(trained) < 50
    assert report.final is not None and len(report.final.trials) == 1


@pytest.mark.slow
def test_sigterm_mid_search_is_one_line_exit_143_then_rerun_finishes(
    tmp_path: Path, cli: Callable[..., Result]
) -> None:
    """SIGTERM (kill, systemd, Slurm) ends a search as it ends every command: 143
    and one line saying what is kept; running it again finishes the search."""
    space = {"units": {"int": [8, 64]}}
    search = {"trials": 3, "finalists": 1, "space": space, "architecture": DENSE}
    # Two epochs: SIGTERM comes once the first candidate's first epoch is saved.
    train = {"epochs": 2, "train_limit": 1000, "test_limit": 200, "val_size": 300}
    write_search(tmp_path, search, train)
    args = ("search", "s.yaml", "--out", "out")
    proc = subprocess.Popen(cli_command(*args), cwd=tmp_path, env=os.environ | CLI_ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    deadline = time.monotonic() + 240
    while not list((tmp_path / "out").glob("s/runs/*/checkpoint.pt")):
        assert proc.poll() is None, proc.communicate()
        assert time.monotonic() < deadline, "no candidate finished an epoch"
        time.sleep(0.1)
    proc.terminate()
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 143, err
    assert err.splitlines()[-1] == (
        "interrupted (SIGTERM): finished candidates and the last epoch are saved in "
        "out. Run the same command again to resume."
    )
    result = cli(*args)  # the re-run in process: its output and files are checked
    assert result.code == 0, result.err
    states = [t.state.name for t in optuna_trials(tmp_path / "out")]
    assert "RUNNING" not in states, states  # the interrupted candidate was closed
    assert states.count("COMPLETE") >= 3, states
    assert "Winner: " in result.out


def test_a_search_on_a_colour_folder_fits_its_candidates_to_the_images(
    tmp_path: Path,
) -> None:
    from helpers import COLOUR_CLASSES, write_colour_folder

    images = write_colour_folder(tmp_path / "imgs", shape=(12, 16), per_class=(12, 4))
    template = {"layers": [
        {"Conv2D": {"filters": "$width", "kernel_size": 3, "activation": "relu"}},
        "Flatten", {"Dense": {"units": len(COLOUR_CLASSES), "activation": "softmax"}}]}  # fmt: skip
    search = {"sampler": "grid", "finalists": 1, "architecture": template,
              "space": {"width": {"choice": [2, 4]}}}  # fmt: skip
    train = {"epochs": 1, "batch_size": 8}
    path = write_search(tmp_path, search, train=train, data=str(images))
    report = cnnlab.run_search(path, tmp_path / "out", progress=None)
    assert report.best_file is not None
    best = yaml.safe_load(report.best_file.read_text())
    assert best["layers"][0]["filters"] in (2, 4)
    assert best["input_shape"] == [12, 16, 3]  # fitted to the folder's images
    finalist_runs = [r for r in store_rows(tmp_path / "out") if r[0] == "s-final"]
    assert len(finalist_runs) == 1 and finalist_runs[0][3] == "completed"
    (run,) = (tmp_path / "out" / "s-final" / "runs").iterdir()
    meta = json.loads((run / "run.json").read_text())
    assert meta["environment"]["class_names"] == sorted(COLOUR_CLASSES)
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    assert spec["input_shape"] == [12, 16, 3]  # fitted to the folder's images
