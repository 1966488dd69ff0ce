"""The Ray executor: the in-process results on Ray, a killed worker resumed, ASHA.

Ray is an optional extra; without it the tests marked `ray` are skipped. One local
Ray instance (2 CPUs) serves the module; the first test starts and stops its own, as
`cnnlab study --executor ray` does, and checks that no Ray process outlives it.
"""

import importlib.util
import json
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from cnnlab.errors import CnnlabError
from cnnlab.reporting.analysis import comparison_rows
from cnnlab.studies.executors.ray import INSTALL_HINT
from cnnlab.studies.runner import make_executor, run_study
from cnnlab.studies.store import Store
from cnnlab.studies.study import STORE_FILE, Study, parse_study
from helpers import TINY_NET, run_cli, write_colour_folder
from helpers import store_results as results


def run_study_ray(study, out, **options):
    """The study on Ray through the one runner, as `cnnlab study --executor ray`."""
    return run_study(study, out, make_executor(study, "ray", **options))


HAVE_RAY = importlib.util.find_spec("ray") is not None
needs_ray = pytest.mark.skipif(
    not HAVE_RAY, reason="Ray is not installed: pip install 'cnnlab[ray]'"
)


def make_study(name: str, seeds: list[int], archs: list[Any], **train: Any) -> Study:
    # threads: 1 in both executors. A Ray trial gets torch threads from its CPUs
    # (1 here), the in-process run all cores by default, and a different thread
    # count changes the summation order of matrix products: with 2 vs 1 threads the
    # linear net's clean train loss differed in the 7th digit.
    base = {"train_limit": 500, "val_size": 200, "test_limit": 200, "threads": 1}
    doc = {"name": name, "seeds": seeds, "train": base | train, "architectures": archs}
    return parse_study(doc, source=f"{name}.yaml")


def tiny_study() -> Study:
    # A preset (conv layers, dropout) and an inline net with its own lr.
    archs = [
        "conv5-tiny",
        {"label": "linear", "spec": TINY_NET, "train": {"lr": 0.003}},
    ]
    return make_study("tiny", [0, 1], archs, epochs=1)


def rows(out: Path) -> list[dict]:
    """The store's trial rows as written, but for the row id, run folder and time."""
    with Store(out / STORE_FILE) as store:
        found = [r.as_dict() for r in store.trial_rows("tiny")]
    for row in found:
        assert Path(row.pop("run_path")).parent == out / "tiny" / "runs"
        del row["id"], row["updated"]
    return found


def descendants(pid: int) -> list[int]:
    """Live descendant processes of `pid`, from /proc (Ray starts its as children)."""
    children: dict[int, list[int]] = {}
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            try:
                with open(f"/proc/{entry}/stat") as fh:
                    fields = fh.read().rsplit(")", 1)[1].split()
            except OSError:
                continue
            if fields[0] != "Z":  # a zombie has exited already
                children.setdefault(int(fields[1]), []).append(int(entry))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


def command(pid: int) -> str:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def ray_processes() -> list[str]:
    """Ray's processes started from this one (raylet, gcs_server, workers)."""
    return [c for c in map(command, descendants(os.getpid())) if "ray" in c]


def wait_for_no_ray_processes(timeout: float = 30) -> list[str]:
    deadline = time.monotonic() + timeout
    while ray_processes() and time.monotonic() < deadline:
        time.sleep(0.2)
    return ray_processes()


