"""Reads are bounded: a decompression bomb is refused within a memory limit
(`resource.setrlimit` in a real process), FIFOs and devices are refused by name."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from cnnlab.errors import SpecError
from cnnlab.nn.spec import load_architecture
from cnnlab.util.fsio import read_bounded
from helpers import gzip_bomb

# Loads an IDX file in a process whose address space may grow by only 600 MB past
# what the imports took: a full inflation of the 3 GB bomb would be a MemoryError.
LIMITED = """
import resource, sys
from cnnlab.data.datasets import read_idx
from cnnlab.errors import DataError
with open("/proc/self/status") as fh:
    vm = next(int(l.split()[1]) for l in fh if l.startswith("VmSize")) * 1024
resource.setrlimit(resource.RLIMIT_AS, (vm + (600 << 20), resource.RLIM_INFINITY))
try:
    read_idx(sys.argv[1])
except DataError as err:
    print("refused:", err)
print("peak MB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss // 1024)
"""


@pytest.mark.skipif(sys.platform != "linux", reason="RLIMIT_AS and /proc: Linux")
def test_a_3_gb_gzip_bomb_is_refused_within_a_memory_limit(tmp_path: Path) -> None:
    header = struct.pack(">BBBBIII", 0, 0, 8, 3, 60000, 28, 28)  # promises 47 MB
    bomb = tmp_path / "train-images-idx3-ubyte.gz"
    bomb.write_bytes(gzip_bomb(header, 3 << 30))
    assert bomb.stat().st_size < 4 << 20
    proc = subprocess.run([sys.executable, "-c", LIMITED, str(bomb)],
                          capture_output=True, text=True, timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "MemoryError" not in proc.stderr
    assert (
        "refused:" in proc.stdout
        and ("inflates to more than the 47,040,016 bytes its IDX header promises")
        in proc.stdout
    )
    print(proc.stdout.strip().splitlines()[-1])  # the peak, for the record


def test_fifos_and_devices_are_refused_without_blocking(tmp_path: Path) -> None:
    os.mkfifo(tmp_path / "net.yaml")
    with pytest.raises(SpecError, match="net.yaml: is a FIFO, not a file"):
        load_architecture(tmp_path / "net.yaml")  # returns at once: no writer needed
    with pytest.raises(SpecError, match="is a character device, not a file"):
        load_architecture("/dev/zero")


def test_a_file_that_grows_past_the_limit_is_cut_off(tmp_path: Path) -> None:
    path = tmp_path / "f"
    path.write_bytes(b"x" * 100)
    assert read_bounded(path, 100, "a test file") == b"x" * 100
    with pytest.raises(Exception, match="is 101 bytes, over the limit of 100 bytes"):
        path.write_bytes(b"x" * 101)
        read_bounded(path, 100, "a test file")
