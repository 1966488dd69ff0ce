"""The data fingerprint a Ray worker checks: the same for the same images wherever
the files are, another for one changed pixel or label, for every colour source (an
image folder, an .npz archive, CIFAR binary batches) and MNIST; a worker given
another fingerprint refuses with one located line. Ray itself is not needed: the
check is the worker's function, called here as the worker calls it."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from cnnlab.data.datasets import load_dataset
from cnnlab.data.fingerprint import fingerprint
from cnnlab.errors import DataError
from cnnlab.nn.adapt import adapt_to_data
from cnnlab.nn.presets import load_preset
from cnnlab.studies.executors.ray import _open_job, _payload, check_data
from cnnlab.studies.study import Trial
from cnnlab.training.config import TrainConfig
from cnnlab.training.session import image_options
from helpers import write_colour_folder


def folder_source(root: Path) -> Path:
    return write_colour_folder(root / "colours", (12, 10), (4, 2))


def npz_source(root: Path) -> Path:
    rng = np.random.default_rng(1)
    path = root / "set.npz"
    root.mkdir(parents=True, exist_ok=True)
    arrays = {
        "x_train": rng.integers(0, 256, (12, 8, 6, 3), dtype=np.uint8),
        "y_train": np.arange(12) % 3,
        "x_test": rng.integers(0, 256, (6, 8, 6, 3), dtype=np.uint8),
        "y_test": np.arange(6) % 3,
    }
    np.savez(path, **arrays)
    return path


def cifar_source(root: Path) -> Path:
    """A CIFAR-10 binary folder: five training batches and a test batch of 32x32x3
    records (label byte, then red, green and blue planes)."""
    rng = np.random.default_rng(2)
    folder = root / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for name in [*(f"data_batch_{i}.bin" for i in range(1, 6)), "test_batch.bin"]:
        pixels = rng.integers(0, 256, (2, 3072), np.uint8)
        records = [bytes([k % 2]) + pixels[k].tobytes() for k in range(2)]
        (folder / name).write_bytes(b"".join(records))
    return folder


SOURCES: dict[str, Callable[[Path], Path]] = {
    "folder": folder_source,
    "npz": npz_source,
    "cifar": cifar_source,
}


def change_one_value(kind: str, source: Path) -> None:
    """Rewrite the source with one pixel (or nothing but a label) different."""
    if kind == "folder":
        path = source / "train" / "red" / "0.png"
        pixels = np.asarray(Image.open(path)).copy()
        pixels[0, 0, 0] ^= 1
        Image.fromarray(pixels).save(path)
    elif kind == "npz":
        with np.load(source) as archive:
            arrays = dict(archive)
        arrays["y_test"][0] = (arrays["y_test"][0] + 1) % 3
        np.savez(source, **arrays)
    else:
        path = source / "test_batch.bin"
        raw = bytearray(path.read_bytes())
        raw[1] ^= 1  # the first record's first red value
        path.write_bytes(bytes(raw))


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_same_images_same_fingerprint_one_change_another(
    kind: str, tmp_path: Path
) -> None:
    source = SOURCES[kind](tmp_path / "node1")
    first = fingerprint(load_dataset(str(source)))
    assert first == fingerprint(load_dataset(str(source)))  # loaded again
    copy = tmp_path / "node2" / source.name  # another path, other mtimes
    copy.parent.mkdir()
    (shutil.copytree if source.is_dir() else shutil.copyfile)(source, copy)
    assert fingerprint(load_dataset(str(copy))) == first
    change_one_value(kind, copy)
    assert fingerprint(load_dataset(str(copy))) != first


def test_image_settings_are_part_of_what_is_read(tmp_path: Path) -> None:
    source = folder_source(tmp_path)
    colour = TrainConfig(data=str(source))
    grey = TrainConfig(data=str(source), color="grayscale")
    other = fingerprint(load_dataset(str(source), image_options(grey)))
    assert other != fingerprint(load_dataset(str(source), image_options(colour)))


@pytest.mark.parametrize("kind", sorted(SOURCES))
def test_the_worker_refuses_another_fingerprint_in_one_line(
    kind: str, tmp_path: Path
) -> None:
    source = SOURCES[kind](tmp_path)
    config = TrainConfig(data=str(source))
    seen = fingerprint(load_dataset(str(source), image_options(config)))
    check_data(config, seen)  # the driver's own copy: accepted
    change_one_value(kind, source)
    with pytest.raises(DataError) as caught:
        check_data(config, seen)
    message = str(caught.value)
    assert message.startswith(f"data {str(source)!r} on node ")
    assert f"the driver's {seen[:12]})" in message
    assert "put the same files at the same path on every node" in message
    assert "\n" not in message


def test_mnist_has_one_fingerprint() -> None:
    config = TrainConfig()
    seen = fingerprint(load_dataset("mnist"))
    check_data(config, seen)
    with pytest.raises(DataError, match="^data '.*mnist' on node .* is not the data"):
        check_data(config, "0" * 64)


def test_a_payload_carries_the_drivers_fingerprint_and_the_worker_checks_it(
    tmp_path: Path,
) -> None:
    """The payload a Ray worker receives, built and opened as the executor does
    (the worker's side runs here, in this process)."""
    source = folder_source(tmp_path)
    trial = Trial(
        "conv5-tiny", load_preset("conv5-tiny"), TrainConfig(data=str(source))
    )
    seen = fingerprint(load_dataset(str(source), image_options(trial.config)))
    payload = _payload(trial, tmp_path / "run", 1, seen)
    threads = torch.get_num_threads()
    try:
        opened, _ = _open_job(payload)  # sets the worker's thread count
    finally:
        torch.set_num_threads(threads)
    assert opened.arch == trial.arch and opened.arch.source == trial.arch.source
    assert adapt_to_data(opened.arch, (12, 10, 3), 3).input_shape == (12, 10, 3)
    change_one_value("folder", source)
    with pytest.raises(DataError, match="is not the data the driver read"):
        try:
            _open_job(payload)
        finally:
            torch.set_num_threads(threads)
