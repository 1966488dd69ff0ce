"""Test-time shifts (`test_augment: shift`): each image scored as the mean class
probabilities of itself and its four one-pixel moves, wherever a run scores images
(validation, the test set, `cnnlab evaluate`, `cnnlab predict`)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F

from cnnlab import api
from cnnlab.data.augment import TEST_SHIFTS, shifted_views
from cnnlab.data.datasets import load_dataset
from cnnlab.errors import CnnlabError
from cnnlab.training.config import TrainConfig, recipe_config
from cnnlab.training.loop import as_input, score
from helpers import TINY_FLAGS_NO_HOLDOUT, draw_digit, run_cli


def moved(images: torch.Tensor, dy: int, dx: int) -> torch.Tensor:
    """`images` (N, H, W) moved down by dy and right by dx pixels, zeros filled in,
    written cell by cell range: the reference the views are checked against."""
    out = torch.zeros_like(images)
    height, width = images.shape[-2:]
    rows_to = slice(max(dy, 0), height + min(dy, 0))
    rows_from = slice(max(-dy, 0), height - max(dy, 0))
    cols_to = slice(max(dx, 0), width + min(dx, 0))
    cols_from = slice(max(-dx, 0), width - max(dx, 0))
    out[..., rows_to, cols_to] = images[..., rows_from, cols_from]
    return out


def reference_probs(model: torch.nn.Module, images: torch.Tensor) -> torch.Tensor:
    """Mean softmax over the image and its four 1-px moves, one image at a time."""
    model.eval()
    with torch.no_grad():
        views = [as_input(moved(images, dy, dx)) for dy, dx in TEST_SHIFTS]
        return torch.stack([model(v).softmax(1) for v in views]).mean(0)


# ----------------------------------------------------------------- the views


def test_views_are_the_image_and_its_four_one_pixel_moves() -> None:
    images = load_dataset("mnist").x_test[:50]
    views = shifted_views(images)
    assert len(views) == 5 and views[0] is images
    assert {(dy, dx) for dy, dx in TEST_SHIFTS} == {
        (0, 0), (1, 0), (-1, 0), (0, 1), (0, -1)
    }  # fmt: skip
    for view, (dy, dx) in zip(views, TEST_SHIFTS, strict=True):
        assert view.dtype == torch.uint8 and view.shape == images.shape
        assert torch.equal(view, moved(images, dy, dx))
    # Where the outer rows and columns are background (most MNIST digits), a
    # 1-px move loses no ink.
    edge = images[:, [0, -1], :].sum((1, 2), dtype=torch.long)
    edge += images[:, :, [0, -1]].sum((1, 2), dtype=torch.long)
    inside = edge == 0
    assert int(inside.sum()) >= 40
    ink = images[inside].sum((1, 2), dtype=torch.long)
    for view in views:
        assert torch.equal(view[inside].sum((1, 2), dtype=torch.long), ink)


def test_views_of_a_prepared_batch_stay_channels_last() -> None:
    batch = as_input(load_dataset("mnist").x_test[:8])
    for view in shifted_views(batch):
        assert view.shape == batch.shape
        assert view.is_contiguous(memory_format=torch.channels_last)


# ------------------------------------------------------------------- scoring


@pytest.fixture(scope="module")
def fast_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """`cnnlab train fast` on 1,000 images for one epoch: the recipe's shifts on."""
    where = tmp_path_factory.mktemp("tta")
    result = run_cli("train", "fast", *TINY_FLAGS_NO_HOLDOUT, "--out", "RUN", cwd=where)
    assert result.code == 0, result.err
    return where / "RUN"


@pytest.mark.slow
def test_the_run_scores_its_test_set_with_the_shifts(fast_run: Path) -> None:
    meta = json.loads((fast_run / "run.json").read_text())
    assert meta["config"]["test_augment"] == "shift"
    _, model = api.load_model(fast_run)
    test = load_dataset("mnist")
    x, y = test.x_test[:200], test.y_test[:200].long()  # TINY_FLAGS' test_limit
    probs = reference_probs(model, x)
    assert meta["test"]["acc"] == (probs.argmax(1) == y).sum().item() / len(y)
    nll = -probs.gather(1, y[:, None]).log().mean().item()
    assert meta["test"]["loss"] == pytest.approx(nll, rel=1e-5)
    # One view of the same weights answers differently on some images: the
    # shifts are really in the score, not a copy of it.
    one = score(model, x, y)
    assert one.loss != pytest.approx(meta["test"]["loss"], rel=1e-6)


@pytest.mark.slow
def test_evaluate_and_predict_use_the_runs_shifts(
    fast_run: Path, tmp_path: Path
) -> None:
    recorded = json.loads((fast_run / "run.json").read_text())["test"]
    assert api.evaluate_run(fast_run)["test_acc"] == recorded["acc"]
    result = run_cli("evaluate", fast_run, cwd=tmp_path)
    assert result.code == 0, result.err
    assert f"Test loss: {recorded['loss']:.4f}" in result.out

    image = draw_digit(tmp_path / "one.png", "1")
    (answer,) = api.predict(fast_run, [image])
    _, model = api.load_model(fast_run)
    from cnnlab.data.images import load_image

    pixels = load_image(image, 28)  # (1, 28, 28) float in [0, 1]
    views = [moved(pixels, dy, dx)[None] for dy, dx in TEST_SHIFTS]
    with torch.no_grad():
        expected = torch.stack([model(v).softmax(1)[0] for v in views]).mean(0)
    assert answer.probabilities == pytest.approx(expected.tolist(), abs=1e-6)


def test_one_view_scores_exactly_as_the_logits_say(fast_run: Path) -> None:
    """test_augment none (every notebook net) keeps the plain arithmetic."""
    _, model = api.load_model(fast_run)
    test = load_dataset("mnist")
    x, y = test.x_test[:300], test.y_test[:300]
    scored = score(model, x, y, test_augment="none")
    with torch.no_grad():
        logits = model(as_input(x))
    assert scored.loss == pytest.approx(
        F.cross_entropy(logits, y, reduction="sum").item() / len(x), rel=1e-6
    )
    assert torch.equal(scored.predicted.long(), logits.argmax(1))


# ----------------------------------------------------------------- settings


def test_the_setting_defaults_off_and_the_recipe_turns_it_on() -> None:
    assert TrainConfig().test_augment == "none"
    assert recipe_config("fast").test_augment == "shift"
    assert recipe_config("conv5-medium").test_augment == "none"


def test_a_bad_value_says_what_to_pass(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="test_augment must be one of none, shift"):
        TrainConfig(test_augment="flip")
    result = run_cli("train", "fast", "--test-augment", "flip", cwd=tmp_path)
    assert result.code == 2
    assert "--test-augment" in result.err and "'none', 'shift'" in result.err
    assert not any(tmp_path.iterdir())  # nothing half-written


@pytest.mark.slow
def test_the_flag_turns_it_off_for_one_run(tmp_path: Path) -> None:
    result = run_cli(
        "train", "fast", *TINY_FLAGS_NO_HOLDOUT, "--test-augment", "none",
        "--out", "RUN", cwd=tmp_path,
    )  # fmt: skip
    assert result.code == 0, result.err
    meta = json.loads((tmp_path / "RUN" / "run.json").read_text())
    assert meta["config"]["test_augment"] == "none"
    _, model = api.load_model(tmp_path / "RUN")
    test = load_dataset("mnist")
    one = score(model, test.x_test[:200], test.y_test[:200])
    assert meta["test"] == {"loss": one.loss, "acc": one.acc}
