"""Folders of image files (PNG, JPEG, BMP, GIF, WebP, TIFF) read as a data set.

Two layouts, told apart by what is there:

    DIR/train/<class>/*, DIR/test/<class>/* and optionally DIR/val/<class>/*
    DIR/<class>/*  (split into train and test by a seeded, stratified share)

Class names are the class folders' names in sorted order. Every image is opened
once; the set must share one size and one colour mode (after the stated rules
below), or `ImageOptions` must say how to make it so: nothing is resized silently.

Colour rules (`canonical`): "L" and "RGB" are used as they are; "1" and 16-bit
greyscale become "L"; palette ("P") images are expanded to RGB; an alpha channel
(RGBA, LA, P with transparency) is composited onto white; CMYK and YCbCr become RGB
by Pillow's conversion. `color: grayscale` converts RGB with Pillow's ITU-R 601-2
luma (L = 0.299 R + 0.587 G + 0.114 B); `color: rgb` copies a grey channel three
times. `image_size: [H, W]` resizes every image of another size with Pillow's
bilinear filter (with its antialiasing when shrinking).
"""

from __future__ import annotations

import io
import os
import warnings
from collections import Counter
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from multiprocessing import get_context
from pathlib import Path

import numpy as np

from cnnlab.errors import DataError
from cnnlab.util.fsio import read_bounded

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff")
SPLITS = ("train", "val", "test")
COLORS = ("rgb", "grayscale")
# Pillow's bilinear filter: smooth, cheap and antialiased when shrinking.
RESIZE_FILTER = "bilinear"
MAX_FILE_BYTES = 64 << 20  # per image file; a 32x32 PNG is about 3 KB
MAX_PIXELS = 40_000_000  # per image, as for `cnnlab predict`
SHOWN_OFFENDERS = 3  # files named in a mixed-size/mode error
POOL_MIN_FILES = 2_000  # fewer files decode faster in this process than in a pool
POOL_CHUNK = 500  # files per task of the decoding pool


@dataclass(frozen=True)
class ImageOptions:
    """How image files become one uniform array (settings of TrainConfig)."""

    image_size: tuple[int, int] | None = None  # (H, W): resize to this
    color: str | None = None  # "rgb" | "grayscale": convert to this
    skip_bad_images: bool = False  # skip (and count) unreadable files
    test_fraction: float = 0.2  # class folders only: share held out as the test set
    split_seed: int = 0  # class folders only: which images form the test set

    def key(self) -> str:
        return repr(
            (self.image_size, self.color, self.skip_bad_images, self.test_fraction)
        ) + (f"|{self.split_seed}" if self.split_seed else "")


@dataclass
class FolderScan:
    """The files of an image folder, by split and class, and what was ignored."""

    root: Path
    layout: str  # "splits" (train/test[/val] folders) or "classes"
    class_names: tuple[str, ...]
    files: dict[
        str, list[tuple[Path, int]]
    ]  # split ("all": unsplit) -> [(path, label)]
    ignored: Counter = field(default_factory=Counter)  # "hidden", "not an image"

    def all_files(self) -> list[tuple[str, Path, int]]:
        return [(s, p, y) for s, items in self.files.items() for p, y in items]


def scan_folder(root: Path) -> FolderScan:
    """List the images of `root` by split and class, checking the layout."""
    ignored: Counter = Counter()
    if (root / "train").is_dir():
        present = [s for s in SPLITS if (root / s).is_dir()]
        if "test" not in present:
            raise DataError(
                f"{root}: has a train/ folder but no test/ folder; add "
                f"{root / 'test'} with the same class folders, or put the class "
                "folders directly in the folder to split them by test_fraction"
            )
        by_split = {s: _class_files(root / s, ignored) for s in present}
        train_classes = sorted(by_split["train"])
        for split in present:
            if split == "train":
                continue
            extra = sorted(set(by_split[split]) - set(train_classes))
            missing = sorted(set(train_classes) - set(by_split[split]))
            if extra:
                raise DataError(
                    f"{root / split}: class folder(s) {', '.join(extra)} are not in "
                    f"{root / 'train'}; a net cannot learn a class it never sees. "
                    "Add training images for them or remove those folders"
                )
            if missing:
                raise DataError(
                    f"{root / split}: lacks the class folder(s) {', '.join(missing)} "
                    f"found in {root / 'train'}; give every split the same classes"
                )
        classes = tuple(train_classes)
        files = {
            s: [(p, classes.index(c)) for c in classes for p in by_split[s][c]]
            for s in present
        }
        layout = "splits"
    else:
        by_class = _class_files(root, ignored)
        classes = tuple(sorted(by_class))
        files = {"all": [(p, i) for i, c in enumerate(classes) for p in by_class[c]]}
        layout = "classes"
    _check_classes(root, classes)
    return FolderScan(root, layout, classes, files, ignored)


