"""Turn arbitrary image files into MNIST-like inputs for `cnnlab predict`.

Pillow is imported by the functions that read and resize images, not with the module:
`import cnnlab` and commands that read no image do not pay for it.
"""

from __future__ import annotations

import io
import stat
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np
import torch

from cnnlab.errors import CnnlabError
from cnnlab.util.fsio import not_a_file, read_bounded

if TYPE_CHECKING:
    from PIL import Image

# 40 MP is an 8000x5000 photo, well above any phone camera's digit snapshot; the
# float32 working copies of such an image already need about 500 MB.
MAX_PIXELS = 40_000_000
MAX_IMAGE_BYTES = 64 << 20  # a 40 MP PNG of a digit compresses far below this

# MNIST fits each digit into a 20x20 box inside the 28x28 field.
_BOX_FRACTION = 20 / 28

# After the background is subtracted, ink is anything above 20% of full contrast:
# high enough to ignore paper texture and JPEG ringing (typically under 10%).
_INK_THRESHOLD = 0.2

# The border ring is 2% of the shorter side thick (at least 1 px), so a 1-px
# scanner edge or a stroke touching the border does not decide the polarity.
_RING_FRACTION = 0.02

# ITU-R 601-2 luma weights, the same ones Pillow uses for RGB -> L.
_LUMA = np.array([0.299, 0.587, 0.114], dtype=np.float32)


def load_image(
    path: str | Path, size: int = 28, *, max_pixels: int = MAX_PIXELS
) -> torch.Tensor:
    """Read an image file as a float32 (1, size, size) MNIST-like digit in [0, 1]."""
    if size < 4:
        raise ValueError(f"size must be at least 4 pixels, got {size}")
    path = Path(path)
    _check_file(path)
    ink = _to_ink(_read_grey(path, max_pixels))
    rows, cols = _ink_box(ink, path)
    # Stretch before resizing to fix the contrast (so Lanczos overshoot is clipped
    # the same way for grey and black ink) and again after it for thin strokes.
    patch = _fit_box(_stretch(ink[rows, cols]), round(size * _BOX_FRACTION))
    patch = _stretch(patch)
    return torch.from_numpy(_centre_by_mass(patch, size)).unsqueeze(0)


def _check_file(path: Path) -> None:
    """Raise CnnlabError unless path is an existing, non-empty regular file."""
    try:
        info = path.stat()
    except FileNotFoundError as err:
        raise CnnlabError(
            f"{path}: no such file; check the path and the current folder"
        ) from err
    except OSError as err:
        raise CnnlabError(
            f"{path}: cannot access the file ({_one_line(err)}); check its permissions"
        ) from err
    if stat.S_ISDIR(info.st_mode):
        raise CnnlabError(
            f"{path}: is a folder, not an image file; give the path of a PNG or JPEG"
        )
    if not stat.S_ISREG(info.st_mode):
        raise CnnlabError(not_a_file(path, info.st_mode, "a PNG or JPEG image"))
    if info.st_size == 0:
        raise CnnlabError(
            f"{path}: the file is empty (0 bytes); re-export the image and try again"
        )


def _read_grey(path: Path, max_pixels: int) -> np.ndarray:
    """Decode the file into a float32 (height, width) grey image in [0, 1]."""
    from PIL import ImageOps

    image = _open(path, max_pixels)
    with image:
        _check_pixels(path, image.size, max_pixels)
        try:
            image.load()
            # Phone photos are often stored sideways with an EXIF rotation tag.
            upright = ImageOps.exif_transpose(image)
        except OSError as err:
            raise CnnlabError(
                f"{path}: cannot decode the image ({_one_line(err)}); "
                "re-save it as PNG or JPEG"
            ) from err
        except (ValueError, SyntaxError) as err:  # Pillow's chunk limits, bad fields
            raise _metadata_error(path, err) from err
        return _to_grey(upright, path)


