"""Object detection and instance segmentation with torchvision's detectors on the zoo's backbones
(``task=detection``).

Batches follow torchvision's detection convention::

    images:  list[FloatTensor [3, H, W] in 0..1]          (sizes may differ; the model resizes and normalises)
    targets: list[dict(boxes=FloatTensor [N, 4] xyxy absolute pixels,
                       labels=Int64Tensor [N] in 1..num_classes (0 = background),
                       masks=UInt8Tensor [N, H, W],        (needed by mask_rcnn only)
                       image_id=int)]
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics.detection import MeanAveragePrecision

from tasks.base import BaseTask
from zoo.detectors import DETECTION_BACKBONES, NORMS
from zoo.errors import ConfigError
from zoo.extras import require
from zoo.optim import OptimSettings
from zoo.registries import CHANNEL_ATTENTION, DETECTOR, TASK

# MeanAveragePrecision's scalar results that are logged, as ``{stage}/{iou_type}_{key}``
LOGGED = ("map", "map_50", "map_75", "map_small", "map_medium", "map_large", "mar_1", "mar_10", "mar_100")
MASK_DETECTORS = ("mask_rcnn",)


def _check_name(registry: Any, name: str, key: str) -> None:
    if not isinstance(name, str) or name not in registry:
        raise ConfigError(f"model.{key}={name!r} is unknown; valid choices: {', '.join(registry.names(aliases=False))}")


@TASK.register("detection")
class DetectionTask(BaseTask):
    """Detection: ``losses = detector(images, targets)`` (summed) to train, COCO mAP of the predictions to evaluate.

    Every argument is a primitive, so Hydra (``model.detector=mask_rcnn model.ca=mca``), LightningCLI and
    ``DetectionTask.load_from_checkpoint(path)`` construct it alike.

    Args:
        detector: ``DETECTOR`` name (``faster_rcnn``, ``retinanet``, ``mask_rcnn``), see :mod:`zoo.detectors`.
        backbone: timm ResNet (``resnet18``, ``resnet34``, ``resnet50``, ``resnet101``, …) under an FPN.
        ca: ``CHANNEL_ATTENTION`` name (``none``, ``se``, ``eca``, ``mca_e``, ``mca_s``, ``mca``), in every block.
        ca_kwargs: channel-attention arguments over the name's presets.
        num_classes: object categories, without the background; checked against the datamodule.
        min_size, max_size: the detector resizes each image so its short side is ``min_size`` and its long side
            at most ``max_size`` (torchvision's ``GeneralizedRCNNTransform``).
        norm: ``gn`` (GroupNorm, for training from scratch, the default), ``frozen_bn`` (with a pretrained
            backbone) or ``bn``.
        pretrained_backbone: start the body from timm's ImageNet weights (downloads; needs ``norm`` ``frozen_bn``
            or ``bn``). Off by default: everything trains from scratch.
        anchor_sizes: base anchor size per pyramid level (5 levels; default 32, 64, 128, 256, 512).
        detector_kwargs: further arguments of torchvision's constructor (``box_detections_per_img``,
            ``rpn_batch_size_per_image``, ``score_thresh``, …).
        optim: the optimizer settings over :attr:`optim_defaults`, mmdetection's 1× schedule (SGD 0.02, momentum
            0.9, weight decay 1e-4, ×0.1 at 8/12 and 11/12 of training after a quarter-epoch warmup), see
            :class:`~zoo.optim.OptimSettings`. ``lr=0.02`` is for 16 images a batch; scale it linearly.

    Logged: ``train/loss`` and each term (``train/loss_classifier``, ``train/loss_box_reg``, …),
    ``{val,test}/bbox_map``, ``_map_50``, ``_map_75``, ``_map_small``, ``_map_medium``, ``_map_large``,
    ``_mar_1``, ``_mar_10``, ``_mar_100``, and the same with ``segm_`` for ``mask_rcnn`` (-1 where no ground truth
    of that size exists).
    """

    #: mmdetection's 1× schedule: SGD 0.02 (16 images a batch), momentum 0.9, ×0.1 at epochs 8 and 11 of 12, warmup
    optim_defaults: ClassVar[OptimSettings] = {
        "optimizer": "sgd",
        "lr": 0.02,
        "weight_decay": 1e-4,
        "optimizer_kwargs": {"momentum": 0.9},
        "scheduler": "multistep",
        "scheduler_kwargs": {"milestones": [8 / 12, 11 / 12], "gamma": 0.1, "warmup_epochs": 0.25},
    }

    def __init__(
        self,
        detector: str = "faster_rcnn",
        backbone: str = "resnet50",
        ca: str = "none",
        ca_kwargs: dict[str, Any] | None = None,
        num_classes: int = 80,
        min_size: int = 256,
        max_size: int = 256,
        norm: str = "gn",
        pretrained_backbone: bool = False,
        anchor_sizes: list[int] | None = None,
        detector_kwargs: dict[str, Any] | None = None,
        optim: OptimSettings | None = None,
    ) -> None:
        _check_name(DETECTOR, detector, "detector")
        _check_name(CHANNEL_ATTENTION, ca, "ca")
        if backbone not in DETECTION_BACKBONES:
            raise ConfigError(
                f"model.backbone={backbone!r} is not a detection backbone; valid choices: "
                f"{', '.join(DETECTION_BACKBONES)}"
            )
        if norm not in NORMS:
            raise ConfigError(f"model.norm={norm!r} is unknown; valid choices: {', '.join(NORMS)}")
        if not isinstance(num_classes, int) or num_classes < 1:
            raise ConfigError(f"model.num_classes must be a positive int (without background), got {num_classes!r}")
        super().__init__(optim=optim)
        self.save_hyperparameters()
        self.with_masks = DETECTOR.canonical(detector) in MASK_DETECTORS
        self.model: nn.Module = DETECTOR.build(
            detector,
            num_classes=num_classes,
            backbone=backbone,
            ca=ca,
            ca_kwargs=dict(ca_kwargs or {}),
            norm=norm,
            pretrained_backbone=pretrained_backbone,
            min_size=min_size,
            max_size=max_size,
            anchor_sizes=anchor_sizes,
            **dict(detector_kwargs or {}),
        )
        iou_types = ("bbox", "segm") if self.with_masks else ("bbox",)
        require("pycocotools", "detection", needed_for="task=detection (COCO box and mask AP in torchmetrics)")
        self.val_map = nn.ModuleDict({t: MeanAveragePrecision(iou_type=t) for t in iou_types})
        self.test_map = nn.ModuleDict({t: MeanAveragePrecision(iou_type=t) for t in iou_types})

    def forward(self, images: list[torch.Tensor]) -> list[dict[str, torch.Tensor]]:
        """Predictions for ``images`` (list of ``[3, H, W]`` in 0..1): per image ``dict(boxes=[N, 4] xyxy,
        labels=[N], scores=[N])`` plus ``masks=[N, 1, H, W]`` probabilities for ``mask_rcnn``. Eval mode only."""
        return self.model(images)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        have = getattr(datamodule, "num_classes", None)
        want = self.hparams["num_classes"]
        if have and have != want:
            raise ConfigError(
                f"model.num_classes={want} does not match the data ({type(datamodule).__name__} gives {have} "
                f"categories without background); set model.num_classes={have}"
            )

    def _targets(self, targets: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """What the detector trains on (masks only for mask heads: resizing them costs time)."""
        keys = ("boxes", "labels", "masks") if self.with_masks else ("boxes", "labels")
        missing = [k for k in keys if k not in targets[0]] if targets else []
        if missing:
            raise ConfigError(
                f"detector {self.hparams['detector']!r} needs targets with {missing}; the data gives "
                f"{sorted(targets[0])}"
            )
        return [{k: t[k] for k in keys} for t in targets]

    def training_step(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], batch_idx: int) -> torch.Tensor:
        images, targets = batch
        losses = self.model(list(images), self._targets(targets))
        loss = sum(losses.values())
        n = len(images)
        self.log("train/loss", loss, on_step=True, on_epoch=True, prog_bar=True, batch_size=n)
        self.log_dict({f"train/{k}": v.detach() for k, v in losses.items()}, on_step=True, on_epoch=True, batch_size=n)
        return loss

    def _update_map(self, batch: tuple[list[torch.Tensor], list[dict[str, Any]]], metrics: nn.ModuleDict) -> None:
        images, targets = batch
        preds = self.model(list(images))
        for iou_type, metric in metrics.items():
            p, t = [], []
            for pred, target in zip(preds, targets, strict=True):
                p.append({"boxes": pred["boxes"], "scores": pred["scores"], "labels": pred["labels"]})
                t.append({"boxes": target["boxes"], "labels": target["labels"]})
                if iou_type == "segm":
                    p[-1]["masks"] = pred["masks"][:, 0] > 0.5  # [N, 1, H, W] probabilities → bool [N, H, W]
                    t[-1]["masks"] = target["masks"].bool()
            metric.update(p, t)

    def _log_map(self, metrics: nn.ModuleDict, stage: str) -> None:
        for iou_type, metric in metrics.items():
            result = metric.compute()
            self.log_dict({f"{stage}/{iou_type}_{k}": result[k].float() for k in LOGGED if k != "map" and k in result})
            self.log(f"{stage}/{iou_type}_map", result["map"].float(), prog_bar=True)
            metric.reset()

    def validation_step(self, batch, batch_idx: int) -> None:
        self._update_map(batch, self.val_map)

    def test_step(self, batch, batch_idx: int) -> None:
        self._update_map(batch, self.test_map)

    def on_validation_epoch_end(self) -> None:
        self._log_map(self.val_map, "val")

    def on_test_epoch_end(self) -> None:
        self._log_map(self.test_map, "test")
