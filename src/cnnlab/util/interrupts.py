"""Ctrl-C and SIGTERM end every command the same way.

SIGTERM is what `kill`, systemd, Slurm and Ray send. Python's default would end
the process at once, leaving run.json and the store "running" and a temporary file
behind. Here it raises `Terminated`, a KeyboardInterrupt, so the clean-up every
Ctrl-C already runs (atomic writes removing their temporary file, `mark_run`, the
store's INTERRUPTED marks, stopping worker processes) runs for it too.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

EXIT_SIGINT = 130  # 128 + SIGINT, as shells report a Ctrl-C
EXIT_SIGTERM = 143  # 128 + SIGTERM


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where a Ctrl-C raises KeyboardInterrupt."""


def exit_code(interrupt: KeyboardInterrupt) -> int:
    """130 for a Ctrl-C, 143 for a SIGTERM."""
    return EXIT_SIGTERM if isinstance(interrupt, Terminated) else EXIT_SIGINT


def signal_name(interrupt: KeyboardInterrupt) -> str:
    return "SIGTERM" if isinstance(interrupt, Terminated) else "Ctrl-C"


@contextmanager
def signals_as_interrupts(restore: bool = True) -> Iterator[None]:
    """Within: SIGINT raises KeyboardInterrupt and SIGTERM raises Terminated, once.

    A second signal while the first one's clean-up runs is ignored, so a repeated
    Ctrl-C cannot cut short the writing of run.json or the store's marks (SIGKILL
    still ends the process; nothing is left that the next run does not repair).
    On leaving, the previous handlers come back, or (restore=False: the process
    is about to exit) both signals are ignored, so a late one cannot turn a
    finished command into a death by signal.
    """
    if threading.current_thread() is not threading.main_thread():
        yield  # signal handlers can only be set from the main thread
        return
    raised = False

    def on_signal(signum: int, frame: Any) -> None:
        nonlocal raised
        if raised:
            return
        raised = True
        raise Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()

    previous = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if restore else signal.SIG_IGN)
