"""The LightningDataModule shared by the image-classification datasets."""

from __future__ import annotations

import abc
from collections.abc import Sequence
from typing import Any

import lightning as L
import torch
import torch.nn.functional as F
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tasks.data.tensor_dataset import CropFlip, TensorImageDataset, collate_batch
from zoo.errors import ConfigError


def split_indices(n: int, val_size: int | float, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """A seeded random split of ``range(n)`` into (train, validation); ``val_size`` is a count or a fraction."""
    n_val = round(val_size * n) if isinstance(val_size, float) and val_size < 1 else int(val_size)
    if not 0 <= n_val < n:
        raise ConfigError(f"data.val_size={val_size} must leave training data: the training split has {n} images")
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[n_val:].sort().values, order[:n_val].sort().values


def subset_indices(indices: torch.Tensor, subset: int | float | None, seed: int) -> torch.Tensor:
    """A seeded random subset of ``indices`` (``data.train_subset``: a count, or a fraction ≤ 1), sorted; all of
    them for None."""
    if subset is None:
        return indices
    n = len(indices)
    fraction = isinstance(subset, float) and subset <= 1
    count = round(subset * n) if fraction else int(subset)
    if not 0 < count <= n or (not fraction and count != subset):
        raise ConfigError(
            f"data.train_subset={subset} must select between 1 image and the {n} of the training split "
            f"(a count, or a fraction in (0, 1])"
        )
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed + 1))
    return indices[order[:count]].sort().values


class ImageClassificationData(L.LightningDataModule):
    """Train / validation / test loaders for labelled images.

    The validation split is carved from the training set by ``split_seed`` (fixed across runs, so every run sees
    the same split); the test split is the dataset's own. Training batches are shuffled per epoch by
    ``seed + epoch`` (a ``DistributedSampler``, which also shards across processes), so a resumed run continues
    with the same batches as an uninterrupted one.

    Batches leave the loader as ``uint8`` and are converted on the device by :meth:`on_after_batch_transfer`:
    scaled to [0, 1], normalised with the dataset's mean and std, converted to ``in_chans`` channels and resized to
    ``image_size`` — cheap to transfer, and the same for every loader.

    Subclasses set ``num_classes``, ``native_chans``, ``mean``, ``std`` and fill ``train_set``, ``val_set`` and
    ``test_set`` in :meth:`setup`.

    Args:
        root: where the files are; each subclass documents its default.
        batch_size: training batch size per process.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: loader worker processes.
        val_size: images held out of the training split for validation (count, or fraction < 1).
        train_subset: train on this many of the remaining images (count, or fraction ≤ 1), a random subset fixed
            by ``split_seed``; null: all. For a quick run (``data.train_subset=2000``); validation and test stay
            whole.
        split_seed: seed of the train/validation split.
        seed: seed of the per-epoch shuffle and of the augmentation.
        augment: random crop (``crop_padding`` px of zero padding) and horizontal flip for training.
        in_chans: channels the model expects (1 → 3 replicates grey; 3 → 1 takes luminance); default native.
        image_size: resize to this square size (default: native size).
        device: keep in-memory datasets on this device (``"cuda"``): batches are then indexed and augmented there,
            with no loader workers and no host-to-device copies (for many small runs sharing one GPU).
    """

    num_classes: int = 0
    native_chans: int = 3
    mean: tuple[float, ...] = (0.5,)
    std: tuple[float, ...] = (0.5,)
    crop_padding: int = 4

    def __init__(
        self,
        root: str | None = None,
        batch_size: int = 128,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        val_size: int | float = 5000,
        train_subset: int | float | None = None,
        split_seed: int = 0,
        seed: int = 0,
        augment: bool = True,
        in_chans: int | None = None,
        image_size: int | None = None,
        device: str | None = None,
    ) -> None:
        super().__init__()
        if in_chans not in (None, 1, 3):
            raise ConfigError(
                f"data.in_chans must be 1 or 3 (or null for the native {self.native_chans}), got {in_chans}"
            )
        in_chans = in_chans or self.native_chans  # saved resolved, like the model's own in_chans
        self.save_hyperparameters()
        self.root = root
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.val_size = val_size
        self.train_subset = train_subset
        self.split_seed = split_seed
        self.seed = seed
        self.augment = augment
        self.in_chans = in_chans
        self.image_size = image_size
        self.device = device
        if device is not None and num_workers:
            raise ConfigError(f"data.device={device} keeps the data on the device: set data.num_workers=0")
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.test_set: Dataset | None = None

    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = DistributedSampler(self.train_set, num_replicas=world, rank=rank, shuffle=True, seed=self.seed)
        return self._loader(self.train_set, self.batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self._loader(self.test_set, self.eval_batch_size)

    def _loader(self, dataset: Dataset | None, batch_size: int, **kwargs: Any) -> DataLoader:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not prepared this split")
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_batch if isinstance(dataset, TensorImageDataset) else None,
            pin_memory=torch.cuda.is_available() and self.device is None,
            **kwargs,
        )

    def on_after_batch_transfer(self, batch: Sequence[torch.Tensor], dataloader_idx: int) -> Any:
        images, labels = batch
        return self.normalize(images), labels

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        """uint8 ``[B, C, H, W]`` → float ``[B, in_chans, S, S]``, normalised; float input passes through."""
        if images.dtype != torch.uint8:
            return images
        x = images.float().div_(255)
        mean = torch.tensor(self.mean, device=x.device).view(1, -1, 1, 1)
        std = torch.tensor(self.std, device=x.device).view(1, -1, 1, 1)
        x = (x - mean) / std
        if x.shape[1] != self.in_chans:
            if self.in_chans == 3:
                x = x.expand(-1, 3, -1, -1)
            else:
                x = (x * torch.tensor([0.299, 0.587, 0.114], device=x.device).view(1, 3, 1, 1)).sum(1, keepdim=True)
        if self.image_size and tuple(x.shape[-2:]) != (self.image_size, self.image_size):
            x = F.interpolate(x, size=(self.image_size, self.image_size), mode="bilinear", antialias=True)
        return x.contiguous(memory_format=torch.channels_last)


class InMemoryImageData(ImageClassificationData, abc.ABC):
    """Datasets small enough to hold as uint8 tensors (Fashion-MNIST, CIFAR): subclasses implement :meth:`load`."""

    @abc.abstractmethod
    def load(self, train: bool) -> tuple[torch.Tensor, torch.Tensor]:
        """``(images [N, C, H, W] uint8, labels [N] int64)`` of the train or test split."""

    # -------------------------------------------------------------- Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if stage in (None, "fit", "validate") and self.train_set is None:
            images, labels = self._to_device(*self.load(train=True))
            train_idx, val_idx = split_indices(len(labels), self.val_size, self.split_seed)
            train_idx = subset_indices(train_idx, self.train_subset, self.split_seed)
            augment = CropFlip(self.crop_padding, 0.5) if self.augment else None
            self.train_set = TensorImageDataset(images[train_idx], labels[train_idx], augment, self.seed)
            self.val_set = TensorImageDataset(images[val_idx], labels[val_idx])
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = TensorImageDataset(*self._to_device(*self.load(train=False)))

    def _to_device(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.device is None:
            return images, labels
        return images.to(self.device), labels.to(self.device)
