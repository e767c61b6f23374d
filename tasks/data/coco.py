"""Object detection / instance segmentation DataModules for COCO JSON + image folders.

Batches follow torchvision's detection convention::

    images:  list[FloatTensor [3, H, W]] in 0..1 (sizes may differ)
    targets: list[dict(boxes=FloatTensor [N, 4] xyxy absolute pixels,
                       labels=Int64Tensor [N] in 1..num_classes (0 = background),
                       masks=UInt8Tensor [N, H, W] (with_masks only),
                       image_id=int (the COCO image id))]

Labels are contiguous: the COCO category ids, sorted, map to 1..num_classes (``label_to_category_id`` maps back,
e.g. to write detections as COCO results). Crowd annotations (``iscrowd=1``) and empty boxes are skipped.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import lightning as L
import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tasks.data import copy_paste
from tasks.data.copy_paste import polygons_decode, rle_decode
from zoo.errors import ConfigError, DatasetNotFoundError
from zoo.registries import DATA

log = logging.getLogger(__name__)

Target = dict[str, Any]


def decode_segmentation(segmentation: Any, height: int, width: int) -> np.ndarray:
    """A bool ``[H, W]`` mask from a COCO segmentation: polygons, uncompressed or compressed RLE."""
    if isinstance(segmentation, list):
        return polygons_decode(segmentation, height, width)
    if isinstance(segmentation, dict) and "counts" in segmentation:
        return rle_decode(segmentation)
    raise ValueError(f"unknown COCO segmentation {type(segmentation).__name__}")


class COCODetection(Dataset):
    """Images and targets of one COCO annotation file; items are ``(image [3, H, W] float, target dict)``.

    An index may be ``(i, flip)`` (from :class:`FlipSampler`) to flip image, boxes and masks horizontally.

    Args:
        annotations: path of the COCO JSON.
        images: folder that the images' ``file_name`` are relative to.
        with_masks: decode instance masks into ``target["masks"]``.
        max_size: downscale images whose longer side exceeds this (boxes and masks follow).
    """

    def __init__(
        self, annotations: str | Path, images: str | Path, with_masks: bool = True, max_size: int | None = None
    ):
        with open(annotations, encoding="utf-8") as handle:
            coco = json.load(handle)
        self.images_dir = Path(images)
        self.with_masks = with_masks
        self.max_size = max_size
        self.categories = sorted(coco.get("categories", []), key=lambda c: c["id"])
        self.category_to_label = {c["id"]: i + 1 for i, c in enumerate(self.categories)}
        self.images = sorted(coco["images"], key=lambda im: im["id"])
        self.annotations: dict[int, list[dict]] = {im["id"]: [] for im in self.images}
        for ann in coco.get("annotations", []):
            if ann.get("iscrowd", 0) or ann["bbox"][2] <= 0 or ann["bbox"][3] <= 0:
                continue
            if ann["category_id"] not in self.category_to_label:
                raise ValueError(f"{annotations}: annotation {ann['id']} has unknown category {ann['category_id']}")
            self.annotations[ann["image_id"]].append(ann)

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, index: int | tuple[int, bool]) -> tuple[torch.Tensor, Target]:
        index, flip = index if isinstance(index, tuple) else (index, False)
        info = self.images[index]
        with Image.open(self.images_dir / info["file_name"]) as pil:
            image = torch.from_numpy(np.asarray(pil.convert("RGB")).copy()).permute(2, 0, 1)  # [3, H, W] uint8
        height, width = image.shape[-2:]
        anns = self.annotations[info["id"]]
        boxes = torch.tensor([a["bbox"] for a in anns], dtype=torch.float32).reshape(-1, 4)
        boxes[:, 2:] += boxes[:, :2]  # xywh → xyxy
        target: Target = {
            "boxes": boxes,
            "labels": torch.tensor([self.category_to_label[a["category_id"]] for a in anns], dtype=torch.int64),
            "image_id": int(info["id"]),
        }
        if self.with_masks:
            masks = [decode_segmentation(a["segmentation"], height, width) for a in anns]
            target["masks"] = (
                torch.from_numpy(np.stack(masks)).to(torch.uint8)
                if masks
                else torch.zeros((0, height, width), dtype=torch.uint8)
            )
        image = image.float().div_(255)
        if self.max_size and max(height, width) > self.max_size:
            scale = self.max_size / max(height, width)
            size = (max(1, round(height * scale)), max(1, round(width * scale)))
            image = F.interpolate(image[None], size=size, mode="bilinear", antialias=True)[0].clamp_(0, 1)
            target["boxes"] = target["boxes"] * torch.tensor([size[1] / width, size[0] / height] * 2)
            if self.with_masks:
                target["masks"] = F.interpolate(target["masks"][None].float(), size=size, mode="nearest")[0].to(
                    torch.uint8
                )
        if flip:
            image, target = hflip(image, target)
        return image, target


def hflip(image: torch.Tensor, target: Target) -> tuple[torch.Tensor, Target]:
    """Flip ``image [3, H, W]``, its xyxy ``boxes`` and ``masks [N, H, W]`` left–right."""
    width = image.shape[-1]
    target = dict(target)
    boxes = target["boxes"].clone()
    boxes[:, [0, 2]] = width - target["boxes"][:, [2, 0]]
    target["boxes"] = boxes
    if "masks" in target:
        target["masks"] = target["masks"].flip(-1)
    return image.flip(-1), target


class FlipSampler(DistributedSampler):
    """A :class:`DistributedSampler` that yields ``(index, flip)``: flips drawn with probability 0.5 from
    ``seed + epoch`` (Lightning calls ``set_epoch``), so augmentation is reproducible and resumable."""

    def __init__(self, dataset: Dataset, *, flip: bool, **kwargs: Any) -> None:
        super().__init__(dataset, **kwargs)
        self.flip = flip

    def __iter__(self):
        generator = torch.Generator().manual_seed(self.seed + 1_000_003 * (self.epoch + 1))
        flips = torch.rand(len(self.dataset), generator=generator) < 0.5
        for index in super().__iter__():
            yield (index, bool(flips[index]) and self.flip)


def collate_detection(batch: list[tuple[torch.Tensor, Target]]) -> tuple[list[torch.Tensor], list[Target]]:
    """``[(image, target), ...]`` → ``(images, targets)`` lists (images may differ in size)."""
    return [image for image, _ in batch], [target for _, target in batch]


@DATA.register("coco")
class COCODataModule(L.LightningDataModule):
    """Any COCO JSON + image folder: detection (boxes) and instance segmentation (masks).

    Paths are relative to ``root``. The test loader is the validation loader. ``num_classes`` (the number of
    categories) is read from the validation JSON in :meth:`setup`; when given, it is checked against the JSON
    (configs give it so that ``${zoo.data:num_classes}`` resolves before the data is read).

    Args:
        root: folder of the dataset.
        train_ann / val_ann: COCO JSON files of the splits.
        train_images / val_images: image folders of the splits.
        batch_size: training images per batch and process.
        eval_batch_size: validation/test batch size (default: ``batch_size``).
        num_workers: loader worker processes.
        image_size: downscale images whose longer side exceeds this (null: native size).
        augment: random horizontal flip (with boxes and masks) of training images.
        with_masks: decode instance masks (``targets[i]["masks"]``); off for box-only detection.
        seed: seed of the per-epoch shuffle and flips.
        num_classes: expected number of categories (null: whatever the JSON has).
    """

    def __init__(
        self,
        root: str | None = None,
        train_ann: str = "annotations/instances_train.json",
        val_ann: str = "annotations/instances_val.json",
        train_images: str = "train",
        val_images: str = "val",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        image_size: int | None = None,
        augment: bool = True,
        with_masks: bool = True,
        seed: int = 0,
        num_classes: int | None = None,
    ) -> None:
        super().__init__()
        for key, value in (
            ("batch_size", batch_size),
            ("eval_batch_size", eval_batch_size),
            ("image_size", image_size),
        ):
            if value is not None and (not isinstance(value, int) or value < 1):
                raise ConfigError(f"data.{key} must be a positive integer (or null where optional), got {value!r}")
        if not isinstance(num_workers, int) or num_workers < 0:
            raise ConfigError(f"data.num_workers must be an integer >= 0, got {num_workers!r}")
        if num_classes is not None and (not isinstance(num_classes, int) or num_classes < 1):
            raise ConfigError(f"data.num_classes must be a positive integer or null, got {num_classes!r}")
        if type(self) is COCODataModule:  # a subclass saves its own arguments (exactly the leaf's, as
            self.save_hyperparameters()  # both front ends then agree: LightningCLI records only those)
        self.root = root
        self.train_ann, self.val_ann = train_ann, val_ann
        self.train_images, self.val_images = train_images, val_images
        self.batch_size = batch_size
        self.eval_batch_size = eval_batch_size or batch_size
        self.num_workers = num_workers
        self.image_size = image_size
        self.augment = augment
        self.with_masks = with_masks
        self.seed = seed
        self.num_classes = num_classes
        self.classes: tuple[str, ...] = ()  # category names by label - 1
        self.label_to_category_id: dict[int, int] = {}
        self.train_set: COCODetection | None = None
        self.val_set: COCODetection | None = None

    def directory(self) -> Path:
        if self.root is None:
            raise ConfigError("data.root is required: the folder of the COCO dataset")
        return Path(self.root).expanduser()

    def _path(self, key: str) -> Path:
        path = self.directory() / getattr(self, key)
        if not path.exists():
            raise DatasetNotFoundError(f"data.{key}: {path} does not exist (relative to data.root={self.root})")
        return path

    def setup(self, stage: str | None = None) -> None:
        if self.val_set is None:
            self.val_set = COCODetection(
                self._path("val_ann"), self._path("val_images"), self.with_masks, self.image_size
            )
            self._read_categories(self.val_set, "val_ann")
        if stage in (None, "fit") and self.train_set is None:
            self.train_set = COCODetection(
                self._path("train_ann"), self._path("train_images"), self.with_masks, self.image_size
            )
            self._read_categories(self.train_set, "train_ann")

    def _read_categories(self, dataset: COCODetection, key: str) -> None:
        ids = [c["id"] for c in dataset.categories]
        if self.num_classes is not None and len(ids) != self.num_classes:
            raise ConfigError(
                f"data.num_classes={self.num_classes} but data.{key} ({getattr(self, key)}) has {len(ids)} categories"
            )
        if self.label_to_category_id and list(self.label_to_category_id.values()) != ids:
            raise ConfigError(f"data.{key} ({getattr(self, key)}) has other categories than the other split")
        self.num_classes = len(ids)
        self.classes = tuple(c["name"] for c in dataset.categories)
        self.label_to_category_id = {i + 1: cid for i, cid in enumerate(ids)}

    # -------------------------------------------------------------- loaders
    def train_dataloader(self) -> DataLoader:
        trainer = self.trainer
        world, rank = (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)
        sampler = FlipSampler(
            self._ready(self.train_set), flip=self.augment, num_replicas=world, rank=rank, shuffle=True, seed=self.seed
        )
        return self._loader(self.train_set, self.batch_size, sampler=sampler, drop_last=True)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self._ready(self.val_set), self.eval_batch_size)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def _ready(self, dataset: COCODetection | None) -> COCODetection:
        if dataset is None:
            raise RuntimeError(f"{type(self).__name__}.setup() has not prepared this split")
        return dataset

    def _loader(self, dataset: Dataset, batch_size: int, **kwargs: Any) -> DataLoader:
        return DataLoader(
            dataset,
            batch_size=batch_size,
            num_workers=self.num_workers,
            persistent_workers=self.num_workers > 0,
            collate_fn=collate_detection,
            pin_memory=torch.cuda.is_available(),
            **kwargs,
        )

    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Move ``(images, targets)`` lists: every tensor, also inside the target dicts, goes to ``device``."""

        def move(x: Any) -> Any:
            if isinstance(x, torch.Tensor):
                return x.to(device, non_blocking=True)
            if isinstance(x, dict):
                return {k: move(v) for k, v in x.items()}
            if isinstance(x, (list, tuple)):
                return type(x)(move(v) for v in x)
            return x

        return move(batch)


