"""The per-machine choice of NNPACK or oneDNN for wide 3x3 layers: measured once,
cached, recorded with the run, and kept when the run resumes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from cnnlab import api
from cnnlab.errors import CnnlabError
from cnnlab.nn import convpath, fastconv
from cnnlab.nn.model import build_model
from cnnlab.nn.spec import Architecture, Conv2D, Dense, Flatten, MaxPooling2D
from cnnlab.training.config import TrainConfig
from cnnlab.training.runs import open_run

needs_nnpack = pytest.mark.skipif(
    not fastconv.available(), reason="this PyTorch build has no working NNPACK"
)
SHAPE = (64, 64, 8, 8, 1)  # a small wide layer: quick to time in both paths


def _wide_net() -> Architecture:
    """MNIST in, one 64->64 3x3 layer (the wide kind) after a 64-filter stem."""
    return Architecture(
        name="wide",
        input_shape=(28, 28, 1),
        layers=(
            Conv2D(64, (3, 3), strides=(2, 2), activation="relu"),
            Conv2D(64, (3, 3), padding="same", activation="relu"),
            MaxPooling2D((2, 2)),
            Flatten(),
            Dense(10, activation="softmax"),
        ),
    )


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.delenv(convpath.ENV_VAR, raising=False)
    return tmp_path / "cache" / convpath.CACHE_NAME


@needs_nnpack
def test_a_choice_is_measured_once_and_then_read_from_the_cache(cache: Path) -> None:
    first = convpath.choose([SHAPE], 128, 2)
    assert first in convpath.PATHS
    entries = json.loads(cache.read_text())
    [(key, times)] = entries.items()
    assert "64->64 8x8 pad 1" in key and "batch 16" in key and "threads 2" in key
    assert convpath.machine_key() in key
    assert all(times[path] > 0 for path in convpath.PATHS)
    fastest = min(convpath.NNPACK_PATHS, key=times.__getitem__)
    nnpack_wins = times[fastest] * convpath.MARGIN < times["onednn"]
    assert first == (fastest if nnpack_wins else "onednn")
    # The cached figures decide from now on: make the other path the clear winner.
    loser = "onednn" if first != "onednn" else "nnpack"
    entries[key] = {path: 1.0 for path in convpath.PATHS} | {loser: 0.01}
    cache.write_text(json.dumps(entries))
    assert convpath.choose([SHAPE], 128, 2) == loser
    assert json.loads(cache.read_text()) == entries  # nothing measured again


@needs_nnpack
def test_processes_choosing_at_once_measure_once_and_agree(cache: Path) -> None:
    code = f"from cnnlab.nn import convpath; print(convpath.choose([{SHAPE}], 64, 1))"
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code], stdout=subprocess.PIPE, text=True
        )
        for _ in range(3)
    ]
    answers = {p.communicate(timeout=120)[0].strip() for p in procs}
    assert all(p.returncode == 0 for p in procs)
    assert len(answers) == 1 and answers <= set(convpath.PATHS)
    assert len(json.loads(cache.read_text())) == 1


def test_the_environment_variable_decides_and_a_bad_value_says_how_to_fix_it(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(convpath.ENV_VAR, "onednn")
    assert convpath.choose([SHAPE], 128, 2) == "onednn"
    assert not cache.exists()  # no measurement
    if fastconv.available():
        monkeypatch.setenv(convpath.ENV_VAR, "Winograd")
        assert convpath.choose([SHAPE], 128, 2) == "winograd"
    monkeypatch.setenv(convpath.ENV_VAR, "direct")
    with pytest.raises(
        CnnlabError, match=r"CNNLAB_CONV_PATH='direct' is not a .*=winograd or"
    ):
        convpath.choose([SHAPE], 128, 2)


@needs_nnpack
def test_a_damaged_cache_is_measured_again(cache: Path) -> None:
    cache.parent.mkdir(parents=True)
    cache.write_text("{not json")
    assert convpath.choose([SHAPE], 128, 2) in convpath.PATHS
    # An entry of an older cnnlab, which timed two paths only, is measured again.
    [key] = json.loads(cache.read_text())
    cache.write_text(json.dumps({key: {"nnpack": 1.0, "onednn": 2.0}}))
    assert convpath.choose([SHAPE], 128, 2) in convpath.PATHS
    assert set(json.loads(cache.read_text())[key]) >= set(convpath.PATHS)
    assert len(json.loads(cache.read_text())) == 1


def test_the_model_switches_its_wide_layers_only() -> None:
    model = build_model(_wide_net(), seed=0)
    assert model.conv_shapes() == [(64, 64, 13, 13, 1)]  # the stem is strided
    [wide] = model.wide_convs()
    model.set_conv_path("onednn")
    assert not wide.winograd
    model.set_conv_path("nnpack")
    assert wide.winograd and not wide.winograd_grad
    model.set_conv_path("winograd")
    assert wide.winograd and wide.winograd_grad
    with pytest.raises(ValueError, match="unknown convolution path"):
        model.set_conv_path("direct")


def _config(epochs: int) -> TrainConfig:
    return TrainConfig(
        epochs=epochs, train_limit=512, test_limit=256, val_size=128, threads=2
    )


def _favour(cache: Path, path: str) -> None:
    """Make every cached measurement favour `path`."""
    times = {p: 1.0 for p in convpath.PATHS} | {path: 0.01}
    entries = json.loads(cache.read_text())
    cache.write_text(json.dumps({k: times for k in entries}))


def _swap_cached_choice(cache: Path, chosen: str) -> None:
    """Make every cached measurement favour a path not chosen."""
    _favour(cache, "onednn" if chosen != "onednn" else "winograd")


@needs_nnpack
@pytest.mark.parametrize("favoured", [None, "winograd"])
def test_a_run_records_its_path_and_a_resume_keeps_it_bit_for_bit(
    cache: Path, tmp_path: Path, favoured: str | None
) -> None:
    """Two epochs straight, and one epoch then a resume after the machine's cached
    choice flipped: the resumed run keeps its path, so its weights are identical.
    `favoured`: the path the cache names first (None: as measured here)."""
    if favoured is not None:
        api.train(_wide_net(), _config(1), tmp_path / "probe")  # fills the cache
        _favour(cache, favoured)
    straight = api.train(_wide_net(), _config(2), tmp_path / "straight")
    chosen = open_run(straight.path).meta["environment"]["conv_path"]
    assert chosen in convpath.PATHS and chosen == (favoured or chosen)
    api.train(_wide_net(), _config(1), tmp_path / "resumed")
    _swap_cached_choice(cache, chosen)
    resumed = api.resume(tmp_path / "resumed", epochs=2)
    assert open_run(resumed.path).meta["environment"]["conv_path"] == chosen
    for (name, a), (_, b) in zip(
        straight.model.state_dict().items(),
        resumed.model.state_dict().items(),
        strict=True,
    ):
        assert torch.equal(a, b), name
    # A new run now takes the other path, and records that.
    fresh = api.train(_wide_net(), _config(1), tmp_path / "fresh")
    assert open_run(fresh.path).meta["environment"]["conv_path"] != chosen


def test_a_net_without_wide_layers_records_no_path(tmp_path: Path) -> None:
    run = api.train("conv3-small", _config(1), tmp_path / "run")
    assert open_run(run.path).meta["environment"]["conv_path"] is None


def test_a_run_recorded_before_the_choice_existed_resumes_with_nnpack(
    tmp_path: Path,
) -> None:
    run = api.train(_wide_net(), _config(1), tmp_path / "old")
    record = open_run(run.path)
    record.meta["environment"].pop("conv_path")
    record.save_meta()
    assert open_run(run.path).conv_path == convpath.LEGACY == "nnpack"
    resumed = api.resume(run.path, epochs=2)
    expected = "nnpack" if fastconv.available() else "onednn"
    assert open_run(resumed.path).meta["environment"]["conv_path"] == expected


@needs_nnpack
def test_a_measurement_taken_under_load_is_taken_again_later_when_idle(
    cache: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Provisional: taken while other processes were busy, at least RETAKE_AFTER_S
    ago, and the machine is idle now. Anything else is kept as it is."""
    convpath.choose([SHAPE], 128, 2)
    [(key, entry)] = json.loads(cache.read_text()).items()
    assert abs(entry["measured"] - time.time()) < 600
    assert entry["busy"] is None or 0 <= entry["busy"] <= 1
    stale = {path: 1.0 for path in convpath.PATHS} | {"onednn": 0.01}
    long_ago = round(time.time()) - convpath.RETAKE_AFTER_S - 1

    def cached_after_choosing(**fields: object) -> dict:
        cache.write_text(json.dumps({key: stale | fields}))
        convpath.choose([SHAPE], 128, 2)
        return json.loads(cache.read_text())[key]

    idle = True
    monkeypatch.setattr(convpath, "idle_now", lambda: idle)  # the load, as set here
    for kept in (
        {"busy": 0.0, "measured": long_ago},  # taken on an idle machine
        {"busy": 0.9, "measured": round(time.time())},  # by a process started with us
        {},  # by a cnnlab that did not record the load
    ):
        assert cached_after_choosing(**kept) == stale | kept
    idle = False
    loaded = {"busy": 0.9, "measured": long_ago}
    assert cached_after_choosing(**loaded) == stale | loaded  # busy now too
    idle = True
    fresh = cached_after_choosing(**loaded)
    assert fresh["measured"] > long_ago and fresh["onednn"] != 0.01  # measured again


def test_the_idle_check_sees_other_processes_working() -> None:
    if not Path("/proc/stat").exists():
        pytest.skip("reads /proc/stat (Linux)")
    spin = [sys.executable, "-c", "while True: pass"]
    spinners = [subprocess.Popen(spin) for _ in range(os.cpu_count() or 1)]
    try:
        time.sleep(0.3)  # started
        assert not convpath.idle_now()
    finally:
        for proc in spinners:
            proc.kill()
            proc.wait()
