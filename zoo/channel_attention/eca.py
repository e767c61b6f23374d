"""Efficient Channel Attention (Wang et al., CVPR 2020), computing exactly what timm's ``EcaModule`` computes."""

from __future__ import annotations

import math

import torch
from torch import nn

from zoo.registries import CHANNEL_ATTENTION


def eca_kernel_size(channels: int, gamma: float = 2, beta: float = 1) -> int:
    """ECA's adaptive kernel size ``ψ(C) = |log₂(C)/γ + β/γ|_odd`` with timm's floor of 3.

    timm computes ``t = int(|log₂ C + β| / γ)`` and takes ``t`` if odd else ``t + 1``, at least 3:
    C ≤ 127 → 3, 128…2047 → 5, 2048…8191 → 7.
    """
    t = int(abs(math.log(channels, 2) + beta) / gamma)
    return max(t if t % 2 else t + 1, 3)


@CHANNEL_ATTENTION.register("eca", aliases=("efficient_channel_attention",))
class EfficientChannelAttention(nn.Module):
    """ECA block: ``y = x · σ(Conv1d_k(GAP(x)))``, a k-tap convolution across channels without bias (ECA Eq. 5).

    Args:
        channels: C; when given, the kernel size follows :func:`eca_kernel_size` (timm's behaviour).
        kernel_size: used only when ``channels`` is None.
        gamma, beta: the adaptive rule's constants.

    Shapes: ``x`` ``[B, C, H, W]`` → ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int | None = None,
        *,
        kernel_size: int = 3,
        gamma: float = 2,
        beta: float = 1,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if channels is not None:
            kernel_size = eca_kernel_size(channels, gamma, beta)
        if kernel_size % 2 != 1:
            raise ValueError(f"ECA kernel_size must be odd, got {kernel_size}")
        self.conv = nn.Conv1d(1, 1, kernel_size, padding=(kernel_size - 1) // 2, bias=False, device=device, dtype=dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        batch = x.shape[0]
        pooled = x.mean((2, 3)).view(batch, 1, -1)  # [B, 1, C]
        gate = self.conv(pooled).sigmoid().view(batch, -1, 1, 1)
        return x * gate