@pytest.fixture(scope="module")
def in_process(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny study run by the in-process executor."""
    out = tmp_path_factory.mktemp("in-process")
    run_study(tiny_study(), out)
    return out


@pytest.fixture(scope="module")
def local_ray() -> Iterator[Any]:
    """One 2-CPU Ray instance for the module; run_study_ray uses it as it finds it."""
    import ray

    ray.init(
        num_cpus=2,
        include_dashboard=False,
        log_to_driver=False,
        logging_level=logging.ERROR,
    )
    yield ray
    ray.shutdown()
    assert wait_for_no_ray_processes() == []


def test_without_ray_the_executor_says_how_to_install(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(sys.modules, "ray", None)  # `import ray` -> ImportError
    with pytest.raises(CnnlabError, match=r"pip install 'cnnlab\[ray\]'"):
        run_study_ray(tiny_study(), tmp_path)
    assert INSTALL_HINT == "install with: pip install 'cnnlab[ray]'"
    assert not (tmp_path / STORE_FILE).exists()


@pytest.mark.slow
@pytest.mark.parametrize(
    "options,phrase",
    [
        ({"early_stop": "hyperband"}, "early_stop must be one of asha"),
        ({"cpus_per_trial": 0}, "cpus_per_trial must be a positive number"),
    ],
)
def test_bad_options_are_refused_before_ray_starts(
    tmp_path: Path, options: dict, phrase: str
) -> None:
    with pytest.raises(CnnlabError, match=phrase):
        run_study_ray(tiny_study(), tmp_path, **options)


def test_early_stopping_needs_validation(tmp_path: Path) -> None:
    study = make_study("blind", [0], ["conv5-medium"], validation="none")
    with pytest.raises(CnnlabError, match="validation: none"):
        run_study_ray(study, tmp_path, early_stop="asha")


@pytest.mark.slow
@pytest.mark.ray
@needs_ray
def test_same_results_as_in_process(tmp_path: Path, in_process: Path) -> None:
    """On its own local instance, as the CLI starts it: none of it outlives the run.

    This test runs before the module's shared instance exists (`local_ray`).
    """
    outcomes = run_study_ray(tiny_study(), tmp_path)
    assert [(o.trial.label, o.trial.seed, o.status) for o in outcomes] == [
        ("conv5-tiny", 0, "trained"), ("linear", 0, "trained"),
        ("conv5-tiny", 1, "trained"), ("linear", 1, "trained")]  # fmt: skip
    assert wait_for_no_ray_processes() == []
    ray_results = results(tmp_path, "tiny")
    assert ray_results == results(in_process, "tiny")  # exactly equal
    assert {r[5] for r in ray_results} == {"completed"}
    assert rows(tmp_path) == rows(in_process)  # the same rows, in the same order
    run = tmp_path / "tiny" / "runs" / "linear-s1"
    meta = json.loads((run / "run.json").read_text())
    assert meta["status"] == "completed" and (run / "weights.pt").is_file()

    again = run_study_ray(tiny_study(), tmp_path)
    assert {o.status for o in again} == {"skipped"}
    assert results(tmp_path, "tiny") == ray_results


def kill_first_trial_worker(run_dir: Path, killed: dict[str, Any]) -> None:
    """Once epoch 1 is checkpointed, SIGKILL the Ray worker training the trial."""
    run_json = run_dir / "run.json"
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        try:
            meta = json.loads(run_json.read_text())
        except (OSError, ValueError):
            meta = {}
        if meta.get("epochs_done") == 1 and meta.get("status") == "running":
            break
        time.sleep(0.02)
    else:
        return
    killed["history"] = (run_dir / "history.csv").read_text()
    workers = [
        pid
        for pid in descendants(os.getpid())
        if command(pid).startswith("ray::ImplicitFunc")  # Tune's trial actors
    ]
    for pid in workers:
        os.kill(pid, signal.SIGKILL)
    killed["pids"] = workers


@pytest.mark.slow
@pytest.mark.ray
@needs_ray
def test_killed_worker_resumes_from_its_checkpoint(
    tmp_path: Path, local_ray: Any
) -> None:
    # Two epochs: killed in the second, after the first is checkpointed. 3,000
    # images make the second epoch and the scoring last long enough to be caught.
    study = make_study("killme", [0], ["conv5-medium"], epochs=2, train_limit=3000)
    run_study(study, tmp_path / "clean")

    killed: dict[str, Any] = {}
    run_dir = tmp_path / "killed" / "killme" / "runs" / "conv5-medium-s0"
    killer = threading.Thread(target=kill_first_trial_worker, args=(run_dir, killed))
    killer.start()
    outcomes = run_study_ray(study, tmp_path / "killed")
    killer.join()

    assert len(killed.get("pids", [])) == 1, "no trial worker was found to kill"
    assert [o.status for o in outcomes] == ["trained"]
    assert results(tmp_path / "killed", "killme") == results(
        tmp_path / "clean", "killme"
    )
    # Resumed, not restarted: epoch 1 (with its wall-clock seconds) is the one
    # checkpointed before the kill.
    history = (run_dir / "history.csv").read_text().splitlines()
    assert history[:2] == killed["history"].splitlines()[:2]
    assert len(history) == 3


@pytest.mark.slow
@pytest.mark.ray
@needs_ray
def test_asha_stops_the_weak_trial_early(tmp_path: Path, local_ray: Any) -> None:
    weak = {
        "label": "weak",
        "spec": TINY_NET,
        "train": {"optimizer": "sgd", "lr": 1e-6},
    }
    # Two epochs: the rung at epoch 1 stops the weak net before its last epoch.
    study = make_study("asha", [0], ["conv5-medium", weak], epochs=2, train_limit=1000)
    # 2 CPUs per trial on 2 CPUs: one trial at a time, in study order, so the strong
    # net sets the bar at every rung before the weak one reaches it.
    outcomes = run_study_ray(study, tmp_path, early_stop="asha", cpus_per_trial=2)
    assert [(o.trial.label, o.status) for o in outcomes] == [
        ("conv5-medium", "trained"), ("weak", "stopped_early")]  # fmt: skip
    with Store(tmp_path / STORE_FILE) as store:
        strong, stopped = store.trials("asha")
    assert (strong.status, strong.stopped_epoch, len(strong.history)) == (
        "completed", None, 2)  # fmt: skip
    assert (stopped.status, stopped.stopped_epoch, len(stopped.history)) == (
        "stopped_early", 1, 1)  # fmt: skip
    assert stopped.test_acc < 0.3 < strong.test_acc  # scored at the epoch it stopped
    assert stopped.train_clean_acc is not None
    assert [r.stopped_early for r in comparison_rows([strong, stopped])] == [0, 1]
    run = json.loads((tmp_path / "asha" / "runs" / "weak-s0" / "run.json").read_text())
    assert (run["status"], run["stopped_epoch"]) == ("stopped_early", 1)

    again = run_study_ray(study, tmp_path, early_stop="asha", cpus_per_trial=2)
    assert [o.status for o in again] == ["skipped", "stopped_early"]


def write_study(folder: Path, name: str, seeds: list[int], archs: list[Any]) -> Path:
    base = {"train_limit": 500, "val_size": 200, "test_limit": 200, "threads": 1}
    doc = {"name": name, "seeds": seeds, "train": base | {"epochs": 1},
           "architectures": archs}  # fmt: skip
    path = folder / f"{name}.yaml"
    path.write_text(json.dumps(doc))  # JSON is YAML
    return path


@pytest.mark.parametrize("flags", [["--early-stop", "asha"], ["--address", "auto"]])
def test_ray_only_flags_need_the_ray_executor(tmp_path: Path, flags: list) -> None:
    path = write_study(tmp_path, "cli", [0], ["conv5-tiny"])
    result = run_cli("study", str(path), "--out", str(tmp_path / "out"), *flags,
                    cwd=tmp_path)  # fmt: skip
    assert result.code == 2
    assert f"{flags[0]} needs --executor ray" in result.err
    assert not (tmp_path / "out" / STORE_FILE).exists()


@pytest.mark.slow
@pytest.mark.ray
@needs_ray
def test_cli_runs_a_study_on_a_local_ray_instance(tmp_path: Path) -> None:
    path = write_study(tmp_path, "cli", [0, 1], ["conv5-tiny"])
    result = run_cli("study", str(path), "--out", str(tmp_path / "out"),
                    "--executor", "ray", cwd=tmp_path)  # fmt: skip
    assert result.code == 0, result.err
    assert "conv5-tiny" in result.out and "Wall time" in result.out
    with Store(tmp_path / "out" / STORE_FILE) as store:
        assert [(t.seed, t.status) for t in store.trials("cli")] == [
            (0, "completed"), (1, "completed")]  # fmt: skip
    assert (tmp_path / "out" / "cli" / "report" / "report.html").is_file()


# ------------------------------------------------------------- colour data on Ray


def colour_study(folder: Path) -> Study:
    """Two trials on a tiny colour folder (16x16x3, 3 classes): a preset, which
    takes the data's shape and class count, and an inline net without input_shape."""
    net = {"layers": ["Flatten", {"Dense": {"units": 3, "activation": "softmax"}}]}
    doc = {
        "name": "colour",
        "seeds": [0],
        "data": str(folder),
        "train": {"epochs": 1, "threads": 1},
        "architectures": ["conv5-tiny", {"label": "linear", "spec": net}],
    }
    return parse_study(doc, source="colour.yaml", base_dir=folder.parent)


@pytest.mark.slow
@pytest.mark.ray
@needs_ray
def test_colour_folder_trains_on_ray_as_in_process(
    tmp_path: Path, local_ray: Any
) -> None:
    folder = write_colour_folder(tmp_path / "colours", (16, 16), (10, 4))
    run_study(colour_study(folder), tmp_path / "in-process")
    # 2 CPUs per trial on 2 CPUs: both trials in turn in one trial actor (each
    # actor is a process importing torch), as in-process.
    outcomes = run_study_ray(colour_study(folder), tmp_path / "ray", cpus_per_trial=2)
    assert [o.status for o in outcomes] == ["trained", "trained"]
    on_ray = results(tmp_path / "ray", "colour")
    assert on_ray == results(tmp_path / "in-process", "colour")
    assert {r[5] for r in on_ray} == {"completed"}
    run = tmp_path / "ray" / "colour" / "runs" / "conv5-tiny-s0"
    meta = json.loads((run / "run.json").read_text())
    assert meta["environment"]["class_names"] == ["blue", "green", "red"]
    spec = yaml.safe_load((run / "spec.yaml").read_text())
    assert (spec["input_shape"], spec["layers"][-1]["units"]) == ([16, 16, 3], 3)
    # The store counts the nets as they train on 16x16x3 with 3 classes:
    # conv5-tiny 76 + 52 + 36 + 40 + 27 weights, linear 16 * 16 * 3 * 3 + 3.
    assert [(r[0], r[3]) for r in on_ray] == [("conv5-tiny", 231), ("linear", 2307)]
