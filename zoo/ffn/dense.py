"""The dense SwiGLU feed-forward block (``FFN`` names ``dense`` and ``swiglu``)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from zoo.registries import FFN


@FFN.register("dense", aliases=("swiglu",))
class SwiGLU(nn.Module):
    """``y = w2( SiLU(w1·x) ⊙ w3·x )`` (Shazeer 2020), the expert FFN of MiniMax-01 (minimax.md §3).

    ``w1`` is the gate (``dim → hidden_dim``), ``w3`` the up projection (``dim → hidden_dim``) and ``w2`` the down
    projection (``hidden_dim → dim``), all bias-free ``nn.Linear`` layers named as in MiniMax's and Llama's
    checkpoints. The weights keep ``nn.Linear``'s default initialisation; the model re-initialises them.

    Args:
        dim: model width D.
        hidden_dim: inner width H.

    Shapes: ``x`` ``[..., D]`` → ``[..., D]``, same dtype (under autocast, autocast's dtype).
    """

    def __init__(self, dim: int, hidden_dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.w1 = nn.Linear(dim, hidden_dim, bias=False, **factory)
        self.w3 = nn.Linear(dim, hidden_dim, bias=False, **factory)
        self.w2 = nn.Linear(hidden_dim, dim, bias=False, **factory)

    def extra_repr(self) -> str:
        return f"dim={self.dim}, hidden_dim={self.hidden_dim}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w2(F.silu(self.w1(x)) * self.w3(x))