def _check_classes(root: Path, classes: tuple[str, ...]) -> None:
    if not classes:
        raise DataError(
            f"{root}: holds no class folders; put each class's images in a folder "
            "named after the class (DIR/<class>/*.png or DIR/train/<class>/*.png)"
        )
    if len(classes) == 1:
        raise DataError(
            f"{root}: holds one class folder only ({classes[0]}); a classifier "
            "needs at least 2 classes, one folder each"
        )


def _subfolders(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError as err:
        raise DataError(
            f"{folder}: cannot list the folder ({err.strerror or err}); "
            "check its permissions"
        ) from err
    return [e for e in entries if e.is_dir() and not e.name.startswith(".")]


def _class_files(folder: Path, ignored: Counter) -> dict[str, list[Path]]:
    """{class name: sorted image files under folder/<class>/, recursively}."""
    out = {}
    for sub in _subfolders(folder):
        found = _walk(sub, ignored)
        if not found:
            raise DataError(
                f"{sub}: the class folder holds no image files "
                f"({', '.join(IMAGE_SUFFIXES)}); add images or remove the folder"
            )
        out[sub.name] = found
    return out


def _walk(folder: Path, ignored: Counter) -> list[Path]:
    """Image files under folder, sorted; hidden and non-image files are counted in
    `ignored`; a symbolic link that leads back into its own path is an error.
    Each file's (size, mtime) is kept in `_STATS` for the cache key."""
    found: list[Path] = []
    seen: set[tuple[int, int]] = set()

    def visit(path: Path, chain: tuple[tuple[int, int], ...]) -> None:
        info = path.stat()
        ident = (info.st_dev, info.st_ino)
        if ident in chain:
            raise DataError(
                f"{path}: a symbolic link loop (it leads back to a folder that "
                "contains it); remove the link"
            )
        if ident in seen:
            return
        seen.add(ident)
        with os.scandir(path) as listing:
            entries = sorted(listing, key=lambda e: e.name)
        for entry in entries:
            child = path / entry.name
            if entry.name.startswith("."):
                ignored["hidden"] += 1
            elif entry.is_dir():
                visit(child, (*chain, ident))
            elif entry.name.lower().endswith(IMAGE_SUFFIXES) and entry.is_file():
                stat = entry.stat()
                _STATS[child] = (stat.st_size, stat.st_mtime_ns)
                found.append(child)
            else:
                ignored["not an image"] += 1

    try:
        visit(folder, ())
    except OSError as err:
        raise DataError(
            f"{err.filename or folder}: cannot read ({err.strerror or err}); "
            "check the folder's permissions and links"
        ) from err
    return found


# (size, mtime_ns) of each image file found by the last scans: read with the
# listing (one stat a file), used by the cache key and cleared by `load_folder`.
_STATS: dict[Path, tuple[int, int]] = {}


# ---------------------------------------------------------------------------
# Decoding


@dataclass(frozen=True)
class Decoded:
    """One file's outcome: its original size and mode and its pixels, or why not."""

    size: tuple[int, int] | None  # (H, W) as stored
    mode: str  # Pillow's mode as stored
    pixels: np.ndarray | None  # uint8 (H, W) or (H, W, 3) after the rules
    error: str | None = None


def decode(path: Path, options: ImageOptions) -> Decoded:
    """Open one image file and apply the colour and size rules."""
    from PIL import Image, UnidentifiedImageError

    try:
        data = read_bounded(path, MAX_FILE_BYTES, "an image file", DataError)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            warnings.simplefilter("ignore", UserWarning)
            image = Image.open(io.BytesIO(data))
            width, height = image.size
            if width * height > MAX_PIXELS:
                return Decoded(
                    (height, width),
                    image.mode,
                    None,
                    f"{width}x{height} pixels, over the limit of {MAX_PIXELS:,}",
                )
            image.load()
    except UnidentifiedImageError:
        return Decoded(None, "?", None, "not an image Pillow can read")
    except (OSError, ValueError, SyntaxError, DataError) as err:
        reason = " ".join(str(err).split()) or type(err).__name__
        return Decoded(None, "?", None, reason)
    mode = image.mode
    converted = canonical(image)
    if options.color == "grayscale" and converted.mode != "L":
        converted = converted.convert("L")
    elif options.color == "rgb" and converted.mode != "RGB":
        converted = converted.convert("RGB")
    if options.image_size is not None:
        h, w = options.image_size
        if (height, width) != (h, w):
            converted = converted.resize((w, h), Image.Resampling.BILINEAR)
    return Decoded((height, width), mode, np.asarray(converted, dtype=np.uint8))


def canonical(image):  # noqa: ANN001, ANN201 (PIL types imported lazily)
    """An image as "L" or "RGB" by the rules in the module docstring."""
    from PIL import Image

    mode = image.mode
    if mode in ("L", "RGB"):
        return image
    if mode == "P":
        image = image.convert("RGBA" if image.has_transparency_data else "RGB")
        mode = image.mode
    if mode in ("RGBA", "LA", "PA", "La", "RGBa"):
        rgba = image.convert("RGBA")
        backdrop = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
        flat = Image.alpha_composite(backdrop, rgba)
        return flat.convert("L" if mode in ("LA", "La") else "RGB")
    if mode.startswith("I"):  # 16/32-bit greyscale: the top 8 of 16 bits
        values = np.asarray(image, dtype=np.int64)
        return Image.fromarray(np.clip(values >> 8, 0, 255).astype(np.uint8))
    if mode in ("1", "F"):
        return image.convert("L")
    return image.convert("RGB")


def _decode_chunk(
    paths: list[Path], options: ImageOptions
) -> list[Decoded]:  # runs in a worker
    return [decode(p, options) for p in paths]


def decode_all(paths: list[Path], options: ImageOptions, workers: int) -> list[Decoded]:
    """Decode every file, with a process pool over `workers` cores for many."""
    if workers <= 1 or len(paths) < POOL_MIN_FILES:
        return [decode(p, options) for p in paths]
    chunks = [paths[i : i + POOL_CHUNK] for i in range(0, len(paths), POOL_CHUNK)]
    # fork: the workers need no imports of their own and start at once.
    with ProcessPoolExecutor(workers, mp_context=get_context("fork")) as pool:
        parts = pool.map(_decode_chunk, chunks, [options] * len(chunks))
        return [item for part in parts for item in part]


def usable_workers() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


# ---------------------------------------------------------------------------
# Checking


def describe(size: tuple[int, int] | None, mode: str, channels: int | None) -> str:
    if size is None:
        return "unreadable"
    shown = {1: "L", 3: "RGB"}.get(channels or 0, mode)
    text = f"{size[1]}x{size[0]} {shown}"
    return text if shown == mode else f"{text} (stored {mode})"


def check_uniform(
    root: Path, paths: list[Path], decoded: list[Decoded], options: ImageOptions
) -> tuple[int, int, int]:
    """The (H, W, C) every decoded image shares, or one DataError naming the first
    files that differ, the count of each size/mode and the settings that fix it."""
    kinds: Counter = Counter()
    first_of: dict[tuple, str] = {}
    for path, item in zip(paths, decoded, strict=True):
        if item.pixels is None:
            continue
        shape = item.pixels.shape
        kind = (shape[0], shape[1], 1 if len(shape) == 2 else shape[2])
        kinds[kind] += 1
        if kind not in first_of:
            shown = describe(item.size, item.mode, kind[2])
            first_of[kind] = f"{_rel(path, root)} ({shown})"
    if not kinds:
        raise DataError(f"{root}: no image could be read; check the files")
    if len(kinds) == 1:
        return next(iter(kinds))
    common = kinds.most_common(1)[0][0]
    counts = ", ".join(
        f"{w}x{h} {'RGB' if c == 3 else 'L'}: {n}"
        for (h, w, c), n in kinds.most_common()
    )
    odd = [first_of[k] for k in kinds if k != common][:SHOWN_OFFENDERS]
    sizes = {k[:2] for k in kinds}
    channels = {k[2] for k in kinds}
    fixes = []
    if len(sizes) > 1:
        fixes.append(
            f"image_size: [{common[0]}, {common[1]}] (--image-size {common[0]} "
            f"{common[1]}; resized with the {RESIZE_FILTER} filter)"
        )
    if len(channels) > 1:
        fixes.append(
            "color: rgb or color: grayscale (--color; grey is copied to 3 channels, "
            "RGB becomes luma)"
        )
    raise DataError(
        f"{root}: the images differ in size or colour mode ({counts}; width x "
        f"height); first that differ from {common[1]}x{common[0]}: "
        f"{', '.join(odd)}. Set {' and '.join(fixes)}"
    )


def check_readable(
    root: Path, paths: list[Path], decoded: list[Decoded], options: ImageOptions
) -> int:
    """Number of unreadable files (skipped with skip_bad_images), else one error."""
    bad = [(p, d.error) for p, d in zip(paths, decoded, strict=True) if d.error]
    if bad and not options.skip_bad_images:
        path, reason = bad[0]
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise DataError(
            f"{path}: cannot read the image ({reason}){more}; replace or delete it, "
            "or set skip_bad_images: true (--skip-bad-images) to skip and count such "
            "files"
        )
    return len(bad)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)


