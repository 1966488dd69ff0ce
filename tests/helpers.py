"""Machinery the test modules share: one way to run the `cnnlab` command, one tiny
network, one tiny-run flag list, and the file, image and IDX helpers several
modules need.

A plain module, importable because pyproject puts tests/ on sys.path
(`pythonpath = ["tests"]`): `from helpers import TINY_FLAGS, run_cli`. Fixtures
built on it are in tests/conftest.py: `cli` (the command in process, in tmp_path)
and `tiny_net` (the tiny network as tmp_path/net.yaml).

cnnlab itself is imported inside the functions that need it, so a module that only
wants a constant does not depend on the whole package importing.
"""

from __future__ import annotations

import copy
import gzip
import hashlib
import io
import os
import subprocess
import sys
from collections.abc import Mapping, Sequence
from contextlib import redirect_stderr, redirect_stdout
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import pytest
import yaml
from PIL import Image, ImageDraw

if TYPE_CHECKING:
    from cnnlab.studies.results import TrialResult

TESTS = Path(__file__).resolve().parent  # tests/, its golden/ and fixtures/
ROOT = TESTS.parent  # the repository

# ------------------------------------------------------------- the command


@dataclass(frozen=True)
class Result:
    """What a `cnnlab` command did: exit code, stdout, stderr."""

    code: int
    out: str
    err: str


# Rich tables wrap at the terminal width; 200 columns keeps every row on one line.
CLI_ENV = {"COLUMNS": "200"}


def cli_command(*args: str | Path) -> list[str]:
    """The argv of `python -m cnnlab ARGS`, for tests that drive a Popen."""
    return [sys.executable, "-m", "cnnlab", *map(str, args)]


def run_cli(
    *args: str | Path,
    cwd: Path | None = None,
    env: Mapping[str, str] | None = None,
    timeout: float = 300,
    check: bool = False,
) -> Result:
    """`python -m cnnlab ARGS` as a real process in `cwd`, output captured.

    `env` adds variables on top of this process's environment (and CLI_ENV);
    `check` asserts exit code 0, showing stderr if not.
    """
    proc = subprocess.run(
        cli_command(*args),
        capture_output=True,
        text=True,
        cwd=cwd,
        env=os.environ | CLI_ENV | dict(env or {}),
        timeout=timeout,
    )
    result = Result(proc.returncode, proc.stdout, proc.stderr)
    if check:
        assert result.code == 0, result.err
    return result


def main_in_process(*args: str | Path, capsys: pytest.CaptureFixture) -> Result:
    """`cnnlab.cli.main(ARGS)` in this process; argparse's exits become codes.

    Saves the ~2 s a process start costs (the torch import). The `cli` fixture of
    tests/conftest.py calls this in tmp_path with CLI_ENV set.
    """
    code = _exit_code(args)
    captured = capsys.readouterr()
    return Result(code, captured.out, captured.err)


def main_in_folder(folder: Path, *args: str | Path) -> Result:
    """`cnnlab ARGS` in this process, in `folder`, with CLI_ENV set: the `cli`
    fixture's way, for module-scoped fixtures (which have no capsys)."""
    out, err = io.StringIO(), io.StringIO()
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        for name, value in CLI_ENV.items():
            patch.setenv(name, value)
        with redirect_stdout(out), redirect_stderr(err):
            code = _exit_code(args)
    return Result(code, out.getvalue(), err.getvalue())


def _exit_code(args: Sequence[str | Path]) -> int:
    from cnnlab.cli import main

    try:
        return main([str(a) for a in args])
    except SystemExit as stop:
        return stop.code if isinstance(stop.code, int) else 1


def error_line(result: Result, *phrases: str) -> str:
    """Check the bad-input contract and return the 'error: ...' line.

    Exit code 2, no traceback, the key phrases in the message, and the message as
    the only line on stderr (checked last, as its own exception type).
    """
    assert result.code == 2, result
    assert "Traceback" not in result.err
    lines = result.err.splitlines()
    assert lines, "nothing on stderr"
    line = lines[-1]
    assert line.startswith("error: "), result.err
    for phrase in phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    assert len(lines) == 1, f"stderr has {len(lines)} lines: {result.err!r}"
    return line


# Training flags that keep a run to a second or two: one epoch on 1,000 images, 200
# test images, and 200 held out for validation (left out for runs without a
# hold-out, such as the `fast` recipe, where --val-size is refused).
TINY_FLAGS_NO_HOLDOUT: tuple[str, ...] = (
    *("--epochs", "1", "--train-limit", "1000", "--test-limit", "200"),
)
TINY_FLAGS: tuple[str, ...] = (*TINY_FLAGS_NO_HOLDOUT, "--val-size", "200")

