"""Image sets stored as arrays: `.npz` archives in the keras.datasets layout and
the CIFAR-10 / CIFAR-100 binary versions.

An `.npz` holds x_train, y_train, x_test, y_test (uint8 images (N, H, W) or
(N, H, W, C) with C of 1 or 3; integer labels (N,) or (N, 1)) and optionally
class_names; it is read with allow_pickle=False, so it can hold no code.

The CIFAR binary format (the "binary version" on
https://www.cs.toronto.edu/~kriz/cifar.html): each record is the label byte(s)
followed by 3,072 bytes, the 1,024 red, then green, then blue values of a 32x32
image in row order. CIFAR-10 has one label byte per record, in data_batch_1..5.bin
and test_batch.bin, with names in batches.meta.txt; CIFAR-100 has two (coarse,
fine: the fine label is used), in train.bin and test.bin, with names in
fine_label_names.txt.
"""

from __future__ import annotations

import zipfile
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError
from cnnlab.util.fsio import read_bounded

NPZ_KEYS = ("x_train", "y_train", "x_test", "y_test")
MAX_NPZ_BYTES = 8 << 30
CIFAR_SIDE = 32
CIFAR_PIXELS = CIFAR_SIDE * CIFAR_SIDE * 3
CIFAR10_TRAIN = tuple(f"data_batch_{i}.bin" for i in range(1, 6))
CIFAR10_TEST = ("test_batch.bin",)
CIFAR100_TRAIN = ("train.bin",)
CIFAR100_TEST = ("test.bin",)
# The folders the publisher's archives unpack into.
CIFAR_SUBFOLDERS = ("cifar-10-batches-bin", "cifar-100-binary")
MAX_CIFAR_BYTES = 1 << 30


def load_npz(path: Path) -> dict:
    """Read a keras.datasets-layout .npz into the arrays of a data set."""
    try:
        with np.load(path, allow_pickle=False) as archive:
            missing = [k for k in NPZ_KEYS if k not in archive.files]
            if missing:
                raise DataError(
                    f"{path}: lacks the array(s) {', '.join(missing)}; an .npz needs "
                    f"{', '.join(NPZ_KEYS)} (as keras.datasets returns them) and "
                    "optionally class_names"
                )
            arrays = {k: archive[k] for k in NPZ_KEYS}
            names = archive["class_names"] if "class_names" in archive.files else None
    except ValueError as err:  # an object array: pickled data, refused
        raise DataError(
            f"{path}: cannot read the archive without unpickling ({err}); store "
            "plain numeric arrays (and class_names as a string array)"
        ) from err
    except (OSError, zipfile.BadZipFile, EOFError) as err:
        raise DataError(
            f"{path}: not a readable .npz archive ({err}); save it with numpy.savez"
        ) from err
    for split in ("train", "test"):
        x, y = arrays[f"x_{split}"], arrays[f"y_{split}"]
        arrays[f"x_{split}"] = _check_images(x, path, f"x_{split}")
        arrays[f"y_{split}"] = _check_labels(y, len(x), path, f"y_{split}")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(
            f"{path}: x_train holds {arrays['x_train'].shape[1:]} images but x_test "
            f"{arrays['x_test'].shape[1:]}; both must have one shape"
        )
    count = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    if names is None:
        class_names = tuple(str(i) for i in range(count))
    else:
        class_names = tuple(str(n) for n in np.asarray(names).ravel())
        if len(class_names) < count:
            raise DataError(
                f"{path}: class_names has {len(class_names)} names but the labels "
                f"go up to {count - 1}; give one name per class"
            )
    return arrays | {"class_names": class_names, "info": {"kind": "npz"}}


