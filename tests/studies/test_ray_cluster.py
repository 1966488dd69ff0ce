"""A real two-node Ray cluster on this machine: `ray start --head` on 127.0.0.1 and a
second node joined with `ray start --address`, one CPU each, so that two trials at
a time (two trial actors, each importing torch) fill both nodes. A small study and
a small search run across both; their records must equal an in-process
run's, and Tune's trial actors must have run on both nodes.

The nodes are stopped by the test itself, by the processes holding their own temp
dirs: `ray stop` would stop every Ray process of the machine, other users' too.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from helpers import TINY_NET

pytestmark = [pytest.mark.ray, pytest.mark.slow]
if (
    importlib.util.find_spec("ray") is None
    or importlib.util.find_spec("optuna") is None
):
    pytest.skip("needs the ray and search extras", allow_module_level=True)

from cnnlab.search.space import parse_search  # noqa: E402
from cnnlab.studies.runner import make_executor, run_study  # noqa: E402
from cnnlab.studies.study import parse_study  # noqa: E402
from helpers import store_results as results  # noqa: E402

# One CPU each: two trials of one CPU at a time can only run on both nodes. (The
# nodes are told apart by their node IDs.)
HEAD_CPUS, WORKER_CPUS = 1, 1


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def processes_using(folder: str) -> list[int]:
    """PIDs whose command line names `folder` (a node's temp dir)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            try:
                with open(f"/proc/{entry}/cmdline", "rb") as fh:
                    if folder.encode() in fh.read():
                        found.append(int(entry))
            except OSError:
                continue
    return found


def command(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as fh:
            return fh.read()
    except OSError:
        return b""


# The order `ray stop` keeps: the raylet first, the GCS last. A GCS sent SIGTERM
# together with its raylet waits for it, and both outlast a 15 s grace period.
STOP_ORDER = (b"raylet", b"", b"gcs_server")


def stop_node(folder: str) -> list[int]:
    """SIGTERM the node's processes, the raylet first and the GCS last, each group
    given 10 s; then SIGKILL what is left. Returns the PIDs still alive (none, on
    success)."""
    for i, name in enumerate(STOP_ORDER):
        later = STOP_ORDER[i + 1 :]
        group = [
            pid
            for pid in processes_using(folder)
            if name in command(pid) and not any(n and n in command(pid) for n in later)
        ]
        for pid in group:
            try:
                os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
        deadline = time.monotonic() + 10.0
        while set(group) & set(processes_using(folder)):
            if time.monotonic() > deadline:
                break
            time.sleep(0.1)
    for pid in processes_using(folder):
        try:
            os.kill(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
    deadline = time.monotonic() + 5.0
    while processes_using(folder) and time.monotonic() < deadline:
        time.sleep(0.2)
    return processes_using(folder)


def ray_start(*args: str) -> None:
    env = os.environ | {"RAY_USAGE_STATS_ENABLED": "0"}
    subprocess.run(["ray", "start", "--disable-usage-stats", *args], check=True,
                   env=env, capture_output=True, timeout=180)  # fmt: skip


@pytest.fixture(scope="module")
def cluster() -> Iterator[tuple[str, Any]]:
    """Head + worker node (1 CPU each) on 127.0.0.1; this process is the driver."""
    import ray

    port = free_port()
    address = f"127.0.0.1:{port}"
    # Short paths: Ray's Unix sockets live under the temp dirs (108-byte limit).
    head_dir = tempfile.mkdtemp(prefix="rh", dir="/tmp")
    worker_dir = tempfile.mkdtemp(prefix="rw", dir="/tmp")
    try:
        ray_start("--head", "--node-ip-address", "127.0.0.1", "--port", str(port),
                  "--num-cpus", str(HEAD_CPUS), "--temp-dir", head_dir,
                  "--include-dashboard", "false")  # fmt: skip
        ray_start("--address", address, "--node-ip-address", "127.0.0.1",
                  "--num-cpus", str(WORKER_CPUS), "--temp-dir", worker_dir)  # fmt: skip
        ray.init(address=address, log_to_driver=False, logging_level=logging.ERROR)
        deadline = time.monotonic() + 60
        while len([n for n in ray.nodes() if n["Alive"]]) < 2:
            assert time.monotonic() < deadline, "the second node never joined"
            time.sleep(0.5)
        assert ray.cluster_resources()["CPU"] == HEAD_CPUS + WORKER_CPUS
        yield address, ray
    finally:
        if ray.is_initialized():
            ray.shutdown()
        left = stop_node(worker_dir) + stop_node(head_dir)
        for folder in (worker_dir, head_dir):  # the nodes' sessions and logs
            shutil.rmtree(folder, ignore_errors=True)
        assert left == [], f"Ray processes outlived the test: {left}"


def trial_actors(ray: Any) -> dict[str, str]:
    """Tune's trial actors so far -> the node each ran on (the GCS keeps finished
    actors; the public state API would need the dashboard)."""
    from ray._private.state import actors

    return {
        actor_id: a["Address"]["NodeID"]
        for actor_id, a in actors().items()
        if a.get("ActorClassName", "").endswith("ImplicitFunc")
    }


def alive_nodes(ray: Any) -> set[str]:
    return {n["NodeID"] for n in ray.nodes() if n["Alive"]}


def tiny_study() -> Any:
    # threads: 1 everywhere, so summation orders (and results) match to the bit.
    train = {"epochs": 1, "train_limit": 500, "val_size": 200, "test_limit": 200,
             "threads": 1}  # fmt: skip
    archs = [{"label": f"lin-{lr}", "spec": TINY_NET, "train": {"lr": lr}}
             for lr in (0.01, 0.003)]  # fmt: skip
    doc = {"name": "tiny", "seeds": [0, 1], "train": train, "architectures": archs}
    return parse_study(doc, source="tiny.yaml")


def test_study_across_two_nodes_equals_in_process(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    address, ray = cluster
    study = tiny_study()
    run_study(study, tmp_path / "local")
    before = trial_actors(ray)
    run_study(study, tmp_path / "ray", make_executor(study, "ray", address=address))
    assert results(tmp_path / "ray", "tiny") == results(tmp_path / "local", "tiny")
    ran = {node for a, node in trial_actors(ray).items() if a not in before}
    assert ran == alive_nodes(ray) and len(ran) == 2


def test_search_across_two_nodes_equals_in_process(
    cluster: tuple[str, Any], tmp_path: Path
) -> None:
    from cnnlab.search.engine import run_search

    address, ray = cluster
    dense = {"layers": ["Flatten", {"Dense": {"units": "$units"}},
                        {"Dense": {"units": 10, "activation": "softmax"}}]}  # fmt: skip
    doc = {"name": "s", "seeds": [0, 1],
           "train": {"epochs": 1, "train_limit": 400, "val_size": 100,
                     "test_limit": 100, "threads": 1},
           "search": {"sampler": "grid", "finalists": 2, "architecture": dense,
                      "space": {"units": {"choice": [4, 8, 16]}}}}  # fmt: skip
    spec = parse_search(parse_study(doc, source="s.yaml"))
    run_search(spec, tmp_path / "local")
    before = trial_actors(ray)
    run_search(spec, tmp_path / "ray", executor="ray", address=address, workers=3)
    ran = {node for a, node in trial_actors(ray).items() if a not in before}
    assert ran == alive_nodes(ray) and len(ran) == 2
    for name in ("s", "s-final"):
        assert results(tmp_path / "ray", name) == results(tmp_path / "local", name)
