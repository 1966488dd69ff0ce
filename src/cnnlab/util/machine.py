"""Facts about this machine that training and studies ask for: the device, the
usable CPUs and free memory, and the environment recorded with every run."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from typing import Any

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
