"""Facts about this machine that training and studies ask for: the device, the
usable CPUs and free memory, and the environment recorded with every run."""

from __future__ import annotations

import os
import platform
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import torch

from cnnlab._version import __version__
from cnnlab.errors import CnnlabError


def pick_device(name: str) -> torch.device:
    """'auto' is CUDA where PyTorch sees a GPU, else the CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, else the machine's count)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def set_threads(threads: int | None) -> None:
    """Use `threads` CPU threads; refuse more than the CPUs this process may use."""
    if threads is None:
        return
    cpus = usable_cpus()
    if threads > cpus:
        # More threads only slow training down, and torch crashes on absurd counts.
        raise CnnlabError(
            f"threads={threads} (--threads) is more than the {cpus} CPU(s) "
            f"available here. Use --threads {cpus} or fewer, or leave it out to use "
            "them all."
        )
    torch.set_num_threads(threads)


T = TypeVar("T")


def busy_elsewhere(work: Callable[[], T]) -> tuple[T, float | None]:
    """`work()`'s result, and the share of the machine's CPU time (0 to 1) that
    other processes used while it ran: None where /proc/stat cannot be read.

    A timing taken while the share is high measured the other processes as much
    as the code timed.
    """
    before, own_before = _cpu_ticks(), _own_seconds()
    result = work()
    after, own_after = _cpu_ticks(), _own_seconds()
    if before is None or after is None or after[1] <= before[1]:
        return result, None
    own = (own_after - own_before) * os.sysconf("SC_CLK_TCK")
    share = (after[0] - before[0] - own) / (after[1] - before[1])
    return result, min(max(share, 0.0), 1.0)


def _cpu_ticks() -> tuple[int, int] | None:
    """(busy, all) clock ticks of every CPU since boot, from /proc/stat."""
    try:
        with open("/proc/stat", encoding="ascii") as fh:
            fields = fh.readline().split()
        # user nice system idle iowait irq softirq steal (guests are in user)
        ticks = [int(v) for v in fields[1:9]]
    except (OSError, ValueError):
        return None
    if not fields or fields[0] != "cpu" or len(ticks) < 5:
        return None
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)


def _own_seconds() -> float:
    """CPU seconds this process (all its threads, not its children) has used."""
    times = os.times()
    return times.user + times.system


def _cgroup_memory() -> int | None:
    """Free bytes under a cgroup v2 memory limit (containers), or None if unlimited."""
    root = Path("/sys/fs/cgroup")
    try:
        limit = (root / "memory.max").read_text().strip()
        used = int((root / "memory.current").read_text())
    except (OSError, ValueError):
        return None
    return None if limit == "max" else max(int(limit) - used, 0)


def available_memory(device: torch.device) -> int | None:
    """Bytes free for a new network on `device`, or None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    free = None
    try:
        with open("/proc/meminfo", encoding="ascii") as fh:
            for line in fh:
                if line.startswith("MemAvailable:"):
                    free = int(line.split()[1]) * 1024  # the file says kB: KiB
    except (OSError, ValueError, IndexError):
        try:
            free = os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
        except (AttributeError, ValueError, OSError):
            free = None
    limits = [m for m in (free, _cgroup_memory()) if m is not None]
    return min(limits) if limits else None


def environment(device: torch.device) -> dict[str, Any]:
    """Versions and machine facts recorded with every run."""
    return {
        "cnnlab": __version__,
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.machine(),
        "cpu_count": os.cpu_count(),
        "threads": torch.get_num_threads(),
        "device": str(device),
        "cuda": torch.cuda.get_device_name(device) if device.type == "cuda" else None,
    }
