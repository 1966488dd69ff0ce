"""Tests for cnnlab.data on the embedded MNIST and on real files broken on purpose."""

from __future__ import annotations

import gzip
import hashlib
import importlib.resources
import os
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from cnnlab.data import datasets as data
from cnnlab.data.datasets import (
    FASHION_MNIST_DIR,
    Dataset,
    load_dataset,
    read_idx,
    split_dataset,
    to_float,
)
from cnnlab.errors import DataError
from helpers import write_idx, write_sums

MNIST_DIR = Path(str(importlib.resources.files("cnnlab") / "datasets" / "mnist"))

# SHA-256 of the decompressed original files, from the data set's provenance notes.
RAW_SHA256 = {
    "train-images-idx3-ubyte": (
        "ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db"
    ),
    "train-labels-idx1-ubyte": (
        "65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5"
    ),
    "t10k-images-idx3-ubyte": (
        "0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7"
    ),
    "t10k-labels-idx1-ubyte": (
        "ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2"
    ),
}


@pytest.fixture(scope="module")
def mnist() -> Dataset:
    """The embedded MNIST, loaded once (the loader caches it too)."""
    return load_dataset("mnist")


@pytest.fixture
def mini(tmp_path: Path, mnist: Dataset) -> Path:
    """A folder with 200 training and 100 test MNIST images as four .gz IDX files."""
    folder = tmp_path / "mini"
    folder.mkdir()
    arrays = {
        "train-images-idx3-ubyte.gz": mnist.x_train[:200].numpy(),
        "train-labels-idx1-ubyte.gz": mnist.y_train[:200].numpy(),
        "t10k-images-idx3-ubyte.gz": mnist.x_test[:100].numpy(),
        "t10k-labels-idx1-ubyte.gz": mnist.y_test[:100].numpy(),
    }
    for name, array in arrays.items():
        write_idx(folder / name, array)
    return folder


def indexed_dataset(n_train: int = 1000, n_test: int = 300) -> Dataset:
    """A synthetic Dataset whose first two pixels spell each image's index."""

    def images(n: int) -> torch.Tensor:
        x = torch.zeros(n, 28, 28, dtype=torch.uint8)
        index = torch.arange(n)
        x[:, 0, 0], x[:, 0, 1] = index // 256, index % 256
        return x

    return Dataset(
        name="indexed",
        x_train=images(n_train),
        y_train=torch.arange(n_train) % 10,
        x_test=images(n_test),
        y_test=torch.arange(n_test) % 10,
        num_classes=10,
        source="memory",
        class_names=tuple(str(i) for i in range(10)),
    )


def indices(x: torch.Tensor) -> list[int]:
    """Decode the indices that indexed_dataset wrote into the images."""
    return (x[:, 0, 0].long() * 256 + x[:, 0, 1].long()).tolist()


# ---------------------------------------------------------------------------
# The embedded MNIST


def test_mnist_shapes_and_dtypes(mnist: Dataset) -> None:
    assert mnist.x_train.shape == (60000, 28, 28)
    assert mnist.x_test.shape == (10000, 28, 28)
    assert mnist.y_train.shape == (60000,)
    assert mnist.y_test.shape == (10000,)
    assert mnist.x_train.dtype == mnist.x_test.dtype == torch.uint8
    assert mnist.y_train.dtype == mnist.y_test.dtype == torch.int64
    assert mnist.x_train.shape[1:] == data.IMAGE_SHAPE


def test_mnist_labels_pixels_and_metadata(mnist: Dataset) -> None:
    assert mnist.name == "mnist"
    assert mnist.num_classes == 10
    assert mnist.class_names == tuple("0123456789")
    assert int(mnist.y_train[0]) == 5
    assert int(mnist.y_test[0]) == 7
    for labels in (mnist.y_train, mnist.y_test):
        assert int(labels.min()) == 0 and int(labels.max()) == 9
        assert torch.bincount(labels).min() > 800  # every digit is well represented
    assert int(mnist.x_train.min()) == 0 and int(mnist.x_train.max()) == 255
    # MNIST's well-known pixel mean is 0.1307 of full scale.
    assert abs(mnist.x_train.float().mean().item() / 255 - 0.1307) < 1e-3


def test_mnist_is_read_from_the_package(mnist: Dataset) -> None:
    assert Path(mnist.source) == MNIST_DIR
    assert Path(mnist.source).parts[-3:] == ("cnnlab", "datasets", "mnist")


def test_mnist_load_is_cached(mnist: Dataset) -> None:
    assert load_dataset("mnist") is mnist
    assert load_dataset() is mnist


