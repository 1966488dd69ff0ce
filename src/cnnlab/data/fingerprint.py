"""A data set's fingerprint: one digest of what training reads from it.

The digest covers the decoded arrays (each split's name, dtype, shape and bytes)
and the class names: the pixels and labels a net sees, not the files they came
from. Two copies of a data set on two machines, with other modification times or
compressed differently, have the same fingerprint when they decode to the same
images; one changed pixel or label gives another. The Ray executor sends the
driver's fingerprint with each trial and the worker compares its own
(`check_fingerprint`), so a trial never trains on a copy that differs.
"""

from __future__ import annotations

import hashlib

import numpy as np

from cnnlab.data.datasets import Dataset
from cnnlab.errors import DataError

FORMAT = 1  # bump when what the digest covers changes
SPLITS = ("x_train", "y_train", "x_val", "y_val", "x_test", "y_test")
SHOWN = 12  # hex digits of a fingerprint an error message shows


def fingerprint(dataset: Dataset) -> str:
    """The SHA-256 of the data set's arrays and class names, as hex."""
    digest = hashlib.sha256(f"cnnlab-data-{FORMAT}".encode())
    for name in SPLITS:
        tensor = getattr(dataset, name)
        if tensor is None:
            digest.update(f"|{name}:none".encode())
            continue
        array = np.ascontiguousarray(tensor.numpy())
        digest.update(f"|{name}:{array.dtype.str}:{array.shape}".encode())
        digest.update(memoryview(array).cast("B"))
    digest.update(b"|classes:" + "\0".join(dataset.class_names).encode())
    return digest.hexdigest()


def check_fingerprint(dataset: Dataset, expected: str, where: str) -> None:
    """Refuse a data set whose fingerprint is not `expected` (the one the driver
    computed); `where` names the machine that loaded it."""
    found = fingerprint(dataset)
    if found != expected:
        raise DataError(
            f"data {dataset.source!r} on {where} is not the data the driver read "
            f"(fingerprint {found[:SHOWN]}, the driver's {expected[:SHOWN]}): its "
            "files differ; put the same files at the same path on every node and "
            "run the study again"
        )
