"""The ``none`` channel attention: returns its input."""

from __future__ import annotations

import torch
from torch import nn

from zoo.registries import CHANNEL_ATTENTION


@CHANNEL_ATTENTION.register("none", aliases=("identity",))
class NoChannelAttention(nn.Module):
    """Identity with the channel-attention constructor signature, so ``model.ca=none`` needs no special case."""

    def __init__(self, channels: int | None = None, *, device=None, dtype=None, **kwargs) -> None:
        super().__init__()
        if kwargs:
            raise TypeError(f"channel attention 'none' takes no options, got {sorted(kwargs)}")

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x
