"""The process's edges, each one clear line: standard output closed, a terminal
that cannot encode a character, and a signal while the commands are still loading
(before any command runs, while PyTorch is imported)."""

from __future__ import annotations

import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from helpers import CLI_ENV, cli_command, run_cli


def test_closed_standard_output_is_one_line_and_exit_2() -> None:
    proc = subprocess.run(
        " ".join(cli_command("presets")) + " >&-",
        shell=True,
        capture_output=False,
        stderr=subprocess.PIPE,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 2, proc.stderr
    assert proc.stderr.splitlines() == [
        "error: standard output is closed (>&-), so nothing could be shown. Run "
        "the command with an output, e.g. > out.txt or > /dev/null."
    ]


def test_an_ascii_terminal_gets_escapes_not_a_traceback(tmp_path: Path) -> None:
    net = tmp_path / "net.yaml"
    net.write_text(
        "name: réseau\ndescription: '±2 px, naïve'\ninput_shape: [28, 28, 1]\n"
        "layers:\n  - Flatten: {}\n  - Dense: {units: 10, activation: softmax}\n",
        encoding="utf-8",
    )
    result = run_cli("summary", net, cwd=tmp_path, env={"PYTHONIOENCODING": "ascii"})
    assert result.code == 0, result.err
    assert "r\\xe9seau" in result.out  # the name, shown as an escape
    assert "Total params: 7,850" in result.out


def _torch_loading(pid: int) -> bool:
    """True once the process has mapped PyTorch's library: it is importing torch,
    which `cnnlab` does only after its signal handlers are in place."""
    try:
        return "libtorch" in Path(f"/proc/{pid}/maps").read_text()
    except OSError:
        return False


@pytest.mark.skipif(not Path("/proc/self/maps").exists(), reason="needs /proc")
@pytest.mark.parametrize(
    ("sig", "code", "name"),
    [(signal.SIGINT, 130, "Ctrl-C"), (signal.SIGTERM, 143, "SIGTERM")],
)
def test_a_signal_while_the_commands_load_is_one_line(
    sig: signal.Signals, code: int, name: str, tmp_path: Path
) -> None:
    proc = subprocess.Popen(
        cli_command("presets"),
        cwd=tmp_path,
        env=os.environ | CLI_ENV,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    while not _torch_loading(proc.pid) and proc.poll() is None:
        time.sleep(0.005)
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=120)
    assert "Traceback" not in err, err
    if proc.returncode != 0:  # else the command had already finished: it stands
        assert proc.returncode == code, err
        assert err.splitlines() == [f"interrupted ({name}): nothing was written."]
