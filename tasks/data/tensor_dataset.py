"""In-memory image datasets that are fetched, augmented and collated a whole batch at a time.

Images stay ``uint8`` ``[N, C, H, W]`` in memory; ``DataLoader`` calls :meth:`TensorImageDataset.__getitems__`
with a batch of indices, which returns ``(images [B, C, H, W] uint8, labels [B] int64)`` with the training
augmentation applied. The augmentation's random numbers come from a generator seeded by the run's seed and the
batch's indices, so a run resumed from a checkpoint sees exactly the batches of an uninterrupted run.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch.utils.data import Dataset

_MIX = 0x9E3779B97F4A7C15  # 2^64 / golden ratio, for hashing integers into a seed


@dataclass(frozen=True)
class CropFlip:
    """Random crop after zero padding by ``padding`` pixels, and horizontal flip with probability ``flip``."""

    padding: int = 4
    flip: float = 0.5

    def __call__(self, images: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        """``[B, C, H, W]`` → ``[B, C, H, W]`` (any dtype), one crop offset and flip draw per image."""
        batch, _, height, width = images.shape
        if self.padding:
            p = self.padding
            padded = torch.nn.functional.pad(images, (p, p, p, p))
            device = images.device
            dy = torch.randint(0, 2 * p + 1, (batch,), generator=generator, device=device)
            dx = torch.randint(0, 2 * p + 1, (batch,), generator=generator, device=device)
            rows = (dy[:, None] + torch.arange(height, device=device))[:, None, :, None]  # [B, 1, H, 1]
            cols = (dx[:, None] + torch.arange(width, device=device))[:, None, None, :]  # [B, 1, 1, W]
            images = padded.gather(2, rows.expand(-1, padded.shape[1], -1, padded.shape[3]))
            images = images.gather(3, cols.expand(-1, images.shape[1], height, -1))
        if self.flip > 0:
            flip = torch.rand(batch, generator=generator, device=images.device) < self.flip
            images = torch.where(flip[:, None, None, None], images.flip(3), images)
        return images


def collate_batch(batch):
    """``collate_fn`` for datasets whose ``__getitems__`` already returns a collated batch."""
    return batch


class TensorImageDataset(Dataset):
    """Labelled images held in memory.

    Args:
        images: ``[N, C, H, W]`` uint8, on any device (batches are fetched and augmented there).
        labels: ``[N]`` int64.
        augment: applied to every fetched batch, or None.
        seed: seeds the augmentation together with the batch's indices.
    """

    def __init__(self, images: torch.Tensor, labels: torch.Tensor, augment: CropFlip | None = None, seed: int = 0):
        if images.ndim != 4 or images.shape[0] != labels.shape[0]:
            raise ValueError(
                f"images [N, C, H, W] and labels [N] expected, got {tuple(images.shape)}, {tuple(labels.shape)}"
            )
        self.images = images
        self.labels = labels.long()
        self.augment = augment
        self.seed = seed

    def __len__(self) -> int:
        return self.images.shape[0]

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        images, labels = self.__getitems__([index])
        return images[0], labels[0]

    def __getitems__(self, indices: Sequence[int]) -> tuple[torch.Tensor, torch.Tensor]:
        index = torch.as_tensor(indices, dtype=torch.long)
        device_index = index.to(self.images.device)
        images, labels = self.images[device_index], self.labels[device_index]
        if self.augment is not None:
            key = (self.seed * _MIX + int(index[0]) * 1_000_003 + int(index[-1]) * 7919 + len(index)) % (2**63)
            images = self.augment(images, torch.Generator(device=self.images.device).manual_seed(key))
        return images, labels