def test_vendored_files_match_their_provenance() -> None:
    sums = data._read_sums(MNIST_DIR / "SHA256SUMS")
    assert sorted(sums) == sorted(f"{stem}.gz" for stem in data.IDX_FILES)
    for stem, digest in RAW_SHA256.items():
        raw = gzip.decompress((MNIST_DIR / f"{stem}.gz").read_bytes())
        assert hashlib.sha256(raw).hexdigest() == digest, stem


# ---------------------------------------------------------------------------
# Splitting


def test_holdout_split_sizes_on_mnist(mnist: Dataset) -> None:
    split = split_dataset(mnist)
    assert split.validation == "holdout"
    assert split.x_train.shape == (50000, 28, 28)
    assert split.y_train.shape == (50000,)
    assert split.x_val is not None and split.y_val is not None
    assert split.x_val.shape == (10000, 28, 28)
    assert torch.equal(split.x_test, mnist.x_test)
    counts = torch.bincount(split.y_train, minlength=10) + torch.bincount(
        split.y_val, minlength=10
    )
    assert torch.equal(counts, torch.bincount(mnist.y_train, minlength=10))


def test_holdout_is_disjoint_and_covers_training_set() -> None:
    split = split_dataset(indexed_dataset(), val_size=200, split_seed=3)
    assert split.x_val is not None
    train, val = indices(split.x_train), indices(split.x_val)
    assert len(train) == 800 and len(val) == 200
    assert not set(train) & set(val)
    assert sorted(train + val) == list(range(1000))
    assert indices(split.x_test) == list(range(300))
    assert torch.equal(split.y_train, torch.tensor(train) % 10)


def test_holdout_seed_reproducible_and_seed_sensitive() -> None:
    ds = indexed_dataset()
    first = split_dataset(ds, val_size=100, split_seed=7)
    again = split_dataset(ds, val_size=100, split_seed=7)
    other = split_dataset(ds, val_size=100, split_seed=8)
    assert indices(first.x_val) == indices(again.x_val)
    assert indices(first.x_train) == indices(again.x_train)
    assert set(indices(first.x_val)) != set(indices(other.x_val))


def test_test_protocol_uses_test_set_for_validation(mnist: Dataset) -> None:
    split = split_dataset(mnist, validation="test")
    assert split.validation == "test"
    assert torch.equal(split.x_train, mnist.x_train)
    assert torch.equal(split.y_train, mnist.y_train)
    assert split.x_val is not None and split.y_val is not None
    assert torch.equal(split.x_val, mnist.x_test)
    assert torch.equal(split.y_val, mnist.y_test)
    assert torch.equal(split.x_test, mnist.x_test)


def test_no_validation() -> None:
    ds = indexed_dataset()
    split = split_dataset(ds, validation="none", val_size=5000)
    assert split.validation == "none"
    assert split.x_val is None and split.y_val is None
    assert indices(split.x_train) == list(range(1000))


def test_limits_holdout() -> None:
    ds = indexed_dataset()
    full = split_dataset(ds, val_size=100, split_seed=1)
    limited = split_dataset(
        ds, val_size=100, split_seed=1, train_limit=50, test_limit=20
    )
    assert indices(limited.x_train) == indices(full.x_train)[:50]
    assert indices(limited.x_val) == indices(full.x_val)
    assert indices(limited.x_test) == list(range(20))
    assert limited.y_test.shape == (20,)


def test_limits_test_protocol_and_oversized_limits() -> None:
    ds = indexed_dataset()
    split = split_dataset(ds, validation="test", train_limit=30, test_limit=10)
    assert indices(split.x_train) == list(range(30))
    assert indices(split.x_val) == indices(split.x_test) == list(range(10))
    everything = split_dataset(ds, validation="none", train_limit=10**6)
    assert len(everything.x_train) == 1000


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"validation": "valid"}, ["'valid'", "holdout"]),
        ({"val_size": 0}, ["val_size=0", "1..999"]),
        ({"val_size": 1000}, ["val_size=1000", "1000 images"]),
        ({"val_size": -5}, ["val_size=-5"]),
        ({"train_limit": 0}, ["train_limit", "0"]),
        ({"test_limit": -1}, ["test_limit", "-1"]),
    ],
)
def test_split_rejects_bad_values(kwargs: dict, words: list[str]) -> None:
    with pytest.raises(DataError) as caught:
        split_dataset(indexed_dataset(), **kwargs)
    for word in words:
        assert word in str(caught.value)