@DATA.register("copy_paste_coco")
class CopyPasteCOCODataModule(COCODataModule):
    """The generated copy-paste set of :mod:`tasks.data.copy_paste`, generated on the first ``prepare_data()``.

    ``root`` defaults to ``~/.cache/zoo/copy_paste_coco/<hash of the settings>`` (``$ZOO_CACHE`` replaces
    ``~/.cache/zoo``). There are always 16 categories (10 garments, 6 emoji groups). See :class:`COCODataModule`
    for the loader arguments.

    Args:
        train_images_count / val_images_count: images to generate per split.
        image_size: side of the generated square images.
        seed: seed of the generation, the shuffle and the flips.
        image_format: ``jpg`` or ``png``.
    """

    def __init__(
        self,
        root: str | None = None,
        train_images_count: int = 512,
        val_images_count: int = 128,
        image_size: int = 256,
        seed: int = 0,
        image_format: str = "jpg",
        batch_size: int = 4,
        eval_batch_size: int | None = None,
        num_workers: int = 0,
        augment: bool = True,
        with_masks: bool = True,
        num_classes: int | None = len(copy_paste.CATEGORIES),
    ) -> None:
        for key, value in (("train_images_count", train_images_count), ("val_images_count", val_images_count)):
            if not isinstance(value, int) or value < 1:
                raise ConfigError(f"data.{key} must be a positive integer, got {value!r}")
        if not isinstance(image_size, int) or image_size < 32:
            raise ConfigError(f"data.image_size must be an integer >= 32 (the generated side), got {image_size!r}")
        if image_format not in ("jpg", "png"):
            raise ConfigError(f"data.image_format must be one of ('jpg', 'png'), got {image_format!r}")
        self.train_images_count, self.val_images_count = train_images_count, val_images_count
        self.image_format = image_format
        settings = dict(
            version=copy_paste.VERSION, train=train_images_count, val=val_images_count, size=image_size, seed=seed,
            format=image_format, emoji=copy_paste.emoji_available(), garments=copy_paste.garments_available(),
        )  # fmt: skip
        self.settings_hash = hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:12]
        directory = root  # `root` itself stays as given: it is the saved hyperparameter (None: this hash)
        if directory is None:
            cache = Path(os.environ.get("ZOO_CACHE", "~/.cache/zoo")).expanduser()
            directory = str(cache / "copy_paste_coco" / self.settings_hash)
        super().__init__(
            root=directory, batch_size=batch_size, eval_batch_size=eval_batch_size, num_workers=num_workers,
            image_size=image_size, augment=augment, with_masks=with_masks, seed=seed, num_classes=num_classes,
        )  # fmt: skip
        self.save_hyperparameters()

    def prepare_data(self) -> None:
        directory = self.directory()
        missing = [s for s in copy_paste.SPLITS if not (directory / "annotations" / f"instances_{s}.json").is_file()]
        if not missing:
            return
        log.info("generating the copy-paste COCO set in %s", directory)
        counts = {"train": self.train_images_count, "val": self.val_images_count}
        for split in missing:
            copy_paste.generate_split(
                directory, split, counts[split], size=self.image_size, seed=self.seed, image_format=self.image_format
            )

    def setup(self, stage: str | None = None) -> None:
        if not (self.directory() / self.val_ann).is_file():
            self.prepare_data()  # e.g. used without a Trainer
        super().setup(stage)
