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
import shutil
import stat
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, TYPE_CHECKING

from cnnlab.errors import CnnlabError, RunError

if TYPE_CHECKING:
    from matplotlib.figure import Figure

FIGURE_DPI = 100  # every PNG cnnlab draws

try:
    import fcntl
except ImportError:  # Windows
    fcntl = None  # type: ignore[assignment]


def check_inside(path: Path, root: Path) -> Path:
    """`path`, checked to stay under `root` once `..` and symlinks are resolved:
    every path cnnlab builds from a name passes here before it is written."""
    real, base = path.resolve(), root.resolve()
    if real != base and not real.is_relative_to(base):
        raise RunError(
            f"{path}: resolves to {real}, outside the output folder {root}; "
            "refusing to write there. Check the names and symbolic links involved."
        )
    return path


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


_KINDS = (
    (stat.S_ISFIFO, "a FIFO"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISSOCK, "a socket"),
)


def open_regular(
    path: Path, limit: int, what: str, error: type[CnnlabError] = CnnlabError
) -> IO[bytes]:
    """Open `path` for reading only if it is a regular file of at most `limit` bytes;
    `what` names the file with its article ("an architecture file") in messages.

    Every file cnnlab reads comes through here: a FIFO or /dev/urandom would block
    or never end, /dev/zero would fill memory. O_NONBLOCK makes opening a FIFO
    return at once, so it is refused instead of waiting for a writer. A missing
    file or a folder raises the usual OSError for the caller's own message.
    """
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_NOCTTY", 0))
    try:
        info = os.fstat(fd)
        if stat.S_ISDIR(info.st_mode):
            raise IsADirectoryError(errno.EISDIR, "Is a directory", str(path))
        if not stat.S_ISREG(info.st_mode):
            raise error(not_a_file(path, info.st_mode, what))
        if info.st_size > limit:
            raise error(too_large(path, info.st_size, limit, what))
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def not_a_file(path: Path, mode: int, what: str) -> str:
    """The message for a path that is a FIFO, device or socket, not a file."""
    kind = next((k for test, k in _KINDS if test(mode)), "not a regular file")
    return f"{path}: is {kind}, not a file. Give the path of {what} (a regular file)."


def read_bounded(
    path: Path, limit: int, what: str, error: type[CnnlabError] = CnnlabError
) -> bytes:
    """The bytes of the regular file `path`, refused past `limit` bytes (see
    `open_regular`); a file that grows while read is cut off at the limit too."""
    with open_regular(path, limit, what, error) as fh:
        # read(n) allocates n bytes up front: ask for the size stat gave, then for
        # what a growing file added, never for the whole limit at once.
        data = fh.read(os.fstat(fh.fileno()).st_size + 1)
        while len(data) <= limit and (
            more := fh.read(min(limit + 1 - len(data), 1 << 24))
        ):
            data += more
    if len(data) > limit:
        raise error(too_large(path, len(data), limit, what, at_least=True))
    return data


def too_large(
    path: Path, size: int, limit: int, what: str, at_least: bool = False
) -> str:
    """The message for a file over its size limit: both sizes, in bytes."""
    more = "at least " if at_least else ""
    return (
        f"{path}: is {more}{size:,} bytes, over the limit of {limit:,} bytes for "
        f"{what}. Check that it is the right file."
    )


# What a killed `atomic_write` leaves: `.NAME.tmp-PID`, a hidden name in the
# target's own folder. (`.NAME.HEX.tmp` is the name older versions used for plots.)
TEMP_NAME = re.compile(r"^\..+\.tmp(-\d+)?$")


