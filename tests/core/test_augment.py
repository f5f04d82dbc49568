"""Tests of core/augment.py: batched random crop, flip and normalisation."""

from __future__ import annotations

import pytest
import torch
from torchvision.transforms import v2

from core.augment import BatchAugment, crop_padding

IDENTITY = {"mean": (0.0,), "std": (1 / 255,)}  # normalise(x) == x, up to float rounding


def _image(c=1, h=4, w=4, seed=0) -> torch.Tensor:
    """(C, H, W) uint8 with distinct non-zero values, so every crop and flip is told apart."""
    g = torch.Generator().manual_seed(seed)
    values = torch.randperm(254, generator=g)[: c * h * w] + 1
    return values.view(c, h, w).to(torch.uint8)


def _outcomes(image: torch.Tensor, p: int) -> list[tuple[tuple[int, int, bool], torch.Tensor]]:
    """Every (dy, dx, flipped) crop of `image` zero-padded by p, as RandomCrop + flip can give."""
    _, h, w = image.shape
    padded = torch.nn.functional.pad(image, (p, p, p, p))
    out = []
    for dy in range(2 * p + 1):
        for dx in range(2 * p + 1):
            crop = padded[:, dy:dy + h, dx:dx + w]
            out.append(((dy, dx, False), crop))
            out.append(((dy, dx, True), crop.flip(2)))
    return out


def _which(image: torch.Tensor, outcomes) -> tuple[int, int, bool]:
    found = [key for key, crop in outcomes if torch.equal(crop, image)]
    assert len(found) == 1, "output is not a (unique) crop of the padded input"
    return found[0]


def _to_uint8(x: torch.Tensor) -> torch.Tensor:
    """Undoes the IDENTITY normalisation."""
    assert (x - x.round()).abs().max() < 1e-3
    return x.round().to(torch.uint8)


def test_output_shape_and_dtype():
    aug = BatchAugment((0.5, 0.4, 0.3), (0.2, 0.2, 0.2), padding=2, hflip=True)
    x = torch.randint(0, 256, (5, 3, 8, 8), dtype=torch.uint8)
    out = aug.train(x, torch.Generator().manual_seed(0))
    assert out.shape == (5, 3, 8, 8) and out.dtype == torch.float32


def test_normalise_is_per_channel_standardisation():
    mean, std = (0.5, 0.25), (0.2, 0.1)
    aug = BatchAugment(mean, std, padding=0, hflip=False)
    x = torch.tensor([0, 51, 255], dtype=torch.uint8).view(1, 1, 1, 3).repeat(1, 2, 1, 1)
    out = aug.normalise(x)
    expected_c0 = torch.tensor([(0 - 0.5) / 0.2, (0.2 - 0.5) / 0.2, (1 - 0.5) / 0.2])
    expected_c1 = torch.tensor([(0 - 0.25) / 0.1, (0.2 - 0.25) / 0.1, (1 - 0.25) / 0.1])
    torch.testing.assert_close(out[0, 0, 0], expected_c0)
    torch.testing.assert_close(out[0, 1, 0], expected_c1)


def test_no_padding_no_flip_only_normalises():
    aug = BatchAugment((0.3,), (0.2,), padding=0, hflip=False)
    x = torch.randint(0, 256, (4, 1, 5, 5), dtype=torch.uint8)
    torch.testing.assert_close(aug.train(x), (x.float() / 255 - 0.3) / 0.2)


def test_every_output_is_a_crop_of_the_padded_input_possibly_flipped():
    p = 2
    aug = BatchAugment(**IDENTITY, padding=p, hflip=True)
    images = torch.stack([_image(c=2, h=5, w=5, seed=s) for s in range(32)])  # (32, 2, 5, 5)
    out = _to_uint8(aug.train(images, torch.Generator().manual_seed(1)))
    seen = set()
    for image, result in zip(images, out):
        seen.add(_which(result, _outcomes(image, p)))
    assert any(flip for *_, flip in seen) and not all(flip for *_, flip in seen)


def test_hflip_false_never_flips():
    p = 1
    aug = BatchAugment(**IDENTITY, padding=p, hflip=False)
    image = _image()
    out = _to_uint8(aug.train(image.expand(200, -1, -1, -1), torch.Generator().manual_seed(2)))
    outcomes = _outcomes(image, p)
    assert not any(_which(result, outcomes)[2] for result in out)


def test_hflip_true_flips_about_half():
    aug = BatchAugment(**IDENTITY, padding=0, hflip=True)
    image = _image()
    out = _to_uint8(aug.train(image.expand(2000, -1, -1, -1), torch.Generator().manual_seed(3)))
    flipped = (out == image.flip(2)).flatten(1).all(1)
    kept = (out == image).flatten(1).all(1)
    assert bool((flipped ^ kept).all())
    assert 0.45 < flipped.float().mean().item() < 0.55


def _chi_square(counts: dict, keys: list, n: int) -> float:
    expected = n / len(keys)
    return sum((counts.get(k, 0) - expected) ** 2 / expected for k in keys)


def test_same_distribution_as_torchvision_random_crop_and_flip():
    # The rule: BatchAugment draws (offset, flip) uniformly, as RandomCrop + RandomHorizontalFlip.
    p, n = 1, 1800  # 18 outcomes, 100 draws each expected
    image = _image()
    outcomes = _outcomes(image, p)
    keys = [key for key, _ in outcomes]

    aug = BatchAugment(**IDENTITY, padding=p, hflip=True)
    ours = _to_uint8(aug.train(image.expand(n, -1, -1, -1), torch.Generator().manual_seed(4)))

    torch.manual_seed(4)
    reference = v2.Compose([v2.RandomCrop(4, padding=p), v2.RandomHorizontalFlip(0.5)])
    theirs = torch.stack([reference(image) for _ in range(n)])

    counts = []
    for draws in (ours, theirs):
        c: dict = {}
        for result in draws:
            key = _which(result, outcomes)
            c[key] = c.get(key, 0) + 1
        counts.append(c)
        assert set(c) == set(keys)  # every outcome happens
        # 17 degrees of freedom: P(chi2 > 40.8) = 0.001 for a uniform draw.
        assert _chi_square(c, keys, n) < 40.8

    # And the mean images agree (pixel values up to 255; a standard error is about 2).
    diff = ours.float().mean(0) - theirs.float().mean(0)
    assert diff.abs().max().item() < 15


def test_generator_makes_draws_reproducible():
    aug = BatchAugment((0.5,), (0.5,), padding=2, hflip=True)
    x = torch.randint(0, 256, (16, 1, 6, 6), dtype=torch.uint8)
    a = aug.train(x, torch.Generator().manual_seed(5))
    b = aug.train(x, torch.Generator().manual_seed(5))
    c = aug.train(x, torch.Generator().manual_seed(6))
    assert torch.equal(a, b) and not torch.equal(a, c)


def test_bad_arguments_raise():
    with pytest.raises(ValueError, match="padding=-1"):
        BatchAugment((0.5,), (0.5,), padding=-1, hflip=True)
    with pytest.raises(ValueError, match="1 vs 3"):
        BatchAugment((0.5,), (0.5, 0.5, 0.5), padding=1, hflip=True)
    assert repr(BatchAugment((0.5,), (0.5,), 3, False)) == "BatchAugment(crop_flip, padding=3, hflip=False)"


@pytest.mark.parametrize("size, padding", [(4, 1), (8, 1), (16, 2), (32, 4), (64, 8)])
def test_crop_padding_is_an_eighth_of_the_size(size, padding):
    assert crop_padding(size) == padding


@pytest.mark.parametrize("channels", [1, 3])
def test_batches_have_plain_strides_by_default(channels):
    # oneDNN's CPU convolution backward crashed (one thread) on a 1-channel crop whose strides were
    # channels-last, though such a tensor counts as contiguous: the layout must be the plain one.
    aug = BatchAugment((0.5,) * channels, (0.5,) * channels, padding=1, hflip=True)
    out = aug.train(torch.zeros(4, channels, 6, 6, dtype=torch.uint8))
    assert out.stride() == torch.empty(4, channels, 6, 6).stride()


def test_batches_can_be_channels_last():
    aug = BatchAugment((0.5,) * 3, (0.5,) * 3, padding=1, hflip=True,
                       memory_format=torch.channels_last)
    out = aug.train(torch.zeros(4, 3, 6, 6, dtype=torch.uint8))
    assert out.is_contiguous(memory_format=torch.channels_last) and not out.is_contiguous()


def _gradient(b: int, size: int = 32) -> torch.Tensor:
    """Images whose pixel value is 8 x its column: a crop's width shows in its row's span."""
    row = (torch.arange(size) * (248 // (size - 1))).to(torch.uint8)
    return row.expand(b, 3, size, size).contiguous()


def test_resized_crop_takes_crops_of_a_third_to_all_of_the_image_and_flips_half():
    augment = BatchAugment((0.0,) * 3, (1 / 255,) * 3, 0, True, kind="resized_crop_flip")
    out = augment.train(_gradient(400), torch.Generator().manual_seed(0))  # pixel values again
    assert out.shape == (400, 3, 32, 32) and out.dtype == torch.float32
    rows = out[:, 0, 16]
    span = (rows.max(1).values - rows.min(1).values) / 248
    # width = sqrt(area * ratio), area in (0.35, 1), ratio in (3/4, 4/3): between 0.51 and 1.
    assert span.min() > 0.45 and span.max() <= 1.0 and 0.65 < span.mean() < 0.9
    flipped = (rows[:, 0] > rows[:, -1]).float().mean()
    assert 0.4 < flipped < 0.6
    assert out.min() >= 0 and out.max() <= 255  # inside the image: no padding drawn in


def test_resized_crop_without_hflip_never_flips():
    augment = BatchAugment((0.0,) * 3, (1 / 255,) * 3, 0, False, kind="resized_crop_flip")
    rows = augment.train(_gradient(200), torch.Generator().manual_seed(1))[:, 0, 16]
    assert bool((rows[:, 0] <= rows[:, -1]).all())


def test_augment_none_only_normalises():
    augment = BatchAugment((0.5,) * 3, (0.25,) * 3, 4, True, kind="none")
    x = _gradient(3)
    assert torch.equal(augment.train(x), augment.normalise(x))


def test_the_default_augmentation_follows_the_image_size():
    from core.augment import default_augment

    assert default_augment(32) == default_augment(64) == "crop_flip"
    assert default_augment(65) == default_augment(224) == "resized_crop_flip"
    with pytest.raises(ValueError, match="augment 'mosaic'"):
        BatchAugment((0.5,), (0.2,), 1, True, kind="mosaic")