def _check_images(x: np.ndarray, path: Path, key: str) -> np.ndarray:
    ok_dims = x.ndim == 3 or (x.ndim == 4 and x.shape[3] in (1, 3))
    if x.dtype != np.uint8 or not ok_dims or 0 in x.shape:
        raise DataError(
            f"{path}: {key} must be uint8 images of shape (N, H, W) or (N, H, W, C) "
            f"with C 1 or 3. Received: {x.dtype} of shape {x.shape}"
        )
    return x[..., 0] if x.ndim == 4 and x.shape[3] == 1 else x


def _check_labels(y: np.ndarray, count: int, path: Path, key: str) -> np.ndarray:
    if y.ndim == 2 and y.shape[1] == 1:
        y = y[:, 0]
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise DataError(
            f"{path}: {key} must be integer labels of shape (N,) or (N, 1). "
            f"Received: {y.dtype} of shape {y.shape}"
        )
    if len(y) != count:
        raise DataError(
            f"{path}: {key} holds {len(y)} labels for {count} images; give one label "
            "per image"
        )
    if len(y) and int(y.min()) < 0:
        raise DataError(f"{path}: {key} holds negative labels; labels count from 0")
    return y.astype(np.int64)


def cifar_folder(folder: Path) -> Path | None:
    """The folder holding CIFAR binary batches: `folder` or the one its archive
    unpacks into; None when there are none."""
    for candidate in (folder, *(folder / sub for sub in CIFAR_SUBFOLDERS)):
        if (candidate / CIFAR10_TEST[0]).is_file() or (
            candidate / CIFAR100_TEST[0]
        ).is_file():
            return candidate
    return None


def load_cifar(folder: Path) -> dict:
    """Read CIFAR-10 or CIFAR-100 binary batches from `folder`."""
    if (folder / CIFAR10_TEST[0]).is_file():
        train, test, label_bytes = CIFAR10_TRAIN, CIFAR10_TEST, 1
        names_file = folder / "batches.meta.txt"
    else:
        train, test, label_bytes = CIFAR100_TRAIN, CIFAR100_TEST, 2
        names_file = folder / "fine_label_names.txt"
    arrays = {}
    for split, files in (("train", train), ("test", test)):
        missing = [f for f in files if not (folder / f).is_file()]
        if missing:
            raise DataError(
                f"{folder}: lacks {', '.join(missing)}; unpack the whole CIFAR "
                "binary archive there (cnnlab data get cifar10 fetches it)"
            )
        parts = [_read_batch(folder / f, label_bytes) for f in files]
        arrays[f"x_{split}"] = np.concatenate([p[0] for p in parts])
        arrays[f"y_{split}"] = np.concatenate([p[1] for p in parts])
    count = int(max(arrays["y_train"].max(), arrays["y_test"].max())) + 1
    names = None
    if names_file.is_file():
        text = read_bounded(names_file, 1 << 20, "a label names file", DataError)
        lines = [line.strip() for line in text.decode("utf-8", "replace").split("\n")]
        names = tuple(line for line in lines if line)
    if not names or len(names) < count:
        names = tuple(str(i) for i in range(count))
    return arrays | {"class_names": names, "info": {"kind": "cifar"}}


def _read_batch(path: Path, label_bytes: int) -> tuple[np.ndarray, np.ndarray]:
    raw = read_bounded(path, MAX_CIFAR_BYTES, "a CIFAR batch file", DataError)
    record = label_bytes + CIFAR_PIXELS
    if len(raw) == 0 or len(raw) % record:
        raise DataError(
            f"{path}: {len(raw):,} bytes is not a whole number of {record}-byte "
            "CIFAR records; the file is truncated or not a CIFAR binary batch - "
            "unpack the archive again"
        )
    table = np.frombuffer(raw, dtype=np.uint8).reshape(-1, record)
    labels = table[:, label_bytes - 1].astype(np.int64)  # CIFAR-100: the fine label
    planes = table[:, label_bytes:].reshape(-1, 3, CIFAR_SIDE, CIFAR_SIDE)
    return np.ascontiguousarray(planes.transpose(0, 2, 3, 1)), labels
