"""Tests for cnnlab.images: real image files drawn with Pillow, no mocks."""

from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image, ImageDraw

from cnnlab.data.images import load_image
from cnnlab.errors import CnnlabError

# Pixel centres sit at integer indices, so the 28x28 centre is (13.5, 13.5).
CENTRE = 13.5
CANVAS = (300, 200)


def draw_zero(ink: int = 0, paper: int = 255) -> Image.Image:
    """An RGB "0": an ellipse 80 wide and 140 tall, 14 px stroke."""
    image = Image.new("RGB", CANVAS, (paper,) * 3)
    ImageDraw.Draw(image).ellipse((110, 30, 190, 170), outline=(ink,) * 3, width=14)
    return image


def draw_one(ink: int = 0, paper: int = 255) -> Image.Image:
    """An RGB "1": a vertical bar 16 px wide and 140 px tall."""
    image = Image.new("RGB", CANVAS, (paper,) * 3)
    ImageDraw.Draw(image).rectangle((142, 30, 157, 169), fill=(ink,) * 3)
    return image


def save(image: Image.Image, path: Path, **options: object) -> Path:
    """Save image to path and return the path."""
    image.save(path, **options)
    return path


def centre_of_mass(digit: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted (row, column) centre of a 2-D array."""
    rows, cols = np.indices(digit.shape)
    total = digit.sum()
    return float((rows * digit).sum() / total), float((cols * digit).sum() / total)


def ink_box(digit: np.ndarray, threshold: float = 0.1) -> tuple[int, int]:
    """Height and width of the bounding box of pixels above threshold."""
    rows = np.flatnonzero((digit > threshold).any(axis=1))
    cols = np.flatnonzero((digit > threshold).any(axis=0))
    return int(rows[-1] - rows[0] + 1), int(cols[-1] - cols[0] + 1)


def shifted_difference(first: torch.Tensor, second: torch.Tensor) -> float:
    """Mean absolute difference, minimised over whole-pixel shifts of up to 1 px."""
    # Centring moves by whole pixels, so a centre of mass sitting on a half-pixel
    # tie may round either way under tiny (e.g. JPEG) changes.
    return min(
        float((first - torch.roll(second, (down, right), dims=(1, 2))).abs().mean())
        for down in (-1, 0, 1)
        for right in (-1, 0, 1)
    )


def assert_mnist_like(tensor: torch.Tensor, size: int = 28) -> np.ndarray:
    """Check shape, dtype, range, dark border and bright ink; return the 2-D array."""
    assert tensor.shape == (1, size, size)
    assert tensor.dtype == torch.float32
    digit = tensor[0].numpy()
    assert digit.min() >= 0.0 and digit.max() <= 1.0
    assert digit.max() > 0.95
    # MNIST's 4-px margin: nothing lands in the outermost 2 px of the canvas.
    border = np.concatenate([digit[:2].ravel(), digit[-2:].ravel()])
    border = np.concatenate([border, digit[:, :2].ravel(), digit[:, -2:].ravel()])
    assert border.max() < 0.05
    return digit


@pytest.mark.parametrize("draw", [draw_zero, draw_one])
def test_dark_on_light_is_inverted_and_centred(tmp_path: Path, draw) -> None:
    digit = assert_mnist_like(load_image(save(draw(), tmp_path / "d.png")))
    row, col = centre_of_mass(digit)
    assert abs(row - CENTRE) <= 1.0 and abs(col - CENTRE) <= 1.0
    height, width = ink_box(digit)
    assert 19 <= height <= 20
    assert width < height


def test_both_polarities_give_the_same_digit(tmp_path: Path) -> None:
    dark = load_image(save(draw_zero(0, 255), tmp_path / "dark.png"))
    light = load_image(save(draw_zero(255, 0), tmp_path / "light.png"))
    assert_mnist_like(light)
    assert torch.allclose(dark, light, atol=0.02)


def test_background_is_zero_and_ink_bright(tmp_path: Path) -> None:
    digit = load_image(save(draw_one(), tmp_path / "one.png"))[0].numpy()
    # The 1 is a solid bar, so its middle must be full-strength ink.
    assert digit[12:16, 13:15].min() > 0.9
    assert (digit == 0.0).mean() > 0.6


def test_grey_paper_and_grey_ink_are_normalised(tmp_path: Path) -> None:
    path = save(draw_zero(ink=90, paper=200), tmp_path / "grey.png")
    reference = load_image(save(draw_zero(), tmp_path / "black.png"))
    digit = load_image(path)
    assert_mnist_like(digit)
    assert torch.allclose(digit, reference, atol=0.02)


def test_rgba_with_transparent_background(tmp_path: Path) -> None:
    image = Image.new("RGBA", CANVAS, (0, 0, 0, 0))
    ImageDraw.Draw(image).ellipse((110, 30, 190, 170), outline="black", width=14)
    reference = load_image(save(draw_zero(), tmp_path / "rgb.png"))
    digit = load_image(save(image, tmp_path / "rgba.png"))
    assert_mnist_like(digit)
    assert torch.allclose(digit, reference, atol=0.02)


def test_white_strokes_on_transparent_background(tmp_path: Path) -> None:
    image = Image.new("RGBA", CANVAS, (255, 255, 255, 0))
    ImageDraw.Draw(image).ellipse((110, 30, 190, 170), outline="white", width=14)
    reference = load_image(save(draw_zero(), tmp_path / "rgb.png"))
    digit = load_image(save(image, tmp_path / "rgba.png"))
    assert torch.allclose(digit, reference, atol=0.02)


def test_palette_image_with_and_without_transparency(tmp_path: Path) -> None:
    reference = load_image(save(draw_zero(), tmp_path / "rgb.png"))
    palette = draw_zero().convert("P")
    assert torch.allclose(load_image(save(palette, tmp_path / "p.gif")), reference)
    index = palette.getpixel((0, 0))
    transparent = save(palette, tmp_path / "t.png", transparency=index)
    assert torch.allclose(load_image(transparent), reference, atol=0.02)


def test_small_greyscale_light_on_dark(tmp_path: Path) -> None:
    image = Image.new("L", (20, 20), 0)
    ImageDraw.Draw(image).rectangle((9, 4, 11, 15), fill=255)
    digit = assert_mnist_like(load_image(save(image, tmp_path / "small.png")))
    row, col = centre_of_mass(digit)
    assert abs(row - CENTRE) <= 1.0 and abs(col - CENTRE) <= 1.0
    assert ink_box(digit)[0] in (19, 20)


def test_jpeg_matches_png(tmp_path: Path) -> None:
    reference = load_image(save(draw_zero(), tmp_path / "d.png"))
    digit = load_image(save(draw_zero(), tmp_path / "d.jpg", quality=85))
    assert_mnist_like(digit)
    assert shifted_difference(digit, reference) < 0.02


def test_sixteen_bit_greyscale(tmp_path: Path) -> None:
    grey = np.asarray(draw_one().convert("L"), dtype=np.uint16) * 257
    reference = load_image(save(draw_one(), tmp_path / "rgb.png"))
    digit = load_image(save(Image.fromarray(grey), tmp_path / "deep.png"))
    assert torch.allclose(digit, reference, atol=0.02)


def test_exif_rotation_is_applied(tmp_path: Path) -> None:
    # Stored as a horizontal bar, tagged "rotate 90 degrees clockwise to view".
    stored = draw_one().transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[0x0112] = 6
    digit = load_image(save(stored, tmp_path / "photo.jpg", exif=exif))[0].numpy()
    height, width = ink_box(digit)
    assert height > 2 * width


def test_custom_size(tmp_path: Path) -> None:
    digit = load_image(save(draw_one(), tmp_path / "d.png"), size=56)
    assert_mnist_like(digit, size=56)
    assert ink_box(digit[0].numpy())[0] in (39, 40)


def test_missing_file(tmp_path: Path) -> None:
    path = tmp_path / "nope.png"
    with pytest.raises(CnnlabError, match="nope.png: no such file; check the path"):
        load_image(path)


def test_folder_instead_of_file(tmp_path: Path) -> None:
    with pytest.raises(CnnlabError, match="is a folder, not an image file"):
        load_image(tmp_path)


def test_empty_file(tmp_path: Path) -> None:
    path = tmp_path / "empty.png"
    path.write_bytes(b"")
    with pytest.raises(CnnlabError, match=r"empty.png: the file is empty \(0 bytes\)"):
        load_image(path)


def test_text_file_named_png(tmp_path: Path) -> None:
    path = tmp_path / "x.png"
    path.write_text("this is not a picture\n")
    with pytest.raises(CnnlabError, match="x.png: not an image file") as info:
        load_image(path)
    assert "save it as PNG or JPEG" in str(info.value)
    assert info.value.__cause__ is not None


def test_truncated_png(tmp_path: Path) -> None:
    whole = save(draw_zero(), tmp_path / "whole.png").read_bytes()
    path = tmp_path / "cut.png"
    path.write_bytes(whole[: len(whole) // 2])
    with pytest.raises(CnnlabError, match="cut.png: cannot decode the image"):
        load_image(path)


def test_blank_image(tmp_path: Path) -> None:
    path = save(Image.new("RGB", CANVAS, "white"), tmp_path / "blank.png")
    with pytest.raises(CnnlabError, match=r"blank.png: the image is blank \(no ink"):
        load_image(path)


def test_over_the_default_pixel_limit(tmp_path: Path) -> None:
    # 7000x7000 = 49 MP; a 1-bit PNG of it is only about 20 kB and quick to write.
    path = save(Image.new("1", (7000, 7000), 1), tmp_path / "huge.png")
    with pytest.raises(CnnlabError, match="7000x7000 = 49,000,000 pixels, over the"):
        load_image(path)


def test_over_pillows_warning_limit_raises_no_warning(tmp_path: Path) -> None:
    # 100 MP is above Pillow's 89 MP warning level; pytest turns warnings into
    # errors, so this passes only if our own, clearer message wins.
    path = save(Image.new("1", (10_000, 10_000), 1), tmp_path / "huger.png")
    with pytest.raises(CnnlabError, match="over the limit of 40,000,000"):
        load_image(path)


def test_pillows_bomb_error_is_wrapped(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Pillow raises instead of warning above twice its limit; lower the limit so a
    # small real file trips it.
    path = save(draw_zero(), tmp_path / "bomb.png")
    monkeypatch.setattr(Image, "MAX_IMAGE_PIXELS", 1000)
    with pytest.raises(CnnlabError, match="bomb.png: the image is too large"):
        load_image(path)


def test_max_pixels_keyword(tmp_path: Path) -> None:
    path = save(draw_zero(), tmp_path / "d.png")
    with pytest.raises(CnnlabError, match="300x200 = 60,000 pixels, over the limit"):
        load_image(path, max_pixels=59_999)
    assert load_image(path, max_pixels=60_000).shape == (1, 28, 28)


def test_size_too_small_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="size must be at least 4"):
        load_image(save(draw_one(), tmp_path / "d.png"), size=3)
