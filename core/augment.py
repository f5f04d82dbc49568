"""Batched augmentation on tensors, on the trial's device.

Three kinds (the `augment` setting), each done for a whole batch at once so no DataLoader worker has
to decode or transform images, then `Normalize(mean, std)`:
- `crop_flip`, equivalent in distribution to torchvision's `RandomCrop(size, padding, fill=0)` and
  `RandomHorizontalFlip(0.5)` applied image by image: CIFAR's, the default up to 64 px;
- `resized_crop_flip`, as `RandomResizedCrop(size, scale=(0.35, 1), ratio=(3/4, 4/3))` and the flip:
  one affine grid per image, sampled bilinearly; the default for photos above 64 px;
- `none`.
Evaluation (and the served model) normalises only.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

AUGMENTS = ("crop_flip", "resized_crop_flip", "none")
RESIZED_CROP_SCALE = (0.35, 1.0)  # of the image's area
RESIZED_CROP_RATIO = (3 / 4, 4 / 3)  # width / height


def default_augment(image_size: int) -> str:
    return "crop_flip" if image_size <= 64 else "resized_crop_flip"


class BatchAugment:
    """Random crop (with zero padding, or resized), optional horizontal flip, and normalisation of
    uint8 batches."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], padding: int, hflip: bool,
                 memory_format: torch.memory_format = torch.contiguous_format,
                 kind: str = "crop_flip"):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding=}")
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        if kind not in AUGMENTS:
            raise ValueError(f"augment {kind!r}: expected one of {', '.join(AUGMENTS)}")
        self.mean, self.std, self.padding, self.hflip, self.kind = mean, std, padding, hflip, kind
        # The layout the model trains in (core/precision.py): batches leave here in it, with fresh
        # strides (tests/core/test_precision_matrix.py runs every layout through oneDNN).
        self.memory_format = memory_format

    def __repr__(self) -> str:
        return f"BatchAugment({self.kind}, padding={self.padding}, hflip={self.hflip})"

    def train(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, H, W) uint8 -> augmented, normalised float (B, C, H, W)."""
        if self.kind == "none":
            return self.normalise(x)
        if self.kind == "resized_crop_flip":
            return self.normalise(self._resized_crop(x, generator))
        x = self._crop(x, generator)
        if self.hflip:
            flip = torch.rand(x.shape[0], device=x.device, generator=generator) < 0.5
            x = torch.where(flip[:, None, None, None], x.flip(3), x)
        return self.normalise(x)

    def normalise(self, x: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
        mean = torch.tensor(self.mean, device=x.device, dtype=dtype).view(1, -1, 1, 1) * 255
        std = torch.tensor(self.std, device=x.device, dtype=dtype).view(1, -1, 1, 1) * 255
        # Not .contiguous(): a 1-channel crop with channels-last strides already counts as
        # contiguous, yet oneDNN still takes it for channels-last; .to() lays out new strides.
        return (x.to(dtype, memory_format=self.memory_format) - mean) / std

    def _resized_crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        """Each image's random-resized crop (and flip) as one affine grid, sampled bilinearly."""
        b = x.shape[0]

        def uniform(low: float, high: float) -> torch.Tensor:
            return low + (high - low) * torch.rand(b, device=x.device, generator=generator)

        area = uniform(*RESIZED_CROP_SCALE)
        ratio = torch.exp(uniform(*(math.log(r) for r in RESIZED_CROP_RATIO)))
        width = torch.sqrt(area * ratio).clamp(max=1.0)  # of the image's width (grid units / 2)
        height = torch.sqrt(area / ratio).clamp(max=1.0)
        cx = (2 * torch.rand(b, device=x.device, generator=generator) - 1) * (1 - width)
        cy = (2 * torch.rand(b, device=x.device, generator=generator) - 1) * (1 - height)
        flip = torch.ones(b, device=x.device)
        if self.hflip:
            flip = torch.where(torch.rand(b, device=x.device, generator=generator) < 0.5, -1.0, 1.0)
        theta = torch.zeros(b, 2, 3, device=x.device)
        theta[:, 0, 0], theta[:, 0, 2] = width * flip, cx
        theta[:, 1, 1], theta[:, 1, 2] = height, cy
        grid = F.affine_grid(theta, list(x.shape), align_corners=False)
        out = F.grid_sample(x.float(), grid, mode="bilinear", padding_mode="border",
                            align_corners=False)
        return out

    def _crop(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        p = self.padding
        if p == 0:
            return x
        b, _, h, w = x.shape
        padded = F.pad(x, (p, p, p, p))  # zeros, like RandomCrop(fill=0)
        # One offset per image in [0, 2p], as RandomCrop draws its top-left corner.
        dy = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=generator)
        dx = torch.randint(0, 2 * p + 1, (b,), device=x.device, generator=generator)
        rows = (dy[:, None] + torch.arange(h, device=x.device))[:, :, None]  # (B, H, 1)
        cols = (dx[:, None] + torch.arange(w, device=x.device))[:, None, :]  # (B, 1, W)
        batch = torch.arange(b, device=x.device)[:, None, None]
        return padded.permute(0, 2, 3, 1)[batch, rows, cols].permute(0, 3, 1, 2)  # (B, C, H, W)


def crop_padding(image_size: int) -> int:
    """CIFAR's 4 pixels of padding for 32-pixel images, scaled to other sizes (1 for 8x8 digits)."""
    return max(1, image_size // 8)
