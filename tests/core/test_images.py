"""One image in, a model's pixels out: modes converted, shorter side resized, centre crop."""

from __future__ import annotations

import numpy as np
import pytest
from PIL import Image

from core.images import ImageError, fit, fit_array, read_image


def _stripes(width: int, height: int) -> Image.Image:
    """Left third red, middle third green, right third blue."""
    pixels = np.zeros((height, width, 3), np.uint8)
    third = width // 3
    pixels[:, :third, 0] = pixels[:, third:2 * third, 1] = pixels[:, 2 * third:, 2] = 255
    return Image.fromarray(pixels)


def test_shorter_side_is_resized_then_the_centre_is_kept():
    # 60x30 -> 20x10 (shorter side 10), then the centre 10x10: the green middle stripe, mostly.
    out = fit(_stripes(60, 30), 10)
    assert out.shape == (3, 10, 10) and out.dtype == np.uint8
    assert out[1, :, 3:7].min() > 200 and out[0, :, 3:7].max() < 50


def test_matches_torchvision_resize_and_center_crop():
    from torchvision import transforms

    image = Image.fromarray(np.random.default_rng(0).integers(0, 256, (37, 53, 3), np.uint8))
    expected = np.asarray(transforms.Compose([transforms.Resize(16), transforms.CenterCrop(16)])(image))
    assert np.array_equal(fit(image, 16), expected.transpose(2, 0, 1))


def test_grey_and_rgba_become_rgb():
    grey = fit(Image.new("L", (5, 5), 90), None)
    rgba = fit(Image.new("RGBA", (5, 5), (10, 20, 30, 0)), None)
    assert grey.shape == rgba.shape == (3, 5, 5)
    assert set(grey.reshape(-1).tolist()) == {90}
    assert rgba[:, 0, 0].tolist() == [10, 20, 30]


def test_one_channel_for_grey_models():
    assert fit(Image.new("RGB", (4, 6), (255, 255, 255)), 4, channels=1).shape == (1, 4, 4)


def test_size_none_keeps_the_size():
    assert fit(_stripes(9, 4), None).shape == (3, 4, 9)


def test_corrupt_file_names_itself(tmp_path):
    bad = tmp_path / "broken.jpg"
    bad.write_bytes(b"\xff\xd8\xff not really a jpeg")
    with pytest.raises(ImageError, match="broken.jpg: not a readable image"):
        read_image(bad, 8)


def test_missing_file_names_itself(tmp_path):
    with pytest.raises(ImageError, match="gone.png: no such file"):
        read_image(tmp_path / "gone.png", 8)


def test_batches_of_other_sizes_are_fitted_image_by_image():
    batch = np.stack([fit(_stripes(60, 30), None)] * 2)  # (2, 3, 30, 60)
    out = fit_array(batch, 10)
    assert out.shape == (2, 3, 10, 10)
    assert np.array_equal(out[0], fit(_stripes(60, 30), 10))
    assert fit_array(out, 10) is out  # already the size: untouched
