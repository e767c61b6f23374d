"""Optimizers (``OPTIMIZER``) and learning-rate schedules (``SCHEDULER``), chosen by name from configs.

Optimizers: ``fn(param_groups, **kwargs) -> torch.optim.Optimizer``. Schedules: ``fn(optimizer, *, total_steps,
steps_per_epoch, **kwargs) -> LRScheduler``, stepped once per optimizer step.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from zoo.registries import OPTIMIZER, SCHEDULER


def param_groups(model: nn.Module, weight_decay: float, *, decay_norm_and_bias: bool = False) -> list[dict[str, Any]]:
    """Split trainable parameters into a decayed group and a no-decay group (biases, norm scales: every ≤1-D tensor).

    With ``decay_norm_and_bias=True`` everything is decayed (the classic ResNet recipe).
    """
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if decay_norm_and_bias or param.ndim > 1 else no_decay).append(param)
    groups = [{"params": decay, "weight_decay": weight_decay}]
    if no_decay:
        groups.append({"params": no_decay, "weight_decay": 0.0})
    return groups


@OPTIMIZER.register("sgd")
def sgd(
    params: Iterable[Any], *, lr: float = 0.1, momentum: float = 0.9, nesterov: bool = True, **kwargs: Any
) -> torch.optim.Optimizer:
    """SGD with (Nesterov) momentum; ``weight_decay`` comes from the parameter groups."""
    return torch.optim.SGD(params, lr=lr, momentum=momentum, nesterov=nesterov and momentum > 0, **kwargs)


@OPTIMIZER.register("adamw")
def adamw(
    params: Iterable[Any], *, lr: float = 1e-3, betas: Sequence[float] = (0.9, 0.999), eps: float = 1e-8, **kwargs: Any
) -> torch.optim.Optimizer:
    """AdamW (decoupled weight decay); ``weight_decay`` comes from the parameter groups."""
    return torch.optim.AdamW(params, lr=lr, betas=tuple(betas), eps=eps, **kwargs)


def _warmup_steps(warmup: float, steps_per_epoch: float) -> int:
    return max(0, round(warmup * steps_per_epoch))


@SCHEDULER.register("warmup_cosine", aliases=("cosine",))
def warmup_cosine(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float,
    warmup_epochs: float = 0.0,
    warmup_start: float = 0.0,
    min_lr_ratio: float = 0.0,
) -> LRScheduler:
    """Linear warmup from ``warmup_start · lr`` to ``lr`` over ``warmup_epochs``, then half a cosine to
    ``min_lr_ratio · lr`` at ``total_steps``:  ``lr_t = lr · (m + (1 − m)·½(1 + cos(π·p)))``, ``p`` the fraction of
    the post-warmup steps done."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch)

    def factor(step: int) -> float:
        if step < warmup:
            return warmup_start + (1.0 - warmup_start) * step / warmup
        progress = min(1.0, (step - warmup) / max(1, total_steps - warmup))
        return min_lr_ratio + (1.0 - min_lr_ratio) * 0.5 * (1.0 + math.cos(math.pi * progress))

    return LambdaLR(optimizer, factor)


@SCHEDULER.register("constant")
def constant(
    optimizer: torch.optim.Optimizer, *, total_steps: int, steps_per_epoch: float, warmup_epochs: float = 0.0
) -> LRScheduler:
    """Constant learning rate after an optional linear warmup from 0."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch)
    return LambdaLR(optimizer, lambda step: min(1.0, (step + 1) / warmup) if warmup else 1.0)


@SCHEDULER.register("multistep")
def multistep(
    optimizer: torch.optim.Optimizer,
    *,
    total_steps: int,
    steps_per_epoch: float,
    milestones: Sequence[float] = (0.3, 0.6, 0.9),
    gamma: float = 0.1,
    warmup_epochs: float = 0.0,
) -> LRScheduler:
    """Step decay: multiply by ``gamma`` at each milestone, given as a fraction of training (the MCA paper's
    ImageNet recipe, epochs 30/60/90 of 100, is ``milestones=[0.3, 0.6, 0.9]``)."""
    warmup = _warmup_steps(warmup_epochs, steps_per_epoch)
    points = sorted(round(m * total_steps) for m in milestones)

    def factor(step: int) -> float:
        ramp = min(1.0, (step + 1) / warmup) if warmup else 1.0
        return ramp * gamma ** sum(step >= p for p in points)

    return LambdaLR(optimizer, factor)
