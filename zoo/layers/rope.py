"""Rotary position embedding (NeoX "rotate half") on a fraction of each head's dimensions."""

from __future__ import annotations

import torch
from torch import nn


class RotaryEmbedding(nn.Module):
    """cos/sin tables for the first ``rotary_dim`` dimensions of a head; the rest pass through unrotated.

    ``inv_freq_i = θ^{−2i / rotary_dim}``, i = 0 … rotary_dim/2 − 1 (MiniMax: rotary_dim = head_dim / 2, θ = 1e7).

    Args:
        head_dim: dimensions per head.
        rotary_dim: how many of them rotate (even).
        base: θ.
    """

    def __init__(self, head_dim: int, rotary_dim: int, base: float = 10_000.0, *, device=None) -> None:
        super().__init__()
        if rotary_dim % 2 or not 0 <= rotary_dim <= head_dim:
            raise ValueError(f"rotary_dim must be even and within [0, head_dim={head_dim}], got {rotary_dim}")
        self.head_dim = head_dim
        self.rotary_dim = rotary_dim
        self.base = base
        self.register_buffer("inv_freq", self._inv_freq(device), persistent=False)

    def _inv_freq(self, device=None) -> torch.Tensor:
        exponents = torch.arange(0, self.rotary_dim, 2, device=device, dtype=torch.float32) / max(self.rotary_dim, 1)
        return self.base ** (-exponents)

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Recompute the ``inv_freq`` buffer in place (after ``to_empty`` from the meta device)."""
        self.inv_freq.copy_(self._inv_freq(self.inv_freq.device))

    def extra_repr(self) -> str:
        return f"head_dim={self.head_dim}, rotary_dim={self.rotary_dim}, base={self.base:g}"

    def forward(self, positions: torch.Tensor, dtype: torch.dtype = torch.float32) -> tuple[torch.Tensor, torch.Tensor]:
        """``positions`` ``[T]`` (any int/float) → ``(cos, sin)``, each ``[T, rotary_dim]`` in ``dtype`` (fp32 or
        fp64; the angles are computed in that precision)."""
        freqs = positions.to(dtype)[:, None] * self.inv_freq.to(dtype)[None, :]
        angles = torch.cat([freqs, freqs], dim=-1)
        return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate the first ``cos.shape[-1]`` dims of ``x`` ``[B, T, H, Dh]`` (fp32 math), the rest unchanged."""
    rot = cos.shape[-1]
    if rot == 0:
        return x
    head, tail = x[..., :rot].to(torch.promote_types(x.dtype, torch.float32)), x[..., rot:]
    half = rot // 2
    rotated = torch.cat([-head[..., half:], head[..., :half]], dim=-1)
    cos, sin = cos[None, :, None, :], sin[None, :, None, :]
    return torch.cat([(head * cos + rotated * sin).to(x.dtype), tail], dim=-1)
