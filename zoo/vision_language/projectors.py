"""Projectors (``PROJECTOR``): vision features ``[..., C]`` → language-model embeddings ``[..., d]``.

Contract: ``cls(in_dim: int, out_dim: int)``. Both built-ins start from PyTorch's default ``nn.Linear``
initialisation (MiniMax-VL-01's projector is randomly initialised), restored by ``reset_parameters``.
"""

from __future__ import annotations

import torch
from torch import nn

from zoo.registries import PROJECTOR

__all__ = ["LinearProjector", "MLPProjector", "NormedMLPProjector"]


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


class UnitRMSNorm(nn.RMSNorm):
    """``nn.RMSNorm`` whose gain (re)initialises to ``1 / sqrt(d)``: outputs of unit L2 norm."""

    def reset_parameters(self) -> None:
        if self.weight is not None:
            nn.init.constant_(self.weight, self.weight.shape[0] ** -0.5)


@PROJECTOR.register("mlp2x_gelu_rmsnorm")
class NormedMLPProjector(MLPProjector):
    """:class:`MLPProjector` followed by an RMSNorm whose gain starts at ``1 / sqrt(d)``: every image token enters the
    language model at unit norm, the scale of a text embedding, instead of the unbounded scale a randomly
    initialised MLP drifts to (a from-scratch LM's embeddings are ~0.2–0.7 in norm; the plain MLP's image tokens
    reached ~13 in the CPU preset's runs, docs/results.md)."""

    def __init__(self, in_dim: int, out_dim: int) -> None:
        super().__init__(in_dim, out_dim)
        self.norm = UnitRMSNorm(out_dim, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``[..., C] → [..., d]``, each output row of RMS ``gain``."""
        return self.norm(super().forward(x))
