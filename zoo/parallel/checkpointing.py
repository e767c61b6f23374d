"""Activation checkpointing of a causal LM's blocks (torchtitan's ``full`` and every-N ``selective`` modes)."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    CheckpointImpl,
    checkpoint_wrapper,
)
from torch.distributed.algorithms._checkpoint.checkpoint_wrapper import (
    apply_activation_checkpointing as _wrap_matching,
)

from zoo.errors import ConfigError

AC_MODES = ("none", "full", "selective")


def apply_activation_checkpointing(model: Any, mode: str = "full", every: int = 2) -> int:
    """Wrap ``model.blocks()`` in non-reentrant checkpoint wrappers, in place: the block's activations are
    recomputed in backward instead of kept. ``full``: every block; ``selective``: every ``every``-th (blocks
    ``every−1, 2·every−1, …``); ``none``: nothing. Gradients are unchanged (the recompute is deterministic).

    Returns:
        the number of blocks wrapped.

    Raises:
        ValueError: an unknown mode, naming ``strategy.activation_checkpointing`` and the valid ones.
    """
    if mode not in AC_MODES:
        raise ConfigError(f"strategy.activation_checkpointing='{mode}' is unknown; valid: {', '.join(AC_MODES)}")
    if mode == "none":
        return 0
    return checkpoint_units(model, model.blocks(), mode, every)


def checkpoint_units(root: nn.Module, units: list[nn.Module], mode: str = "full", every: int = 2) -> int:
    """:func:`apply_activation_checkpointing` for any network: wrap ``units`` (submodules of ``root``), all of them
    (``full``) or every ``every``-th (``selective``), in place; the number wrapped."""
    if mode not in AC_MODES:
        raise ConfigError(f"strategy.activation_checkpointing='{mode}' is unknown; valid: {', '.join(AC_MODES)}")
    if mode == "none":
        return 0
    chosen = {id(b) for i, b in enumerate(units) if mode == "full" or (i + 1) % every == 0}
    _wrap_matching(
        root,
        checkpoint_wrapper_fn=lambda m: checkpoint_wrapper(m, checkpoint_impl=CheckpointImpl.NO_REENTRANT),
        check_fn=lambda m: isinstance(m, nn.Module) and id(m) in chosen,
    )
    return len(chosen)