def _open(path: Path, max_pixels: int) -> Image.Image:
    """Open the file lazily (header only), mapping Pillow's errors to CnnlabError.

    The bytes are read first, from a regular file only and at most
    MAX_IMAGE_BYTES of them: a FIFO or /dev/urandom named as an image is refused.
    """
    from PIL import Image, UnidentifiedImageError

    try:
        data = read_bounded(path, MAX_IMAGE_BYTES, "a PNG or JPEG image")
        # Pillow warns above 89 MP; our own limit below is stricter and says how to
        # fix it, so the warning would only duplicate (or, under -W error, mask) it.
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            return Image.open(io.BytesIO(data))
    except Image.DecompressionBombError as err:
        raise CnnlabError(
            f"{path}: the image is too large to decode safely ({_one_line(err)}); "
            f"shrink it below {max_pixels:,} pixels"
        ) from err
    except UnidentifiedImageError as err:
        raise CnnlabError(
            f"{path}: not an image file Pillow can read; save it as PNG or JPEG"
        ) from err
    except OSError as err:
        raise CnnlabError(
            f"{path}: cannot open the image ({_one_line(err)}); "
            "check the file or re-save it as PNG or JPEG"
        ) from err
    except (ValueError, SyntaxError) as err:  # Pillow's chunk limits, bad fields
        raise _metadata_error(path, err) from err


def _metadata_error(path: Path, err: Exception) -> CnnlabError:
    """Pillow refuses a PNG text or colour-profile chunk (iCCP, zTXt, iTXt) that
    inflates past its limit (PngImagePlugin.MAX_TEXT_CHUNK), and bad header fields."""
    from PIL import PngImagePlugin

    return CnnlabError(
        f"{path}: cannot decode the image ({_one_line(err)}; Pillow inflates at most "
        f"{PngImagePlugin.MAX_TEXT_CHUNK:,} bytes of a metadata chunk); re-save it "
        "as PNG or JPEG without metadata"
    )


def _check_pixels(path: Path, dims: tuple[int, int], max_pixels: int) -> None:
    """Refuse images over max_pixels, judged from the header before decoding."""
    width, height = dims
    if width * height > max_pixels:
        raise CnnlabError(
            f"{path}: the image is {width}x{height} = {width * height:,} pixels, "
            f"over the limit of {max_pixels:,}; shrink it first "
            "(a digit needs only about 100x100 pixels)"
        )


def _to_grey(image: Image.Image, path: Path) -> np.ndarray:
    """Convert any Pillow mode to float32 grey in [0, 1]."""
    if image.mode.startswith("I"):
        # 16-bit PNG/TIFF; Pillow's own I -> L conversion clips at 255 instead.
        values = np.asarray(image, dtype=np.float32) / 65535
        return np.clip(values, 0.0, 1.0)
    if image.mode == "F":
        return _min_max(np.asarray(image, dtype=np.float32))
    try:
        if image.has_transparency_data:
            return _flatten_alpha(np.asarray(image.convert("RGBA")))
        return np.asarray(image.convert("L"), dtype=np.float32) / 255
    except ValueError as err:
        raise CnnlabError(
            f"{path}: unsupported colour mode {image.mode!r}; "
            "save it as an RGB or greyscale PNG"
        ) from err


def _min_max(values: np.ndarray) -> np.ndarray:
    """Rescale float data of unknown range to [0, 1] (a flat image gives zeros)."""
    values = np.nan_to_num(values, nan=0.0, posinf=0.0, neginf=0.0)
    low, high = float(values.min()), float(values.max())
    if high <= low:
        return np.zeros_like(values)
    return (values - low) / (high - low)


def _flatten_alpha(rgba: np.ndarray) -> np.ndarray:
    """Composite an RGBA uint8 array onto a plain backdrop and return its luma."""
    rgba = rgba.astype(np.float32) / 255
    luma = rgba[..., :3] @ _LUMA
    alpha = rgba[..., 3]
    backdrop = _backdrop(luma, alpha)
    return luma * alpha + backdrop * (1.0 - alpha)


def _backdrop(luma: np.ndarray, alpha: np.ndarray) -> float:
    """White, unless the background is transparent and the strokes are light."""
    # White strokes on a transparent background would vanish on white, so they
    # get a black backdrop instead; everything else is composited on white.
    opaque = float(alpha.sum())
    if np.median(_ring(alpha)) >= 0.5 or opaque == 0.0:
        return 1.0
    stroke_luma = float((luma * alpha).sum()) / opaque
    return 0.0 if stroke_luma > 0.5 else 1.0


