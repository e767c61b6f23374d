"""Image classification with any registered backbone and channel attention (``task=vision``)."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torchmetrics import MaxMetric, MetricCollection
from torchmetrics.classification import MulticlassAccuracy

from tasks.base import BaseTask
from zoo.errors import ConfigError
from zoo.optim import OptimSettings
from zoo.registries import BACKBONE, TASK


@TASK.register("vision")
class VisionTask(BaseTask):
    """Classification: ``logits = backbone(images)``, cross-entropy, top-1 / top-5 accuracy.

    Every argument is a primitive, so Hydra (``model.ca=mca``), LightningCLI (``--model.ca mca``) and
    ``VisionTask.load_from_checkpoint(path)`` construct it alike.

    Args:
        backbone: ``BACKBONE`` name (``resnet20``, ``resnet56``, ``resnet50``, …).
        ca: ``CHANNEL_ATTENTION`` name (``none``, ``se``, ``eca``, ``mca_e``, ``mca_s``, ``mca``).
        num_classes: classifier outputs; checked against the datamodule.
        in_chans: input channels; checked against the datamodule.
        backbone_kwargs: further backbone arguments (``widths``, ``shortcut``, ``drop_rate``, …).
        ca_kwargs: channel-attention arguments (``kernel_size``, ``moments``, …), over the name's presets.
        label_smoothing: cross-entropy label smoothing ε.
        channels_last: run convolutions in NHWC memory format (faster on CPUs and tensor cores).
        compile: ``torch.compile`` in place when the model is configured, true or ``torch.compile``'s keyword
            arguments: the whole network, or under ``strategy=fsdp2`` each of the backbone's blocks
            (:meth:`shard_units`; after activation checkpointing, before FSDP2; :mod:`zoo.parallel.compile`).
        optim: the optimizer settings over :attr:`optim_defaults` (SGD 0.1, weight decay 5e-4, warmup + cosine),
            see :class:`~zoo.optim.OptimSettings`.

    Logged: ``train/loss``, ``train/acc``, ``val/loss``, ``val/acc``, ``val/acc_top5``, ``val/acc_best``,
    ``test/loss``, ``test/acc``, ``test/acc_top5``.
    """

    optim_defaults: ClassVar[OptimSettings] = {
        "optimizer": "sgd",
        "lr": 0.1,
        "weight_decay": 5e-4,
        "optimizer_kwargs": {},
        "scheduler": "warmup_cosine",
    }

    def __init__(
        self,
        backbone: str = "resnet20",
        ca: str = "none",
        num_classes: int = 10,
        in_chans: int = 1,
        backbone_kwargs: dict[str, Any] | None = None,
        ca_kwargs: dict[str, Any] | None = None,
        label_smoothing: float = 0.0,
        channels_last: bool = True,
        compile: bool | dict[str, Any] = False,
        optim: OptimSettings | None = None,
    ) -> None:
        super().__init__(optim=optim)
        self.save_hyperparameters()
        self.net = BACKBONE.build(
            backbone,
            num_classes=num_classes,
            in_chans=in_chans,
            ca=ca,
            ca_kwargs=dict(ca_kwargs or {}),
            **dict(backbone_kwargs or {}),
        )
        if channels_last:
            self.net = self.net.to(memory_format=torch.channels_last)
        self.label_smoothing = label_smoothing
        metrics = MetricCollection(
            {
                "acc": MulticlassAccuracy(num_classes, top_k=1),
                "acc_top5": MulticlassAccuracy(num_classes, top_k=min(5, num_classes)),
            }
        )
        self.train_metrics = metrics.clone(prefix="train/")
        self.val_metrics = metrics.clone(prefix="val/")
        self.test_metrics = metrics.clone(prefix="test/")
        self.val_acc_best = MaxMetric()
        self.val_acc_best.persistent(True)  # kept in checkpoints, so a resumed run knows its best

    def shard_units(self) -> tuple[torch.nn.Module, list[torch.nn.Module]]:
        """``strategy=fsdp2``: the backbone's blocks (the children of its ``nn.Sequential`` stages: a ResNet's
        residual blocks, a ViT's transformer blocks) are the FSDP2 units, the rest of the network (stem, head) the
        root's."""
        stages = [m for m in self.net.children() if isinstance(m, torch.nn.Sequential)]
        return self.net, [block for stage in stages for block in stage.children()]

    def compile_blocks(self) -> bool | dict[str, Any]:
        return self.hparams.compile

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` → logits ``[B, num_classes]``."""
        return self.net(images)

    def setup(self, stage: str) -> None:
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        for key in ("num_classes", "in_chans"):
            have = getattr(datamodule, key, None)
            want = self.hparams[key]
            if have and have != want:
                raise ConfigError(
                    f"model.{key}={want} does not match the data ({type(datamodule).__name__} gives {have}); "
                    f"set model.{key}={have}"
                )

    def _shared_step(self, batch: tuple[torch.Tensor, torch.Tensor], metrics: MetricCollection, stage: str):
        images, labels = batch
        logits = self(images)
        loss = F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)
        metrics.update(logits, labels)
        on_step = stage == "train"
        self.log(f"{stage}/loss", loss, on_step=on_step, on_epoch=True, prog_bar=True, batch_size=labels.shape[0])
        self.log_dict(metrics, on_step=False, on_epoch=True, prog_bar=stage != "train")
        return loss

    def training_step(self, batch, batch_idx: int) -> torch.Tensor:
        return self._shared_step(batch, self.train_metrics, "train")

    def validation_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, self.val_metrics, "val")

    def test_step(self, batch, batch_idx: int) -> None:
        self._shared_step(batch, self.test_metrics, "test")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_acc_best.update(self.val_metrics["acc"].compute())
        self.log("val/acc_best", self.val_acc_best.compute(), prog_bar=True, sync_dist=True)
