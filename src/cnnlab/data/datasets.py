"""MNIST-family data: IDX files read into tensors, checked, and split for training."""

from __future__ import annotations

import functools
import hashlib
import importlib.resources
import math
import os
import re
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnlab.data import fetch
from cnnlab.data.archives import cifar_folder, load_cifar, load_npz
from cnnlab.data.folders import IMAGE_SUFFIXES, ImageOptions, load_folder
from cnnlab.errors import DataError
from cnnlab.util.fsio import read_bounded
from cnnlab.util.text import is_int, show_value

IMAGE_SHAPE = (28, 28)

TRAIN_IMAGES = "train-images-idx3-ubyte"
TRAIN_LABELS = "train-labels-idx1-ubyte"
TEST_IMAGES = "t10k-images-idx3-ubyte"
TEST_LABELS = "t10k-labels-idx1-ubyte"
IDX_FILES = (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS)
SUMS_FILE = "SHA256SUMS"

FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
# Labels are class numbers 0..N-1, and every class gets a name and an output unit:
# a label past this (an int32 IDX label of 2^31-1) is a corrupt file, not a class.
MAX_CLASSES = 100_000
MNIST_CLASSES = tuple(str(i) for i in range(10))
FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
VALIDATION_MODES = ("holdout", "test", "none")

