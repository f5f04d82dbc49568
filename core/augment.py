"""Batched augmentation on tensors, on the trial's device.

Equivalent in distribution to torchvision's `RandomCrop(size, padding, fill=0)` followed by
`RandomHorizontalFlip(0.5)` applied image by image, then `Normalize(mean, std)`; done here for a whole
batch at once so no DataLoader worker has to decode or transform images.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


class BatchAugment:
    """Random crop with zero padding, optional horizontal flip, and normalisation of uint8 batches."""

    def __init__(self, mean: tuple[float, ...], std: tuple[float, ...], padding: int, hflip: bool,
                 memory_format: torch.memory_format = torch.contiguous_format):
        if padding < 0:
            raise ValueError(f"padding must be >= 0, got {padding=}")
        if len(mean) != len(std):
            raise ValueError(f"mean and std differ in length: {len(mean)} vs {len(std)}")
        self.mean, self.std, self.padding, self.hflip = mean, std, padding, hflip
        # The layout the model trains in (core/precision.py): batches leave here in it, with fresh
        # strides (tests/core/test_precision_matrix.py runs every layout through oneDNN).
        self.memory_format = memory_format

    def __repr__(self) -> str:
        return f"BatchAugment(padding={self.padding}, hflip={self.hflip})"

    def train(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        """(B, C, H, W) uint8 -> augmented, normalised float (B, C, H, W)."""
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
