"""Trials in worker processes: the CPU split, and results equal to a serial run."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
import yaml

from cnnlab.errors import CnnlabError
from cnnlab.studies.cpus import (
    PACK_WORK,
    CpuSplit,
    Packing,
    default_split,
    makespan,
    packing_for,
    plan_split,
    study_split,
)
from cnnlab.studies.runner import make_executor, run_study
from cnnlab.studies.store import Store
from cnnlab.studies.study import load_study, override
from cnnlab.util.machine import usable_cpus
from helpers import TINY_NET, cli_command, run_cli

STUDY = {
    "name": "par",
    "description": "two small nets, two seeds, one epoch",
    "seeds": [0, 1],
    "train": {"epochs": 1, "train_limit": 1000, "val_size": 300, "test_limit": 500},
    "architectures": ["conv3-small", {"label": "linear", "spec": TINY_NET}],
}
needs_two_cpus = pytest.mark.skipif(
    usable_cpus() < 2, reason="2 workers x 1 thread needs 2 usable CPUs"
)


def final(store_path: Path, study: str) -> list[tuple]:
    """Every number a report uses, per trial, for exact comparison."""
    with Store(store_path) as store:
        return sorted(
            (t.label, t.seed, t.status, t.test_loss, t.test_acc, t.train_clean_loss,
             t.train_clean_acc, tuple((r["loss"], r["acc"], r["val_loss"],
                                       r["val_acc"]) for r in t.history))
            for t in store.trials(study)
        )  # fmt: skip


@pytest.mark.parametrize(
    "cpus,trials,expected",
    [
        (1, 5, (1, 1)),
        (2, 4, (1, 2)),  # this machine: one trial at a time on both cores, as before
        (2, 1, (1, 2)),
        (3, 9, (1, 3)),
        (4, 9, (2, 2)),
        (16, 10, (8, 2)),
        (16, 4, (4, 4)),  # cores beyond 2 per worker go to threads, not idle
        (16, 1, (1, 16)),
        (64, 10, (10, 6)),  # never more workers than trials
    ],
)
def test_default_split(cpus: int, trials: int, expected: tuple[int, int]) -> None:
    split = default_split(cpus, trials)
    assert (split.workers, split.threads) == expected


def test_default_split_fits_free_memory() -> None:
    gib = 2**30
    assert default_split(16, 10, memory=3 * gib + 1) == CpuSplit(3, 5)
    assert default_split(16, 10, memory=gib // 2) == CpuSplit(1, 16)
    assert default_split(16, 10, memory=64 * gib) == CpuSplit(8, 2)


def test_default_split_never_oversubscribes() -> None:
    for cpus in range(1, 70):
        for trials in range(1, 40):
            split = default_split(cpus, trials)
            assert 1 <= split.workers <= trials and split.threads >= 1
            assert split.cpus <= cpus


def test_balanced_trials_are_packed_one_thread_per_worker_and_say_why() -> None:
    even = packing_for([("a", PACK_WORK / 4)] * 4, cpus=2)
    assert even.pack and default_split(2, 4, packing=even) == CpuSplit(2, 1)
    assert default_split(2, 4, packing=even).describe() == (
        "2 workers x 1 thread each (2 CPUs): trials side by side, 1 thread each: by "
        "their FLOPs about 25% sooner than one at a time with 2 threads"
    )  # 4 trials on 2 workers: 2 units; one at a time at 1.5x speed: 4 / 1.5 units
    assert default_split(16, 3, packing=even) == CpuSplit(3, 5)  # threads fill up
    assert default_split(16, 3, packing=even).why == ""  # not the packing's doing
    lopsided = packing_for([("big", 9 * PACK_WORK), ("b", PACK_WORK)], cpus=2)
    assert not lopsided.pack and lopsided.why.startswith("big's trial is 90% of")
    assert default_split(2, 2, packing=lopsided) == CpuSplit(1, 2)
    short = packing_for([("a", PACK_WORK / 8)] * 4, cpus=2)
    assert not short.pack and "a short study" in short.why
    assert (
        default_split(2, 4, packing=short)
        .describe()
        .startswith("1 worker x 2 threads (2 CPUs): a short study")
    )
    assert packing_for([("a", PACK_WORK)] * 4, cpus=1) == Packing()  # no choice
    assert makespan([3, 1, 1, 1], 2) == 3 and makespan([1, 1, 3], 2) == 4


def test_the_default_packs_the_quickstart_not_the_seed_study_nor_a_tiny_one(
    tmp_path: Path,
) -> None:
    cpus = usable_cpus()
    quick = study_split(load_study("quickstart"), None, "cpu")
    seed = study_split(load_study("seed"), None, "cpu")
    tiny_file = tmp_path / "t.yaml"
    tiny_file.write_text(yaml.safe_dump({
        "name": "t", "seeds": [0, 1], "train": {"epochs": 1, "train_limit": 500},
        "architectures": ["conv5-tiny", "conv3-small"]}))  # fmt: skip
    tiny = study_split(load_study(tiny_file), None, "cpu")
    if cpus >= 2:
        assert quick.threads == 1 and quick.workers == min(cpus, 9)
        assert "side by side" in quick.describe()
        assert seed.threads == 2 and "conv3-512's trial is 88% of" in seed.describe()
        assert tiny.workers == 1 and "a short study" in tiny.describe()
    assert study_split(load_study("quickstart"), 1, "cpu").why == ""  # as asked


def test_plan_split_takes_the_users_choice_and_fills_the_rest() -> None:
    assert plan_split(16, 10, workers=4) == CpuSplit(4, 4)
    assert plan_split(16, 10, threads=1) == CpuSplit(10, 1)
    assert plan_split(16, 3, threads=2) == CpuSplit(3, 2)
    assert plan_split(16, 2, workers=8) == CpuSplit(2, 8)  # 2 trials: 2 workers
    assert plan_split(2, 4, workers=2, threads=1) == CpuSplit(2, 1)
    assert CpuSplit(2, 1).describe() == "2 workers x 1 thread each (2 CPUs)"
    assert CpuSplit(1, 2).describe() == "1 worker x 2 threads (2 CPUs)"


@pytest.mark.parametrize(
    "workers,threads,phrases",
    [
        (2, 2, ["--workers 2 x --threads 2 needs 4 CPUs", "2 are usable",
                "--workers 1 --threads 2 or --workers 2 --threads 1"]),
        (3, None, ["--workers 3 needs at least 3 CPUs", "Use --workers 2 or fewer"]),
        (None, 3, ["--threads 3 is more than the 2 CPU(s)", "--threads 2 or fewer"]),
    ],
)  # fmt: skip
def test_plan_split_refuses_more_than_the_cpus(
    workers: int | None, threads: int | None, phrases: list[str]
) -> None:
    with pytest.raises(CnnlabError) as err:
        plan_split(2, 4, workers, threads)
    assert all(p in str(err.value) for p in phrases), str(err.value)


@pytest.fixture(scope="module")
def two_runs(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, str]:
    """The study one trial at a time (1 thread) and in 2 workers x 1 thread."""
    folder = tmp_path_factory.mktemp("parallel")
    (folder / "par.yaml").write_text(yaml.safe_dump(STUDY))
    if usable_cpus() >= 2:
        run_cli("study", "par.yaml", "--out", "serial", "--workers", "1",
               "--threads", "1", cwd=folder, check=True)  # fmt: skip
        result = run_cli("study", "par.yaml", "--out", "parallel", "--workers", "2",
                        "--threads", "1", cwd=folder, check=True)  # fmt: skip
        return folder, result.err
    return folder, ""


@pytest.mark.slow
@needs_two_cpus
def test_parallel_results_equal_the_serial_ones(two_runs: tuple[Path, str]) -> None:
    folder, stderr = two_runs
    assert "2 workers x 1 thread each (2 CPUs)" in stderr
    assert sum(line.startswith("Trial ") for line in stderr.splitlines()) == 4
    serial = final(folder / "serial" / "cnnlab.sqlite", "par")
    parallel = final(folder / "parallel" / "cnnlab.sqlite", "par")
    assert parallel == serial  # bitwise: 1 thread each, same seeds
    assert len(parallel) == 4 and {t[2] for t in parallel} == {"completed"}
    with Store(folder / "parallel" / "cnnlab.sqlite") as store:
        keys = [(r.label, r.seed) for r in store.trial_rows("par")]
        assert sorted(keys) == sorted(set(keys)) and len(keys) == 4
        assert store.study("par").environment["workers"] == 2
    runs = folder / "parallel" / "par" / "runs"
    for run in sorted(runs.iterdir()):
        meta = json.loads((run / "run.json").read_text())
        assert meta["status"] == "completed" and meta["environment"]["threads"] == 1


@pytest.mark.slow
@needs_two_cpus
def test_parallel_rerun_skips_finished_trials(two_runs: tuple[Path, str]) -> None:
    folder, _ = two_runs
    result = run_cli("study", "par.yaml", "--out", "parallel", "--workers", "2",
                    cwd=folder, check=True)  # fmt: skip
    assert result.err.count("already complete: skipped") == 4


@pytest.mark.slow
@needs_two_cpus
def test_worker_error_is_one_line(two_runs: tuple[Path, str]) -> None:
    folder, _ = two_runs
    result = run_cli("study", "par.yaml", "--out", "parallel", "--workers", "2",
                    "--train-limit", "900", cwd=folder)  # fmt: skip
    assert result.code == 2
    errors = [line for line in result.err.splitlines() if "error" in line.lower()]
    assert len(errors) == 1 and "run with other settings (train_limit)" in errors[0]
    assert "Traceback" not in result.err


def test_cli_refuses_more_workers_than_cpus(tmp_path: Path) -> None:
    (tmp_path / "par.yaml").write_text(yaml.safe_dump(STUDY))
    cpus = usable_cpus()
    result = run_cli("study", "par.yaml", "--out", "out", "--workers", str(cpus),
                    "--threads", "2", cwd=tmp_path)  # fmt: skip
    assert result.code == 2
    assert f"needs {2 * cpus} CPUs, but {cpus} are usable here" in result.err
    assert not (tmp_path / "out").exists()  # refused before anything was written


def _children(pid: int) -> list[int]:
    """Processes whose parent is `pid` (Linux /proc)."""
    found = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue  # it exited meanwhile
        if int(fields[1]) == pid:
            found.append(int(stat.parent.name))
    return found


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.mark.slow
@needs_two_cpus
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_ctrl_c_stops_workers_and_rerun_resumes(two_runs: tuple[Path, str]) -> None:
    folder, _ = two_runs
    doc = STUDY | {"name": "stopme", "seeds": [0]}
    doc["train"] = doc["train"] | {"epochs": 3, "train_limit": 2000}
    (folder / "stopme.yaml").write_text(yaml.safe_dump(doc))
    args = ["study", "stopme.yaml", "--workers", "2", "--threads", "1", "--out"]
    threads = torch.get_num_threads()
    try:  # the reference: in this process, one trial at a time, 1 thread
        study = override(load_study(folder / "stopme.yaml"), threads=1)
        run_study(study, folder / "clean", make_executor(study, workers=1))
    finally:
        torch.set_num_threads(threads)

    proc = subprocess.Popen(cli_command(*args, "stopped"),
                            cwd=folder, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE, text=True)  # fmt: skip
    run_json = folder / "stopped" / "stopme" / "runs" / "conv3-small-s0" / "run.json"
    deadline = time.monotonic() + 300
    while not (run_json.exists() and '"epochs_done": 1' in run_json.read_text()):
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    workers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
    assert len(workers) == 2
    proc.send_signal(signal.SIGINT)  # the parent only: it stops the workers
    _, stderr = proc.communicate(timeout=300)
    assert proc.returncode == 130, stderr
    assert "Run the same command again to resume" in stderr
    assert not [pid for pid in workers if _alive(pid)]
    assert json.loads(run_json.read_text())["status"] == "interrupted"

    run_cli(*args, "stopped", cwd=folder, check=True)
    clean = final(folder / "clean" / "cnnlab.sqlite", "stopme")
    assert final(folder / "stopped" / "cnnlab.sqlite", "stopme") == clean


@pytest.mark.slow
@needs_two_cpus
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
def test_workers_die_with_a_killed_parent(tmp_path: Path) -> None:
    doc = STUDY | {"train": STUDY["train"] | {"epochs": 50, "train_limit": 3000}}
    (tmp_path / "par.yaml").write_text(yaml.safe_dump(doc))
    proc = subprocess.Popen(cli_command("study", "par.yaml",
                             "--out", "out", "--workers", "2", "--threads", "1"),
                            cwd=tmp_path, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)  # fmt: skip
    run_json = tmp_path / "out" / "par" / "runs" / "conv3-small-s0" / "run.json"
    deadline = time.monotonic() + 300
    while not run_json.exists():
        assert proc.poll() is None and time.monotonic() < deadline
        time.sleep(0.02)
    workers = [p for p in _children(proc.pid) if "spawn_main" in _cmdline(p)]
    assert len(workers) == 2
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 30
    while [pid for pid in workers if _alive(pid)]:
        assert time.monotonic() < deadline, "orphaned workers kept running"
        time.sleep(0.05)


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_text().replace("\0", " ")
    except OSError:
        return ""