# ---------------------------------------------------------------------------
# Loading


# At most this share of the memory available when loading goes to the decoded
# images: training needs the rest for the net and its batches.
MEMORY_SHARE = 0.5
_MEMO_SIZE = 2  # as the .npz and IDX memos: a long session stays bounded
_MEMO: dict[str, dict] = {}


def load_folder(root: Path, options: ImageOptions) -> dict:
    """Scan, decode (or read from the cache), check and split an image folder into
    {x_train, y_train, [x_val, y_val,] x_test, y_test, class_names, info}."""
    from cnnlab.data import cache

    _STATS.clear()
    scan = scan_folder(root)
    entries = scan.all_files()
    paths = [p for _, p, _ in entries]
    prefix = len(str(root)) + 1
    listed = [(str(p)[prefix:], *_STATS[p]) for p in paths]
    _STATS.clear()
    key = cache.file_key(root, listed, options.key())
    if key in _MEMO:  # a study reads its folder once per check, trial and probe
        return _MEMO[key] | {"info": _MEMO[key]["info"] | {"cached": True}}
    cached = cache.load(key)
    if cached is not None:
        cached["info"]["cached"] = True
        return _remember(key, cached)
    first = decode(paths[0], options) if paths else None
    _check_memory(root, len(paths), first)
    rest = decode_all(paths[1:], options, usable_workers())
    decoded = [first, *rest] if first is not None else rest
    skipped = check_readable(root, paths, decoded, options)
    height, width, channels = check_uniform(root, paths, decoded, options)
    arrays = _stack(scan, entries, decoded, options)
    stored = Counter(f"{describe(d.size, d.mode, None)}" for d in decoded if d.size)
    arrays["class_names"] = scan.class_names
    arrays["info"] = {
        "kind": "folder",
        "layout": scan.layout,
        "shape": [height, width, channels],
        "skipped_bad_images": skipped,
        "ignored_files": dict(scan.ignored),
        "stored_as": dict(stored.most_common()),
        "test_fraction": options.test_fraction if scan.layout == "classes" else None,
    }
    cache.save(key, arrays)
    arrays["info"]["cached"] = False
    return _remember(key, arrays)


