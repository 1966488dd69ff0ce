"""Start-up stays light: `import cnnlab` and `cnnlab --help` load neither matplotlib
nor Pillow nor SciPy; the commands that draw, read images or test import them."""

from __future__ import annotations

import subprocess
import sys

HEAVY = ("matplotlib", "PIL", "scipy")
LOADED = f"sorted(m for m in {HEAVY!r} if m in sys.modules)"


def python(code: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120
    )


def test_import_cnnlab_loads_no_plotting_imaging_or_statistics() -> None:
    proc = python(f"import cnnlab, sys; print({LOADED})")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"


def test_help_loads_none_of_them() -> None:
    # `python -m cnnlab --help`, run as -m runs it, then a look at what it loaded.
    code = (
        "import runpy, sys\n"
        "sys.argv = ['cnnlab', '--help']\n"
        "try:\n"
        "    runpy.run_module('cnnlab', run_name='__main__', alter_sys=True)\n"
        "except SystemExit as stop:\n"
        "    assert stop.code in (0, None), stop.code\n"
        f"print('loaded', {LOADED})\n"
    )
    proc = python(code)
    assert proc.returncode == 0, proc.stderr
    assert "usage: cnnlab" in proc.stdout
    assert proc.stdout.splitlines()[-1] == "loaded []"


def test_the_console_command_still_answers() -> None:
    proc = subprocess.run(
        [sys.executable, "-m", "cnnlab", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    assert "usage: cnnlab" in proc.stdout
