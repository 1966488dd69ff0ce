"""What cnnlab reads about the machine: here, how busy other processes keep it."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cnnlab.util.machine import busy_elsewhere

needs_proc_stat = pytest.mark.skipif(
    not Path("/proc/stat").exists(), reason="reads /proc/stat (Linux)"
)


@needs_proc_stat
def test_a_spinning_process_shows_as_busy_and_the_own_work_does_not() -> None:
    cpus = os.cpu_count() or 1
    proc = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    try:
        time.sleep(0.3)  # started
        result, share = busy_elsewhere(lambda: time.sleep(0.5) or "done")
    finally:
        proc.kill()
        proc.wait()
    assert result == "done"
    assert share is not None and 0.5 / cpus <= share <= 1
    # This process's own work is not counted as anyone else's.
    _, own = busy_elsewhere(lambda: sum(range(3_000_000)))
    assert own is not None and own <= 1 - 0.5 / cpus