def test_to_float() -> None:
    x = torch.tensor([[[0, 255], [51, 102]]], dtype=torch.uint8)
    out = to_float(x)
    assert out.shape == (1, 1, 2, 2) and out.dtype == torch.float32
    assert torch.allclose(out[0, 0], torch.tensor([[0.0, 1.0], [0.2, 0.4]]))
    assert x.dtype == torch.uint8  # the input is left alone


# ---------------------------------------------------------------------------
# Fashion-MNIST and other folders


def test_fashion_mnist_missing_says_how_to_get_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Neither Debian's folder (looked for under tmp_path, as CI machines have the
    # package installed) nor a download (an empty cache)
    absent = tmp_path / "usr/share/datasets/fashion-mnist"
    monkeypatch.setattr(data, "FASHION_MNIST_DIR", absent)
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))
    with pytest.raises(DataError) as caught:
        load_dataset("fashion-mnist")
    message = str(caught.value)
    assert f"({absent} does not exist)" in message
    assert "run `cnnlab data get fashion-mnist` once to fetch it" in message
    assert "apt-get install dataset-fashion-mnist" in message
    assert "--data-dir" in message
    assert "\n" not in message


@pytest.mark.skipif(not FASHION_MNIST_DIR.exists(), reason="needs Fashion-MNIST")
def test_fashion_mnist_loads_when_installed() -> None:
    ds = load_dataset("fashion-mnist")
    assert ds.x_train.shape == (60000, 28, 28) and ds.num_classes == 10
    assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


def test_folder_loads_with_generic_names(mini: Path, mnist: Dataset) -> None:
    ds = load_dataset(str(mini))
    assert ds.name == str(mini) and ds.source == str(mini)
    assert ds.x_train.shape == (200, 28, 28) and ds.x_test.shape == (100, 28, 28)
    assert torch.equal(ds.x_train, mnist.x_train[:200])
    assert torch.equal(ds.y_test, mnist.y_test[:100])
    assert ds.num_classes == 10 and ds.class_names == tuple("0123456789")


def test_folder_with_plain_files_and_sums(mini: Path) -> None:
    for gz in mini.glob("*.gz"):
        gz.with_suffix("").write_bytes(gzip.decompress(gz.read_bytes()))
        gz.unlink()
    labels = np.array([0, 1, 2] * 66 + [0, 1], dtype=np.uint8)
    write_idx(mini / "train-labels-idx1-ubyte", labels)
    write_sums(mini)
    ds = load_dataset(str(mini))
    assert ds.num_classes == 10  # the test labels still reach 9
    assert ds.y_train[:3].tolist() == [0, 1, 2]


def test_folder_reload_sees_changed_files(mini: Path) -> None:
    first = load_dataset(str(mini))
    labels = np.tile(np.array([3, 4], np.uint8), 100)  # two classes: one is refused
    target = write_idx(mini / "train-labels-idx1-ubyte.gz", labels)
    # Same size and possibly the same coarse (~4 ms) timestamp: date the edit later.
    later = target.stat().st_mtime_ns + 10**9
    os.utime(target, ns=(later, later))
    second = load_dataset(str(mini))
    assert second is not first
    assert set(second.y_train.tolist()) == {3, 4}


def test_read_idx_other_types(tmp_path: Path) -> None:
    values = np.array([[-70000, 1], [2, 3]], dtype=np.int32)
    out = read_idx(write_idx(tmp_path / "ints.idx", values, type_byte=0x0C))
    assert out.dtype == np.int32 and out.tolist() == values.tolist()
    floats = np.array([0.5, -2.25], dtype=np.float64)
    out = read_idx(write_idx(tmp_path / "f.idx.gz", floats, type_byte=0x0E))
    assert out.tolist() == [0.5, -2.25]


def test_read_idx_real_labels_file() -> None:
    labels = read_idx(MNIST_DIR / "t10k-labels-idx1-ubyte.gz")
    assert labels.shape == (10000,) and labels[:3].tolist() == [7, 2, 1]


# ---------------------------------------------------------------------------
# Broken files: every message is one line and names the file


def load_error(folder: Path) -> str:
    """Load folder, expecting a DataError, and return its one-line message."""
    with pytest.raises(DataError) as caught:
        load_dataset(str(folder))
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_name_or_not_a_folder(tmp_path: Path) -> None:
    with pytest.raises(DataError, match="unknown data set 'mnits'"):
        load_dataset("mnits")
    afile = tmp_path / "afile"
    afile.write_text("x")
    with pytest.raises(DataError, match="is not a folder"):
        load_dataset(str(afile))