@contextmanager
def folder_lock(
    folder: Path, what: str, wait: bool = False, create: bool = True
) -> Iterator[None]:
    """Hold an exclusive lock on `folder` (created if missing, when `create`) while
    writing in it.

    flock on the folder itself: no lock file to leave behind, and the kernel drops
    the lock when the holder dies, even by SIGKILL, so a stale lock cannot exist.
    With wait=False a held lock is an error naming `what` holds it and its PID.
    The lock belongs to the folder's inode: a writer empties a locked folder, it
    never deletes and recreates it.
    """
    try:
        if create:
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
                pid = lock_holder(fd)
                who = "another process" + ("" if pid is None else f" (PID {pid})")
                raise RunError(
                    f"{folder}: {what} is already running in {who}. Wait for it to "
                    "finish (or stop it), then run the command again."
                ) from err
            # Any other errno: this filesystem cannot lock (some network mounts);
            # go on unlocked, as on Windows.
        yield
    finally:
        os.close(fd)  # closing the descriptor releases the lock


def lock_holder(fd: int) -> int | None:
    """The PID holding a lock on the file open as `fd`, from /proc/locks (Linux);
    None where the kernel does not say."""
    st = os.fstat(fd)
    holders = lock_holders([(st.st_dev, st.st_ino)])
    return holders[0] if holders else None


def lock_holders(files: list[tuple[int, int]]) -> list[int]:
    """The PIDs (other than this one) holding flock or POSIX locks on any of
    `files`, given as (st_dev, st_ino): what /proc/locks lists (Linux only)."""
    wanted = {f"{os.major(d):02x}:{os.minor(d):02x}:{i}" for d, i in files}
    try:
        with open("/proc/locks", encoding="ascii", errors="replace") as fh:
            lines = fh.read(1 << 20).splitlines()
    except OSError:
        return []
    pids: list[int] = []
    for line in lines:
        # "1: FLOCK  ADVISORY  WRITE 4242 08:01:1311 0 EOF"; "->" marks a waiter
        fields = line.split()
        found = [k for k, f in enumerate(fields) if f in wanted]
        if "->" in fields or not found or not fields[found[0] - 1].isdigit():
            continue
        pid = int(fields[found[0] - 1])
        if pid != os.getpid() and pid not in pids:
            pids.append(pid)
    return pids


def remove_temp_files(folder: Path) -> list[Path]:
    """Delete the temporary files killed writers left in `folder` (not below it).

    Only for a folder whose writers are excluded by `folder_lock`: a live writer's
    temporary file would vanish under it.
    """
    removed = []
    if folder.is_dir():
        for path in folder.iterdir():
            if TEMP_NAME.match(path.name) and path.is_file():
                path.unlink(missing_ok=True)
                removed.append(path)
    return removed


def pid_alive(pid: int) -> bool:
    """True unless no process `pid` exists (one of another user's counts as alive)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except OSError:
        return True  # EPERM: it exists, owned by someone else
    return True


def sweep_stale_temps(folder: Path, name: str) -> list[Path]:
    """Delete what killed writers of `folder`/`name` left: `.NAME.tmp-PID` (a file
    of `atomic_write`, a folder of an import) and `.STEM.tmp-PID.SUFFIX` (a Keras
    export's), only where process PID no longer exists, so a live writer's
    temporary is never touched. Nothing else in `folder` is looked at."""
    stem, suffix = os.path.splitext(name)
    pattern = re.compile(
        rf"^\.{re.escape(name)}\.tmp-(\d+)$"
        rf"|^\.{re.escape(stem)}\.tmp-(\d+){re.escape(suffix)}$"
    )
    removed: list[Path] = []
    try:
        entries = list(folder.iterdir())
    except OSError:
        return removed
    for path in entries:
        found = pattern.match(path.name)
        if not found:
            continue
        pid = int(found[1] or found[2])
        if pid == os.getpid() or pid_alive(pid):
            continue
        try:
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        except OSError:
            continue  # read-only or vanished: leave it
        removed.append(path)
    return removed


def save_figure(figure: Figure, path: Path) -> Path:
    """Render a matplotlib `figure` to the PNG `path` atomically (`atomic_write`);
    its folder is made if missing."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(figure)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as err:
        raise write_error(path, err) from err
    atomic_write(path, lambda fh: figure.savefig(fh, format="png", dpi=FIGURE_DPI))
    return path
