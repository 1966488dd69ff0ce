"""Which implementation runs a net's wide 3x3 convolutions on this machine.

Three candidates:
- `nnpack`: NNPACK's Winograd convolution for the forward pass and the input
  gradient (nn.fastconv; fewer multiplies, plus two layout copies per pass), and
  oneDNN's kernel gradient;
- `winograd`: the same, with the kernel gradient in Winograd's form too
  (nn.winograd: far fewer multiplies, but many short memory-bound passes);
- `onednn`: PyTorch's own convolution for all three passes.
None wins on every CPU (docs/benchmarks.md has the kinds of machine), so the choice
is measured: a forward and backward pass of each wide layer shape in each path,
interleaved, at the run's thread count. The fastest NNPACK path must beat oneDNN
by `MARGIN` to be chosen; ties go to PyTorch's own.

A measurement is made once per machine (CPU model and flags, PyTorch version,
layer shape, batch, threads) and kept in a small JSON file in the user's cache
folder (CNNLAB_CACHE_DIR, else `$XDG_CACHE_HOME/cnnlab` or `~/.cache/cnnlab`),
written under a file lock so processes starting together agree. Other processes
busy on the CPUs while it is taken squeeze the paths' differences, so such a
measurement (`busy` above `LOADED`) is provisional: a start at least
`RETAKE_AFTER_S` later that finds the machine idle measures again. A run records
the path it trained with in run.json, and a resumed run keeps it: the paths
round differently.
CNNLAB_CONV_PATH=nnpack, =winograd or =onednn skips the measurement.
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import json
import os
import platform
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from cnnlab.errors import CnnlabError
from cnnlab.nn import fastconv
from cnnlab.util.fsio import atomic_write_text
from cnnlab.util.machine import busy_elsewhere

NNPACK, WINOGRAD, ONEDNN = "nnpack", "winograd", "onednn"
PATHS = (NNPACK, WINOGRAD, ONEDNN)
NNPACK_PATHS = (NNPACK, WINOGRAD)  # the paths that need NNPACK
# The path of runs recorded before the choice existed: NNPACK wherever it worked.
LEGACY = NNPACK
MARGIN = 1.05  # an NNPACK path's time x MARGIN must be under oneDNN's to be chosen
PROBE_BATCH = 16  # images per timed pass: the relative speed, not the full cost
REPEATS = 2  # timed passes of each path, after one untimed warm-up pass each
LOADED = 0.25  # other processes' share of the CPUs above which a measurement is retaken
RETAKE_AFTER_S = 600  # not by a process starting alongside the one that measured
IDLE_SAMPLE_S = 0.2  # how long the machine is watched to call it idle
CACHE_NAME = "conv-paths.json"
ENV_VAR = "CNNLAB_CONV_PATH"

# (in channels, out channels, height, width, padding) of a wide 3x3 layer's input
Shape = tuple[int, int, int, int, int]


def cache_file() -> Path:
    """Where measured choices are kept: CNNLAB_CACHE_DIR when set."""
    folder = os.environ.get("CNNLAB_CACHE_DIR")
    if not folder:
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(root) / "cnnlab")
    return Path(folder) / CACHE_NAME


def override() -> str | None:
    """The path CNNLAB_CONV_PATH names, or None when it is unset."""
    text = os.environ.get(ENV_VAR, "").strip().lower()
    if not text:
        return None
    if text not in PATHS:
        raise CnnlabError(
            f"{ENV_VAR}={os.environ[ENV_VAR]!r} is not a convolution path. Use "
            f"{ENV_VAR}={NNPACK}, ={WINOGRAD} or ={ONEDNN}, or unset it to let "
            "cnnlab measure which is fastest here."
        )
    return text


def machine_key() -> str:
    """The CPU (model and instruction-set flags) and the PyTorch build."""
    fields: dict[str, str] = {}
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(errors="replace").splitlines():
            key, _, value = line.partition(":")
            fields.setdefault(key.strip(), value.strip())  # the first CPU's
    model = fields.get("model name") or platform.processor() or platform.machine()
    flags = hashlib.sha256(fields.get("flags", "").encode()).hexdigest()[:12]
    return f"{model} flags:{flags} torch:{torch.__version__}"


def usable() -> bool:
    """Whether there is a choice at all: NNPACK works in this process."""
    return fastconv.available()


def choose(shapes: list[Shape], batch: int, threads: int) -> str:
    """The fastest path for these layer shapes: the override, the cached
    measurement, or a new one (then cached)."""
    forced = override()
    if forced is not None:
        return forced if forced == ONEDNN or usable() else ONEDNN
    if not usable() or not shapes:
        return ONEDNN
    batch = max(min(batch, PROBE_BATCH), fastconv.MIN_BATCH)
    keys = {shape: _entry_key(shape, batch, threads) for shape in shapes}
    with _locked_cache() as cache:
        for shape, key in keys.items():
            if key not in cache or _retake(cache[key]):
                cache[key] = _measure(shape, batch, threads)
    total = {path: sum(cache[k][path] for k in keys.values()) for path in PATHS}
    fastest = min(NNPACK_PATHS, key=total.__getitem__)
    return fastest if total[fastest] * MARGIN < total[ONEDNN] else ONEDNN


def _retake(entry: dict[str, Any]) -> bool:
    """Whether a cached measurement was taken under load, long enough ago, and
    the machine is idle now."""
    busy, when = entry.get("busy"), entry.get("measured")
    if not isinstance(busy, (int, float)) or busy <= LOADED:
        return False  # taken on an idle machine, or before `busy` was recorded
    if not isinstance(when, (int, float)) or time.time() - when < RETAKE_AFTER_S:
        return False
    return idle_now()


def idle_now() -> bool:
    """Other processes leave the CPUs (nearly) free: a measurement now is fair."""
    _, share = busy_elsewhere(lambda: time.sleep(IDLE_SAMPLE_S))
    return share is not None and share <= LOADED


def _entry_key(shape: Shape, batch: int, threads: int) -> str:
    cin, cout, height, width, pad = shape
    layer = f"{cin}->{cout} {height}x{width} pad {pad}"
    return f"{machine_key()} | {layer} | batch {batch} | threads {threads}"


@contextlib.contextmanager
def _locked_cache() -> Iterator[dict[str, Any]]:
    """The cache's entries, locked against other processes; saved on exit when
    changed. An unwritable cache folder only costs a measurement next time."""
    path = cache_file()
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        lock = open(path.with_suffix(".lock"), "a+b")  # noqa: SIM115
    except OSError:
        entries: dict[str, Any] = {}
        yield entries
        return
    with lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        entries = _read(path)
        before = dict(entries)
        yield entries
        if entries != before:
            with contextlib.suppress(CnnlabError, OSError):
                atomic_write_text(path, json.dumps(entries, indent=1, sort_keys=True))


def _read(path: Path) -> dict[str, Any]:
    """Cached entries; a missing or damaged file is an empty cache."""
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    if not isinstance(doc, dict):
        return {}
    return {
        key: value
        for key, value in doc.items()
        if isinstance(value, dict)
        and all(isinstance(value.get(p), (int, float)) for p in PATHS)
    }


def _measure(shape: Shape, batch: int, threads: int) -> dict[str, Any]:
    """Best seconds of a forward + backward pass of the layer in each path, with
    the share of the CPUs other processes used meanwhile (`busy`, None where it
    cannot be read) and when (`measured`, Unix time)."""
    best, busy = busy_elsewhere(lambda: _time_paths(shape, batch, threads))
    return best | {"busy": None if busy is None else round(busy, 3),
                   "measured": round(time.time())}  # fmt: skip


def _time_paths(shape: Shape, batch: int, threads: int) -> dict[str, float]:
    cin, cout, height, width, pad = shape
    before = torch.get_num_threads()
    with torch.random.fork_rng(devices=[]):  # the run's random numbers are untouched
        torch.manual_seed(0)
        torch.set_num_threads(threads)
        try:
            x = torch.randn(batch, cin, height, width)
            x = x.contiguous(memory_format=torch.channels_last).requires_grad_()
            weight = torch.randn(cout, cin, 3, 3).mul_(0.05)
            weight = weight.contiguous(memory_format=torch.channels_last)
            weight.requires_grad_()
            bias = torch.zeros(cout, requires_grad=True)
            passes = {
                NNPACK: lambda: fastconv.conv3x3(x, weight, bias, pad),
                WINOGRAD: lambda: fastconv.conv3x3(x, weight, bias, pad, True),
                ONEDNN: lambda: F.conv2d(x, weight, bias, padding=pad),
            }
            best = {path: float("inf") for path in PATHS}
            for repeat in range(REPEATS + 1):
                for path, conv in passes.items():
                    seconds = _time_pass(conv)
                    if repeat:  # the first round is the warm-up
                        best[path] = min(best[path], seconds)
        finally:
            torch.set_num_threads(before)
    return best


def _time_pass(conv: Any) -> float:
    started = time.perf_counter()
    out = conv()
    out.backward(torch.ones_like(out))
    return time.perf_counter() - started