def _ring(values: np.ndarray) -> np.ndarray:
    """The pixels of the outermost border ring, flattened."""
    height, width = values.shape
    thick = max(1, int(min(height, width) * _RING_FRACTION))
    sides = [values[:thick], values[-thick:]]
    if height > 2 * thick:
        sides += [values[thick:-thick, :thick], values[thick:-thick, -thick:]]
    return np.concatenate([side.ravel() for side in sides])


def _to_ink(grey: np.ndarray) -> np.ndarray:
    """Make the digit light on a zero background, whatever the input polarity."""
    background = float(np.median(_ring(grey)))
    if background > 0.5:
        # A light border means dark ink on paper: invert to MNIST's polarity.
        grey = 1.0 - grey
        background = 1.0 - background
    # Paper is rarely pure white: subtract its level so the background reads 0.
    return np.clip((grey - background) / (1.0 - background), 0.0, 1.0)


def _ink_box(ink: np.ndarray, path: Path) -> tuple[slice, slice]:
    """The bounding box of the ink, or CnnlabError if there is none."""
    mask = ink > _INK_THRESHOLD
    if not mask.any():
        raise CnnlabError(
            f"{path}: the image is blank (no ink found); use a picture of a digit "
            "that contrasts clearly with its background"
        )
    rows = np.flatnonzero(mask.any(axis=1))
    cols = np.flatnonzero(mask.any(axis=0))
    return slice(rows[0], rows[-1] + 1), slice(cols[0], cols[-1] + 1)


def _stretch(patch: np.ndarray) -> np.ndarray:
    """Scale the patch so its brightest stroke is 1.0, like MNIST's saturated ink."""
    # Done after resizing: shrinking a thin pen line (say 60 px wide on an 1800 px
    # digit) to 20 px averages it down to about 0.7, where MNIST strokes are 1.0.
    peak = float(patch.max())
    return patch / peak if peak > 0.0 else patch


def _fit_box(patch: np.ndarray, box: int) -> np.ndarray:
    """Resize the patch so its longer side is box pixels, keeping the aspect ratio."""
    from PIL import Image

    height, width = patch.shape
    scale = box / max(height, width)
    new_size = (max(1, round(width * scale)), max(1, round(height * scale)))
    # Lanczos averages properly when shrinking; bicubic rings less when enlarging
    # the hard edges of small inputs.
    resample = Image.Resampling.LANCZOS if scale < 1 else Image.Resampling.BICUBIC
    resized = Image.fromarray(patch.astype(np.float32)).resize(new_size, resample)
    # Both filters overshoot by a few percent at edges.
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def _centre_by_mass(patch: np.ndarray, size: int) -> np.ndarray:
    """Place the patch on a size x size canvas with its centre of mass centred."""
    height, width = patch.shape
    # Pixel centres sit at integer indices, so the canvas centre is (size - 1) / 2,
    # i.e. 13.5 for 28; whole-pixel shifts land within 0.5 px of it.
    centre = (size - 1) / 2
    row_mass, col_mass = _centre_of_mass(patch)
    top = _clamp(round(centre - row_mass), 0, size - height)
    left = _clamp(round(centre - col_mass), 0, size - width)
    canvas = np.zeros((size, size), dtype=np.float32)
    canvas[top : top + height, left : left + width] = patch
    return canvas


def _centre_of_mass(patch: np.ndarray) -> tuple[float, float]:
    """Intensity-weighted (row, column) centre, or the middle for an empty patch."""
    total = float(patch.sum())
    height, width = patch.shape
    if total <= 0.0:
        return (height - 1) / 2, (width - 1) / 2
    row = float(patch.sum(axis=1) @ np.arange(height)) / total
    col = float(patch.sum(axis=0) @ np.arange(width)) / total
    return row, col


def _clamp(value: int, low: int, high: int) -> int:
    """Limit value to [low, high]."""
    return max(low, min(value, high))


def _one_line(err: BaseException) -> str:
    """An exception's message on a single line."""
    return " ".join(str(err).split()) or type(err).__name__
