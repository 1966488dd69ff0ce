"""Files and folders written safely: atomic writes, one writer per folder, and the
clean-up of what a killed writer leaves.

Every file cnnlab writes goes through `atomic_write`: a temporary file in the same
folder, fsync'd and renamed into place, so a reader (or a process killed mid-write)
sees the previous complete version or the new one, never a torn file.
"""

from __future__ import annotations

import errno
import os
import re
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO

from cnnlab.errors import RunError

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Write `path` through a temporary file and rename it into place.

    On failure the temporary file is removed and the previous `path` is left as it
    was; an OS error (disk full, read-only, not a folder) becomes a RunError.
    """
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as fh:
            write(fh)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException as err:
        _remove(tmp)
        if isinstance(err, OSError):
            raise write_error(path, err) from err
        raise


def _remove(path: Path) -> None:
    """Delete a temporary file if it exists, whatever the reason it cannot be."""
    try:
        path.unlink(missing_ok=True)
    except OSError:
        pass  # a folder that vanished or became read-only: nothing more to do


def write_error(path: Path, err: OSError) -> RunError:
    """A RunError for a failed write: which file, why, and what to do."""
    reason = err.strerror or " ".join(str(err).split()) or type(err).__name__
    if err.errno in (errno.ENOSPC, errno.EDQUOT):
        fix = "Free some disk space or write to another disk"
    else:
        fix = "Choose a writable --out folder"
    return RunError(f"{path}: cannot write the file ({reason}). {fix}.")


def atomic_write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda fh: fh.write(text.encode("utf-8")))


# What a killed `atomic_write` leaves: `.NAME.tmp-PID`, a hidden name in the
# target's own folder. (`.NAME.HEX.tmp` is the name older versions used for plots.)
_TEMP_NAME = re.compile(r"^\..+\.tmp(-\d+)?$")


@contextmanager
def folder_lock(folder: Path, what: str, wait: bool = False) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if missing) while writing in it.

    flock on the folder itself: no lock file to leave behind, and the kernel drops
    the lock when the holder dies, even by SIGKILL, so a stale lock cannot exist.
    With wait=False a held lock is an error naming `what` holds it.
    """
    try:
        folder.mkdir(parents=True, exist_ok=True)
        fd = os.open(folder, os.O_RDONLY) if fcntl is not None else None
    except OSError as err:
        raise RunError(
            f"{folder}: cannot create or open the folder ({err.strerror}). Choose a "
            "writable --out."
        ) from err
    if fd is None:  # Windows: no flock; studies then rely on the store alone
        yield
        return
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except OSError as err:
            if err.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                raise RunError(
                    f"{folder}: {what} is already running in another process. Wait "
                    "for it to finish (or stop it), then run the command again."
                ) from err
            # Any other errno: this filesystem cannot lock (some network mounts);
            # go on unlocked, as on Windows.
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files killed writers left in `folder` (not below it).

    Only for a folder whose writers are excluded by `folder_lock`: a live writer's
    temporary file would vanish under it.
    """
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if _TEMP_NAME.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed
