"""What every task shares: optimizer and learning-rate schedule built by registry name."""

from __future__ import annotations

import math
from typing import Any

import lightning as L

from zoo.config import check_kwargs
from zoo.errors import ConfigError
from zoo.optim import param_groups
from zoo.registries import OPTIMIZER, SCHEDULER


class BaseTask(L.LightningModule):
    """A LightningModule whose optimizer and schedule are chosen by name.

    Subclasses pass their optimizer arguments up and call ``self.save_hyperparameters()`` themselves, so that the
    saved hyperparameters are exactly the leaf's ``__init__`` arguments (primitives only, which Hydra, LightningCLI
    and ``load_from_checkpoint`` all handle).

    Args:
        optimizer: ``OPTIMIZER`` name (``sgd``, ``adamw``).
        lr: peak learning rate.
        weight_decay: L2 / decoupled weight decay of the weight matrices and kernels.
        optimizer_kwargs: further optimizer arguments (``momentum``, ``betas``, …).
        scheduler: ``SCHEDULER`` name (``warmup_cosine``, ``constant``, ``multistep``), stepped every step.
        scheduler_kwargs: its arguments (``warmup_epochs``, ``min_lr_ratio``, ``milestones``, …).
        decay_norm_and_bias: also decay biases and normalisation scales.
    """

    def __init__(
        self,
        *,
        optimizer: str = "sgd",
        lr: float = 0.1,
        weight_decay: float = 5e-4,
        optimizer_kwargs: dict[str, Any] | None = None,
        scheduler: str = "warmup_cosine",
        scheduler_kwargs: dict[str, Any] | None = None,
        decay_norm_and_bias: bool = False,
    ) -> None:
        super().__init__()
        # fail at construction, not after the data has loaded
        check_kwargs(OPTIMIZER.get(optimizer), dict(optimizer_kwargs or {}), "model.optimizer_kwargs")
        check_kwargs(SCHEDULER.get(scheduler), dict(scheduler_kwargs or {}), "model.scheduler_kwargs")
        self.optim_config = {
            "optimizer": optimizer,
            "lr": lr,
            "weight_decay": weight_decay,
            "optimizer_kwargs": dict(optimizer_kwargs or {}),
            "scheduler": scheduler,
            "scheduler_kwargs": dict(scheduler_kwargs or {}),
            "decay_norm_and_bias": decay_norm_and_bias,
        }

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """What the optimizer updates: every trainable parameter, weight matrices decayed (see
        :func:`zoo.optim.param_groups`)."""
        c = self.optim_config
        return param_groups(self, c["weight_decay"], decay_norm_and_bias=c["decay_norm_and_bias"])

    def optimizer_steps_per_batch(self) -> int:
        """Optimizer steps per training batch (1; RL takes several per rollout), for the schedule's length."""
        return 1

    def configure_optimizers(self) -> dict[str, Any]:
        c = self.optim_config
        groups = self.optimizer_param_groups()
        optimizer = OPTIMIZER.build(c["optimizer"], groups, lr=c["lr"], **c["optimizer_kwargs"])
        total_steps = self.trainer.estimated_stepping_batches * self.optimizer_steps_per_batch()
        if not math.isfinite(total_steps):
            raise ConfigError("set trainer.max_epochs or trainer.max_steps: the learning-rate schedule needs a length")
        epochs = self.trainer.max_epochs if self.trainer.max_epochs and self.trainer.max_epochs > 0 else 1
        steps_per_epoch = max(1.0, total_steps / epochs)
        schedule = SCHEDULER.build(
            c["scheduler"],
            optimizer,
            total_steps=int(total_steps),
            steps_per_epoch=steps_per_epoch,
            **c["scheduler_kwargs"],
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
