"""The bad-input matrix: every case through the real `cnnlab` command.

Each case must exit with code 2 and print one `error: ...` line naming what is wrong,
where, and the fix; no traceback; and leave no file behind (the working folder is
compared byte for byte before and after). Training-time failures (a diverged loss, a
full disk) may follow progress lines, and are checked on what they keep instead.

docs/bad-input.md lists every case with the exact message it gets here; each test
compares its message with that table, and `pytest tests/cli/test_bad_input.py
--update-golden` rewrites the table from the current messages.
"""

from __future__ import annotations

import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.data import datasets
from cnnlab.data.datasets import FASHION_MNIST_DIR, load_dataset
from cnnlab.errors import SpecError
from cnnlab.nn.model import build_model
from cnnlab.nn.shapes import check_memory, estimate_memory, infer
from cnnlab.training.config import TrainConfig
from cnnlab.training.precision import native_bf16
from helpers import (
    CONV,
    FLAT,
    OUT10,
    POOL,
    ROOT,
    TINY_FLAGS,
    Result,
    arch_yaml,
    conv,
    draw_digit,
    error_line,
    gzip_bomb,
    layer,
    run_cli,
    snapshot,
    write_files,
    write_idx,
    write_sums,
)

DOC = ROOT / "docs" / "bad-input.md"
TRAIN = ["train", "net.yaml", "--out", "OUT", *TINY_FLAGS]

# --------------------------------------------------------------------- workspace


@pytest.fixture(scope="module")
def shared_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """conv5-tiny, 1 epoch of SGD on 1,000 images: copied into the cases using it."""
    path = tmp_path_factory.mktemp("shared") / "RUN"
    config = TrainConfig(
        epochs=1, optimizer="sgd", train_limit=1000, val_size=200, test_limit=200
    )
    cnnlab.train("conv5-tiny", config, out=path)
    return path


@dataclass
class Workspace:
    """A case's working folder, with the tools its setup may need."""

    cwd: Path
    request: pytest.FixtureRequest
    mounts: list[Path] = field(default_factory=list)
    holders: list[subprocess.Popen] = field(default_factory=list)

    def run(self, where: str = "RUN") -> Path:
        """A fresh copy of the shared trained run, as ./RUN."""
        shared = self.request.getfixturevalue("shared_run")
        return Path(shutil.copytree(shared, self.cwd / where))

    def write(self, name: str, content: str | bytes) -> Path:
        path = self.cwd / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str):
            content = content.encode("utf-8")
        path.write_bytes(content)
        return path

    def mount(self, size: str = "1m", read_only: bool = False) -> Path:
        """A small tmpfs at ./disk (needs root); the case is skipped without one."""
        disk = self.cwd / "disk"
        disk.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        try:
            proc = subprocess.run(
                ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(disk)],
                capture_output=True,
                text=True,
            )
        except FileNotFoundError:
            pytest.skip("no `mount` command: the disk cases need a tmpfs")
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs ({proc.stderr.strip()}); needs root")
        self.mounts.append(disk)
        return disk


@pytest.fixture
def workspace(tmp_path: Path, request: pytest.FixtureRequest) -> Iterator[Workspace]:
    space = Workspace(tmp_path, request)
    yield space
    for holder in space.holders:
        holder.kill()
        holder.wait()
        holder.stdout.close()  # type: ignore[union-attr]
    for disk in reversed(space.mounts):
        subprocess.run(["umount", str(disk)], check=False)


def fill(disk: Path, leave: int = 0) -> None:
    """Fill a file system with one file, leaving about `leave` bytes free."""
    stat = os.statvfs(disk)
    free = stat.f_bavail * stat.f_frsize
    with open(disk / "filler", "wb") as fh:
        try:
            fh.write(bytes(max(free - leave, 0)))
        except OSError:  # full already: that is the point
            pass


def temp_files(folder: Path) -> list[str]:
    """Leftover temporary files of atomic writes."""
    return sorted(p.name for p in folder.rglob(".*tmp*"))


# --------------------------------------------------------- the message table


@dataclass(frozen=True)
class Row:
    """One documented case: where it is tested, its input and its message."""

    id: str
    category: str
    example: str
    message: str
    masks: tuple[str, ...] = ()  # regexes for machine-dependent parts


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("<", "&lt;").replace(">", "&gt;")


def _unescape(text: str) -> str:
    return text.replace("&gt;", ">").replace("&lt;", "<").replace("\\|", "|")


def masked(text: str, masks: tuple[str, ...]) -> str:
    for pattern in masks:
        text = re.sub(pattern, "...", text)
    return text


def format_row(row: Row) -> str:
    return f"| `{row.id}` | {_escape(row.example)} | {_escape(row.message)} | 2 |"


def read_doc_rows() -> dict[str, tuple[str, str]]:
    """{test id: (example, message)} from the table in docs/bad-input.md."""
    rows = {}
    for line in DOC.read_text(encoding="utf-8").splitlines():
        match = re.fullmatch(r"\| `([^`]+)` \| (.*?) \| (.*) \| 2 \|", line)
        if match:
            rows[match[1]] = (_unescape(match[2]), _unescape(match[3]))
    return rows


CATEGORIES = (
    "Architecture files",
    "Study files",
    "Search blocks",
    "Export and import",
    "Data",
    "Run folders",
    "Output folder and disk",
    "Flags",
    "Images for predict",
    "Numerical faults",
)
MARK_START = "<!-- table: generated by tests/cli/test_bad_input.py --update-golden -->"
MARK_END = "<!-- end of table -->"


def write_doc(rows: list[Row]) -> None:
    """Rewrite the table between the markers of docs/bad-input.md."""
    lines = [MARK_START]
    for category in CATEGORIES:
        these = [r for r in rows if r.category == category]
        if not these:
            continue
        lines += ["", f"### {category}", ""]
        lines += ["| case (test id) | input | message | exit |", "|---|---|---|---|"]
        lines += [format_row(r) for r in these]
    lines += ["", MARK_END]
    text = DOC.read_text(encoding="utf-8")
    start, end = text.index(MARK_START), text.index(MARK_END) + len(MARK_END)
    DOC.write_text(text[:start] + "\n".join(lines) + text[end:], encoding="utf-8")


class DocTable:
    """Checks each message against the doc, or collects them to rewrite it."""

    def __init__(self, update: bool) -> None:
        self.update = update
        self.rows: dict[str, Row] = {}

    def check(self, row: Row) -> None:
        if self.update:
            self.rows[row.id] = row
            return
        documented = read_doc_rows().get(row.id)
        assert documented is not None, (
            f"{row.id} is missing from {DOC}; run pytest {__file__} --update-golden"
        )
        assert masked(documented[1], row.masks) == masked(row.message, row.masks), (
            f"{DOC} has another message for {row.id}; run pytest --update-golden"
        )


@pytest.fixture(scope="module")
def doc_table(request: pytest.FixtureRequest) -> Iterator[DocTable]:
    update = bool(request.config.getoption("--update-golden"))
    if update and os.environ.get("PYTEST_XDIST_WORKER"):
        pytest.exit("--update-golden rewrites one table from every case: drop -n", 2)
    table = DocTable(update)
    yield table
    if table.update and table.rows:
        old = read_doc_rows()
        order = [*ALL_IDS]
        rows = []
        for case_id in order:
            if case_id in table.rows:
                rows.append(table.rows[case_id])
            elif case_id in old:  # not run this time: keep the documented row
                example, message = old[case_id]
                rows.append(Row(case_id, CATEGORY_OF[case_id], example, message))
        write_doc(rows)


# ------------------------------------------------------------------ the cases

Setup = Callable[[Workspace], None]


@dataclass(frozen=True)
class Case:
    """A command that must fail with exit code 2 and a message naming the fix."""

    args: tuple[str, ...]
    phrases: tuple[str, ...]  # what, where, the fix: each must be in the message
    example: str  # the bad input, for the doc table
    # Created in the working folder: text files, or None for an empty folder.
    files: dict[str, str | None] = field(default_factory=dict)
    setup: Setup | None = None
    masks: tuple[str, ...] = ()
    in_training: bool = False  # progress lines may precede the error
    # The setup stands the working folder in for /: paths under it are shown from /.
    root: bool = False


def case(
    id_: str, category: str, *marks: pytest.MarkDecorator, **fields: object
) -> object:
    fields["args"] = tuple(fields["args"])  # type: ignore[arg-type]
    fields["phrases"] = tuple(fields["phrases"])  # type: ignore[arg-type]
    return pytest.param(category, Case(**fields), id=id_, marks=marks)  # type: ignore[arg-type]


def net(*layers: object, **top: object) -> dict[str, str | None]:
    """net.yaml with these layers (and top-level keys such as input_shape)."""
    return {"net.yaml": arch_yaml(*layers, **top)}


def study(text: str) -> dict[str, str]:
    return {"study.yaml": text}


STUDY = ["study", "study.yaml", "--out", "ST"]
SEARCH = ["search", "study.yaml", "--out", "ST"]


def search_file(space: str, trials: int = 2, units: object = 8,
                kernel: object = 3) -> dict[str, str]:  # fmt: skip
    """study.yaml with a search block: `space` (YAML lines), a conv-dense template."""
    return study(
        f"name: s\nsearch:\n  trials: {trials}\n  space:\n    {space}\n"
        "  architecture:\n    layers:\n"
        f"      - Conv2D: {{filters: 2, kernel_size: {kernel}}}\n"
        f"      - Dense: {{units: {units}}}\n"
        "      - Flatten\n      - Dense: {units: 10, activation: softmax}\n"
    )


# -------------------------------------------------------------- data set setups


def idx_folder(space: Workspace, name: str = "idx") -> Path:
    """./idx: 300 training and 100 test MNIST images as plain IDX files."""
    mnist = load_dataset("mnist")
    folder = space.cwd / name
    folder.mkdir()
    write_idx(folder / "train-images-idx3-ubyte", mnist.x_train[:300].numpy())
    write_idx(folder / "train-labels-idx1-ubyte", mnist.y_train[:300].numpy())
    write_idx(folder / "t10k-images-idx3-ubyte", mnist.x_test[:100].numpy())
    write_idx(folder / "t10k-labels-idx1-ubyte", mnist.y_test[:100].numpy())
    return folder


def _fashion_mnist_absent(space: Workspace) -> None:
    """Fashion-MNIST neither installed nor downloaded, on any machine (CI machines
    have Debian's package): its folder is looked for under the working folder,
    which stands in for / (Case.root), and downloads in an empty cache."""
    monkeypatch = space.request.getfixturevalue("monkeypatch")
    under = space.cwd / FASHION_MNIST_DIR.relative_to(FASHION_MNIST_DIR.anchor)
    monkeypatch.setattr(datasets, "FASHION_MNIST_DIR", under)
    cache = space.request.getfixturevalue("tmp_path_factory").mktemp("no-downloads")
    monkeypatch.setenv("CNNLAB_CACHE_DIR", str(cache))


def broken_idx(change: Callable[[Path], None]) -> Setup:
    """A setup: make ./idx, then break it with `change(folder)`."""
    return lambda space: change(idx_folder(space))


def _truncate(path: Path, cut: int) -> None:
    path.write_bytes(path.read_bytes()[:-cut])


