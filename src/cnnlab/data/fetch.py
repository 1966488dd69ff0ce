"""`cnnlab data get NAME`: fetch a public data set's official files, once, when a
person asks for it. Nothing else in cnnlab downloads anything.

Each file is checked against the checksum its publisher (or torchvision, which
pins the same files) gives, written through a temporary file, and the data set's
folder is renamed into place only when every file is there and right, so a
failed or interrupted download leaves nothing half-done. `--data NAME` then
finds the folder under `$CNNLAB_CACHE_DIR/data/NAME`.

CNNLAB_DATA_URL, when set, replaces every source's base URL (the file names stay):
for a mirror, and for the tests, which serve files from 127.0.0.1.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import tarfile
import tempfile
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from cnnlab.data.cache import cache_root
from cnnlab.errors import DataError

URL_ENV = "CNNLAB_DATA_URL"
CHUNK = 1 << 16
TIMEOUT = 60  # seconds without data before a download is given up


@dataclass(frozen=True)
class Remote:
    """A data set's files at its publisher: base URL, (file name, MD5) pairs, and
    whether the one file is a .tar.gz to unpack."""

    base: str
    files: tuple[tuple[str, str], ...]
    unpack: bool = False


SOURCES = {
    # The binary versions and their MD5 sums as listed on
    # https://www.cs.toronto.edu/~kriz/cifar.html
    "cifar10": Remote(
        "https://www.cs.toronto.edu/~kriz/",
        (("cifar-10-binary.tar.gz", "c32a1d4ab5d03f1284b67883e8d87530"),),
        unpack=True,
    ),
    "cifar100": Remote(
        "https://www.cs.toronto.edu/~kriz/",
        (("cifar-100-binary.tar.gz", "03b5dce01913d631647c71ecec9e9cb8"),),
        unpack=True,
    ),
    # MD5 sums as pinned by torchvision.datasets.FashionMNIST.resources
    "fashion-mnist": Remote(
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",
        (
            ("train-images-idx3-ubyte.gz", "8d4fb7e6c68d591d4c3dfef9ec88bf0d"),
            ("train-labels-idx1-ubyte.gz", "25c81989df183df01b3e8a0aad5dffbe"),
            ("t10k-images-idx3-ubyte.gz", "bef4ecab320f06d8554ea6380940ec79"),
            ("t10k-labels-idx1-ubyte.gz", "bb300cfdad3c16e7a12a480ee83cd310"),
        ),
    ),
    # MD5 sums as pinned by torchvision.datasets.KMNIST.resources
    "kmnist": Remote(
        "http://codh.rois.ac.jp/kmnist/dataset/kmnist/",
        (
            ("train-images-idx3-ubyte.gz", "bdb82020997e1d708af4cf47b453dcf7"),
            ("train-labels-idx1-ubyte.gz", "e144d726b3acfaa3e44228e80efcd344"),
            ("t10k-images-idx3-ubyte.gz", "5c965bf0a639b31b8f53240b1b52f4d7"),
            ("t10k-labels-idx1-ubyte.gz", "7320c461ea6c1c855c0b718fb2a4b134"),
        ),
    ),
}
# The Kuzushiji-MNIST classes in label order (the data set's README, as romanised
# by torchvision.datasets.KMNIST.classes).
KMNIST_CLASSES = ("o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo")


def data_home() -> Path:
    return cache_root() / "data"


def local_folder(name: str) -> Path | None:
    """The fetched folder of `name`, or None when it has not been fetched."""
    folder = data_home() / name
    return folder if folder.is_dir() else None


def missing_message(name: str) -> str:
    return (
        f"data set {name!r} has not been downloaded ({data_home() / name} does not "
        f"exist); run `cnnlab data get {name}` once to fetch it"
    )


Progress = Callable[[str, int, int | None], None]  # file, bytes so far, total


def get(name: str, progress: Progress | None = None) -> Path:
    """Download, verify and unpack data set `name`; return its folder (at once if
    it is already there)."""
    if name not in SOURCES:
        raise DataError(
            f"cannot download {name!r}; `cnnlab data get` knows {', '.join(SOURCES)}"
        )
    final = data_home() / name
    if final.is_dir():
        return final
    remote = SOURCES[name]
    base = os.environ.get(URL_ENV) or remote.base
    data_home().mkdir(parents=True, exist_ok=True)
    work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=data_home()))
    try:
        for file_name, md5 in remote.files:
            url = base.rstrip("/") + "/" + file_name
            path = work / file_name
            _download(url, path, md5, progress)
            if remote.unpack:
                _unpack(path, work)
                path.unlink()
        try:
            os.rename(work, final)
        except OSError:
            if not final.is_dir():  # not another process finishing first
                raise
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return final


def _download(url: str, path: Path, md5: str, progress: Progress | None) -> None:
    digest = hashlib.md5(usedforsecurity=False)
    try:
        with urllib.request.urlopen(url, timeout=TIMEOUT) as answer:
            total = answer.headers.get("Content-Length")
            total = int(total) if total and total.isdigit() else None
            done = 0
            with open(path, "wb") as out:
                while chunk := answer.read(CHUNK):
                    out.write(chunk)
                    digest.update(chunk)
                    done += len(chunk)
                    if progress is not None:
                        progress(path.name, done, total)
    except (urllib.error.URLError, OSError) as err:
        reason = getattr(err, "reason", None) or err
        raise DataError(
            f"{url}: download failed ({reason}); check the network connection and "
            f"try again, or set {URL_ENV} to a mirror"
        ) from err
    got = digest.hexdigest()
    if got != md5:
        raise DataError(
            f"{url}: MD5 mismatch (expected {md5}, got {got}); the download is "
            "corrupt or the file changed at its source - nothing was kept; try again"
        )


def _unpack(archive: Path, into: Path) -> None:
    """Unpack a .tar.gz with tarfile's "data" filter: no links out, no devices, no
    absolute or `..` paths."""
    try:
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(into, filter="data")
    except (tarfile.TarError, OSError) as err:
        raise DataError(
            f"{archive.name}: cannot unpack the archive ({err}); try again"
        ) from err
