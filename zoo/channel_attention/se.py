"""Squeeze-and-Excitation (Hu et al., CVPR 2018), computing exactly what timm's ``SEModule`` computes."""

from __future__ import annotations

import torch
from torch import nn

from zoo.registries import CHANNEL_ATTENTION


def make_divisible(value: float, divisor: int = 8, min_value: int | None = None, round_limit: float = 0.9) -> int:
    """Round ``value`` to the nearest multiple of ``divisor``, at least ``min_value`` (default ``divisor``).

    timm's rule: if rounding lost more than ``1 - round_limit`` of ``value``, add one ``divisor``.
    """
    min_value = min_value or divisor
    rounded = max(min_value, int(value + divisor / 2) // divisor * divisor)
    if rounded < round_limit * value:
        rounded += divisor
    return rounded


@CHANNEL_ATTENTION.register("se", aliases=("squeeze_excite",))
class SqueezeExcite(nn.Module):
    """SE block: ``y = x · σ(W₂ ReLU(W₁ GAP(x) + b₁) + b₂)`` (SE-Net Eq. 2–4).

    Hidden width ``make_divisible(C · rd_ratio, rd_divisor, round_limit=0)`` — timm's rounding, so C = 16…128 → 8,
    256 → 16, 2048 → 128; pass ``rd_divisor=1`` for the paper's plain ``C / 16``. Parameter names (``fc1``,
    ``fc2``) match timm's, so timm SE checkpoints load.

    Args:
        channels: C.
        rd_ratio: reduction ratio 1/r.
        rd_channels: hidden width, overriding ``rd_ratio``.
        rd_divisor: the hidden width is rounded to a multiple of this.
        bias: biases in both 1×1 convolutions.

    Shapes: ``x`` ``[B, C, H, W]`` → ``[B, C, H, W]``.
    """

    def __init__(
        self,
        channels: int,
        *,
        rd_ratio: float = 1.0 / 16,
        rd_channels: int | None = None,
        rd_divisor: int = 8,
        bias: bool = True,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        if not rd_channels:
            rd_channels = make_divisible(channels * rd_ratio, rd_divisor, round_limit=0.0)
        self.fc1 = nn.Conv2d(channels, rd_channels, kernel_size=1, bias=bias, **factory)
        self.act = nn.ReLU(inplace=True)
        self.fc2 = nn.Conv2d(rd_channels, channels, kernel_size=1, bias=bias, **factory)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        squeezed = x.mean((2, 3), keepdim=True)  # [B, C, 1, 1]
        gate = self.fc2(self.act(self.fc1(squeezed)))
        return x * gate.sigmoid()