# IDX type byte -> big-endian numpy dtype, as defined by the format's original spec.
_IDX_DTYPES = {
    0x08: np.dtype(">u1"),
    0x09: np.dtype(">i1"),
    0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"),
    0x0D: np.dtype(">f4"),
    0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
# An IDX file's limit, raw or inflated: EMNIST's largest (byclass training images)
# is 547 MB; a bigger header is a corrupt or hostile file.
MAX_IDX_BYTES = 1 << 31
_SUMS_LINE = re.compile(r"^([0-9a-fA-F]{64}) [ *](.+)$")


@dataclass(frozen=True)
class Dataset:
    """Train and test uint8 images, (N, H, W) for one channel or (N, H, W, C) for
    colour, with int64 labels; treat as read-only. An image folder with a val/
    folder brings its own hold-out (x_val, y_val); `info` says what was read
    (kind, layout, files skipped or ignored)."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    num_classes: int
    source: str
    class_names: tuple[str, ...]
    x_val: torch.Tensor | None = None
    y_val: torch.Tensor | None = None
    info: dict[str, Any] = field(default_factory=dict, compare=False)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """(H, W, C) of the images."""
        shape = tuple(self.x_train.shape[1:])
        return (*shape, 1) if len(shape) == 2 else shape  # type: ignore[return-value]


@dataclass(frozen=True)
class Split:
    """Training, optional validation and test tensors chosen from a Dataset."""

    x_train: torch.Tensor
    y_train: torch.Tensor
    x_val: torch.Tensor | None
    y_val: torch.Tensor | None
    x_test: torch.Tensor
    y_test: torch.Tensor
    validation: str


@dataclass(frozen=True)
class _Source:
    """Where a named data set lives and what to tell the user when it is broken."""

    name: str
    folder: Path
    class_names: tuple[str, ...] | None
    sums_required: bool
    fix: str


# ---------------------------------------------------------------------------
# IDX decoding


def read_idx(path: Path) -> np.ndarray:
    """Read one IDX file (plain, or gzip when the name ends in .gz) into an array."""
    path = Path(path)
    return _decode_idx(_decompress(_read_bytes(path), path), path)


def _read_bytes(path: Path, limit: int = MAX_IDX_BYTES) -> bytes:
    """Return a regular file's raw bytes (at most `limit`), turning OS errors into
    a DataError."""
    try:
        return read_bounded(path, limit, "an IDX file", DataError)
    except OSError as err:
        reason = err.strerror or str(err)
        raise DataError(f"{path}: cannot read the file ({reason})") from err


def _decompress(raw: bytes, path: Path) -> bytes:
    """Gunzip raw when path ends in .gz; plain files pass through unchanged.

    Inflated against the size the IDX header promises: the header comes first,
    then at most that many bytes (and one more, to notice a longer stream), so a
    small .gz that would inflate to gigabytes is refused after a few megabytes.
    """
    if path.suffix != ".gz":
        return raw
    if not raw.startswith(_GZIP_MAGIC):
        raise DataError(
            f"{path}: not a gzip file (it does not start with 1f 8b); "
            "replace it with the original .gz or store it decompressed without .gz"
        )
    inflater = zlib.decompressobj(wbits=16 + zlib.MAX_WBITS)  # gzip framing
    try:
        head = inflater.decompress(raw, 4)
        if len(head) == 4 and head[:2] == b"\x00\x00" and head[3] > 0:
            head += inflater.decompress(inflater.unconsumed_tail, 4 * head[3])
        promised = _promised_size(head, path)
        limit = MAX_IDX_BYTES if promised is None else promised
        body = inflater.decompress(inflater.unconsumed_tail, limit - len(head) + 1)
    except zlib.error as err:
        raise DataError(
            f"{path}: corrupt gzip data ({err}); restore the original file"
        ) from err
    data = head + body
    if promised is None and len(data) > limit:
        raise DataError(
            f"{path}: inflates to more than {limit:,} bytes, the limit for an IDX "
            "file; refusing to inflate the rest. Restore the original file"
        )
    if promised is not None and len(data) > promised:
        raise DataError(
            f"{path}: inflates to more than the {promised:,} bytes its IDX header "
            "promises; refusing to inflate the rest. Restore the original file"
        )
    if not inflater.eof and promised is not None:  # input ended before the stream
        raise DataError(
            f"{path}: the gzip stream is truncated; the file is incomplete - "
            "download or copy it again"
        )
    return data


def _promised_size(head: bytes, path: Path) -> int | None:
    """The whole size an IDX header says its file has, checked against the limit;
    None for a header that is not an IDX one (`_decode_idx` then says why)."""
    if len(head) < 4 or head[:2] != b"\x00\x00" or head[3] == 0:
        return None
    dtype = _IDX_DTYPES.get(head[2])
    if dtype is None or len(head) < 4 + 4 * head[3]:
        return None
    ndim = head[3]
    shape = [int.from_bytes(head[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)]
    promised = 4 + 4 * ndim + math.prod(shape) * dtype.itemsize
    if promised > MAX_IDX_BYTES:
        raise DataError(
            f"{path}: its IDX header promises {promised:,} bytes of data (shape "
            f"{tuple(shape)}), over the limit of {MAX_IDX_BYTES:,} bytes for an IDX "
            "file; restore the original file"
        )
    return promised


def _decode_idx(data: bytes, path: Path) -> np.ndarray:
    """Parse IDX bytes: 2 zero bytes, a type byte, ndim, big-endian sizes, data."""
    if len(data) < 4 or data[0:2] != b"\x00\x00" or data[2] not in _IDX_DTYPES:
        raise DataError(
            f"{path}: not an IDX file (magic bytes {data[:4].hex(' ') or 'missing'}, "
            "expected 00 00 <type> <ndim>); pass the original IDX file"
        )
    dtype = _IDX_DTYPES[data[2]]
    ndim = data[3]
    header_len = 4 + 4 * ndim
    if ndim == 0 or len(data) < header_len:
        raise DataError(
            f"{path}: IDX header is truncated or declares {ndim} dimensions; "
            "restore the original file"
        )
    shape = tuple(
        int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim)
    )
    # math.prod cannot overflow as numpy's int64 would on a corrupt header's sizes
    # (up to 2**32 - 1 each).
    expected = header_len + math.prod(shape) * dtype.itemsize
    if len(data) != expected:
        state = "truncated" if len(data) < expected else "longer than its header says"
        shown = shape if ndim <= 8 else f"of {ndim} dimensions, {shape[:4]}..."
        raise DataError(
            f"{path}: {state} (header shape {shown} needs {expected} bytes, "
            f"the data has {len(data)}); restore the original file"
        )
    flat = np.frombuffer(data, dtype=dtype, offset=header_len)
    # frombuffer views the immutable bytes; copying gives torch a writable,
    # native-endian array (47 MB for MNIST's training images, ~20 ms).
    return flat.astype(dtype.newbyteorder("="), copy=True).reshape(shape)


# ---------------------------------------------------------------------------
# Checksums


def _read_sums(sums_path: Path) -> dict[str, str]:
    """Parse a sha256sum-style file into {file name: lower-case hex digest}."""
    text = _read_bytes(sums_path).decode("utf-8", errors="replace")
    sums: dict[str, str] = {}
    for number, line in enumerate(text.splitlines(), start=1):
        if not line.strip() or line.lstrip().startswith("#"):
            continue
        match = _SUMS_LINE.match(line.rstrip())
        if match is None:
            raise DataError(
                f"{sums_path}: line {number} is not '<64 hex digits>  <file name>'; "
                "fix or delete that line"
            )
        sums[match.group(2)] = match.group(1).lower()
    return sums


def _verify(raw: bytes, path: Path, expected: str, fix: str) -> None:
    """Raise a DataError when raw's SHA-256 is not the expected digest."""
    got = hashlib.sha256(raw).hexdigest()
    if got != expected:
        raise DataError(
            f"{path}: SHA-256 mismatch (expected {expected}, got {got}); "
            f"the file is corrupt or was changed - {fix}"
        )


# ---------------------------------------------------------------------------
# Locating and loading a data set


def _embedded_mnist_dir() -> Path:
    """Return the folder of the MNIST copy shipped inside the package."""
    folder = importlib.resources.files("cnnlab") / "datasets" / "mnist"
    if not isinstance(folder, Path):
        raise DataError(
            f"the embedded MNIST at {folder} is not a folder on disk (cnnlab is "
            "installed zipped); reinstall cnnlab unzipped or pass --data-dir"
        )
    return folder


def _resolve_source(name: str) -> _Source:
    """Map a data set name or folder path onto where and how to load it."""
    if name == "mnist":
        return _Source(
            name, _embedded_mnist_dir(), MNIST_CLASSES, True, "reinstall cnnlab"
        )
    if name == "fashion-mnist" and fetch.local_folder(name) is not None:
        if not FASHION_MNIST_DIR.is_dir():  # fetched by `cnnlab data get`
            return _Source(
                name,
                data_home_folder(name),
                FASHION_MNIST_CLASSES,
                False,
                "delete the folder and run `cnnlab data get fashion-mnist` again",
            )
    if name == "fashion-mnist":
        if not FASHION_MNIST_DIR.is_dir():
            raise DataError(
                f"Fashion-MNIST is neither installed ({FASHION_MNIST_DIR} does not "
                "exist) nor downloaded; run `cnnlab data get fashion-mnist` once to "
                "fetch it, or `apt-get install dataset-fashion-mnist`, or pass "
                "--data-dir with a folder holding its four IDX files"
            )
        return _Source(
            name,
            FASHION_MNIST_DIR,
            FASHION_MNIST_CLASSES,
            False,
            "reinstall it with `apt-get install --reinstall dataset-fashion-mnist`",
        )
    folder = Path(name).expanduser()
    if not folder.is_dir():
        state = "is not a folder" if folder.exists() else "does not exist"
        raise DataError(
            f"unknown data set {name!r}: {folder} {state}; use 'mnist', "
            "'fashion-mnist' or a folder of IDX files, CIFAR binary files or class "
            "folders of images, or an .npz archive"
        )
    return _Source(name, folder, None, False, "restore the file or fix SHA256SUMS")


def data_home_folder(name: str) -> Path:
    return fetch.data_home() / name


def _pick_file(folder: Path, stem: str, sums: dict[str, str]) -> Path | None:
    """Choose stem or stem.gz in folder, preferring one SHA256SUMS can verify."""
    candidates = [folder / stem, folder / f"{stem}.gz"]
    # Anything but a folder: a FIFO or device is then refused by name when read.
    present = [path for path in candidates if path.exists() and not path.is_dir()]
    listed = [path for path in present if path.name in sums]
    if len(present) == 2 and len(listed) != 1:
        _check_twins(*present)
    return (listed or present or [None])[0]


def _check_twins(plain: Path, packed: Path) -> None:
    """X and X.gz both present, neither singled out by SHA256SUMS: cnnlab uses X,
    which is only right if the two hold the same data."""
    if _decompress(_read_bytes(packed), packed) != _read_bytes(plain):
        raise DataError(
            f"{plain} and {packed.name} both exist and hold different data; cnnlab "
            f"would use {plain.name} (the plain file). Delete the one you do not "
            "want, or list the right one in SHA256SUMS"
        )


def _locate_files(source: _Source, sums: dict[str, str]) -> list[Path]:
    """Return the four IDX files of source, or a DataError listing those missing."""
    found = [_pick_file(source.folder, stem, sums) for stem in IDX_FILES]
    missing = [
        stem for stem, path in zip(IDX_FILES, found, strict=True) if path is None
    ]
    if missing:
        names = ", ".join(f"{stem}[.gz]" for stem in missing)
        fix = (
            source.fix
            if source.class_names
            else "put the four IDX files there, plain or .gz"
        )
        raise DataError(f"missing {names} in {source.folder}; {fix}")
    return [path for path in found if path is not None]


def _load_sums(source: _Source) -> dict[str, str]:
    """Read source's SHA256SUMS, which the embedded MNIST must have."""
    sums_path = source.folder / SUMS_FILE
    if sums_path.is_file():
        return _read_sums(sums_path)
    if source.sums_required:
        raise DataError(f"{sums_path} is missing; {source.fix}")
    return {}


def _read_checked(path: Path, sums: dict[str, str], source: _Source) -> np.ndarray:
    """Read one IDX file, verifying it first when SHA256SUMS lists it."""
    raw = _read_bytes(path)
    if path.name in sums:
        _verify(raw, path, sums[path.name], source.fix)
    elif source.sums_required:
        raise DataError(f"{path} is not listed in {SUMS_FILE}; {source.fix}")
    return _decode_idx(_decompress(raw, path), path)


def _check_pair(images: np.ndarray, labels: np.ndarray, paths: list[Path]) -> None:
    """Check one images/labels pair for shape, dtype and matching counts."""
    image_path, label_path = paths
    if images.ndim != 3 or images.dtype != np.uint8:
        raise DataError(
            f"{image_path}: expected uint8 images of shape (N, H, W), got "
            f"{images.dtype} of shape {images.shape}; pass an IDX3 file of type 0x08"
        )
    if labels.ndim != 1 or not np.issubdtype(labels.dtype, np.integer):
        raise DataError(
            f"{label_path}: expected integer labels of shape (N,), got "
            f"{labels.dtype} of shape {labels.shape}; pass an IDX1 label file"
        )
    if len(images) != len(labels):
        raise DataError(
            f"{image_path} holds {len(images)} images but {label_path} holds "
            f"{len(labels)} labels; use files from the same data set"
        )
    if len(images) == 0 or 0 in images.shape[1:]:
        raise DataError(f"{image_path}: holds no pixels (shape {images.shape})")


def _check_labels(
    labels: np.ndarray, path: Path, class_names: tuple[str, ...] | None
) -> None:
    """Check labels are non-negative and, for a named data set, below its classes."""
    low, high = int(labels.min()), int(labels.max())
    limit = len(class_names) if class_names else MAX_CLASSES
    if low < 0 or high >= limit:
        allowed = f"0..{limit - 1:,}"
        allowed += "" if class_names else f": at most {MAX_CLASSES:,} classes"
        raise DataError(
            f"{path}: labels out of range (found {low}..{high}, expected {allowed}); "
            "the file does not belong to this data set"
        )


def _build_dataset(source: _Source) -> Dataset:
    """Read, verify and check the four IDX files of source."""
    sums = _load_sums(source)
    paths = _locate_files(source, sums)
    arrays = [_read_checked(path, sums, source) for path in paths]
    x_train, y_train, x_test, y_test = arrays
    _check_pair(x_train, y_train, paths[0:2])
    _check_pair(x_test, y_test, paths[2:4])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise DataError(
            f"{paths[0]} has {x_train.shape[1:]} images but {paths[2]} has "
            f"{x_test.shape[1:]}; use train and test files from the same data set"
        )
    _check_labels(y_train, paths[1], source.class_names)
    _check_labels(y_test, paths[3], source.class_names)
    present = np.unique(y_train)
    if len(present) == 1:  # the advice would be a 1-unit softmax, which outputs 1.0
        raise DataError(
            f"{paths[1]}: every training label is {int(present[0])}: one class, and "
            "a classifier needs at least 2 to learn anything; check that the label "
            "files are the right ones"
        )
    num_classes = int(max(y_train.max(), y_test.max())) + 1
    names = source.class_names or tuple(str(i) for i in range(num_classes))
    return Dataset(
        name=source.name,
        x_train=torch.from_numpy(x_train),
        y_train=torch.from_numpy(y_train.astype(np.int64)),
        x_test=torch.from_numpy(x_test),
        y_test=torch.from_numpy(y_test.astype(np.int64)),
        num_classes=num_classes,
        source=str(source.folder),
        class_names=names[:num_classes],
    )


def _fingerprint(folder: Path) -> tuple[tuple[str, int, int], ...]:
    """Name, size and mtime of the data files, so that edits invalidate the cache."""
    wanted = {SUMS_FILE, *IDX_FILES, *(f"{stem}.gz" for stem in IDX_FILES)}
    stats = []
    for name in sorted(wanted):
        try:
            stat = os.stat(folder / name)
        except OSError:
            continue
        stats.append((name, stat.st_size, stat.st_mtime_ns))
    return tuple(stats)


def _build_once(source: _Source, fingerprint: tuple) -> Dataset:
    """Build a Dataset; the fingerprint only keys the caches below."""
    return _build_dataset(source)


# Decoding MNIST takes ~0.4 s and holds ~55 MB. Named sets get their own cache so
# that loading many folders (as tests do) never evicts MNIST; 2 entries each bound
# the memory a long session can pile up through changed files.
_load_named = functools.lru_cache(maxsize=2)(_build_once)
_load_folder = functools.lru_cache(maxsize=2)(_build_once)


def array_kind(name: str) -> str | None:
    """ "npz", "cifar" or "folder" when `name` is such a source, else None (a named
    set or an IDX folder, which `_resolve_source` handles)."""
    if name in ("mnist", "fashion-mnist", *fetch.SOURCES):
        return None
    path = Path(name).expanduser()
    if path.is_file() and path.suffix.lower() == ".npz":
        return "npz"
    if not path.is_dir():
        return None
    idx_names = {*IDX_FILES, *(f"{stem}.gz" for stem in IDX_FILES)}
    if any((path / n).exists() for n in idx_names):
        return None
    if cifar_folder(path) is not None:
        return "cifar"
    # A folder with neither subfolders nor images: the IDX message says what to add.
    entries = list(path.iterdir()) if os.access(path, os.R_OK | os.X_OK) else []
    if not any(e.is_dir() or e.suffix.lower() in IMAGE_SUFFIXES for e in entries):
        return None
    return "folder"


_ARRAY_MEMO: dict[tuple, Dataset] = {}
_ARRAY_MEMO_SIZE = 2  # as the IDX caches above: a long session's memory stays bounded


def _load_arrays(
    name: str, kind: str, options: ImageOptions, path: Path | None = None
) -> Dataset:
    """A Dataset from an .npz, CIFAR batches or an image folder (at `path`, else
    the path `name` gives)."""
    path = path or Path(name).expanduser()
    if kind == "cifar":
        path = cifar_folder(path) or path
    if kind == "folder":
        arrays = load_folder(path, options)
    else:
        stats = tuple(
            (p.name, p.stat().st_size, p.stat().st_mtime_ns)
            for p in ([path] if kind == "npz" else sorted(path.iterdir()))
            if p.is_file()
        )
        memo_key = (str(path.resolve()), kind, stats)
        if memo_key in _ARRAY_MEMO:
            return _ARRAY_MEMO[memo_key]
        arrays = load_npz(path) if kind == "npz" else load_cifar(path)
    dataset = _dataset_from_arrays(name, path, arrays)
    if kind != "folder":
        if len(_ARRAY_MEMO) >= _ARRAY_MEMO_SIZE:
            _ARRAY_MEMO.pop(next(iter(_ARRAY_MEMO)))
        _ARRAY_MEMO[memo_key] = dataset
    return dataset


def _dataset_from_arrays(name: str, path: Path, arrays: dict) -> Dataset:
    names = tuple(arrays["class_names"])
    present = np.unique(arrays["y_train"])
    if len(present) == 1:
        raise DataError(
            f"{path}: every training label is {int(present[0])}: one class, and a "
            "classifier needs at least 2 to learn anything; add images of the other "
            "classes"
        )

    def tensor(key: str) -> torch.Tensor | None:
        value = arrays.get(key)
        return None if value is None else torch.from_numpy(np.ascontiguousarray(value))

    return Dataset(
        name=name,
        x_train=tensor("x_train"),
        y_train=tensor("y_train"),
        x_test=tensor("x_test"),
        y_test=tensor("y_test"),
        num_classes=len(names),
        source=str(path),
        class_names=names,
        x_val=tensor("x_val"),
        y_val=tensor("y_val"),
        info=dict(arrays.get("info", {})),
    )


def load_dataset(name: str = "mnist", options: ImageOptions | None = None) -> Dataset:
    """Load 'mnist' (embedded), 'fashion-mnist' (Debian), an IDX folder, an .npz
    archive, CIFAR binary batches or a folder of images (read by `options`)."""
    if name in ("cifar10", "cifar100", "kmnist"):  # `cnnlab data get NAME`
        folder = fetch.local_folder(str(name))
        if folder is None:
            raise DataError(fetch.missing_message(str(name)))
        if name == "kmnist":
            fix = "delete the folder and run `cnnlab data get kmnist` again"
            source = _Source("kmnist", folder, fetch.KMNIST_CLASSES, False, fix)
            return _load_named(source, _fingerprint(folder))
        return _load_arrays(str(name), "cifar", options or ImageOptions(), folder)
    kind = array_kind(str(name))
    if kind is not None:
        return _load_arrays(str(name), kind, options or ImageOptions())
    source = _resolve_source(str(name))
    load = _load_named if source.class_names is not None else _load_folder
    return load(source, _fingerprint(source.folder))


# ---------------------------------------------------------------------------
# Splitting and conversion


def _check_limit(value: int | None, flag: str) -> None:
    """Reject a limit that is not None or a positive integer."""
    if value is None:
        return
    if not is_int(value) or value <= 0:
        raise DataError(
            f"{flag} must be a positive whole number, got {show_value(value)}; "
            f"pass e.g. {flag}=1000 or leave it unset for all images"
        )


def _check_val_size(val_size: int, n_train: int) -> None:
    """Reject a hold-out size that leaves no training or no validation images."""
    if not is_int(val_size) or not 0 < val_size < n_train:
        raise DataError(
            f"val_size={show_value(val_size)} (--val-size) is out of range: the "
            f"training set has {n_train} images, so choose 1..{n_train - 1}, or "
            "validation 'test' or 'none' (--validation)"
        )


def _check_train_limit(remaining: int, train_limit: int | None, held: str) -> None:
    """A hold-out that leaves fewer training images than --train-limit asks for
    is said, not trained on quietly (one image, from a mistyped --val-size)."""
    if train_limit is not None and remaining < train_limit:
        raise DataError(
            f"{held} leaves {remaining:,} training image(s), fewer than "
            f"train_limit={train_limit:,} (--train-limit) asks for; hold out fewer "
            "images, or lower --train-limit"
        )


def check_own_holdout(ds: Dataset, validation: str, asked: dict[str, Any]) -> None:
    """A hold-out size asked for (`asked`: {"val_size": 500}) on a data set that
    brings its own hold-out (an image folder's val/) is an error, never ignored:
    that folder is the hold-out."""
    if validation != "holdout" or ds.x_val is None or not asked:
        return
    name, value = next(iter(asked.items()))
    flag = "--" + name.replace("_", "-")
    raise DataError(
        f"{name}={show_value(value)} ({flag}) sizes a hold-out drawn from the "
        f"training images, but {ds.source} has its own val/ folder "
        f"({len(ds.x_val):,} images), which is the hold-out; drop {flag}, or remove "
        "or rename the val/ folder to hold out training images instead"
    )


def split_dataset(
    ds: Dataset,
    validation: str = "holdout",
    val_size: int = 10_000,
    split_seed: int = 0,
    train_limit: int | None = None,
    test_limit: int | None = None,
    val_fraction: float | None = None,
) -> Split:
    """Choose training, validation and test tensors according to validation.

    The hold-out is the data set's own validation images when it has them (an
    image folder's val/), else a stratified `val_fraction` of the training images
    when given, else `val_size` images drawn at random (seeded by split_seed)."""
    if validation not in VALIDATION_MODES:
        raise DataError(
            f"unknown validation mode {show_value(validation)}; "
            f"choose one of {', '.join(VALIDATION_MODES)}"
        )
    _check_limit(train_limit, "train_limit")
    _check_limit(test_limit, "test_limit")
    x_test, y_test = ds.x_test[:test_limit], ds.y_test[:test_limit]
    if validation == "holdout" and ds.x_val is not None:
        return Split(
            x_train=ds.x_train[:train_limit],
            y_train=ds.y_train[:train_limit],
            x_val=ds.x_val,
            y_val=ds.y_val,
            x_test=x_test,
            y_test=y_test,
            validation=validation,
        )
    if validation == "holdout" and val_fraction is not None:
        from cnnlab.data.folders import stratified_pick

        held = torch.from_numpy(
            stratified_pick(ds.y_train.numpy(), val_fraction, split_seed)
        )
        if not held.any() or held.all():
            raise DataError(
                f"val_fraction={val_fraction} holds out {int(held.sum())} of "
                f"{len(held)} training images; choose a fraction that leaves both "
                "training and validation images, or validation 'test' or 'none'"
            )
        kept = torch.nonzero(~held)[:, 0]
        _check_train_limit(len(kept), train_limit, f"val_fraction={val_fraction}")
        kept = kept[:train_limit]
        return Split(
            x_train=ds.x_train[kept],
            y_train=ds.y_train[kept],
            x_val=ds.x_train[held],
            y_val=ds.y_train[held],
            x_test=x_test,
            y_test=y_test,
            validation=validation,
        )
    if validation == "holdout":
        _check_val_size(val_size, len(ds.x_train))
        _check_train_limit(
            len(ds.x_train) - val_size,
            train_limit,
            f"val_size={val_size:,} (--val-size) of {len(ds.x_train):,}",
        )
        generator = torch.Generator().manual_seed(split_seed)
        order = torch.randperm(len(ds.x_train), generator=generator)
        val_idx, train_idx = order[:val_size], order[val_size:][:train_limit]
        return Split(
            x_train=ds.x_train[train_idx],
            y_train=ds.y_train[train_idx],
            x_val=ds.x_train[val_idx],
            y_val=ds.y_train[val_idx],
            x_test=x_test,
            y_test=y_test,
            validation=validation,
        )
    x_train, y_train = ds.x_train[:train_limit], ds.y_train[:train_limit]
    has_val = validation == "test"
    return Split(
        x_train=x_train,
        y_train=y_train,
        x_val=x_test if has_val else None,
        y_val=y_test if has_val else None,
        x_test=x_test,
        y_test=y_test,
        validation=validation,
    )


def to_float(x_uint8: torch.Tensor) -> torch.Tensor:
    """Turn uint8 images (N, H, W) or (N, H, W, C) into float32 (N, C, H, W)
    scaled to [0, 1]."""
    if x_uint8.dtype != torch.uint8 or x_uint8.dim() not in (3, 4):
        raise ValueError(
            "to_float expects uint8 (N, H, W) or (N, H, W, C), "
            f"got {x_uint8.dtype} {tuple(x_uint8.shape)}"
        )
    return channels_first(x_uint8).to(torch.float32).div_(255.0)


def channels_first(x: torch.Tensor) -> torch.Tensor:
    """(N, H, W) -> (N, 1, H, W); (N, H, W, C) -> (N, C, H, W) (a view)."""
    return x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