def _remember(key: str, arrays: dict) -> dict:
    """Keep the last _MEMO_SIZE folders' arrays in this process, by cache key (a
    changed file gives another key); callers get a copy of the mappings."""
    if len(_MEMO) >= _MEMO_SIZE:
        _MEMO.pop(next(iter(_MEMO)))
    _MEMO[key] = arrays
    return arrays | {"info": dict(arrays["info"])}


def _check_memory(root: Path, count: int, first: Decoded | None) -> None:
    """Refuse a set of `count` images whose decoded pixels would take more than
    MEMORY_SHARE of the memory available, judged from its `first` image (decoded
    once, and then kept with the others)."""
    import torch

    from cnnlab.util.machine import available_memory
    from cnnlab.util.units import format_bytes_si

    if first is None or first.pixels is None:
        return
    need = count * first.pixels.nbytes
    free = available_memory(torch.device("cpu"))
    if free is not None and need > MEMORY_SHARE * free:
        shape = "x".join(str(v) for v in first.pixels.shape)
        raise DataError(
            f"{root}: {count:,} images of {shape} need about "
            f"{format_bytes_si(need)} decoded, more than {MEMORY_SHARE:.0%} of the "
            f"{format_bytes_si(free)} of memory available; use a smaller image_size, "
            "fewer images, or a machine with more memory"
        )