# ------------------------------------------------------- the tiny network

# One Dense layer on the flattened image: 7,850 weights, trains in a blink. As a
# study's inline `spec` (no name); tiny_net_doc() adds one, TINY_NET_YAML is the file.
# Shared: copy it (tiny_net_doc) before changing it.
TINY_NET: dict[str, Any] = {
    "layers": ["Flatten", {"Dense": {"units": 10, "activation": "softmax"}}]
}
TINY_NET_YAML = (
    "name: net\nlayers: [Flatten, {Dense: {units: 10, activation: softmax}}]\n"
)


def tiny_net_doc(name: str = "net") -> dict[str, Any]:
    """The tiny network as an architecture document (a fresh copy)."""
    return {"name": name, **copy.deepcopy(TINY_NET)}


def write_tiny_net(path: Path, name: str = "net") -> Path:
    """Write the tiny network's architecture file to `path`."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(TINY_NET_YAML.replace("name: net\n", f"name: {name}\n", 1))
    return path


# ------------------------------------------------- architecture documents


def layer(type_name: str, **args: object) -> object:
    """One layer entry in the short form: `Flatten` or `{Conv2D: {filters: 4}}`."""
    return {type_name: args} if args else type_name


def arch_yaml(*layers: object, name: str = "net", **top: object) -> str:
    """An architecture file's text; `layers` as built by `layer()`, `top` for other
    top-level keys such as input_shape."""
    doc = {"name": name, **top, "layers": list(layers)}
    return yaml.safe_dump(doc, sort_keys=False)


CONV = layer("Conv2D", filters=4, kernel_size=3, activation="relu")
POOL = layer("MaxPooling2D", pool_size=2)
FLAT = layer("Flatten")
OUT10 = layer("Dense", units=10, activation="softmax")


def conv(**args: object) -> object:
    """A 4-filter 3x3 Conv2D with some arguments replaced or added."""
    return layer("Conv2D", **({"filters": 4, "kernel_size": 3} | args))


# ------------------------------------------------------------------- files


def write_files(root: Path, files: Mapping[str, str | bytes | None]) -> None:
    """Create `files` under root: text or bytes, or None for an empty folder."""
    for name, content in files.items():
        path = root / name
        if content is None:
            path.mkdir(parents=True)
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)


def snapshot(folder: Path) -> dict[str, bytes]:
    """Every file's bytes, by relative path: to show a folder was left untouched."""
    return {
        str(p.relative_to(folder)): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


# ------------------------------------------------------------------ images


def draw_digit(path: Path, shape: str) -> Path:
    """A 200x200 black-on-white "1" (a thick bar) or "0" (a ring) as PNG."""
    image = Image.new("L", (200, 200), 255)
    draw = ImageDraw.Draw(image)
    if shape == "1":
        draw.rectangle((88, 30, 111, 170), fill=0)
    else:
        draw.ellipse((55, 30, 145, 170), outline=0, width=18)
    image.save(path)
    return path


def read_png(path: Path, width: int, height: int, *, exact: bool = True) -> np.ndarray:
    """Open a PNG of exactly width x height (at least, with exact=False) that is not
    one flat colour; return its RGB pixels."""
    with Image.open(path) as image:
        assert image.format == "PNG"
        if exact:
            assert image.size == (width, height)
        else:
            assert image.width >= width and image.height >= height
        pixels = np.asarray(image.convert("RGB"))
    # One integer per RGB triple: np.unique on rows is ten times slower.
    packed = pixels.astype(np.int32) @ np.array([1 << 16, 1 << 8, 1], dtype=np.int32)
    assert len(np.unique(packed)) > 10
    return pixels


# Three classes of noisy colour patches for tests of colour data: each class its
# own mean colour, so that one epoch learns something.
COLOUR_CLASSES = {"blue": (40, 40, 200), "green": (40, 200, 40), "red": (200, 40, 40)}


def write_colour_folder(
    root: Path, shape: tuple[int, int] = (20, 24), per_class: tuple[int, int] = (8, 4)
) -> Path:
    """root/train/<colour>/*.png and root/test/<colour>/*.png: RGB PNGs of
    shape = (height, width), per_class = (train, test) images of each class."""
    rng = np.random.default_rng(0)
    for split, count in zip(("train", "test"), per_class, strict=True):
        for name, colour in COLOUR_CLASSES.items():
            folder = root / split / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                pixels = np.clip(rng.normal(colour, 50, (*shape, 3)), 0, 255)
                Image.fromarray(pixels.astype(np.uint8)).save(folder / f"{i}.png")
    return root


# ------------------------------------------------------------- IDX files


def idx_bytes(array: np.ndarray, type_byte: int = 0x08) -> bytes:
    """Encode an array as IDX: zero bytes, type, ndim, big-endian sizes, data."""
    from cnnlab.data import datasets

    dtype = datasets._IDX_DTYPES[type_byte]
    header = bytes([0, 0, type_byte, array.ndim])
    sizes = b"".join(int(n).to_bytes(4, "big") for n in array.shape)
    return header + sizes + array.astype(dtype).tobytes()


def write_idx(path: Path, array: np.ndarray, type_byte: int = 0x08) -> Path:
    """Write array as an IDX file, gzip-compressed when path ends in .gz."""
    payload = idx_bytes(array, type_byte)
    if path.suffix == ".gz":
        payload = gzip.compress(payload)
    path.write_bytes(payload)
    return path


def write_sums(folder: Path) -> Path:
    """Write a SHA256SUMS listing every IDX file in folder as it is now."""
    lines = [
        f"{hashlib.sha256(path.read_bytes()).hexdigest()}  {path.name}\n"
        for path in sorted(folder.glob("*-ubyte*"))
    ]
    sums = folder / "SHA256SUMS"
    sums.write_text("".join(lines))
    return sums


def gzip_bomb(header: bytes, inflated: int) -> bytes:
    """A .gz of `header` then `inflated` zero bytes, built in milliseconds: after a
    full flush deflate restarts, so each 16 MB block compresses to the same bytes.
    (No gzip trailer: a reader that stops at the header's promise never needs it.)"""
    import zlib

    packer = zlib.compressobj(9, zlib.DEFLATED, 31)
    start = packer.compress(header) + packer.flush(zlib.Z_FULL_FLUSH)
    block = packer.compress(bytes(1 << 24)) + packer.flush(zlib.Z_FULL_FLUSH)
    return start + block * max(1, inflated >> 24)


# ------------------------------------------------------------- Chromium


def chromium() -> str:
    """Debian's headless Chromium; CI must have it (.ci/run installs it)."""
    import shutil

    path = shutil.which("chromium") or shutil.which("chromium-browser")
    if path is None:
        if os.environ.get("CI"):
            pytest.fail("CI must install Debian's chromium (see .ci/run)")
        pytest.skip("needs Debian's chromium: apt-get install chromium")
    return path


def run_chromium(page: Path, tmp_path: Path, *args: str) -> subprocess.CompletedProcess:
    """Open `page` in headless Chromium with `args` (--dump-dom, --screenshot=...)."""
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
             "--no-first-run", "--disable-background-networking",
             "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    return subprocess.run([chromium(), *flags, *args, page.as_uri()],
                          capture_output=True, text=True, timeout=120)  # fmt: skip


