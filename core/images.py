"""One image in, the pixels a model takes out: colour mode, resize and centre crop, done one way.

The data set is decoded with these functions, and the served model (core/served.py) applies the same
ones to the images it is given, so a photo of any size meets the model as training images did:
shorter side resized to the image size, then a centre crop, as torchvision's `Resize(size)` followed by
`CenterCrop(size)` (torchvision's own functions do it, bilinear with antialiasing).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image

MODES = {1: "L", 3: "RGB"}  # channels -> PIL mode


class ImageError(Exception):
    """An image file that cannot be read; the message names the file."""


def fit(image: Image.Image, size: int | None, channels: int = 3) -> np.ndarray:
    """`image` as (C, H, W) uint8 with `channels` channels (grey and RGBA converted, as
    `Image.convert` does), resized and centre-cropped to `size` x `size` unless `size` is None."""
    if channels not in MODES:
        raise ValueError(f"channels must be 1 or 3, got {channels=}")
    if image.mode == "I" or image.mode.startswith("I;16"):
        image = _as_8_bit(image)
    image = image.convert(MODES[channels])  # CMYK, palette, RGBA, grey: as PIL converts them
    if size is not None and image.size != (size, size):
        from torchvision.transforms.v2 import functional as F

        image = F.center_crop(F.resize(image, [size]), [size, size])
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[None] if pixels.ndim == 2 else pixels.transpose(2, 0, 1)  # (C, H, W)


def _as_8_bit(image: Image.Image) -> Image.Image:
    """A 16-bit grey image (PIL's I;16 modes, or I as 16-bit PNGs open) scaled to 0..255: PIL's
    own conversion clips at 255, which would turn most pixels white."""
    pixels = np.asarray(image, dtype=np.float64)
    return Image.fromarray(np.clip(np.round(pixels / 257.0), 0, 255).astype(np.uint8), "L")


def read_image(path: str | Path, size: int | None, channels: int = 3) -> np.ndarray:
    """The image file at `path` as `fit` gives it; ImageError naming the file if it cannot be read."""
    return fit(open_image(path), size, channels)


def open_image(path: str | Path) -> Image.Image:
    """The image file at `path`, decoded; ImageError naming the file if it cannot be read."""
    try:
        with Image.open(path) as image:
            image.load()
            return image
    except (OSError, ValueError, Image.DecompressionBombError) as e:
        detail = type(e).__name__ if str(path) in str(e) else str(e)  # PIL's messages name it too
        reason = "no such file" if isinstance(e, FileNotFoundError) else f"not a readable image ({detail})"
        raise ImageError(f"{path}: {reason}") from None


def fit_array(images: np.ndarray, size: int) -> np.ndarray:
    """A batch of (N, C, H, W) uint8 images resized and centre-cropped to (N, C, size, size)."""
    if images.shape[2:] == (size, size):
        return images
    out = np.empty((len(images), images.shape[1], size, size), dtype=np.uint8)
    for i, chw in enumerate(images):
        pil = Image.fromarray(chw[0] if chw.shape[0] == 1 else chw.transpose(1, 2, 0))
        out[i] = fit(pil, size, chw.shape[0])
    return out
