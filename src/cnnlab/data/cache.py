"""The decode cache: image sets decoded once, kept as uint8 arrays in an .npz.

An entry's name is the SHA-256 of everything that decides its contents: the
folder, each file's relative name, size and modification time, and the decoding
settings. A changed, added or removed file gives another key, so the entry is
rebuilt; an old entry is simply never read again (`cnnlab data` prints the cache
folder, which may be deleted at any time). Entries are written through a temporary
file and renamed into place, so two processes building the same entry at once
both succeed and a reader never sees half an entry.
"""

from __future__ import annotations

import hashlib
import json
import os
import zipfile
from pathlib import Path
from typing import Any

import numpy as np

from cnnlab.errors import CnnlabError
from cnnlab.util.fsio import atomic_write

FORMAT = 1  # bump when what an entry holds changes


def cache_root() -> Path:
    """CNNLAB_CACHE_DIR when set, else `$XDG_CACHE_HOME/cnnlab` or ~/.cache/cnnlab."""
    folder = os.environ.get("CNNLAB_CACHE_DIR")
    if not folder:
        root = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
        folder = str(Path(root) / "cnnlab")
    return Path(folder)


def images_folder() -> Path:
    return cache_root() / "images"


def file_key(root: Path, files: list[tuple[str, int, int]], settings: str) -> str:
    """The cache key of `files` ((name relative to root, size, mtime_ns)) under
    `root` decoded with `settings`."""
    digest = hashlib.sha256(f"{FORMAT}|{root.resolve()}|{settings}".encode())
    text = "\n".join(f"{rel}|{size}|{mtime}" for rel, size, mtime in files)
    digest.update(text.encode())
    return digest.hexdigest()


def load(key: str) -> dict[str, Any] | None:
    """The arrays and `info` stored under key, or None when there is no entry
    (or it cannot be read: it is then rebuilt)."""
    path = images_folder() / f"{key}.npz"
    if not path.is_file():
        return None
    try:
        with np.load(path, allow_pickle=False) as entry:
            out: dict[str, Any] = {name: entry[name] for name in entry.files}
    except (OSError, ValueError, zipfile.BadZipFile, EOFError):
        return None
    out["info"] = json.loads(str(out.pop("info_json")))
    out["class_names"] = tuple(str(n) for n in out["class_names"])
    return out


def save(key: str, arrays: dict[str, Any]) -> Path | None:
    """Store arrays (numpy values, `class_names`, `info`) under key; a cache that
    cannot be written is skipped (the data set was decoded all the same)."""
    folder = images_folder()
    path = folder / f"{key}.npz"
    doc = {k: v for k, v in arrays.items() if k not in ("info", "class_names")}
    doc["class_names"] = np.array(list(arrays["class_names"]), dtype=str)
    doc["info_json"] = np.array(json.dumps(arrays["info"]))
    try:
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write(path, lambda fh: np.savez(fh, **doc))
    except (OSError, CnnlabError):
        return None
    return path
