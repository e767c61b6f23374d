"""Optimizers (``OPTIMIZER``) and learning-rate schedules (``SCHEDULER``), chosen by name from configs.

Optimizers: ``fn(param_groups, **kwargs) -> torch.optim.Optimizer``. Schedules: ``fn(optimizer, *, total_steps,
steps_per_epoch, **kwargs) -> LRScheduler``, stepped once per optimizer step.

What a task configures about both is one :class:`OptimSettings` (``model.optim`` in the configs), resolved over the
task's defaults by :func:`resolve_optim` and built by :func:`build_optimizer` / :func:`build_scheduler`.
"""

from __future__ import annotations

import difflib
import math
import typing
from collections.abc import Iterable, Mapping, Sequence
from typing import Any, TypedDict

import torch
from torch import nn
from torch.optim.lr_scheduler import LambdaLR, LRScheduler

from zoo.config import check_kwargs, describe, matches
from zoo.errors import ConfigError
from zoo.registries import OPTIMIZER, SCHEDULER


class OptimSettings(TypedDict, total=False):
    """How a task optimizes its parameters: the same keys in every task (``model.optim.lr=0.05``).

    Keys:
        optimizer: ``OPTIMIZER`` name (``sgd``, ``adamw``).
        lr: peak learning rate.
        weight_decay: L2 / decoupled weight decay of the weight matrices and kernels.
        optimizer_kwargs: further optimizer arguments (``momentum``, ``betas``, …).
        scheduler: ``SCHEDULER`` name (``warmup_cosine``, ``constant``, ``multistep``), stepped every optimizer step.
        scheduler_kwargs: its arguments (``warmup_epochs``, ``min_lr_ratio``, ``milestones``, …).
        decay_norm_and_bias: also decay biases and normalisation scales.
    """

    optimizer: str
    lr: float
    weight_decay: float
    optimizer_kwargs: dict[str, Any]
    scheduler: str
    scheduler_kwargs: dict[str, Any]
    decay_norm_and_bias: bool


#: The keys of :class:`OptimSettings`, in order.
OPTIM_KEYS: tuple[str, ...] = tuple(OptimSettings.__annotations__)


def resolve_optim(given: Mapping[str, Any] | None, defaults: Mapping[str, Any], key: str) -> OptimSettings:
    """``given`` over ``defaults`` (which set every key), checked: names registered, kwargs accepted, types right.

    The defaults' ``optimizer_kwargs`` (``scheduler_kwargs``) belong to the default optimizer (scheduler): naming
    another one starts its kwargs empty, so ``{scheduler: constant}`` over a ``multistep`` default does not inherit
    ``milestones``.

    Args:
        given: the configured settings (any subset of :data:`OPTIM_KEYS`), or None for the defaults.
        defaults: complete settings.
        key: where ``given`` sits in the config (``"model.optim"``), for messages.

    Raises:
        ConfigError: an unknown key, a value of the wrong type, or kwargs the optimizer / scheduler does not take.
        RegistryError: an unregistered optimizer or scheduler name (the message lists the registered ones).
    """
    given = dict(given or {})
    for name in given:
        if name not in OPTIM_KEYS:
            close = difflib.get_close_matches(name, OPTIM_KEYS, n=1, cutoff=0.6)
            hint = f" Did you mean {key}.{close[0]}?" if close else ""
            raise ConfigError(f"{key}.{name} is not an optimizer setting. Valid keys: {', '.join(OPTIM_KEYS)}.{hint}")
    missing = [name for name in OPTIM_KEYS if name not in defaults]
    if missing:
        raise ConfigError(f"the defaults of {key} lack {', '.join(missing)}")
    settings: dict[str, Any] = dict(defaults)
    for choice, kwargs in (("optimizer", "optimizer_kwargs"), ("scheduler", "scheduler_kwargs")):
        if given.get(choice, settings[choice]) != settings[choice]:
            settings[kwargs] = {}
    settings.update(given)
    hints = typing.get_type_hints(OptimSettings)
    for name, value in settings.items():
        if not matches(value, hints[name]):
            raise ConfigError(f"{key}.{name}={value!r} has the wrong type: expected {describe(hints[name])}")
    settings["optimizer_kwargs"] = dict(settings["optimizer_kwargs"] or {})
    settings["scheduler_kwargs"] = dict(settings["scheduler_kwargs"] or {})
    check_kwargs(OPTIMIZER.get(settings["optimizer"]), settings["optimizer_kwargs"], f"{key}.optimizer_kwargs")
    check_kwargs(SCHEDULER.get(settings["scheduler"]), settings["scheduler_kwargs"], f"{key}.scheduler_kwargs")
    return typing.cast(OptimSettings, settings)


def settings_param_groups(module: nn.Module, settings: OptimSettings) -> list[dict[str, Any]]:
    """:func:`param_groups` of ``module`` with the settings' ``weight_decay`` and ``decay_norm_and_bias``."""
    return param_groups(module, settings["weight_decay"], decay_norm_and_bias=settings["decay_norm_and_bias"])


def build_optimizer(
    settings: OptimSettings, module: nn.Module | None = None, groups: Any = None
) -> torch.optim.Optimizer:
    """The settings' optimizer over ``groups`` (parameter groups), or over ``module``'s trainable parameters split
    by :func:`param_groups`."""
    if groups is None:
        if module is None:
            raise ValueError("build_optimizer needs a module or parameter groups")
        groups = settings_param_groups(module, settings)
    return OPTIMIZER.build(settings["optimizer"], groups, lr=settings["lr"], **settings["optimizer_kwargs"])


def build_scheduler(
    settings: OptimSettings, optimizer: torch.optim.Optimizer, *, total_steps: int, steps_per_epoch: float
) -> LRScheduler:
    """The settings' schedule of ``optimizer`` over ``total_steps`` optimizer steps (``*_epochs`` arguments count
    ``steps_per_epoch`` steps)."""
    return SCHEDULER.build(
        settings["scheduler"],
        optimizer,
        total_steps=total_steps,
        steps_per_epoch=steps_per_epoch,
        **settings["scheduler_kwargs"],
    )


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
