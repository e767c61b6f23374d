"""A third-party package that adds a channel attention to zoo through the ``zoo.plugins`` entry point."""

import torch
from torch import nn

from zoo.registries import CHANNEL_ATTENTION


@CHANNEL_ATTENTION.register("my_ca")
class MaxPoolGate(nn.Module):
    """Channel gate from global max pooling: ``y = x · σ(w · max_{HW} x + b)`` with per-channel w, b."""

    def __init__(self, channels: int, *, device=None, dtype=None):
        super().__init__()
        self.weight = nn.Parameter(torch.ones(channels, device=device, dtype=dtype))
        self.bias = nn.Parameter(torch.zeros(channels, device=device, dtype=dtype))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        pooled = x.amax((2, 3))
        return x * torch.sigmoid(pooled * self.weight + self.bias)[..., None, None]
