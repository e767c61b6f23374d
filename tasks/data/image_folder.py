"""Any ImageFolder tree: ``root/train/<class>/*.jpg`` and ``root/test/<class>/*.jpg`` (or ``root/val``)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch.utils.data import Subset

from tasks.data.base import ImageClassificationData, split_indices, subset_indices
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA

IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


def split_dir(root: str | None, *names: str) -> Path:
    """The first of ``root/<name>`` that is a folder; a clear error for a missing ``root`` or split."""
    if not root:
        raise ConfigError("data.root is required for image_folder: a folder with train/ and test/ (or val/)")
    for name in names:
        if (Path(root) / name).is_dir():
            return Path(root) / name
    raise DatasetNotFoundError(
        f"image_folder: {root} has no {' or '.join(names)} folder; expected "
        f"{root}/train/<class>/<image> and {root}/test/<class>/<image>"
    )


class ConvertMode:
    """PIL ``img.convert(mode)`` as a picklable transform (loader workers may be spawned)."""

    def __init__(self, mode: str) -> None:
        self.mode = mode

    def __call__(self, image):
        return image.convert(self.mode)


@DATA.register("image_folder")
class ImageFolderDataModule(ImageClassificationData):
    """Images in class sub-folders, read with torchvision's ``ImageFolder`` and its PIL transforms.

    Training: ``RandomResizedCrop(image_size, scale)`` + horizontal flip; evaluation: resize to
    ``image_size / crop_pct`` and centre crop. The validation split is carved from ``root/train``; the test split
    is ``root/test`` (or ``root/val``). Classes are the sub-folder names, sorted.

    Args:
        num_classes: if given, checked against the number of class folders.
        scale: ``RandomResizedCrop``'s area range.
        crop_pct: evaluation centre-crop fraction.
        mean, std: per-channel normalisation (default ImageNet's).
    """

    def __init__(
        self,
        root: str | None = None,
        num_classes: int | None = None,
        image_size: int = 224,
        in_chans: int = 3,
        scale: tuple[float, float] = (0.08, 1.0),
        crop_pct: float = 0.875,
        mean: tuple[float, ...] = IMAGENET_MEAN,
        std: tuple[float, ...] = IMAGENET_STD,
        **kwargs,
    ) -> None:
        super().__init__(root=root, image_size=image_size, in_chans=in_chans, **kwargs)
        self.native_chans = in_chans
        self.expected_classes = num_classes
        self.scale = tuple(scale)
        self.crop_pct = crop_pct
        self.mean = tuple(mean) if in_chans == 3 else (sum(mean) / len(mean),)
        self.std = tuple(std) if in_chans == 3 else (sum(std) / len(std),)
        self.classes: list[str] = []

    def _split_dir(self, *names: str) -> Path:
        return split_dir(self.root, *names)

    @classmethod
    def infer_property(cls, data_cfg: Mapping[str, Any], key: str) -> Any:
        """``num_classes`` before the DataModule exists (the model is built from it): the number of class folders
        of ``root/train``, after the checks a bad ``data.root`` deserves. None for other keys."""
        if key != "num_classes":
            return None
        train = split_dir(data_cfg.get("root"), "train")
        return sum(1 for entry in train.iterdir() if entry.is_dir())

    def _transform(self, train: bool):
        from torchvision import transforms as T

        size = self.image_size
        mode = "RGB" if self.in_chans == 3 else "L"
        ops = [ConvertMode(mode)]
        if train and self.augment:
            ops += [T.RandomResizedCrop(size, scale=self.scale, antialias=True), T.RandomHorizontalFlip()]
        else:
            ops += [T.Resize(round(size / self.crop_pct), antialias=True), T.CenterCrop(size)]
        return T.Compose([*ops, T.ToTensor(), T.Normalize(self.mean, self.std)])

    def setup(self, stage: str | None = None) -> None:
        from torchvision.datasets import ImageFolder

        if stage in (None, "fit", "validate") and self.train_set is None:
            train_dir = self._split_dir("train")
            train_view = ImageFolder(train_dir, transform=self._transform(train=True))
            eval_view = ImageFolder(train_dir, transform=self._transform(train=False))
            self.classes = train_view.classes
            self.num_classes = len(self.classes)
            if self.expected_classes is not None and self.expected_classes != self.num_classes:
                raise ConfigError(
                    f"data.num_classes={self.expected_classes} but {train_dir} has {self.num_classes} class folders"
                )
            train_idx, val_idx = split_indices(len(train_view), self.val_size, self.split_seed)
            train_idx = subset_indices(train_idx, self.train_subset, self.split_seed)
            self.train_set = Subset(train_view, train_idx.tolist())
            self.val_set = Subset(eval_view, val_idx.tolist())
        if stage in (None, "test", "predict") and self.test_set is None:
            self.test_set = ImageFolder(self._split_dir("test", "val"), transform=self._transform(train=False))
            self.num_classes = self.num_classes or len(self.test_set.classes)

    def normalize(self, images: torch.Tensor) -> torch.Tensor:
        return images.contiguous(memory_format=torch.channels_last)
