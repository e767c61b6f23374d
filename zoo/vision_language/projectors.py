"""Projectors (``PROJECTOR``): vision features ``[..., C]`` → language-model embeddings ``[..., d]``.

Contract: ``cls(in_dim: int, out_dim: int)``. Both built-ins start from PyTorch's default ``nn.Linear``
initialisation (MiniMax-VL-01's projector is randomly initialised), restored by ``reset_parameters``.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.registries import PROJECTOR

__all__ = ["LinearProjector", "MLPProjector"]


@PROJECTOR.register("mlp2x_gelu")
class MLPProjector(nn.Module):
    """MiniMax-VL-01's (and LLaVA-1.5's) two-layer MLP: ``Linear(C, d) → GELU → Linear(d, d)``."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, out_dim)
        self.act = nn.GELU()
        self.linear_2 = nn.Linear(out_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C] → [..., d]``."""
        return self.linear_2(self.act(self.linear_1(x)))


@PROJECTOR.register("linear")
class LinearProjector(nn.Module):
    """One ``Linear(C, d)`` (LLaVA-1.0's projector)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_dim, out_dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C] → [..., d]``."""
        return self.linear(x)