def _gzip_half(folder: Path) -> None:
    plain = folder / "t10k-images-idx3-ubyte"
    packed = gzip.compress(plain.read_bytes())
    plain.unlink()
    (folder / "t10k-images-idx3-ubyte.gz").write_bytes(packed[: len(packed) // 2])


def _checksum_mismatch(folder: Path) -> None:
    write_sums(folder)  # then change a file the sums list
    write_idx(folder / "t10k-labels-idx1-ubyte", np.ones(100, dtype=np.uint8))


def _images_32(folder: Path) -> None:
    for name, n in (("train-images-idx3-ubyte", 300), ("t10k-images-idx3-ubyte", 100)):
        write_idx(folder / name, np.zeros((n, 32, 32), dtype=np.uint8))


DATA = ["train", "conv5-tiny", "--data-dir", "idx", "--out", "OUT"]
DATA += ["--epochs", "1", "--val-size", "100"]

# ------------------------------------------------------------ run folder setups


def _run_edit(change: Callable[[Path], None]) -> Setup:
    """A setup: copy the shared run to ./RUN, then change it."""
    return lambda space: change(space.run())


def _edit_json(path: Path, **changes: object) -> None:
    meta = json.loads(path.read_text())
    for key, value in changes.items():
        target = meta
        *parents, last = key.split("__")
        for parent in parents:
            target = target[parent]
        target[last] = value
    path.write_text(json.dumps(meta))


def _edit_checkpoint(run: Path, **changes: object) -> None:
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    payload.update(changes)
    torch.save(payload, run / "checkpoint.pt")


def _other_weights(run: Path) -> None:
    other = build_model(cnnlab.load("conv5-medium"), 10, seed=0)
    torch.save(other.state_dict(), run / "weights.pt")


def _no_weights(run: Path) -> None:
    (run / "weights.pt").unlink()
    (run / "checkpoint.pt").unlink()


class Pwned:
    """Unpickling this would run code: a hostile checkpoint."""

    def __reduce__(self) -> tuple:
        return (os.system, ("touch PWNED",))


def _hostile_checkpoint(run: Path) -> None:
    torch.save({"format": 1, "model": Pwned()}, run / "checkpoint.pt")


# ----------------------------------------------------------------- disk setups


def _read_only(space: Workspace) -> None:
    space.mount("64k", read_only=True)


def _full_disk(space: Workspace) -> None:
    fill(space.mount("256k"))


def _parent_is_file(space: Workspace) -> None:
    space.write("afile", "not a folder\n")


# ---------------------------------------------------------------- image setups


def _png(size: tuple[int, int]) -> bytes:
    """A PNG whose header claims `size`, with no pixel data: a decompression bomb."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", *size, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


def _with_run(space: Workspace) -> None:
    space.run()


def _image(name: str, make: Callable[[Path], None]) -> Setup:
    def setup(space: Workspace) -> None:
        space.run()
        make(space.cwd / name)

    return setup


def _truncated_png(path: Path) -> None:
    whole = draw_digit(path, "1").read_bytes()
    path.write_bytes(whole[: len(whole) // 2])


def _bytes(content: bytes) -> Callable[[Path], None]:
    return lambda path: path.write_bytes(content)


PREDICT = ["predict", "RUN"]
MEMORY_MASK = r"but [\d.]+ [kMGT]?B is available"

MATRIX = [
    # ------------------------------------------------------ architecture files
    case("arch-unknown-preset", "Architecture files",
         args=["train", "conv3-smal", "--out", "OUT"], example="`train conv3-smal`",
         phrases=["unknown preset 'conv3-smal'", "Did you mean 'conv3-small'?"]),
    case("arch-missing-file", "Architecture files",
         args=["train", "nets/none.yaml", "--out", "OUT"],
         example="an architecture file that does not exist",
         phrases=["nets/none.yaml: no such file", "cnnlab presets"]),
    case("arch-invalid-yaml", "Architecture files", args=TRAIN,
         files={"net.yaml": "name: bad\nlayers:\n  - Flatten\n    - Dense: {units: 10}\n"},
         example="a list item indented under another",
         phrases=["net.yaml: invalid YAML at line 4,", "Fix the syntax"]),
    case("arch-bad-train-block", "Architecture files", args=TRAIN,
         files={"net.yaml": "name: n\nlayers: [Flatten, {Dense: {units: 10}}]\n"
                            "train: {epochs: 0}\n"},
         example="`train: {epochs: 0}` beside the layers (a recipe, as in best.yaml)",
         phrases=["net.yaml: train: epochs must be a positive integer"]),
    case("arch-unknown-type-Conv2d2", "Architecture files", args=TRAIN,
         files=net(layer("Conv2d2", filters=4, kernel_size=3), FLAT, OUT10),
         example="`Conv2d2` (a typo)",
         phrases=["net.yaml: layers[0]: unknown layer type 'Conv2d2'",
                  "Did you mean 'Conv2D'?"]),
    case("arch-unknown-type-Conv3D", "Architecture files", args=TRAIN,
         files=net(CONV, layer("Conv3D", filters=4, kernel_size=3), FLAT, OUT10),
         example="`Conv3D` (not a cnnlab layer)",
         phrases=["net.yaml: layers[1]: unknown layer type 'Conv3D'",
                  "Known types: Conv2D,"]),
    case("arch-unknown-argument", "Architecture files", args=TRAIN,
         files=net(layer("Conv2D", filter=4, kernel_size=3), FLAT, OUT10),
         example="`Conv2D: {filter: 4}`",
         phrases=["net.yaml: layers[0] (Conv2D): unknown argument 'filter'",
                  "Did you mean 'filters'?"]),
    case("arch-wrong-type", "Architecture files", args=TRAIN,
         files=net(conv(filters="sixteen"), FLAT, OUT10), example="`filters: sixteen`",
         phrases=["net.yaml: layers[0] (Conv2D): filters must be a positive integer",
                  "Received: filters='sixteen'"]),
    case("arch-non-positive", "Architecture files", args=TRAIN,
         files=net(CONV, POOL, conv(filters=0), FLAT, OUT10), example="`filters: 0`",
         phrases=["net.yaml: layers[2] (Conv2D): filters must be a positive integer",
                  "Received: filters=0"]),
    case("arch-kernel-larger-than-input", "Architecture files", args=TRAIN,
         # 28 -> 9 -> 3 after two 3x3 poolings: a 7x7 valid kernel cannot fit.
         files=net(layer("MaxPooling2D", pool_size=3), layer("MaxPooling2D", pool_size=3),
                   conv(kernel_size=7), FLAT, OUT10),
         example="`kernel_size: 7` on a 3x3 input (after two 3x3 poolings)",
         phrases=["net.yaml: layers[2] (Conv2D): kernel_size [7, 7] is larger than its "
                  "input 3x3", "Use a smaller kernel_size, padding: same"]),
    case("arch-not-ten-classes", "Architecture files", args=TRAIN,
         files=net(CONV, POOL, FLAT, layer("Dense", units=5, activation="softmax")),
         example="an output layer of 5 units for MNIST's 10 classes",
         phrases=["net.yaml: layers[3] (Dense): the network's output has shape (5,)",
                  "10 classes", "{type: Dense, units: 10, activation: softmax}"]),
    case("arch-missing-flatten", "Architecture files", args=TRAIN,
         files=net(CONV, POOL, OUT10), example="`Dense` after a conv, no `Flatten`",
         phrases=["net.yaml: layers[2] (Dense): the network's output has shape "
                  "(13, 13, 10)", "Add {type: Flatten}"]),
    case("arch-empty-file", "Architecture files", args=TRAIN, files={"net.yaml": ""},
         example="an empty net.yaml",
         phrases=["net.yaml: the file is empty", "'name' and 'layers' keys"]),
    case("arch-not-a-mapping", "Architecture files", args=TRAIN,
         files={"net.yaml": "- Flatten\n- Dense: {units: 10}\n"},
         example="a YAML list instead of a mapping",
         phrases=["net.yaml: an architecture file must be a mapping", "a list"]),
    case("arch-unknown-key", "Architecture files", args=TRAIN,
         files={"net.yaml": "name: net\nlayer: [Flatten]\n"}, example="`layer:`",
         phrases=["net.yaml: unknown key 'layer'", "Did you mean 'layers'?"]),
    case("arch-no-layers", "Architecture files", args=TRAIN,
         files={"net.yaml": "name: net\nlayers: []\n"}, example="`layers: []`",
         phrases=["net.yaml: 'layers' must be a non-empty list", "Example:"]),
    case("arch-layer-not-a-mapping", "Architecture files", args=TRAIN,
         files={"net.yaml": "name: net\nlayers: [5]\n"}, example="`layers: [5]`",
         phrases=["net.yaml: layers[0]: a layer must be a mapping", "Received: 5"]),
    case("arch-missing-argument", "Architecture files", args=TRAIN,
         files=net(FLAT, layer("Dense", activation="softmax")),
         example="`Dense` without `units`",
         phrases=["layers[1] (Dense): missing required argument(s): units"]),
    case("arch-negative-kernel", "Architecture files", args=TRAIN,
         files=net(layer("Conv2D", filters=4, kernel_size=-3), FLAT, OUT10),
         example="`kernel_size: -3`",
         phrases=["layers[0] (Conv2D): kernel_size must be positive",
                  "Received: kernel_size=[-3, -3]"]),
    case("arch-kernel-three-numbers", "Architecture files", args=TRAIN,
         files=net(layer("Conv2D", filters=4, kernel_size=[3, 3, 3]), FLAT, OUT10),
         example="`kernel_size: [3, 3, 3]`",
         phrases=["layers[0] (Conv2D): kernel_size must be an integer or a list of "
                  "two integers", "kernel_size: [3, 3]"]),
    case("arch-float-filters", "Architecture files", args=TRAIN,
         files=net(layer("Conv2D", filters=8.5, kernel_size=3), FLAT, OUT10),
         example="`filters: 8.5`",
         phrases=["layers[0] (Conv2D): filters must be a positive integer",
                  "filters=8.5"]),
    case("arch-unknown-activation", "Architecture files", args=TRAIN,
         files=net(FLAT, layer("Dense", units=10, activation="rellu")),
         example="`activation: rellu`",
         phrases=["layers[1] (Dense): activation must be one of",
                  "Did you mean 'relu'?"]),
    case("arch-unknown-padding", "Architecture files", args=TRAIN,
         files=net(layer("Conv2D", filters=4, kernel_size=3, padding="full"), FLAT,
                   OUT10),
         example="`padding: full`",
         phrases=["layers[0] (Conv2D): padding must be one of valid, same"]),
    case("arch-dropout-rate-one", "Architecture files", args=TRAIN,
         files=net(FLAT, layer("Dropout", rate=1.0), OUT10),
         example="`Dropout: {rate: 1.0}`",
         phrases=["layers[1] (Dropout): rate must be a number in [0, 1)",
                  "Example: rate: 0.25"]),
    case("arch-pool-larger-than-input", "Architecture files", args=TRAIN,
         files=net(layer("MaxPooling2D", pool_size=32), FLAT, OUT10),
         example="`pool_size: 32` on a 28x28 image",
         phrases=["layers[0] (MaxPooling2D): pool_size [32, 32] is larger than its "
                  "input 28x28", "padding: same"]),
    case("arch-conv-after-flatten", "Architecture files", args=TRAIN,
         files=net(FLAT, layer("Conv2D", filters=4, kernel_size=3), OUT10),
         example="`Conv2D` after `Flatten`",
         phrases=["layers[1] (Conv2D): expects an image input",
                  "Move it before the Flatten/Dense layers"]),
    case("arch-output-sigmoid", "Architecture files", args=TRAIN,
         files=net(FLAT, layer("Dense", units=10, activation="sigmoid")),
         example="a sigmoid output layer",
         phrases=["layers[1] (Dense): the output activation is 'sigmoid'",
                  "activation: softmax"]),
    case("arch-input-shape-two-numbers", "Architecture files", args=TRAIN,
         files=net(FLAT, OUT10, input_shape=[28, 28]),
         example="`input_shape: [28, 28]`",
         phrases=["net.yaml: input_shape must be three positive integers",
                  "input_shape: [28, 28, 1]"]),
    case("arch-input-shape-not-the-data", "Architecture files", args=TRAIN,
         files=net(FLAT, OUT10, input_shape=[32, 32, 1]),
         example="`input_shape: [32, 32, 1]` for 28x28 MNIST",
         phrases=["net.yaml: input_shape is [32, 32, 1]", "28x28 with 1 channel",
                  "Set input_shape: [28, 28, 1]"]),
    case("arch-input-channels-not-the-data", "Architecture files", args=TRAIN,
         files=net(CONV, FLAT, OUT10, input_shape=[28, 28, 3]),
         example="`input_shape: [28, 28, 3]` (RGB) for greyscale MNIST",
         phrases=["net.yaml: input_shape is [28, 28, 3]", "with 1 channel"]),
    case("arch-too-large-for-memory", "Architecture files", args=TRAIN,
         files=net(layer("Conv2D", filters=64, kernel_size=3, padding="same"), FLAT,
                   layer("Dense", units=2_000_000), OUT10),
         example="`Dense: {units: 2000000}` after a 28x28x64 conv (401 GB of weights)",
         phrases=["net.yaml: training needs about 1.6 TB of memory",
                  "weights 401.5 GB", "adam state 1.2 TB",
                  "layers[2] (Dense) has 100,354,000,000 weights",
                  "fewer units or filters"],
         masks=(MEMORY_MASK,)),
    case("arch-python-tag", "Architecture files", args=TRAIN,
         files={"net.yaml": "name: !!python/object/apply:os.system ['touch PWNED']\n"
                            "layers: [Flatten]\n"},
         example="`name: !!python/object/apply:os.system [...]`",
         phrases=["net.yaml: invalid YAML at line 1, column 7",
                  "could not determine a constructor"]),
    case("arch-not-utf8", "Architecture files", args=TRAIN,
         setup=lambda space: space.write("net.yaml", b"\xff\xfe\x00 binary"),
         example="a binary file named net.yaml",
         phrases=["net.yaml: not a text file (byte 0 is not UTF-8)",
                  "Save the architecture as UTF-8 YAML or JSON"]),
    case("arch-invalid-json", "Architecture files",
         args=["train", "net.json", "--out", "OUT", *TINY_FLAGS],
         files={"net.json": '{"name": "net", "layers": [}'},
         example="net.json with a stray `}`",
         phrases=["net.json: invalid YAML at line 1, column 28", "Fix the syntax"]),
    case("arch-folder-not-file", "Architecture files",
         args=["train", "nets/", "--out", "OUT", *TINY_FLAGS],
         setup=lambda space: (space.cwd / "nets").mkdir(),
         example="a folder given as the architecture",
         phrases=["nets: is a folder, not an architecture file",
                  "Give the path of a YAML or JSON file"]),
    # ------------------------------------------------------------- study files
    case("study-missing", "Study files", args=["study", "none.yaml", "--out", "ST"],
         example="a study file that does not exist",
         phrases=["none.yaml: no such study file or built-in study",
                  "Built-in: quickstart, seed"]),
    case("study-invalid-yaml", "Study files", args=STUDY,
         files=study("name: s\narchitectures: [conv5-tiny\n"),
         example="an unclosed `[`", phrases=["study.yaml: invalid YAML at line 3"]),
    case("study-unknown-key", "Study files", args=STUDY,
         files=study("name: s\narchitecture: [conv5-tiny]\n"),
         example="`architecture:`",
         phrases=["study.yaml: unknown key 'architecture'",
                  "Did you mean 'architectures'?"]),
    case("study-negative-seed", "Study files", args=STUDY,
         files=study("name: s\nseeds: [-1]\narchitectures: [conv5-tiny]\n"),
         example="`seeds: [-1]`",
         phrases=["study.yaml: seeds: must be a list of integers >= 0"]),
    case("study-duplicate-labels", "Study files", args=STUDY,
         files=study("name: s\narchitectures: [conv5-tiny, conv5-tiny]\n"),
         example="the same net twice without labels",
         phrases=["study.yaml: architectures: labels must be unique",
                  "distinct 'label'"]),
    case("study-unknown-setting", "Study files", args=STUDY,
         files=study("name: s\ntrain: {epoch: 3}\narchitectures: [conv5-tiny]\n"),
         example="`train: {epoch: 3}`",
         phrases=["study.yaml: train: unknown key 'epoch'", "Did you mean 'epochs'?"]),
    case("study-bad-setting", "Study files", args=STUDY,
         files=study("name: s\ntrain: {batch_size: 0}\narchitectures: [conv5-tiny]\n"),
         example="`train: {batch_size: 0}`",
         phrases=["study.yaml: train: batch_size must be a positive integer"]),
    case("study-name-not-simple", "Study files", args=STUDY,
         files=study("name: 'my study/x'\narchitectures: [conv5-tiny]\n"),
         example="`name: 'my study/x'`",
         phrases=["study.yaml: name: must be a simple name", "it names a folder"]),
    case("study-preset-and-file", "Study files", args=STUDY,
         files=study("name: s\narchitectures: [{preset: conv5-tiny, file: n.yaml}]\n"),
         example="an entry with both `preset` and `file`",
         phrases=["study.yaml: architectures[0]: give exactly one of preset, file "
                  "or spec"]),
    case("study-net-not-ten-classes", "Study files", args=STUDY,
         files=study("name: s\narchitectures:\n  - {label: t, spec: {layers: "
                     "[Flatten, {Dense: {units: 7}}]}}\n"),
         example="an inline spec ending in 7 units",
         phrases=["study.yaml: architectures[0].spec: layers[1] (Dense): the "
                  "network's output has shape (7,)", "units: 10"]),
    # ------------------------------------------------------------ search blocks
    case("search-empty-range", "Search blocks", args=SEARCH,
         files=search_file("lr: {float: [0.01, 0.01]}"), example="`lr: {float: [0.01, 0.01]}`",
         phrases=["study.yaml: search.space.lr: the range [0.01, 0.01] is empty",
                  "write it in the template"]),
    case("search-inverted-range", "Search blocks", args=SEARCH,
         files=search_file("units: {int: [64, 4]}", units="$units"),
         example="`units: {int: [64, 4]}`",
         phrases=["study.yaml: search.space.units: the range [64, 4] is inverted",
                  "low must be below high"]),
    case("search-undefined-parameter", "Search blocks", args=SEARCH,
         files=search_file("units: {int: [4, 64]}", units="$unit"),
         example="`units: $unit` in the template",
         phrases=["study.yaml: search.architecture.layers[1].Dense.units: $unit is not "
                  "a parameter of search.space. Did you mean 'units'?"]),
    case("search-unused-parameter", "Search blocks", args=SEARCH,
         files=search_file("units: {int: [4, 64]}\n    width: {int: [4, 8]}",
                           units="$units"),
         example="`width` defined, never used",
         phrases=["study.yaml: search.space.width: is defined but never used",
                  "write $width in search.architecture"]),
    case("search-one-choice", "Search blocks", args=SEARCH,
         files=search_file("optimizer: {choice: [adam]}"), example="`{choice: [adam]}`",
         phrases=["study.yaml: search.space.optimizer: a choice needs at least two "
                  "values"]),
    case("search-zero-trials", "Search blocks", args=SEARCH,
         files=search_file("lr: {float: [0.001, 0.01]}", trials=0), example="`trials: 0`",
         phrases=["study.yaml: search.trials: must be an integer >= 1. Received: 0"]),
    case("search-every-point-invalid", "Search blocks", args=SEARCH,
         files=search_file("kernel: {choice: [40, 50]}", kernel="$kernel"),
         example="kernels 40 and 50 on 28x28 images",
         phrases=["study.yaml: search.space: no point can be built", "kernel_size "
                  "[40, 40] is larger than its input 28x28"]),
    case("search-trials-flag-zero", "Search blocks", args=[*SEARCH, "--trials", "0"],
         files=search_file("lr: {float: [0.001, 0.01]}"), example="`--trials 0`",
         phrases=["--trials", "expected a positive integer, got 0"]),
    case("search-infinite-bound", "Search blocks", args=SEARCH,
         files=search_file("lr: {float: [0.001, .inf]}"),
         example="`lr: {float: [0.001, .inf]}`",
         phrases=["study.yaml: search.space.lr: the range [0.001, inf] must hold "
                  "finite numbers"]),
    case("search-huge-integer", "Search blocks", args=SEARCH,
         files=search_file("units: {int: [4, 0x" + "f" * 5000 + "]}", units="$units"),
         example="`units: {int: [4, 0xfff...]}` (5,000 hex digits)",
         phrases=["search.space.units: the range [4, <an integer of 5000 hex digits>]",
                  "2,147,483,647"]),
    case("search-validation-searched", "Search blocks", args=SEARCH,
         files=search_file("validation: {choice: [test, holdout]}"),
         example="`validation: {choice: [test, holdout]}` in the space",
         phrases=["search.space.validation: cannot be searched", "never reads the "
                  "test set"]),
    case("search-validation-none", "Search blocks", args=SEARCH,
         files={"study.yaml": search_file("lr: {float: [0.001, 0.01]}")["study.yaml"]
                .replace("name: s\n", "name: s\ntrain: {validation: none}\n", 1)},
         example="`train: {validation: none}` with a search block",
         phrases=["study.yaml: train.validation: none gives no validation score",
                  "validation: holdout"]),
    case("search-repeat-too-large", "Search blocks", args=SEARCH,
         files=study("name: s\nsearch:\n  trials: 1\n  space:\n    n: {int: [0, "
                     "100000000]}\n  architecture:\n    layers:\n      - {repeat: $n,"
                     " layers: [BatchNormalization]}\n      - Flatten\n      - Dense: "
                     "{units: 10, activation: softmax}\n"),
         example="`repeat: $n` with `n: {int: [0, 100000000]}`",
         phrases=["search.architecture.layers[0].repeat: a repeat count is at most "
                  "1,000", "$n reaches 100000000"]),
    case("search-grid-too-large", "Search blocks", args=[*SEARCH, "--trials", "1"],
         files=study("name: s\nsearch:\n  sampler: grid\n  space:\n"
                     + "".join(f"    lr{i}: {{choice: [0.1, 0.2]}}\n" for i in range(40))
                     + "  architecture:\n    layers: [Flatten, {Dense: {units: 10, "
                     "activation: softmax}}]\n"),
         example="40 two-way choices with `sampler: grid` and `--trials 1`",
         phrases=["search.space: the grid of 40 parameters has 1,099,511,627,776 "
                  "points, over the limit of 100,000"]),
    case("search-alias-bomb", "Search blocks", args=SEARCH,
         files=study("name: s\nsearch:\n  trials: 1\n  space: {lr: {float: [0.001, "
                     "0.01]}}\n  architecture:\n    x0: &a0 [Flatten, Flatten]\n"
                     + "".join(f"    x{i}: &a{i} [" + ", ".join([f"*a{i - 1}"] * 10)
                               + "]\n" for i in range(1, 8))
                     + "    layers: [Flatten, {Dense: {units: 10, activation: "
                     "softmax}}]\n"),
         example="YAML aliases nested 7 deep, 10 each, in the template",
         phrases=["search.architecture: holds more than 100,000 values once its YAML "
                  "aliases"]),
    # -------------------------------------------------------- export and import
    case("export-over-run-file", "Export and import", setup=_with_run,
         args=["export", "RUN", "--format", "torchscript", "--out", "RUN/weights.pt",
               "--overwrite"],
         example="`export RUN --out RUN/weights.pt --overwrite`",
         phrases=["RUN/weights.pt: is inside the run folder RUN", "RUN/model.pt"]),
    case("export-beside-store", "Export and import", setup=_with_run,
         files={"ST": None, "ST/cnnlab.sqlite": "a store\n"},
         args=["export", "RUN", "--out", "ST/cnnlab.sqlite"],
         example="`export RUN --out ST/cnnlab.sqlite`",
         phrases=["ST/cnnlab.sqlite: is next to the study store"]),
    case("export-over-users-file", "Export and import", setup=_with_run,
         files={"net.onnx": "my notes\n"},
         args=["export", "RUN", "--out", "net.onnx", "--overwrite"],
         example="`--out net.onnx --overwrite`, a file export did not write",
         phrases=["net.onnx: already exists and is not a file cnnlab export wrote"]),
    case("export-name-too-long", "Export and import", setup=_with_run,
         args=["export", "RUN", "--out", "a" * 300 + ".onnx"],
         example="`--out` of a 305-character name",
         phrases=["aaa...aaaaaaaaaaaaaaa.onnx: cannot be used as --out (File name too "
                  "long)"]),
    case("import-into-users-folder", "Export and import",
         files={"mine": None, "mine/study.yaml": "name: mine\n",
                "net.py": "from keras import Sequential, layers\nm = Sequential("
                          "[layers.Flatten(), layers.Dense(10)])\n"},
         args=["import", "net.py", "--out", "mine"],
         example="`import net.py --out mine`, a folder of the user's",
         phrases=["mine: already holds study.yaml, which cnnlab import did not write"]),
    case("log-uri-unknown-scheme", "Export and import",
         args=["export-study", "s", "--to", "mlflow", "--log-uri", "garbage-scheme://x",
               "--out", "ST"],
         example="`--log-uri garbage-scheme://x`",
         phrases=["--log-uri garbage-scheme://x: MLflow does not know the scheme "
                  "'garbage-scheme'", "http://HOST:PORT"]),
    case("log-uri-plain-file", "Export and import", files={"notes.txt": "notes\n"},
         args=["train", "conv5-tiny", "--log", "mlflow", "--log-uri", "notes.txt",
               "--out", "OUT"],
         example="`--log mlflow --log-uri notes.txt`, a file",
         phrases=["--log-uri notes.txt: is a file; a plain path is the folder MLflow "
                  "keeps its runs in"]),
    case("log-uri-cnnlab-store", "Export and import",
         files={"ST": None, "ST/cnnlab.sqlite": "a store\n"},
         args=["export-study", "s", "--to", "mlflow", "--log-uri",
               "sqlite:///ST/cnnlab.sqlite", "--out", "ST"],
         example="`--log-uri sqlite:///ST/cnnlab.sqlite`",
         phrases=["is cnnlab's own database; MLflow would add its tables to it"]),
    case("import-code-fifo", "Export and import",
         setup=lambda space: os.mkfifo(space.cwd / "net.py"),
         args=["import", "net.py", "--out", "o"],
         example="a FIFO named net.py",
         phrases=["net.py: is a FIFO, not a file"]),
    # -------------------------------------------------------------------- data
    case("data-and-data-dir", "Data",
         args=["train", "conv3-small", "--data", "mnist", "--data-dir", "idx"],
         files={"idx": None}, example="`--data mnist --data-dir idx`",
         phrases=["--data and --data-dir both given"]),
    case("data-dir-empty", "Data",
         args=["train", "conv3-small", "--data-dir", "idx", "--out", "OUT", *TINY_FLAGS],
         files={"idx": None}, example="`--data-dir` naming an empty folder",
         phrases=["missing train-images-idx3-ubyte[.gz]", " in idx;"]),
    case("data-fashion-mnist-absent", "Data", setup=_fashion_mnist_absent, root=True,
         args=["train", "conv3-small", "--data", "fashion-mnist", "--out", "OUT"],
         example="`--data fashion-mnist`, neither installed nor downloaded",
         phrases=["Fashion-MNIST is neither installed", "cnnlab data get fashion-mnist",
                  "apt-get install dataset-fashion-mnist"]),
    case("data-unknown-name", "Data",
         args=["train", "conv5-tiny", "--data", "mnits", "--out", "OUT", *TINY_FLAGS],
         example="`--data mnits`",
         phrases=["unknown data set 'mnits'", "use 'mnist', 'fashion-mnist' or a "
                  "folder"]),
    case("data-dir-is-a-file", "Data", args=DATA,
         setup=lambda space: space.write("idx", "a file\n"),
         example="`--data-dir` naming a file",
         phrases=["unknown data set 'idx': idx is not a folder"]),
    case("data-label-huge", "Data", args=DATA,
         setup=broken_idx(lambda f: write_idx(
             f / "train-labels-idx1-ubyte",
             np.append(load_dataset("mnist").y_train[:299].numpy().astype(">i4"),
                       np.array([2**31 - 1], ">i4")), 0x0C)),
         example="an int32 training label of 2^31-1",
         phrases=["idx/train-labels-idx1-ubyte: labels out of range (found "
                  "0..2147483647, expected 0..99,999: at most 100,000 classes)"]),
    case("data-file-missing", "Data", args=DATA,
         setup=broken_idx(lambda f: (f / "t10k-labels-idx1-ubyte").unlink()),
         example="no t10k-labels file",
         phrases=["missing t10k-labels-idx1-ubyte[.gz] in idx",
                  "put the four IDX files there"]),
    case("data-wrong-magic", "Data", args=DATA,
         setup=broken_idx(lambda f: (f / "train-images-idx3-ubyte").write_bytes(
             b"\x00\x01\x08\x03" + bytes(100))),
         example="an IDX file starting 00 01 08 03",
         phrases=["idx/train-images-idx3-ubyte: not an IDX file (magic bytes "
                  "00 01 08 03", "pass the original IDX file"]),
    case("data-truncated", "Data", args=DATA,
         setup=broken_idx(lambda f: _truncate(f / "train-images-idx3-ubyte", 100)),
         example="the last 100 bytes of an image file cut off",
         phrases=["idx/train-images-idx3-ubyte: truncated (header shape "
                  "(300, 28, 28) needs 235216 bytes, the data has 235116)",
                  "restore the original file"]),
    case("data-truncated-gzip", "Data", args=DATA, setup=broken_idx(_gzip_half),
         example="half of a .gz file",
         phrases=["idx/t10k-images-idx3-ubyte.gz: the gzip stream is truncated",
                  "copy it again"]),
    case("data-not-gzip", "Data", args=DATA,
         setup=broken_idx(lambda f: (f / "t10k-labels-idx1-ubyte").rename(
             f / "t10k-labels-idx1-ubyte.gz")),
         example="a plain IDX file named .gz",
         phrases=["idx/t10k-labels-idx1-ubyte.gz: not a gzip file",
                  "store it decompressed without .gz"]),
    case("data-count-mismatch", "Data", args=DATA,
         setup=broken_idx(lambda f: write_idx(f / "train-labels-idx1-ubyte",
                                              np.zeros(299, dtype=np.uint8))),
         example="300 images, 299 labels",
         phrases=["idx/train-images-idx3-ubyte holds 300 images but "
                  "idx/train-labels-idx1-ubyte holds 299 labels",
                  "use files from the same data set"]),
    case("data-checksum-mismatch", "Data", args=DATA,
         setup=broken_idx(_checksum_mismatch),
         example="a file changed after SHA256SUMS was written",
         phrases=["idx/t10k-labels-idx1-ubyte: SHA-256 mismatch (expected",
                  "fix SHA256SUMS"]),
    case("data-bad-sums-line", "Data", args=DATA,
         setup=broken_idx(lambda f: (f / "SHA256SUMS").write_text("zzz\n")),
         example="a SHA256SUMS line that is not a digest",
         phrases=["idx/SHA256SUMS: line 1 is not '<64 hex digits>  <file name>'"]),
    case("data-images-not-uint8", "Data", args=DATA,
         setup=broken_idx(lambda f: write_idx(f / "train-images-idx3-ubyte",
                                              np.zeros((300, 28, 28), np.float32),
                                              0x0D)),
         example="float32 images (IDX type 0x0D)",
         phrases=["idx/train-images-idx3-ubyte: expected uint8 images",
                  "IDX3 file of type 0x08"]),
    case("data-more-classes-than-net", "Data",
         args=["net.yaml" if a == "conv5-tiny" else a for a in DATA],
         files=net(FLAT, OUT10),
         setup=broken_idx(lambda f: write_idx(f / "train-labels-idx1-ubyte",
                                              np.arange(300) % 12)),
         example="labels 0..11 for a net ending in 10 units (a preset follows the "
                 "data's class count)",
         phrases=["net.yaml: layers[1] (Dense): the network's output has "
                  "shape (10,), but the data set has 12 classes", "units: 12"]),
    case("data-images-not-28x28", "Data",
         args=["net.yaml" if a == "conv5-tiny" else a for a in DATA],
         files=net(FLAT, OUT10, input_shape=[28, 28, 1]),
         setup=broken_idx(_images_32),
         example="32x32 images for a net stating input_shape [28, 28, 1] (a preset "
                 "takes the data's shape)",
         phrases=["net.yaml: input_shape is [28, 28, 1], but the images of "
                  "idx are 32x32", "Set input_shape: [32, 32, 1]"]),
    case("data-evaluate-more-classes", "Data",
         args=["evaluate", "RUN", "--data", "idx"],
         setup=lambda space: (space.run(), write_idx(
             idx_folder(space) / "t10k-labels-idx1-ubyte", np.arange(100) % 13)),
         example="`evaluate --data` with 13 classes on a 10-class run",
         phrases=["idx: the data set has 13 classes, but the network of RUN scores "
                  "10", "data with the classes it was trained on"]),
    case("data-val-size-too-large", "Data",
         args=["train", "conv5-tiny", "--val-size", "60000", "--out", "OUT"],
         example="`--val-size 60000` (all of MNIST's training set)",
         phrases=["val_size=60000 (--val-size) is out of range", "choose 1..59999",
                  "(--validation)"]),
    case("data-val-size-leaves-too-few", "Data",
         args=["train", "conv5-tiny", "--val-size", "59999", "--train-limit", "500",
               "--out", "OUT"],
         example="`--val-size 59999 --train-limit 500`",
         phrases=["leaves 1 training image(s), fewer than train_limit=500",
                  "lower --train-limit"]),
    # ------------------------------------------------------------- run folders
    case("run-evaluate-not-a-run", "Run folders", args=["evaluate", "somefolder"],
         files={"somefolder/notes.txt": "hi\n"},
         example="`evaluate` on a folder without run.json",
         phrases=["somefolder: not a cnnlab run folder", "run.json"]),
    case("run-missing", "Run folders", args=["evaluate", "nothere"],
         example="`evaluate nothere`",
         phrases=["nothere: no such run folder", "Give the folder a training run "
                  "wrote"]),
    case("run-weights-of-another-net", "Run folders", args=["evaluate", "RUN"],
         setup=_run_edit(_other_weights),
         example="weights.pt copied from a conv5-medium run into a conv5-tiny run",
         phrases=["RUN/weights.pt: the saved weights do not fit the run's "
                  "architecture", "Retrain the run"]),
    case("run-checkpoint-newer-format", "Run folders",
         args=["train", "--resume", "RUN", "--epochs", "2"],
         setup=_run_edit(lambda run: _edit_checkpoint(run, format=99)),
         example="checkpoint.pt of format 99",
         phrases=["RUN/checkpoint.pt: checkpoint format 99 is newer than this cnnlab "
                  "understands (1)", "Upgrade cnnlab"]),
    case("run-newer-format", "Run folders", args=["evaluate", "RUN"],
         setup=_run_edit(lambda run: _edit_json(run / "run.json", format=99)),
         example="run.json of format 99",
         phrases=["RUN: run format 99 is newer than this cnnlab understands (1)",
                  "Upgrade cnnlab"]),
    case("run-checkpoint-corrupt", "Run folders",
         args=["train", "--resume", "RUN", "--epochs", "2"],
         setup=_run_edit(lambda run: (run / "checkpoint.pt").write_bytes(b"junk" * 9)),
         example="checkpoint.pt overwritten with junk",
         phrases=["RUN/checkpoint.pt: cannot be read as a cnnlab checkpoint: the "
                  "file is corrupt", "Retrain the run or restore the file"]),
    case("run-checkpoint-incomplete", "Run folders",
         args=["train", "--resume", "RUN", "--epochs", "2"],
         setup=_run_edit(lambda run: torch.save({"format": 1},
                                                run / "checkpoint.pt")),
         example="a checkpoint holding only `{format: 1}`",
         phrases=["RUN/checkpoint.pt: incomplete checkpoint (missing epoch, model",
                  "Retrain the run or restore the file"]),
    case("run-checkpoint-runs-code", "Run folders",
         args=["train", "--resume", "RUN", "--epochs", "2"],
         setup=_run_edit(_hostile_checkpoint),
         example="a checkpoint whose pickle calls os.system",
         phrases=["RUN/checkpoint.pt: cannot be read as a cnnlab checkpoint: it "
                  "holds Python objects", "loading them could run code"]),
    case("run-weights-empty", "Run folders", args=["evaluate", "RUN"],
         setup=_run_edit(lambda run: (run / "weights.pt").write_bytes(b"")),
         example="an empty weights.pt",
         phrases=["RUN/weights.pt: cannot be read as a cnnlab checkpoint: the file "
                  "is corrupt", "restore the file"]),
    case("run-json-corrupt", "Run folders", args=["evaluate", "RUN"],
         setup=_run_edit(lambda run: (run / "run.json").write_text("{not json")),
         example="run.json that is not JSON",
         phrases=["RUN/run.json: unreadable", "Retrain the run"]),
    case("run-json-bad-config", "Run folders",
         args=["train", "--resume", "RUN", "--epochs", "2"],
         setup=_run_edit(lambda run: _edit_json(run / "run.json",
                                                config__epochs="many")),
         example="run.json with `config.epochs: \"many\"`",
         phrases=["RUN/run.json: config: epochs must be a positive integer",
                  "Received: epochs='many'"]),
    case("run-json-bad-standardize", "Run folders", args=["evaluate", "RUN"],
         setup=_run_edit(lambda run: _edit_json(
             run / "run.json", config__standardize=True,
             standardize={"mean": [0.1], "std": [0]})),
         example="run.json with `standardize: {mean: [0.1], std: [0]}`",
         phrases=["RUN/run.json: standardize std must be a list of finite positive "
                  "numbers, one per channel (1)", "Received: standardize.std=[0]",
                  "Retrain the run"]),
    case("run-no-weights-yet", "Run folders",
         args=[*PREDICT, "one.png"],
         setup=lambda space: (_no_weights(space.run()),
                              draw_digit(space.cwd / "one.png", "1")),
         example="a run stopped before its first epoch ended",
         phrases=["RUN: no weights yet (no epoch has finished)",
                  "cnnlab train --resume RUN"]),
    # -------------------------------------------------- output folder and disk
    case("out-parent-is-a-file", "Output folder and disk",
         args=["train", "conv5-tiny", "--out", "afile/run", *TINY_FLAGS],
         setup=_parent_is_file, example="`--out afile/run`, afile a file",
         phrases=["afile/run: cannot create the output folder (Not a directory)",
                  "Choose a writable --out"]),
    case("out-read-only", "Output folder and disk",
         args=["train", "conv5-tiny", "--out", "disk/run", *TINY_FLAGS],
         setup=_read_only, example="`--out` on a read-only file system",
         phrases=["disk/run: cannot create the output folder (Read-only file "
                  "system)", "Choose a writable --out"]),
    case("out-disk-full", "Output folder and disk",
         args=["train", "conv5-tiny", "--out", "disk/run", *TINY_FLAGS],
         setup=_full_disk, example="`--out` on a full disk",
         phrases=["disk/run/spec.yaml: cannot write the file (No space left on "
                  "device)", "Free some disk space"]),
    # ------------------------------------------------------------------- flags
    case("flag-no-architecture", "Flags", args=["train", "--out", "OUT"],
         example="`train` with neither an architecture nor `--resume`",
         phrases=["give an architecture", "or --resume RUN"]),
    case("flag-unknown-flag", "Flags",
         args=["train", "conv3-small", "--epocs", "3", "--out", "OUT"],
         example="`--epocs 3`",
         phrases=["unrecognized arguments: --epocs", "did you mean --epochs?"]),
    case("flag-epochs-zero", "Flags",
         args=["train", "conv3-small", "--epochs", "0", "--out", "OUT"],
         example="`--epochs 0`",
         phrases=["argument --epochs: expected a positive integer, got 0"]),
    case("flag-lr-negative", "Flags",
         args=["train", "conv3-small", "--lr", "-1", "--out", "OUT"],
         example="`--lr -1`",
         phrases=["argument --lr: expected a positive number, got -1"]),
    case("flag-bad-choice", "Flags",
         args=["train", "conv3-small", "--optimizer", "adamm", "--out", "OUT"],
         example="`--optimizer adamm`",
         phrases=["argument --optimizer: invalid choice: 'adamm'", "'adam'"]),
    case("flag-resume-with-lr", "Flags", args=["train", "--resume", "RUN", "--lr", "0.1"],
         setup=_with_run, example="`--resume RUN --lr 0.1`",
         phrases=["--resume continues a run with its own settings", "drop --lr"]),
    case("flag-unknown-command", "Flags", args=["trian", "conv5-tiny"],
         example="`cnnlab trian`",
         phrases=["invalid choice: 'trian'", "(did you mean train?)"]),
    case("flag-not-a-number", "Flags",
         args=["train", "conv5-tiny", "--batch-size", "big"],
         example="`--batch-size big`",
         phrases=["argument --batch-size: expected a positive integer, got 'big'"]),
    case("flag-lr-nan", "Flags", args=["train", "conv5-tiny", "--lr", "nan"],
         example="`--lr nan`",
         phrases=["argument --lr: expected a positive number, got nan"]),
    case("flag-seed-negative", "Flags", args=["train", "conv5-tiny", "--seed", "-1"],
         example="`--seed -1`",
         phrases=["argument --seed: expected an integer >= 0, got -1"]),
    case("flag-missing-value", "Flags", args=["train", "conv5-tiny", "--epochs"],
         example="`--epochs` with no number",
         phrases=["argument --epochs: expected one argument"]),
    case("flag-validation-typo", "Flags",
         args=["train", "conv5-tiny", "--validation", "tset"],
         example="`--validation tset`",
         phrases=["argument --validation: invalid choice: 'tset'",
                  "(did you mean test?)"]),
    case("flag-threads-more-than-cpus", "Flags",
         args=["train", "conv5-tiny", "--threads", "100000", "--out", "OUT", *TINY_FLAGS],
         example="`--threads 100000` (PyTorch crashes on it)",
         phrases=["threads=100000 (--threads) is more than the", "or fewer"],
         masks=(r"the \d+ CPU\(s\)", r"--threads \d+ or fewer")),
    case("flag-val-size-without-holdout", "Flags",
         args=["train", "conv5-tiny", "--validation", "test", "--val-size", "100"],
         example="`--validation test --val-size 100`",
         phrases=["--val-size sets the hold-out, but --validation is test",
                  "Drop --val-size"]),
    case("flag-val-size-and-val-fraction", "Flags",
         args=["train", "conv5-tiny", "--val-size", "100", "--val-fraction", "0.2"],
         example="`--val-size 100 --val-fraction 0.2`",
         phrases=["val_size and val_fraction both size the hold-out; set one of them",
                  "Received: val_size=100, val_fraction=0.2"]),
    case("flag-resume-with-overwrite", "Flags",
         args=["train", "--resume", "RUN", "--overwrite"],
         setup=_with_run,
         example="`--resume RUN --overwrite`",
         phrases=["--resume continues a run with its own settings; drop --overwrite"]),
    case("flag-resume-missing-run", "Flags", args=["train", "--resume", "nothere"],
         example="`--resume nothere`", phrases=["nothere: no such run folder"]),
    case("flag-device-cuda-without-gpu", "Flags",
         pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
         args=["train", "conv5-tiny", "--device", "cuda", "--out", "OUT", *TINY_FLAGS],
         example="`--device cuda` on a machine without a GPU",
         phrases=["--device cuda was asked for, but PyTorch sees no GPU",
                  "Use --device cpu"]),
    # On a CPU with native bf16 these are accepted instead (test_precision.py).
    case("flag-precision-bf16-without-native-bf16", "Flags",
         pytest.mark.skipif(native_bf16(), reason="this CPU has native bf16"),
         args=["train", "conv3-small", "--precision", "bf16", "--out", "OUT",
               *TINY_FLAGS],
         example="`--precision bf16` on a CPU without avx512_bf16 / amx_bf16",
         phrases=["precision=bf16 needs a CPU with native bf16 instructions",
                  "Use --precision fp32 (the default) here"]),
    case("flag-study-precision-bf16-without-native-bf16", "Flags",
         pytest.mark.skipif(native_bf16(), reason="this CPU has native bf16"),
         args=["study", "quickstart", "--precision", "bf16", "--out", "OUT"],
         example="`study quickstart --precision bf16` on a CPU without bf16",
         phrases=["precision=bf16 needs a CPU with native bf16 instructions"]),
    case("flag-precision-fp16-on-cpu", "Flags",
         pytest.mark.skipif(torch.cuda.is_available(), reason="a GPU is present"),
         args=["train", "conv5-tiny", "--precision", "fp16", "--out", "OUT",
               *TINY_FLAGS],
         example="`--precision fp16` without a GPU",
         phrases=["precision=fp16 runs on a CUDA GPU only",
                  "Use --precision fp32 (the default) here"]),
    case("flag-precision-unknown", "Flags",
         args=["train", "conv5-tiny", "--precision", "half"],
         example="`--precision half`",
         phrases=["argument --precision: invalid choice: 'half'"]),
    case("flag-study-seeds", "Flags", args=["study", "quickstart", "--seeds", "a,b"],
         example="`study --seeds a,b`",
         phrases=["argument --seeds: expected comma-separated integers"]),
    # ------------------------------------------------------ images for predict
    case("image-text-as-png", "Images for predict", args=[*PREDICT, "x.png"],
         files={"x.png": "not a picture\n"}, setup=_with_run,
         example="a text file named x.png",
         phrases=["x.png: not an image file", "PNG or JPEG"]),
    case("image-empty-file", "Images for predict", args=[*PREDICT, "empty.png"],
         files={"empty.png": ""}, setup=_with_run, example="an empty empty.png",
         phrases=["empty.png: the file is empty (0 bytes)"]),
    case("image-missing", "Images for predict", args=[*PREDICT, "none.png"],
         setup=_with_run, example="a path that does not exist",
         phrases=["none.png: no such file", "check the path"]),
    case("image-folder", "Images for predict", args=[*PREDICT, "RUN"],
         setup=_with_run, example="a folder",
         phrases=["RUN: is a folder, not an image file"]),
    case("image-fake-jpeg", "Images for predict", args=[*PREDICT, "x.jpg"],
         setup=_image("x.jpg", _bytes(b"\xff\xd8\xff\xe0" + bytes(50))),
         example="a JPEG header followed by zeros",
         phrases=["x.jpg: not an image file Pillow can read", "PNG or JPEG"]),
    case("image-truncated", "Images for predict", args=[*PREDICT, "half.png"],
         setup=_image("half.png", _truncated_png), example="the first half of a PNG",
         phrases=["half.png: cannot decode the image (image file is truncated)",
                  "re-save it"]),
    case("image-huge", "Images for predict", args=[*PREDICT, "huge.png"],
         setup=_image("huge.png", lambda p: Image.new("1", (8000, 6000), 1).save(p)),
         example="an 8000x6000 PNG (48 MP)",
         phrases=["huge.png: the image is 8000x6000 = 48,000,000 pixels, over the "
                  "limit of 40,000,000", "shrink it first"]),
    case("image-bomb", "Images for predict", args=[*PREDICT, "bomb.png"],
         setup=_image("bomb.png", _bytes(_png((100_000, 100_000)))),
         example="a 100-byte PNG whose header claims 100000x100000",
         phrases=["bomb.png: the image is too large to decode safely",
                  "shrink it below 40,000,000 pixels"]),
    case("image-blank", "Images for predict", args=[*PREDICT, "blank.png"],
         setup=_image("blank.png", lambda p: Image.new("L", (100, 100), 255).save(p)),
         example="an all-white image",
         phrases=["blank.png: the image is blank (no ink found)"]),
    # -------------------------------------------------------- numerical faults
    case("diverged-first-epoch", "Numerical faults",
         args=["train", "conv5-tiny", "--optimizer", "sgd", "--lr", "1e30",
               "--out", "OUT", *TINY_FLAGS],
         example="`--optimizer sgd --lr 1e30`",
         phrases=["OUT: training diverged at epoch 1, step ",
                  "the loss became NaN", "sgd with lr 1e+30; try --lr 1e+29",
                  "No epoch had finished", "smaller --lr"],
         masks=(r"step \d+ of",), in_training=True),
]  # fmt: skip

# ---------------------------------------------------------------------------
# One writer per folder, names that become paths, bounded reads, store faults
# (each family's cases; the concurrency and interrupt tests are in
# test_run_folder_lock.py)

PID_MASK = r"PID \d+"


def _locked_run(space: Workspace) -> None:
    """./RUN (a copy of the shared run) with its lock held by another process."""
    run = space.run()
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from pathlib import Path\n"
         "from cnnlab.training.runs import run_lock\n"
         "with run_lock(Path(sys.argv[1])):\n"
         "    print('locked', flush=True); time.sleep(120)", str(run)],
        stdout=subprocess.PIPE, text=True)  # fmt: skip
    space.holders.append(holder)
    assert holder.stdout is not None and holder.stdout.readline() == "locked\n"


def _nested_store(run: Path) -> None:
    (run / "cnnlab.sqlite").write_bytes(b"")


def _edited_spec(run: Path) -> None:
    spec = run / "spec.yaml"
    spec.write_text(spec.read_text().replace("filters: 2", "filters: 3"))


def _store_in(folder: str) -> Setup:
    def setup(space: Workspace) -> None:
        from cnnlab.studies.store import Store

        Store(space.cwd / folder / "cnnlab.sqlite").close()

    return setup


def _store_naming(name: str) -> Setup:
    """./ST/cnnlab.sqlite, edited by hand to hold a study called `name`."""

    def setup(space: Workspace) -> None:
        from cnnlab.studies.results import StudyInfo
        from cnnlab.studies.store import Store

        with Store(space.cwd / "ST" / "cnnlab.sqlite") as store:
            store.save_study(StudyInfo(name, "", {}, {}), "t")

    return setup


def _foreign_store(space: Workspace) -> None:
    import sqlite3

    (space.cwd / "ST").mkdir()
    db = sqlite3.connect(space.cwd / "ST" / "cnnlab.sqlite")
    db.execute("CREATE TABLE trials (name TEXT, score REAL)")
    db.commit()
    db.close()


def _fifo(name: str) -> Setup:
    def setup(space: Workspace) -> None:
        os.mkfifo(space.cwd / name)

    return setup


def _link(name: str, target: str) -> Setup:
    def setup(space: Workspace) -> None:
        (space.cwd / name).parent.mkdir(parents=True, exist_ok=True)
        (space.cwd / name).symlink_to(target)

    return setup


def idx_header(*shape: int) -> bytes:
    return struct.pack(f">BBBB{len(shape)}I", 0, 0, 8, len(shape), *shape)


def _bomb_idx(inflated: int, *shape: int) -> Callable[[Path], None]:
    def change(folder: Path) -> None:
        (folder / "t10k-images-idx3-ubyte").unlink()
        bomb = gzip_bomb(idx_header(*shape), inflated)
        (folder / "t10k-images-idx3-ubyte.gz").write_bytes(bomb)

    return change


def _twin_idx(folder: Path) -> None:
    plain = folder / "t10k-labels-idx1-ubyte"
    other = np.frombuffer(plain.read_bytes()[8:], np.uint8)[::-1].copy()
    buf = idx_header(len(other))[:-4] + struct.pack(">I", len(other)) + other.tobytes()
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(gzip.compress(buf))


def _fifo_idx(folder: Path) -> None:
    (folder / "t10k-labels-idx1-ubyte").unlink()
    os.mkfifo(folder / "t10k-labels-idx1-ubyte")


def _png_with(kind: bytes, data: bytes) -> Callable[[Path], None]:
    """A digit PNG with one extra chunk (a colour profile or text) after IHDR."""

    def make(path: Path) -> None:
        whole = draw_digit(path, "1").read_bytes()
        crc = zlib.crc32(kind + data) & 0xFFFFFFFF
        extra = struct.pack(">I", len(data)) + kind + data + struct.pack(">I", crc)
        path.write_bytes(whole[:33] + extra + whole[33:])

    return make


_INFLATES_100MB = zlib.compress(bytes(100 << 20), 9)  # 100 kB

SMALL_STUDY = (
    "name: s\ntrain: {epochs: 2, train_limit: 300, val_size: 100, test_limit: 100}\n"
    "architectures:\n  - {label: net, spec: {layers: [Flatten, {Dense: {units: 10, "
    "activation: softmax}}]}}\n"
)


def _finished_study(space: Workspace) -> None:
    """./ST: SMALL_STUDY (./study.yaml) run to the end, 2 epochs per trial."""
    from cnnlab.studies.runner import run_study
    from cnnlab.studies.study import load_study

    run_study(load_study(space.cwd / "study.yaml"), space.cwd / "ST")


def _one_class(folder: Path) -> None:
    write_idx(folder / "train-labels-idx1-ubyte", np.full(300, 3, dtype=np.uint8))


MATRIX += [
    # ------------------------------------------- one writer per run folder
    case("run-overwrite-while-training", "Run folders",
         args=["train", "conv5-tiny", "--out", "RUN", "--overwrite", *TINY_FLAGS],
         setup=_locked_run, masks=(PID_MASK,),
         example="`--overwrite RUN` while another process trains into RUN",
         phrases=["RUN: a training run is already running in another process (PID ",
                  "Wait for it to finish"]),
    case("run-resume-while-training", "Run folders", args=["train", "--resume", "RUN"],
         setup=_locked_run, masks=(PID_MASK,),
         example="`--resume RUN` while another process trains into RUN",
         phrases=["RUN: a training run is already running in another process (PID "]),
    case("run-overwrite-nested-store", "Run folders",
         args=["train", "conv5-tiny", "--out", "RUN", "--overwrite", *TINY_FLAGS],
         setup=_run_edit(_nested_store),
         example="`--overwrite RUN` where RUN also holds a study store",
         phrases=["RUN: the run folder also holds cnnlab.sqlite, which --overwrite "
                  "would delete; refusing", "Move them out"]),
    case("run-resume-edited-spec", "Run folders", args=["train", "--resume", "RUN",
         "--epochs", "2"], setup=_run_edit(_edited_spec),
         example="`--resume` after spec.yaml was edited",
         phrases=["RUN/spec.yaml: edited since the run started",
                  "would mix two networks", "cnnlab train RUN/spec.yaml --out "]),
    case("study-out-inside-run", "Study files",
         args=["study", "quickstart", "--out", "RUN/studies"], setup=_with_run,
         example="`study --out RUN/studies` (inside a run folder)",
         phrases=["is inside the run folder", "Choose an --out outside it"]),
    case("study-out-inside-other-study", "Study files",
         args=["study", "quickstart", "--out", "ST/quickstart"], setup=_store_in("ST"),
         example="`study --out ST/x` where ST holds another study store",
         phrases=["is inside", "the output folder of other studies",
                  "Use --out ST to add the study there"]),
    # ------------------------------------------------- names become paths
    case("arch-name-nul", "Architecture files", args=["train", "net.yaml"],
         files={"net.yaml": 'name: "a\\0b"\nlayers: [Flatten, {Dense: {units: 10}}]\n'},
         example="`name:` with a NUL byte (no --out: the name makes the folder)",
         phrases=["net.yaml: 'name' must be one line of printable text of at most "
                  "200 characters", "Got 'a\\x00b'"]),
    case("arch-name-5000-chars", "Architecture files", args=["train", "net.yaml"],
         files={"net.yaml": f"name: {'x' * 5000}\nlayers: [Flatten]\n"},
         example="a 5,000-character `name:`",
         phrases=["'name' must be one line of printable text of at most 200"]),
    case("study-labels-look-alike", "Study files", args=STUDY,
         files=study("name: s\narchitectures:\n  - {preset: conv5-tiny, label: "
                     "tiny}\n  - {preset: conv5-tiny, label: \"\uff54\uff49\uff4e"
                     "\uff59\"}\n"),
         example="labels `tiny` and fullwidth `\uff54\uff49\uff4e\uff59`",
         phrases=["labels 'tiny' and '\uff54\uff49\uff4e\uff59' are the same text "
                  "once Unicode-normalised (NFKC)", "differ in letters or digits"]),
    case("report-store-names-escape", "Study files",
         args=["report", "../../evil", "--out", "ST"], setup=_store_naming("../../evil"),
         example="a store edited to name a study `../../evil`",
         phrases=["study name '../../evil' is not a simple name", "names a folder"]),
    # --------------------------------------------------------- bounded reads
    case("arch-fifo", "Architecture files", args=TRAIN, setup=_fifo("net.yaml"),
         example="net.yaml is a FIFO (nobody writes to it)",
         phrases=["net.yaml: is a FIFO, not a file",
                  "Give the path of an architecture file (a regular file)"]),
    case("arch-dev-zero", "Architecture files", args=TRAIN,
         setup=_link("net.yaml", "/dev/zero"), example="net.yaml -> /dev/zero",
         phrases=["net.yaml: is a character device, not a file"]),
    case("arch-dev-urandom", "Architecture files", args=TRAIN,
         setup=_link("net.yaml", "/dev/urandom"), example="net.yaml -> /dev/urandom",
         phrases=["net.yaml: is a character device, not a file"]),
    case("arch-too-large", "Architecture files", args=TRAIN,
         files={"net.yaml": "# " + "x" * (2 << 20) + "\n"},
         example="a 2 MB architecture file",
         phrases=["net.yaml: is 2,097,155 bytes, over the limit of 1,048,576 bytes "
                  "for an architecture file"]),
    case("data-gzip-bomb", "Data", args=DATA,
         setup=broken_idx(_bomb_idx(200 << 20, 100, 28, 28)),
         example="a 200 kB .gz whose data inflates to 200 MB, header: 100 images",
         phrases=["idx/t10k-images-idx3-ubyte.gz: inflates to more than the 78,416 "
                  "bytes its IDX header promises; refusing to inflate the rest"]),
    case("data-header-promises-too-much", "Data", args=DATA,
         setup=broken_idx(_bomb_idx(1 << 24, 100_000, 1000, 1000)),
         example="a .gz whose IDX header promises 100,000 images of 1000x1000",
         phrases=["its IDX header promises 100,000,000,016 bytes",
                  "over the limit of 2,147,483,648 bytes for an IDX file"]),
    case("data-plain-and-gz-differ", "Data", args=DATA, setup=broken_idx(_twin_idx),
         example="`X` and `X.gz` both present, with different labels",
         phrases=["t10k-labels-idx1-ubyte and t10k-labels-idx1-ubyte.gz both exist "
                  "and hold different data", "would use t10k-labels-idx1-ubyte (the "
                  "plain file)", "Delete the one you do not want"]),
    case("data-fifo", "Data", args=DATA, setup=broken_idx(_fifo_idx),
         example="an IDX file that is a FIFO",
         phrases=["idx/t10k-labels-idx1-ubyte: is a FIFO, not a file"]),
    case("image-fifo", "Images for predict", args=[*PREDICT, "x.png"],
         setup=lambda space: (space.run(), os.mkfifo(space.cwd / "x.png")),
         example="an image that is a FIFO",
         phrases=["x.png: is a FIFO, not a file", "a PNG or JPEG image"]),
    case("image-huge-icc-profile", "Images for predict", args=[*PREDICT, "icc.png"],
         setup=_image("icc.png", _png_with(b"iCCP", b"icc\0\0" + _INFLATES_100MB)),
         example="a PNG whose iCCP profile inflates to 100 MB",
         phrases=["icc.png: cannot decode the image", "Pillow inflates at most",
                  "without metadata"]),
    case("image-huge-ztxt", "Images for predict", args=[*PREDICT, "text.png"],
         setup=_image("text.png", _png_with(b"zTXt", b"Comment\0\0" + _INFLATES_100MB)),
         example="a PNG whose zTXt text inflates to 100 MB",
         phrases=["text.png: cannot decode the image", "Pillow inflates at most"]),
    # ------------------------------------------------------ silent surprises
    case("study-rerun-fewer-epochs", "Study files", args=[*STUDY, "--epochs", "1"],
         files=study(SMALL_STUDY), setup=_finished_study,
         example="a finished 2-epoch study re-run with `--epochs 1`",
         phrases=["ST/s/runs/net-s0: this trial already trained 2 epochs, more than "
                  "the 1 asked for now", "Run with --epochs 2 (or more)"]),
    case("arch-batchnorm-momentum", "Architecture files", args=TRAIN,
         files=net(CONV, layer("BatchNormalization", momentum=1.5), FLAT, OUT10),
         example="`BatchNormalization: {momentum: 1.5}`",
         phrases=["momentum must be a number in [0, 1). Received: momentum=1.5. "
                  "Example: momentum: 0.99."]),
    case("data-one-class", "Data", args=DATA, setup=broken_idx(_one_class),
         example="training labels that are all 3",
         phrases=["idx/train-labels-idx1-ubyte: every training label is 3: one class",
                  "at least 2"]),
    # ----------------------------------------------------------- store faults
    case("store-foreign-trials-table", "Output folder and disk",
         args=["runs", "--out", "ST"], setup=_foreign_store,
         example="--out ST whose cnnlab.sqlite is another program's database",
         phrases=["ST/cnnlab.sqlite: not a cnnlab store: its table 'trials' lacks",
                  "Point --out at another folder"]),
]  # fmt: skip


# ---------------------------------------------- image folders, .npz, CIFAR

IMAGES = ["train", "conv5-tiny", "--data", "imgs", "--out", "OUT", "--epochs", "1"]


def _image_folder(change: Callable[[Path], object] | None = None) -> Setup:
    """A setup: ./imgs/{train,test}/{cat,dog}/*.png (2 and 1 32x32 RGB images a
    class), then `change(folder)`."""

    def setup(space: Workspace) -> None:
        root = space.cwd / "imgs"
        for split, count in (("train", 2), ("test", 1)):
            for shade, name in ((40, "cat"), (200, "dog")):
                (root / split / name).mkdir(parents=True)
                for i in range(count):
                    image = Image.new("RGB", (32, 32), (shade, i, 0))
                    image.save(root / split / name / f"{i}.png")
        if change is not None:
            change(root)

    return setup


def _save(name: str, size: tuple[int, int], mode: str = "RGB") -> Callable:
    return lambda root: Image.new(mode, size).save(root / name)


def _cut_png(root: Path) -> None:
    path = root / "train" / "dog" / "1.png"
    path.write_bytes(path.read_bytes()[:60])


def _npz(**arrays: object) -> Setup:
    def setup(space: Workspace) -> None:
        np.savez(space.cwd / "set.npz", **arrays)  # type: ignore[arg-type]

    return setup


_X = np.zeros((4, 8, 8, 3), dtype=np.uint8)
NPZ = ["train", "conv5-tiny", "--data", "set.npz", "--out", "OUT", "--epochs", "1"]
IMAGE_CASES = [
    case(
        "images-mixed-sizes",
        "Data",
        args=IMAGES,
        setup=_image_folder(_save("train/cat/big.png", (40, 30))),
        example="one 40x30 image among 32x32 ones",
        phrases=[
            "imgs: the images differ in size or colour mode (32x32 RGB: 6, "
            "40x30 RGB: 1",
            "train/cat/big.png (40x30 RGB)",
            "Set image_size: [32, 32] (--image-size 32 32; resized with the "
            "bilinear filter)",
        ],
    ),
    case(
        "images-mixed-modes",
        "Data",
        args=IMAGES,
        setup=_image_folder(_save("test/dog/grey.png", (32, 32), "L")),
        example="one greyscale PNG among RGB ones",
        phrases=[
            "32x32 L: 1",
            "test/dog/grey.png (32x32 L)",
            "Set color: rgb or color: grayscale",
        ],
    ),
    case(
        "images-truncated",
        "Data",
        args=IMAGES,
        setup=_image_folder(_cut_png),
        example="a PNG cut off after 60 bytes",
        phrases=[
            "imgs/train/dog/1.png: cannot read the image (",
            "set skip_bad_images: true (--skip-bad-images)",
        ],
    ),
    case(
        "images-empty-class",
        "Data",
        args=IMAGES,
        setup=_image_folder(lambda r: (r / "train" / "owl").mkdir()),
        example="an empty class folder train/owl",
        phrases=["imgs/train/owl: the class folder holds no image files"],
    ),
    case(
        "images-class-only-in-test",
        "Data",
        args=IMAGES,
        setup=_image_folder(
            lambda r: (
                (r / "test" / "owl").mkdir(),
                _save("test/owl/0.png", (32, 32))(r),
            )
        ),
        example="test/owl with no train/owl",
        phrases=["imgs/test: class folder(s) owl are not in imgs/train"],
    ),
    case(
        "images-class-missing-in-test",
        "Data",
        args=IMAGES,
        setup=_image_folder(lambda r: shutil.rmtree(r / "test" / "cat")),
        example="train/cat with no test/cat",
        phrases=["imgs/test: lacks the class folder(s) cat found in imgs/train"],
    ),
    case(
        "images-no-test-folder",
        "Data",
        args=IMAGES,
        setup=_image_folder(lambda r: shutil.rmtree(r / "test")),
        example="train/ but no test/",
        phrases=["imgs: has a train/ folder but no test/ folder"],
    ),
    case(
        "images-one-class",
        "Data",
        args=IMAGES,
        setup=lambda space: (
            (space.cwd / "imgs" / "cat").mkdir(parents=True),
            _save("imgs/cat/0.png", (32, 32))(space.cwd),
        ),
        example="one class folder only",
        phrases=["imgs: holds one class folder only (cat)", "at least 2 classes"],
    ),
    case(
        "images-symlink-loop",
        "Data",
        args=IMAGES,
        setup=_image_folder(lambda r: os.symlink("..", r / "train" / "cat" / "up")),
        example="train/cat/up -> .. (a link back into its parent)",
        phrases=["a symbolic link loop", "remove the link"],
    ),
    case(
        "images-val-size-with-val-folder",
        "Data",
        args=[*IMAGES, "--val-size", "2"],
        setup=_image_folder(lambda r: shutil.copytree(r / "test", r / "val")),
        example="`--val-size 2` on a folder with its own val/",
        phrases=[
            "val_size=2 (--val-size) sizes a hold-out drawn from the training "
            "images, but imgs has its own val/ folder (2 images)",
            "drop --val-size, or remove or rename the val/ folder",
        ],
    ),
    case(
        "images-val-fraction-with-val-folder",
        "Data",
        args=[*IMAGES, "--val-fraction", "0.5"],
        setup=_image_folder(lambda r: shutil.copytree(r / "test", r / "val")),
        example="`--val-fraction 0.5` on a folder with its own val/",
        phrases=[
            "val_fraction=0.5 (--val-fraction) sizes a hold-out",
            "its own val/",
            "drop --val-fraction",
        ],
    ),
    case(
        "images-input-shape-differs",
        "Data",
        args=["train", "net.yaml", "--data", "imgs", "--out", "OUT"],
        files=net(FLAT, OUT10, input_shape=[28, 28, 1]),
        setup=_image_folder(),
        example="`input_shape: [28, 28, 1]` on 32x32 RGB images",
        phrases=[
            "net.yaml: input_shape is [28, 28, 1], but the images of imgs are "
            "32x32 with 3 channels",
            "Set input_shape: [32, 32, 3]",
        ],
    ),
    case(
        "images-cross-study-shapes",
        "Study files",
        args=STUDY,
        files=study(
            "name: s\ndata: [mnist, imgs]\ntrain: {epochs: 1}\narchitectures:\n"
            "  - {label: fixed, spec: {input_shape: [28, 28, 1], layers: [Flatten, "
            "{Dense: {units: 10}}]}}\n"
        ),
        setup=_image_folder(),
        example="a study of a 28x28x1 net on [mnist, a 32x32 RGB folder]",
        phrases=[
            "study.yaml: architectures[0].spec: input_shape is [28, 28, 1], but the "
            "images of imgs are 32x32 with 3 channels"
        ],
    ),
    case(
        "npz-missing-array",
        "Data",
        args=NPZ,
        setup=_npz(x_train=_X),
        example="an .npz holding x_train only",
        phrases=["set.npz: lacks the array(s) y_train, x_test, y_test"],
    ),
    case(
        "npz-pickled",
        "Data",
        args=NPZ,
        setup=_npz(
            x_train=np.array([None], dtype=object),
            y_train=[0],
            x_test=_X,
            y_test=[0, 1, 0, 1],
        ),
        example="an .npz whose x_train is an object (pickled) array",
        phrases=["set.npz: cannot read the archive without unpickling"],
    ),
    case(
        "npz-float-images",
        "Data",
        args=NPZ,
        setup=_npz(
            x_train=_X.astype(np.float32),
            y_train=[0, 1, 0, 1],
            x_test=_X,
            y_test=[0, 1, 0, 1],
        ),
        example="float32 images in an .npz",
        phrases=[
            "set.npz: x_train must be uint8 images of shape (N, H, W) or (N, H, W, C)",
            "Received: float32 of shape (4, 8, 8, 3)",
        ],
    ),
    case(
        "cifar-truncated",
        "Data",
        args=["train", "conv5-tiny", "--data", "cifar", "--out", "OUT"],
        setup=lambda space: [
            space.write(f"cifar/{name}", bytes(3073 * 2 - (name[0] == "t")))
            for name in [
                *(f"data_batch_{i}.bin" for i in range(1, 6)),
                "test_batch.bin",
            ]
        ],
        example="a CIFAR-10 test_batch.bin one byte short",
        phrases=[
            "cifar/test_batch.bin: 6,145 bytes is not a whole number of "
            "3073-byte CIFAR records"
        ],
    ),
]
MATRIX += IMAGE_CASES


# Cases with their own tests below (they check what a failure keeps).
DEDICATED = {
    "diverged-later-epoch": "Numerical faults",
    "disk-full-during-checkpoint": "Output folder and disk",
}
CATEGORY_OF = {p.id: p.values[0] for p in MATRIX} | DEDICATED  # type: ignore[attr-defined]
ALL_IDS = [
    *(i for c in CATEGORIES for i, cat in CATEGORY_OF.items() if cat == c),
]
# Run again as real processes: spec errors, flag errors, a machine limit and
# run-folder errors.
AS_PROCESS = {
    "arch-unknown-argument",
    "arch-too-large-for-memory",
    "flag-epochs-zero",
    "flag-threads-more-than-cpus",
    "run-evaluate-not-a-run",
    "run-checkpoint-incomplete",
}


def check_error(result: Result, case_: Case) -> str:
    """The bad-input contract; returns the message without 'error: '."""
    if not case_.in_training:
        return error_line(result, *case_.phrases)[len("error: ") :]
    assert result.code == 2, result
    assert "Traceback" not in result.err
    line = result.err.splitlines()[-1]
    assert line.startswith("error: "), result.err
    for phrase in case_.phrases:
        assert phrase in line, f"{phrase!r} not in {line!r}"
    return line[len("error: ") :]


def prepare(case_: Case, space: Workspace) -> None:
    """Create the case's files, then run its setup (which may copy the shared run)."""
    write_files(space.cwd, case_.files)
    if case_.setup is not None:
        case_.setup(space)


@pytest.mark.parametrize(("category", "case_"), MATRIX)
def test_bad_input(
    cli: Callable[..., Result],
    workspace: Workspace,
    doc_table: DocTable,
    request: pytest.FixtureRequest,
    category: str,
    case_: Case,
) -> None:
    prepare(case_, workspace)
    before = snapshot(workspace.cwd)
    result = cli(*case_.args)
    message = check_error(result, case_)
    if case_.root:
        message = message.replace(str(workspace.cwd), "")
    assert not (workspace.cwd / "PWNED").exists()  # no file ran code
    if case_.in_training:  # the run folder stays, marked failed, with no weights
        assert sorted(p.name for p in (workspace.cwd / "OUT").iterdir()) == [
            "run.json",
            "spec.yaml",
        ]
        assert json.loads((workspace.cwd / "OUT/run.json").read_text())["status"] == (
            "failed"
        )
    else:
        assert not (workspace.cwd / "OUT").exists()  # not even an empty folder
        assert snapshot(workspace.cwd) == before  # nothing written, nothing changed
    test_id = request.node.callspec.id
    doc_table.check(Row(test_id, category, case_.example, message, case_.masks))


@pytest.mark.parametrize(
    ("category", "case_"),
    [p for p in MATRIX if p.id in AS_PROCESS],  # type: ignore[attr-defined]
)
def test_bad_input_as_process(workspace: Workspace, category: str, case_: Case) -> None:
    prepare(case_, workspace)
    before = snapshot(workspace.cwd)
    result = run_cli(*case_.args, cwd=workspace.cwd)
    check_error(result, case_)
    assert not (workspace.cwd / "OUT").exists()
    assert snapshot(workspace.cwd) == before


def test_every_case_is_documented() -> None:
    assert list(read_doc_rows()) == ALL_IDS, (
        f"{DOC} lists other cases; run pytest {__file__} --update-golden"
    )
    assert len(ALL_IDS) >= 40


# ----------------------------------------------------- training-time failures


def set_lr(run: Path, lr: float) -> None:
    """Change a run's learning rate where resuming reads it: the optimizer state."""
    payload = torch.load(run / "checkpoint.pt", weights_only=True)
    for group in payload["optimizer"]["param_groups"]:
        group["lr"] = lr
    torch.save(payload, run / "checkpoint.pt")
    _edit_json(run / "run.json", config__lr=lr)


def test_diverged_later_epoch_keeps_the_last_checkpoint(
    cli: Callable[..., Result], workspace: Workspace, doc_table: DocTable
) -> None:
    # Epoch 1 trained with SGD at its default lr; now the run's lr is raised to
    # 1e30 (as if it had been given) and epoch 2 diverges within a few steps.
    run = workspace.run()
    set_lr(run, 1e30)
    kept = {name: (run / name).read_bytes() for name in ("checkpoint.pt",
            "history.csv", "weights.pt", "spec.yaml", "curves.png")}  # fmt: skip

    result = cli("train", "--resume", "RUN", "--epochs", "2")

    case_ = Case(
        args=(),
        phrases=("RUN: training diverged at epoch 2, step ", "the loss became NaN",
                 "The checkpoint of epoch 1 is intact", "--lr 1e+29"),
        example="`--resume` into epoch 2 with lr raised to 1e30",
        in_training=True,
    )  # fmt: skip
    message = check_error(result, case_)
    assert {name: (run / name).read_bytes() for name in kept} == kept
    assert temp_files(run) == []
    meta = json.loads((run / "run.json").read_text())
    assert (meta["status"], meta["epochs_done"]) == ("failed", 1)
    assert "training diverged at epoch 2" in meta["error"]
    doc_table.check(
        Row("diverged-later-epoch", "Numerical faults", case_.example, message,
            (r"step \d+ of",))
    )  # fmt: skip

    # The checkpoint is good: with a sane lr the run resumes from epoch 1.
    set_lr(run, 0.01)
    result = cli("train", "--resume", "RUN", "--epochs", "2")
    assert result.code == 0, result.err
    history = (run / "history.csv").read_text().splitlines()
    assert history[:2] == kept["history.csv"].decode().splitlines()
    assert len(history) == 3


def test_disk_full_during_checkpoint_keeps_the_previous_one(
    cli: Callable[..., Result], workspace: Workspace, doc_table: DocTable
) -> None:
    disk = workspace.mount("1m")
    run = workspace.run("disk/RUN")  # epoch 1 done
    before = snapshot(run)
    fill(disk, leave=12 * 1024)  # room for run.json, not for a 27 kB checkpoint

    result = cli("train", "--resume", "disk/RUN", "--epochs", "2")

    case_ = Case(
        args=(),
        phrases=("disk/RUN/checkpoint.pt: cannot write the file (No space left on "
                 "device)", "Free some disk space",
                 "The checkpoint of epoch 1 is intact",
                 "resume with: cnnlab train --resume disk/RUN"),
        example="a disk that fills up during epoch 2's checkpoint",
        in_training=True,
    )  # fmt: skip
    message = check_error(result, case_)
    after = snapshot(run)
    assert temp_files(run) == []
    assert {k: v for k, v in after.items() if k != "run.json"} == {
        k: v for k, v in before.items() if k != "run.json"
    }
    assert json.loads(after["run.json"])["status"] == "interrupted"
    doc_table.check(
        Row("disk-full-during-checkpoint", "Output folder and disk", case_.example,
            message)
    )  # fmt: skip

    (disk / "filler").unlink()  # space again: the run resumes from epoch 1
    result = cli("train", "--resume", "disk/RUN", "--epochs", "2")
    assert result.code == 0, result.err
    assert json.loads((run / "run.json").read_text())["epochs_done"] == 2


# ------------------------------------------------------------ memory estimate


def test_memory_estimate_by_hand() -> None:
    arch = cnnlab.Architecture("mlp", (cnnlab.Flatten(), cnnlab.Dense(10)))
    need = estimate_memory(infer(arch, 10), batch_size=128, optimizer_slots=2)
    weights = (784 * 10 + 10) * 4
    assert need.weights == weights
    assert need.training_state == 3 * weights  # gradients + Adam's m and v
    # input 784 + flatten 784 + dense 10 values per image, x3 for the backward pass
    assert need.activations == (784 + 784 + 10) * 128 * 3 * 4
    inference = estimate_memory(infer(arch, 10), batch_size=1000, optimizer_slots=None)
    assert inference.training_state == 0
    assert inference.activations == (784 + 784 + 10) * 1000 * 4


def test_memory_check_names_the_estimate_and_the_fix() -> None:
    info = infer(cnnlab.load("conv5-medium"), 10)
    need = check_memory(info, 128, "adam", available=10**9)
    assert 1e6 < need.total < 1e8
    with pytest.raises(SpecError) as caught:
        check_memory(info, 128, "adam", available=need.total)  # uses only 80%
    message = str(caught.value)
    assert message.startswith("preset conv5-medium: training needs about ")
    assert f"but {need.total / 1e6:.1f} MB is available" in message
    assert "a smaller --batch-size" in message  # activations dominate here


def test_the_largest_preset_is_estimated_below_2_gb() -> None:
    # conv3-512: 23.3M weights (373 MB with Adam) and 512-channel 26x26 activations
    need = estimate_memory(infer(cnnlab.load("conv3-512"), 10), 128, 2)
    assert 0.5e9 < need.total < 2e9
