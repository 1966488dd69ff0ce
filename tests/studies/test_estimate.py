"""A study counts each net as it will train, fitted to its data: the time
estimate, the worker packing and the store's params and FLOPs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

from cnnlab.studies.cpus import CpuSplit, trial_work
from cnnlab.studies.estimate import estimate_study
from cnnlab.studies.study import load_study
from cnnlab.studies.trial import trial_fields


def conv5_tiny_forward_flops(height: int, width: int, channels: int, classes: int):
    """conv5-tiny's forward FLOPs per sample, by hand from its layers
    (src/cnnlab/nn/presets/conv5-tiny.yaml): 2 x multiply-accumulates of its
    Conv2D and Dense layers."""
    conv1 = 2 * (5 * 5 * channels * 1) * height * width  # 1 filter, same padding
    h, w = height // 2, width // 2  # max pooling 2, stride 2
    h, w = h - 4, w - 4  # 5x5, 2 filters, valid padding
    conv2 = 2 * (5 * 5 * 1 * 2) * h * w
    flat = (h // 2) * (w // 2) * 2  # max pooling 2, stride 2, then Flatten
    dense = 2 * (flat * 4 + 4 * 8 + 8 * classes)
    return conv1 + conv2 + dense


def shapes_folder(root: Path) -> Path:
    """root/{train,test}/<3 classes>/*.png: 32x32 RGB images."""
    rng = np.random.default_rng(0)
    for split, count in (("train", 20), ("test", 4)):
        for name in ("a", "b", "c"):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    return root


def _mixed_study(tmp_path: Path):  # noqa: ANN202
    images = shapes_folder(tmp_path / "imgs")
    (tmp_path / "s.yaml").write_text(
        "name: s\nseeds: [0]\n"
        f"data: [mnist, {images}]\n"
        "train: {epochs: 1, train_limit: 40, val_size: 20, test_limit: 10}\n"
        "architectures: [conv5-tiny]\n"
    )
    return images, load_study(tmp_path / "s.yaml")


def test_a_preset_on_colour_images_is_costed_as_it_trains(tmp_path: Path) -> None:
    images, study = _mixed_study(tmp_path)
    found = estimate_study(study.trials(), tmp_path / "s", CpuSplit(1, 1))
    assert found is not None and len(found.nets) == 2
    by_data = {t.config.data: t.label for t in found.trials}
    flops = {n.label: n.flops for n in found.nets}
    mnist = flops[by_data["mnist"]]
    colour = flops[by_data[str(images)]]
    # training FLOPs are 3 forward passes (nn.shapes.TRAINING_FACTOR)
    assert mnist == 3 * conv5_tiny_forward_flops(28, 28, 1, 10) == 3 * 49_824
    assert colour == 3 * conv5_tiny_forward_flops(32, 32, 3, 3) == 3 * 168_688
    assert colour / mnist == 168_688 / 49_824  # about 3.4x, not the 1x of before


def test_the_store_row_and_the_packing_weigh_the_fitted_net(tmp_path: Path) -> None:
    images, study = _mixed_study(tmp_path)
    trials = {t.config.data: t for t in study.trials()}
    mnist, colour = trials["mnist"], trials[str(images)]
    row = trial_fields(colour, tmp_path / "run")
    assert row["flops"] == conv5_tiny_forward_flops(32, 32, 3, 3)
    assert trial_fields(mnist, tmp_path / "run")["flops"] == 49_824
    # conv5-tiny's parameters on 32x32x3 and 3 classes, by hand: conv 5x5x3x1+1,
    # conv 5x5x1x2+2, Dense from the flattened 6x6x2 to 4 (72x4+4), 4x8+8, 8x3+3
    assert row["params"] == 76 + 52 + 292 + 40 + 27
    work = dict(trial_work([mnist, colour]))
    # 40 training images, 1 epoch, training FLOPs = 3 forward passes
    assert work[colour.label] == 3 * 168_688 * 40
