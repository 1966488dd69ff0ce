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


# The interrupt the handlers of the current `signals_as_interrupts` raised, if any.
_RAISED: list[KeyboardInterrupt] = []


def raised_interrupt() -> KeyboardInterrupt | None:
    """The interrupt raised by the signal handlers now in place, if one was.

    An interrupt that lands inside a library's own import or clean-up can leave it
    half done, so the error that ends the command is that library's (a
    RecursionError from a half-imported module), no longer linked to the
    KeyboardInterrupt: it is still the interrupt's doing.
    """
    return _RAISED[0] if _RAISED else None


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
        interrupt = Terminated() if signum == signal.SIGTERM else KeyboardInterrupt()
        _RAISED[:] = [interrupt]
        raise interrupt

    previous = {
        sig: signal.signal(sig, on_signal) for sig in (signal.SIGINT, signal.SIGTERM)
    }
    _RAISED.clear()
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler if restore else signal.SIG_IGN)


@contextmanager
def signals_deferred() -> Iterator[None]:
    """Within: a SIGINT or SIGTERM is noted, not raised; on leaving, the first one
    is raised as the handlers of `signals_as_interrupts` raise it.

    For C++ code that calls back into Python (torch.jit tracing, the ONNX
    exporter): an exception raised inside such a callback can end the process
    with `terminate called ...` (SIGABRT) instead of unwinding. The block runs to
    its end, then the interrupt is what it would have been.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    noted: list[int] = []
    previous = {
        sig: signal.signal(sig, lambda signum, frame: noted.append(signum))
        for sig in (signal.SIGINT, signal.SIGTERM)
    }
    try:
        yield
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    if noted:
        raise Terminated() if noted[0] == signal.SIGTERM else KeyboardInterrupt()
