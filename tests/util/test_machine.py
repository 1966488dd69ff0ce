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
def test_a_spinning_process_shows_as_busy() -> None:
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