def test_missing_files_are_listed(mini: Path) -> None:
    (mini / "train-labels-idx1-ubyte.gz").unlink()
    (mini / "t10k-images-idx3-ubyte.gz").unlink()
    message = load_error(mini)
    assert "train-labels-idx1-ubyte" in message and "t10k-images-idx3-ubyte" in message
    assert "train-images" not in message
    assert str(mini) in message


def test_truncated_gzip(mini: Path) -> None:
    target = mini / "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", target)
    with open(target, "r+b") as handle:
        handle.truncate(2000)
    message = load_error(mini)
    assert str(target) in message and "truncated" in message


def test_flipped_byte_in_gzip(mini: Path) -> None:
    target = mini / "t10k-labels-idx1-ubyte.gz"
    shutil.copyfile(MNIST_DIR / "t10k-labels-idx1-ubyte.gz", target)
    raw = bytearray(target.read_bytes())
    raw[len(raw) // 2] ^= 0xFF
    target.write_bytes(bytes(raw))
    message = load_error(mini)
    assert str(target) in message


def test_not_gzip_despite_name(mini: Path) -> None:
    target = mini / "train-images-idx3-ubyte.gz"
    target.write_bytes(b"plain text, not gzip")
    message = load_error(mini)
    assert str(target) in message and "not a gzip file" in message


def test_wrong_magic(mini: Path) -> None:
    target = mini / "train-labels-idx1-ubyte.gz"
    target.write_bytes(gzip.compress(b"\x00\x01\x08\x01" + bytes(204)))
    message = load_error(mini)
    assert str(target) in message and "not an IDX file" in message


def test_truncated_idx_data(mini: Path) -> None:
    target = mini / "t10k-images-idx3-ubyte.gz"
    payload = gzip.decompress(target.read_bytes())
    target.write_bytes(gzip.compress(payload[:-28]))
    message = load_error(mini)
    assert str(target) in message and "truncated" in message


def test_image_label_count_mismatch(mini: Path) -> None:
    target = mini / "train-labels-idx1-ubyte.gz"
    write_idx(target, np.zeros(199, dtype=np.uint8))
    message = load_error(mini)
    assert str(target) in message and "200 images" in message and "199" in message


def test_train_and_test_image_sizes_differ(mini: Path) -> None:
    target = mini / "t10k-images-idx3-ubyte.gz"
    write_idx(target, np.zeros((100, 32, 32), dtype=np.uint8))
    message = load_error(mini)
    assert str(target) in message and "(32, 32)" in message


def test_labels_out_of_range(mini: Path) -> None:
    target = mini / "t10k-labels-idx1-ubyte.gz"
    write_idx(target, np.full(100, -1, dtype=np.int8), type_byte=0x09)
    message = load_error(mini)
    assert str(target) in message and "out of range" in message


def test_images_must_be_uint8(mini: Path) -> None:
    target = mini / "train-images-idx3-ubyte.gz"
    write_idx(target, np.zeros((200, 28, 28), dtype=np.int32), type_byte=0x0C)
    message = load_error(mini)
    assert str(target) in message and "uint8" in message


def test_sums_that_disagree(mini: Path) -> None:
    sums = write_sums(mini)
    target = mini / "t10k-labels-idx1-ubyte.gz"
    write_idx(
        target, np.ones(100, dtype=np.uint8)
    )  # a valid file, but not the listed one
    message = load_error(mini)
    assert str(target) in message and "SHA-256 mismatch" in message
    expected = sums.read_text().split("t10k-labels")[0].split()[-1]
    assert expected in message
    assert hashlib.sha256(target.read_bytes()).hexdigest() in message


def test_malformed_sums_line(mini: Path) -> None:
    (mini / "SHA256SUMS").write_text("# made by hand\nnot-a-digest  file\n")
    message = load_error(mini)
    assert "SHA256SUMS" in message and "line 2" in message


def test_mnist_copy_with_a_flipped_byte_fails_checksum(tmp_path: Path) -> None:
    folder = tmp_path / "copy"
    shutil.copytree(MNIST_DIR, folder)
    target = folder / "train-labels-idx1-ubyte.gz"
    raw = bytearray(target.read_bytes())
    raw[-8] ^= 0x01  # the gzip trailer's CRC-32; SHA256SUMS is checked before it
    target.write_bytes(bytes(raw))
    message = load_error(folder)
    assert str(target) in message and "SHA-256 mismatch" in message
