"""Image folders, .npz archives and CIFAR binary files as data sets: real files
written here, read back by `load_dataset`, checked, cached, and trained on."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import cnnlab
from cnnlab.data import cache
from cnnlab.data.datasets import load_dataset, split_dataset
from cnnlab.data.folders import ImageOptions
from cnnlab.errors import CnnlabError, DataError
from cnnlab.nn.spec import parse_architecture
from cnnlab.training.config import TrainConfig
from helpers import run_cli

COLOURS = {"blue": (30, 30, 200), "green": (30, 200, 30), "red": (200, 30, 30)}


def colour_image(colour: tuple[int, int, int], seed: int, size=(32, 32)) -> Image:
    """A noisy patch of one colour (height, width = size)."""
    rng = np.random.default_rng(seed)
    pixels = rng.normal(colour, 40, (*size, 3))
    return Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))


def colour_folder(root: Path, per_class=(12, 4), splits=("train", "test")) -> Path:
    """root/<split>/<colour>/<i>.png: three classes of noisy coloured squares."""
    seed = 0
    for split, count in zip(splits, per_class, strict=True):
        for name, colour in COLOURS.items():
            folder = root / split / name if split else root / name
            folder.mkdir(parents=True, exist_ok=True)
            for i in range(count):
                seed += 1
                colour_image(colour, seed).save(folder / f"{i}.png")
    return root


def test_split_folder_is_read_as_uint8_colour(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "set")
    (root / "train" / "red" / ".DS_Store").write_bytes(b"junk")
    (root / "train" / "red" / "notes.txt").write_text("not an image")
    ds = load_dataset(str(root))
    assert ds.class_names == ("blue", "green", "red")  # sorted folder names
    assert ds.x_train.shape == (36, 32, 32, 3) and ds.x_train.dtype == torch.uint8
    assert ds.x_test.shape == (12, 32, 32, 3)
    assert ds.image_shape == (32, 32, 3)
    assert ds.y_train.tolist() == [0] * 12 + [1] * 12 + [2] * 12
    # each class's mean colour is its folder's colour
    red = ds.x_train[ds.y_train == 2].float().mean(dim=(0, 1, 2))
    assert red[0] > 150 and red[1] < 80 and red[2] < 80
    assert ds.info["ignored_files"] == {"hidden": 1, "not an image": 1}
    pixels = np.asarray(Image.open(root / "train" / "blue" / "0.png"))
    assert np.array_equal(ds.x_train[0].numpy(), pixels)


def test_class_folders_only_are_split_stratified_and_seeded(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "set", per_class=(10,), splits=("",))
    ds = load_dataset(str(root), ImageOptions(test_fraction=0.3))
    assert len(ds.x_train) == 21 and len(ds.x_test) == 9
    assert ds.y_test.bincount().tolist() == [3, 3, 3]
    assert ds.info["layout"] == "classes" and ds.info["test_fraction"] == 0.3
    again = load_dataset(str(root), ImageOptions(test_fraction=0.3))
    assert torch.equal(again.x_test, ds.x_test)
    other = load_dataset(str(root), ImageOptions(test_fraction=0.3, split_seed=1))
    assert not torch.equal(other.x_test, ds.x_test)


def test_val_folder_is_the_holdout_and_fraction_otherwise(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "v", (10, 3, 2), ("train", "test", "val"))
    ds = load_dataset(str(root))
    split = split_dataset(ds, validation="holdout")
    assert len(split.x_val) == 6 and len(split.x_train) == 30
    plain = colour_folder(tmp_path / "p", (10, 3))
    split = split_dataset(load_dataset(str(plain)), val_fraction=0.2)
    assert split.y_val.bincount().tolist() == [2, 2, 2]  # stratified
    assert len(split.x_train) == 24


def test_modes_are_converted_by_the_stated_rules(tmp_path: Path) -> None:
    root = tmp_path / "m"
    for split in ("train", "test"):
        for name in ("a", "b"):
            (root / split / name).mkdir(parents=True)
            colour_image((10, 200, 10), 1).save(root / split / name / "rgb.png")
    rgba = Image.new("RGBA", (32, 32), (255, 0, 0, 0))  # fully transparent red
    rgba.save(root / "train" / "a" / "rgba.png")
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([0, 0, 255] + [0] * 765)
    palette.save(root / "train" / "b" / "palette.png")
    Image.new("L", (32, 32), 77).save(root / "train" / "b" / "grey.jpg", quality=100)
    with pytest.raises(DataError) as caught:
        load_dataset(str(root))
    message = str(caught.value)
    assert "(32x32 RGB: 6, 32x32 L: 1; width x height)" in message
    assert "train/b/grey.jpg (32x32 L)" in message
    assert "color: rgb or color: grayscale" in message
    ds = load_dataset(str(root), ImageOptions(color="rgb"))
    names = sorted(p.name for p in (root / "train" / "a").iterdir())
    assert names == ["rgb.png", "rgba.png"]
    assert ds.x_train[1].reshape(-1, 3)[0].tolist() == [255, 255, 255]  # on white
    # train/b holds grey.jpg, palette.png, rgb.png in that order
    assert ds.x_train[2].reshape(-1, 3)[0].tolist() == [77, 77, 77]  # grey x3
    assert ds.x_train[3].reshape(-1, 3)[0].tolist() == [0, 0, 255]  # palette blue
    grey = load_dataset(str(root), ImageOptions(color="grayscale"))
    assert grey.x_train.shape[1:] == (32, 32) and grey.image_shape == (32, 32, 1)


def test_mixed_sizes_name_the_files_and_image_size_resizes(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "s", (3, 2))
    colour_image((1, 2, 3), 9, size=(30, 40)).save(root / "train" / "red" / "odd.png")
    with pytest.raises(DataError) as caught:
        load_dataset(str(root))
    assert str(caught.value) == (
        f"{root}: the images differ in size or colour mode (32x32 RGB: 15, 40x30 "
        "RGB: 1; width x height); first that differ from 32x32: train/red/odd.png "
        "(40x30 RGB). Set image_size: [32, 32] (--image-size 32 32; resized with "
        "the bilinear filter)"
    )
    ds = load_dataset(str(root), ImageOptions(image_size=(24, 20)))
    assert ds.x_train.shape == (10, 24, 20, 3)


def test_truncated_file_is_one_error_or_skipped_and_counted(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "t", (4, 2))
    bad = root / "train" / "green" / "2.png"
    bad.write_bytes(bad.read_bytes()[:200])
    with pytest.raises(DataError) as caught:
        load_dataset(str(root))
    assert str(caught.value).startswith(f"{bad}: cannot read the image (")
    assert "set skip_bad_images: true (--skip-bad-images)" in str(caught.value)
    ds = load_dataset(str(root), ImageOptions(skip_bad_images=True))
    assert len(ds.x_train) == 11 and ds.info["skipped_bad_images"] == 1


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        (lambda r: (r / "train" / "red").mkdir() or None, None),
        (lambda r: (r / "train" / "pink").mkdir(), "train/pink: the class folder"),
        (lambda r: (r / "test" / "cyan").mkdir(), "are not in"),
        (lambda r: os.symlink(r / "train", r / "train" / "red" / "loop"), "loop"),
    ],
    ids=["exists", "empty-class", "class-only-in-test", "symlink-loop"],
)
def test_layout_errors(tmp_path: Path, change, phrase) -> None:
    root = colour_folder(tmp_path / "e", (2, 1))
    if phrase is None:
        with pytest.raises(FileExistsError):
            change(root)
        return
    if phrase == "are not in":
        img = colour_image((0, 0, 0), 1)
        change(root)
        img.save(root / "test" / "cyan" / "x.png")
    else:
        change(root)
    with pytest.raises(DataError, match=phrase):
        load_dataset(str(root))


def test_one_class_and_missing_test_class(tmp_path: Path) -> None:
    root = tmp_path / "one"
    (root / "only").mkdir(parents=True)
    colour_image((1, 1, 1), 0).save(root / "only" / "a.png")
    with pytest.raises(DataError, match="holds one class folder only"):
        load_dataset(str(root))
    root = colour_folder(tmp_path / "miss", (2, 1))
    for f in (root / "test" / "red").iterdir():
        f.unlink()
    (root / "test" / "red").rmdir()
    with pytest.raises(DataError, match=r"lacks the class folder\(s\) red"):
        load_dataset(str(root))


def test_cache_is_used_and_rebuilt_when_a_file_changes(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "c", (3, 1))
    first = load_dataset(str(root))
    assert first.info["cached"] is False
    entries = list(cache.images_folder().glob("*.npz"))
    again = load_dataset(str(root))
    assert again.info["cached"] is True and torch.equal(again.x_train, first.x_train)
    target = root / "train" / "blue" / "0.png"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(target)
    os.utime(target, ns=(1, 1))  # a new mtime, whatever the clock's resolution
    changed = load_dataset(str(root))
    assert changed.info["cached"] is False
    assert changed.x_train[0, 0, 0].tolist() == [1, 2, 3]
    assert len(list(cache.images_folder().glob("*.npz"))) == len(entries) + 1
    assert not list(cache.images_folder().glob(".*tmp*"))


def test_npz_in_the_keras_layout(tmp_path: Path) -> None:
    rng = np.random.default_rng(0)
    x_train = rng.integers(0, 256, (20, 8, 6, 3), dtype=np.uint8)
    x_test = rng.integers(0, 256, (5, 8, 6, 3), dtype=np.uint8)
    path = tmp_path / "set.npz"
    np.savez(
        path,
        x_train=x_train,
        y_train=(np.arange(20) % 4)[:, None],
        x_test=x_test,
        y_test=np.arange(5) % 4,
        class_names=np.array(["a", "b", "c", "d"]),
    )
    ds = load_dataset(str(path))
    assert ds.image_shape == (8, 6, 3) and ds.class_names == ("a", "b", "c", "d")
    assert np.array_equal(ds.x_train.numpy(), x_train)
    assert ds.y_train.tolist() == list(np.arange(20) % 4)
    pickled = tmp_path / "obj.npz"
    np.savez(pickled, x_train=np.array([{"a": 1}], dtype=object), y_train=[0],
             x_test=x_test, y_test=[0])  # fmt: skip
    with pytest.raises(DataError, match="without unpickling"):
        load_dataset(str(pickled))
    np.savez(tmp_path / "f.npz", x_train=x_train.astype(np.float32), y_train=[0],
             x_test=x_test, y_test=[0])  # fmt: skip
    with pytest.raises(DataError, match="x_train must be uint8 images"):
        load_dataset(str(tmp_path / "f.npz"))


def cifar_records(labels: list[int], label_bytes: int) -> tuple[bytes, np.ndarray]:
    """CIFAR binary records of known images: image i is filled with (i, 2i, 3i)."""
    images = np.zeros((len(labels), 32, 32, 3), dtype=np.uint8)
    out = b""
    for i, label in enumerate(labels):
        images[i] = (i, 2 * i, 3 * i)
        images[i, 0, 1] = (100, 101, 102)  # one pixel: checks the plane order
        planes = images[i].transpose(2, 0, 1).tobytes()
        head = bytes([0, label]) if label_bytes == 2 else bytes([label])
        out += head + planes
    return out, images


def test_cifar10_binary_batches(tmp_path: Path) -> None:
    folder = tmp_path / "dl" / "cifar-10-batches-bin"
    folder.mkdir(parents=True)
    for i in range(1, 6):
        raw, _ = cifar_records([i % 2, (i + 1) % 2], 1)
        (folder / f"data_batch_{i}.bin").write_bytes(raw)
    raw, images = cifar_records([0, 1, 1], 1)
    (folder / "test_batch.bin").write_bytes(raw)
    (folder / "batches.meta.txt").write_text("airplane\nautomobile\n\n")
    ds = load_dataset(str(tmp_path / "dl"))  # the folder the archive unpacks into
    assert ds.class_names == ("airplane", "automobile")
    assert ds.x_train.shape == (10, 32, 32, 3)
    assert np.array_equal(ds.x_test.numpy(), images)
    assert ds.x_test[0, 0, 1].tolist() == [100, 101, 102]
    assert ds.y_test.tolist() == [0, 1, 1]
    (folder / "test_batch.bin").write_bytes(raw[:-5])
    with pytest.raises(DataError, match="not a whole number of 3073-byte"):
        load_dataset(str(folder))


def test_cifar100_uses_the_fine_label(tmp_path: Path) -> None:
    folder = tmp_path / "c100"
    folder.mkdir()
    raw, _ = cifar_records([3, 7, 7], 2)
    (folder / "train.bin").write_bytes(raw)
    (folder / "test.bin").write_bytes(raw)
    ds = load_dataset(str(folder))
    assert ds.y_train.tolist() == [3, 7, 7] and ds.num_classes == 8


def test_preset_takes_the_data_shape_and_classes(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "p", (4, 2))
    config = TrainConfig(epochs=1, batch_size=8, validation="none", data=str(root))
    result = cnnlab.train("conv5-tiny", config, out=tmp_path / "run")
    spec = result.meta
    assert spec["environment"]["class_names"] == ["blue", "green", "red"]
    assert result.model.arch.input_shape == (32, 32, 3)
    assert result.model.info.output_shape == (3,)


def test_explicit_input_shape_that_differs_is_one_error(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "x", (2, 1))
    arch = cnnlab.Architecture(
        "mlp", (cnnlab.Flatten(), cnnlab.Dense(3, activation="softmax")), (28, 28, 1)
    )
    config = TrainConfig(epochs=1, validation="none", data=str(root))
    with pytest.raises(CnnlabError, match=r"input_shape is \[28, 28, 1\], but the "):
        cnnlab.train(arch, config, out=tmp_path / "run")
    shapeless = parse_architecture(
        {"layers": [{"Flatten": {}}, {"Dense": {"units": 3, "activation": "softmax"}}]}
    )
    result = cnnlab.train(shapeless, config, out=tmp_path / "run2")
    assert result.model.arch.input_shape == (32, 32, 3)


@pytest.mark.slow
def test_a_small_net_learns_a_colour_folder_well_above_chance(tmp_path: Path) -> None:
    root = colour_folder(tmp_path / "learn", (40, 20))
    net = tmp_path / "net.yaml"  # no input_shape: it takes the data's
    net.write_text(
        "layers:\n  - Conv2D: {filters: 8, kernel_size: 3, activation: relu}\n"
        "  - MaxPooling2D: {pool_size: 4}\n  - Flatten\n"
        "  - Dense: {units: 3, activation: softmax}\n"
    )
    out = tmp_path / "run"
    result = run_cli(
        "train", net, "--data", root, "--out", out, "--epochs", "5",
        "--batch-size", "16", "--validation", "test",
    )  # fmt: skip
    assert result.code == 0, result.err
    meta = json.loads((out / "run.json").read_text())
    assert meta["test"]["acc"] > 0.8  # chance is 1/3
    assert meta["environment"]["data_info"]["shape"] == [32, 32, 3]
    # predict converts an image of another size by the run's rule, and says so
    big = tmp_path / "big-red.png"
    colour_image(COLOURS["red"], 99, size=(48, 40)).save(big)
    same = tmp_path / "blue.png"
    colour_image(COLOURS["blue"], 98).save(same)
    result = run_cli("predict", out, big, same)
    assert result.code == 0, result.err
    assert result.out.splitlines()[0].startswith(f"{big}: red (")
    assert result.out.splitlines()[0].endswith(
        "[converted 40x48 RGB to 32x32 RGB (bilinear filter)]"
    )
    assert result.out.splitlines()[1].startswith(f"{same}: blue (")
    assert "[" not in result.out.splitlines()[1]
    result = run_cli("evaluate", out)
    assert result.code == 0, result.err
    assert f"{meta['test']['acc']:.4f}" in result.out


def test_data_command_prints_counts_imbalance_stats_and_writes_a_grid(
    tmp_path: Path,
) -> None:
    root = colour_folder(tmp_path / "d", (6, 2))
    for i in range(6):  # red: 12 training images, twice the others
        colour_image(COLOURS["red"], 100 + i).save(root / "train" / "red" / f"x{i}.png")
    (root / "train" / "blue" / "readme.txt").write_text("not an image")
    grid = tmp_path / "grid.png"
    result = run_cli("data", root, "--grid", grid)
    assert result.code == 0, result.err
    lines = result.out.splitlines()
    assert lines[0] == f"Data: {root} (folder)"
    assert lines[1] == "Images: 32x32 RGB; train 24, test 6"
    assert lines[2] == "Classes: 3"
    assert lines[3].split() == ["class", "train", "test"]
    assert lines[6].split() == ["red", "12", "2"]
    assert "train: imbalanced - red has 12 images, blue has 6" in lines
    assert "Ignored: 1 not an image file(s)" in lines
    stats = next(line for line in lines if line.startswith("Pixels"))
    assert stats.startswith("Pixels (training images, 0-1): mean ± std R 0.")
    assert lines[-1] == f"Sample grid: {grid}"
    with Image.open(grid) as image:
        assert image.format == "PNG" and image.width > 300 and image.height > 150
        # the red row is red: colour reaches the grid
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
        assert ((pixels[:, 0] > 150) & (pixels[:, 1] < 90)).sum() > 1000
    none = run_cli("data", root, "--no-grid", cwd=tmp_path)
    assert none.code == 0 and "Sample grid" not in none.out
    assert not (tmp_path / "data-samples.png").exists()


def test_flip_and_crop_work_on_colour_batches() -> None:
    from cnnlab.data.augment import augment_batch, epoch_generator

    images = torch.arange(64 * 8 * 8 * 3, dtype=torch.int64) % 251 + 1
    images = images.to(torch.uint8).reshape(64, 8, 8, 3)
    flipped = augment_batch(images, "flip", epoch_generator(0, 1), 2)
    mirrored = [torch.equal(f, i.flip(1)) for f, i in zip(flipped, images, strict=True)]
    unchanged = [torch.equal(f, i) for f, i in zip(flipped, images, strict=True)]
    assert all(m or u for m, u in zip(mirrored, unchanged, strict=True))
    assert 10 < sum(mirrored) < 54  # about half
    cropped = augment_batch(images, "crop", epoch_generator(0, 1), 2)
    assert cropped.shape == images.shape
    # a crop moves by at most 4 pixels and fills zeros: pixel values are kept
    for c, i in zip(cropped, images, strict=True):
        kept = c[c != 0]
        assert set(kept.tolist()) <= set(i.flatten().tolist())
    assert (cropped == 0).any()  # some image moved
    first = augment_batch(images, "crop+flip", epoch_generator(0, 1), 2)
    second = augment_batch(images, "crop+flip", epoch_generator(0, 1), 2)
    assert torch.equal(first, second)  # a function of (seed, epoch)
    with pytest.raises(CnnlabError, match="test_augment must be one of none, shift"):
        TrainConfig(test_augment="flip")


@pytest.mark.slow
def test_a_study_on_a_colour_folder_reports_in_colour(tmp_path: Path) -> None:
    colour_folder(tmp_path / "colour", (8, 4))
    (tmp_path / "study.yaml").write_text(
        "name: colours\ndata: colour\n"
        "train: {epochs: 1, batch_size: 8, validation: test}\n"
        "architectures:\n  - conv5-tiny\n"
        "  - {label: small, spec: {layers: [{Conv2D: {filters: 4, kernel_size: 3}},"
        " Flatten, {Dense: {units: 3, activation: softmax}}]}}\n"
    )
    result = run_cli("study", "study.yaml", "--out", "ST", cwd=tmp_path)
    assert result.code == 0, result.err
    figures = tmp_path / "ST" / "colours" / "report" / "figures"
    assert (figures / "confusion-small.png").is_file()
    galleries = sorted(figures.glob("mistakes-*.png"))
    assert galleries  # conv5-tiny does not learn three colours in one epoch
    with Image.open(galleries[0]) as image:
        pixels = np.asarray(image.convert("RGB")).reshape(-1, 3).astype(int)
    saturated = (pixels.max(axis=1) - pixels.min(axis=1)) > 100
    assert saturated.sum() > 1000  # colour images, not grey


def test_every_format_is_read(tmp_path: Path) -> None:
    root = tmp_path / "formats"
    image = colour_image((200, 30, 30), 5)
    formats = {"png": {}, "bmp": {}, "webp": {"lossless": True}, "tif": {}}
    for split in ("train", "test"):
        for name in ("a", "b"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for suffix, extra in formats.items():
                image.save(folder / f"x.{suffix}", **extra)
            image.save(folder / "x.JPG", quality=95)
            frames = [image, Image.new("RGB", (32, 32), (0, 0, 255))]
            frames[0].save(folder / "x.gif", save_all=True, append_images=frames[1:])
    ds = load_dataset(str(root))
    assert len(ds.x_train) == 12 and ds.image_shape == (32, 32, 3)
    exact = np.asarray(image)
    by_name = sorted(["x.png", "x.bmp", "x.webp", "x.tif", "x.JPG", "x.gif"])
    for i, name in enumerate(by_name):
        pixels = ds.x_train[i].numpy().astype(int)
        if name in ("x.png", "x.bmp", "x.webp", "x.tif"):  # lossless
            assert np.array_equal(pixels, exact), name
        else:  # JPEG and GIF's 256-colour palette: close, and the first frame
            assert np.abs(pixels - exact).mean() < 30, name


def test_a_set_larger_than_memory_is_refused_with_the_figures(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import cnnlab.util.machine as machine

    root = colour_folder(tmp_path / "big", (4, 2))
    # 18 images of 32x32x3 = 55,296 bytes; pretend 100 kB of memory is free
    monkeypatch.setattr(machine, "available_memory", lambda device: 100_000)
    with pytest.raises(DataError) as caught:
        load_dataset(str(root))
    assert str(caught.value) == (
        f"{root}: 18 images of 32x32x3 need about 55.3 kB decoded, more than 50% of "
        "the 100.0 kB of memory available; use a smaller image_size, fewer images, "
        "or a machine with more memory"
    )


def test_each_image_file_is_decoded_once(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from PIL import Image as pil

    root = colour_folder(tmp_path / "once", (4, 2))
    opened: list[str] = []
    real_open = pil.open

    def counting_open(fp, *args, **kwargs):  # noqa: ANN001, ANN202
        opened.append(getattr(fp, "name", "bytes"))
        return real_open(fp, *args, **kwargs)

    monkeypatch.setattr(pil, "open", counting_open)
    ds = load_dataset(str(root))  # 18 files: decoded in this process, no pool
    assert ds.info["cached"] is False
    assert len(opened) == 18  # the first file too, though it also sized the set
    assert len(ds.x_train) + len(ds.x_test) == 18
    opened.clear()
    assert load_dataset(str(root)).info["cached"] is True
    assert opened == []  # the cached read decodes nothing


def test_a_holdout_size_on_a_folder_with_its_own_val_is_refused(
    tmp_path: Path, cli
) -> None:  # noqa: ANN001
    from cnnlab.training.session import load_split

    root = colour_folder(tmp_path / "v", (10, 3, 2), ("train", "test", "val"))
    _, split = load_split(TrainConfig(data=str(root)))
    assert len(split.x_val) == 6 and len(split.x_train) == 30  # val/ is the hold-out
    for asked in ({"val_size": 5}, {"val_fraction": 0.3}):
        name, value = next(iter(asked.items()))
        with pytest.raises(DataError) as caught:
            load_split(TrainConfig(data=str(root), **asked))
        assert str(caught.value).startswith(
            f"{name}={value} (--{name.replace('_', '-')}) sizes a hold-out drawn "
            f"from the training images, but {root} has its own val/ folder (6 images)"
        )
    # without a hold-out the size was never asked for a split; nothing to refuse
    _, split = load_split(TrainConfig(data=str(root), validation="test", val_size=5))
    assert len(split.x_train) == 30 and len(split.x_val) == 9  # the test images
    # a study's --val-size is refused before the study folder is made
    (tmp_path / "s.yaml").write_text(
        f"name: s\ndata: {root}\ntrain: {{epochs: 1}}\narchitectures: [conv5-tiny]\n"
    )
    result = cli("study", "s.yaml", "--val-size", "5", "--out", "ST")
    assert result.code == 2 and "has its own val/ folder" in result.err
    assert not (tmp_path / "ST").exists()


def test_a_val_fraction_given_on_idx_data_is_a_stratified_share(tmp_path: Path) -> None:
    from cnnlab.training.config import TrainConfig
    from cnnlab.training.session import load_split

    config = TrainConfig(val_fraction=0.25, train_limit=1000, test_limit=10)
    dataset, split = load_split(config)
    per_class = np.bincount(dataset.y_train.numpy(), minlength=10)
    held = np.bincount(split.y_val.numpy(), minlength=10)
    assert held.tolist() == [round(0.25 * n) for n in per_class]  # not 10,000
    assert len(split.y_train) == 1000
    default = load_split(TrainConfig(train_limit=1000, test_limit=10))[1]
    assert len(default.y_val) == 10_000  # the notebook's split stays the default