def _stack(
    scan: FolderScan,
    entries: list[tuple[str, Path, int]],
    decoded: list[Decoded],
    options: ImageOptions,
) -> dict:
    by_split: dict[str, tuple[list, list]] = {}
    for (split, _, label), item in zip(entries, decoded, strict=True):
        if item.pixels is None:
            continue
        xs, ys = by_split.setdefault(split, ([], []))
        xs.append(item.pixels)
        ys.append(label)
    arrays = {}
    for split, (xs, ys) in by_split.items():
        arrays[f"x_{split}"] = np.stack(xs)
        arrays[f"y_{split}"] = np.asarray(ys, dtype=np.int64)
    if scan.layout == "classes":
        x, y = arrays.pop("x_all"), arrays.pop("y_all")
        test = stratified_pick(y, options.test_fraction, options.split_seed)
        arrays.update(
            x_train=x[~test], y_train=y[~test], x_test=x[test], y_test=y[test]
        )
    for split in ("train", "test"):
        if f"x_{split}" not in arrays:
            raise DataError(
                f"{scan.root}: no readable image in the {split} split; check the files"
            )
    return arrays


def stratified_pick(labels: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A boolean mask choosing round(fraction * n) images of each class (at least
    one of a class with two or more), drawn by a generator seeded with `seed`."""
    rng = np.random.default_rng(seed)
    mask = np.zeros(len(labels), dtype=bool)
    for label in np.unique(labels):
        members = np.flatnonzero(labels == label)
        take = round(fraction * len(members))
        if len(members) >= 2:
            take = min(max(take, 1), len(members) - 1)
        else:
            take = 0
        mask[rng.permutation(members)[:take]] = True
    return mask


def image_for_net(path: Path, shape: tuple[int, int, int]) -> tuple[np.ndarray, str]:
    """One image file as a uint8 (H, W) or (H, W, C) array of the net's `shape`,
    converted by the rules above, and a note saying what was converted ("" when
    nothing was): what `cnnlab predict` does for a run trained on an image set."""
    height, width, channels = shape
    color = "rgb" if channels == 3 else "grayscale"
    item = decode(Path(path), ImageOptions(image_size=(height, width), color=color))
    if item.pixels is None:
        raise DataError(
            f"{path}: cannot read the image ({item.error}); give a PNG, JPEG, BMP, "
            "GIF, WebP or TIFF file"
        )
    stored = describe(item.size, item.mode, None)
    wanted = f"{width}x{height} {'RGB' if channels == 3 else 'L'}"
    if stored == wanted:
        return item.pixels, ""
    resized = item.size != (height, width)
    how = f" ({RESIZE_FILTER} filter)" if resized else ""
    return item.pixels, f"converted {stored} to {wanted}{how}"