# ------------------------------------------------------- study records in memory


def history(
    loss: Sequence[float],
    val_loss: Sequence[float] | None = None,
    acc: Sequence[float] | None = None,
    val_acc: Sequence[float] | None = None,
    seconds: Sequence[float] | None = None,
) -> tuple[dict[str, Any], ...]:
    """Rows as train.fit records them; accuracies default to 1 - loss."""
    rows = []
    for i, value in enumerate(loss):
        val = None if val_loss is None else val_loss[i]
        rows.append(
            {
                "epoch": i + 1,
                "loss": value,
                "acc": 1 - value if acc is None else acc[i],
                "val_loss": val,
                "val_acc": val_acc[i]
                if val_acc
                else (None if val is None else 1 - val),
                "seconds": 2.0 if seconds is None else seconds[i],
            }
        )
    return tuple(rows)


def trial(
    label: str = "a", seed: int = 0, hist: tuple[dict[str, Any], ...] = (), **extra: Any
) -> TrialResult:
    fields: dict[str, Any] = {
        "study": "s",
        "label": label,
        "seed": seed,
        "arch_name": f"net-{label}",
        "optimizer": "adam",
        "params": 412,
        "flops": 10_000,
        "history": hist,
        "status": "completed",
    }
    from cnnlab.studies.results import TrialResult

    return TrialResult(**(fields | extra))


def store_results(out: Path, study: str) -> list[tuple]:
    """Everything a report reads of each trial of a study store, except wall-clock
    seconds."""
    from cnnlab.studies.layout import STORE_FILE
    from cnnlab.studies.store import Store

    with Store(out / STORE_FILE) as store:
        return sorted(
            (t.label, t.seed, t.arch_name, t.params, t.flops, t.status, t.test_loss,
             t.test_acc, t.train_clean_loss, t.train_clean_acc, t.stopped_epoch,
             tuple((r["epoch"], r["loss"], r["acc"], r["val_loss"], r["val_acc"])
                   for r in t.history))
            for t in store.trials(study)
        )  # fmt: skip
