"""`cnnlab data get`: real downloads from a real HTTP server on 127.0.0.1 that the
tests start and stop; nothing leaves this machine."""

from __future__ import annotations

import functools
import hashlib
import http.server
import io
import tarfile
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
from test_image_folders import cifar_records

import cnnlab
from cnnlab.data import fetch
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import DataError
from helpers import error_line, run_cli


@pytest.fixture(autouse=True)
def own_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Each test downloads into its own empty cache folder."""
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(tmp_path / "cache"))


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """(base URL, served folder): an http.server on a free port of 127.0.0.1."""
    served = tmp_path / "served"
    served.mkdir()
    handler = functools.partial(
        http.server.SimpleHTTPRequestHandler, directory=str(served)
    )
    handler.log_message = lambda *args: None  # type: ignore[attr-defined]
    httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/", served
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()


def small_cifar_archive(folder: Path) -> str:
    """folder/cifar-10-binary.tar.gz holding a 12-image CIFAR-10; its MD5."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        files = {f"data_batch_{i}.bin": [i % 2, 1 - i % 2] for i in range(1, 6)}
        files["test_batch.bin"] = [0, 1]
        for name, labels in files.items():
            raw, _ = cifar_records(labels, 1)
            info = tarfile.TarInfo(f"cifar-10-batches-bin/{name}")
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
        names = b"airplane\nautomobile\n"
        info = tarfile.TarInfo("cifar-10-batches-bin/batches.meta.txt")
        info.size = len(names)
        tar.addfile(info, io.BytesIO(names))
    data = buffer.getvalue()
    (folder / "cifar-10-binary.tar.gz").write_bytes(data)
    return hashlib.md5(data).hexdigest()


def test_get_checks_the_checksum_unpacks_and_data_finds_it(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = server
    md5 = small_cifar_archive(served)
    # The test archive is not the publisher's: pin its own checksum here.
    remote = fetch.Remote(url, (("cifar-10-binary.tar.gz", md5),), unpack=True)
    monkeypatch.setitem(fetch.SOURCES, "cifar10", remote)
    with pytest.raises(DataError, match="run `cnnlab data get cifar10` once"):
        load_dataset("cifar10")
    seen = []
    folder = cnnlab.get_data("cifar10", lambda f, done, total: seen.append(done))
    assert folder == fetch.data_home() / "cifar10"
    assert seen[-1] == (served / "cifar-10-binary.tar.gz").stat().st_size
    assert not (folder / "cifar-10-binary.tar.gz").exists()  # unpacked, removed
    ds = load_dataset("cifar10")
    assert ds.class_names == ("airplane", "automobile")
    assert ds.x_train.shape == (10, 32, 32, 3) and ds.y_test.tolist() == [0, 1]
    assert cnnlab.get_data("cifar10") == folder  # there already: no download


def test_a_wrong_checksum_keeps_nothing(
    server: tuple[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    url, served = server
    small_cifar_archive(served)
    remote = fetch.Remote(url, (("cifar-10-binary.tar.gz", "0" * 32),), unpack=True)
    monkeypatch.setitem(fetch.SOURCES, "cifar10", remote)
    with pytest.raises(DataError, match=r"MD5 mismatch \(expected 0{32}, got "):
        cnnlab.get_data("cifar10")
    assert not fetch.data_home().exists() or not list(fetch.data_home().iterdir())


def test_cli_refuses_a_file_that_is_not_the_publishers(
    server: tuple[str, Path], tmp_path: Path
) -> None:
    url, served = server
    for name, _ in fetch.SOURCES["kmnist"].files:
        (served / name).write_bytes(b"not the real file")
    result = run_cli("data", "get", "kmnist", env={fetch.URL_ENV: url}, cwd=tmp_path)
    message = error_line(result, "train-images-idx3-ubyte.gz: MD5 mismatch")
    assert "(expected bdb82020997e1d708af4cf47b453dcf7, got " in message
    missing = run_cli("data", "get", "imagenet", cwd=tmp_path)
    error_line(missing, "cannot download 'imagenet'", "cifar10, cifar100")
