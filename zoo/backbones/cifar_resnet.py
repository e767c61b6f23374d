"""CIFAR-style ResNets (He et al., *Deep Residual Learning for Image Recognition*, CVPR 2016, §4.2).

A 3×3 stem convolution, then three stages of n BasicBlocks at widths 16/32/64 (strides 1/2/2), global average
pooling and a linear classifier: 6n + 2 weighted layers (ResNet-20: n = 3, 0.27 M parameters; ResNet-56: n = 9).
The channel attention sits after ``bn2`` of every block, before the residual addition.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.backbones.common import channel_attention_layer
from zoo.registries import BACKBONE


class BasicBlock(nn.Module):
    """``relu(attn(bn2(conv2(relu(bn1(conv1(x)))))) + shortcut(x))``.

    Shortcut ``"A"`` (the paper's CIFAR choice): identity, or subsample by 2 and zero-pad the new channels
    (parameter-free). ``"B"``: a 1×1 convolution + BatchNorm where the shape changes.
    """

    def __init__(
        self,
        in_chs: int,
        out_chs: int,
        stride: int = 1,
        *,
        attn_layer: Callable[..., nn.Module] | None = None,
        shortcut: str = "A",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.conv1 = nn.Conv2d(in_chs, out_chs, 3, stride, 1, bias=False, **factory)
        self.bn1 = nn.BatchNorm2d(out_chs, **factory)
        self.conv2 = nn.Conv2d(out_chs, out_chs, 3, 1, 1, bias=False, **factory)
        self.bn2 = nn.BatchNorm2d(out_chs, **factory)
        self.se = attn_layer(out_chs, **factory) if attn_layer is not None else nn.Identity()
        self.shortcut_type = shortcut
        self.stride = stride
        self.pad_channels = out_chs - in_chs
        self.downsample: nn.Module | None = None
        if shortcut == "B" and (stride != 1 or in_chs != out_chs):
            self.downsample = nn.Sequential(
                nn.Conv2d(in_chs, out_chs, 1, stride, bias=False, **factory), nn.BatchNorm2d(out_chs, **factory)
            )
        elif shortcut not in ("A", "B"):
            raise ValueError(f"shortcut must be 'A' or 'B', got {shortcut!r}")

    def _shortcut(self, x: torch.Tensor) -> torch.Tensor:
        if self.downsample is not None:
            return self.downsample(x)
        if self.stride != 1:
            x = x[:, :, :: self.stride, :: self.stride]
        if self.pad_channels:
            half = self.pad_channels // 2
            x = F.pad(x, (0, 0, 0, 0, half, self.pad_channels - half))
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)), inplace=True)
        out = self.se(self.bn2(self.conv2(out)))
        return F.relu(out + self._shortcut(x), inplace=True)


class CifarResNet(nn.Module):
    """ResNet of depth ``6n + 2`` for small images.

    Args:
        depth: 20, 32, 44, 56, 110, … (``(depth − 2) % 6 == 0``).
        num_classes: classifier outputs.
        in_chans: input channels.
        widths: channels of the three stages.
        attn_layer: channel-attention constructor ``f(channels, *, device, dtype)`` or None.
        shortcut: ``"A"`` (zero-pad, parameter-free) or ``"B"`` (1×1 projection).
        zero_init_last: start every block's ``bn2`` at γ = 0 (each block starts as the identity).
        drop_rate: dropout before the classifier.

    Shapes: ``x`` ``[B, in_chans, H, W]`` → logits ``[B, num_classes]``.
    """

    def __init__(
        self,
        depth: int = 20,
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        widths: Sequence[int] = (16, 32, 64),
        attn_layer: Callable[..., nn.Module] | None = None,
        shortcut: str = "A",
        zero_init_last: bool = False,
        drop_rate: float = 0.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if (depth - 2) % 6 != 0 or depth < 8:
            raise ValueError(f"CIFAR ResNet depth must be 6n + 2 (20, 32, 44, 56, 110, ...), got {depth}")
        if len(widths) != 3:
            raise ValueError(f"widths must list the 3 stages' channels, got {list(widths)}")
        factory = {"device": device, "dtype": dtype}
        blocks_per_stage = (depth - 2) // 6
        self.num_classes = num_classes
        self.num_features = widths[-1]
        self.conv1 = nn.Conv2d(in_chans, widths[0], 3, 1, 1, bias=False, **factory)
        self.bn1 = nn.BatchNorm2d(widths[0], **factory)
        stages = []
        in_chs = widths[0]
        for index, width in enumerate(widths):
            blocks = []
            for block in range(blocks_per_stage):
                stride = 2 if index > 0 and block == 0 else 1
                blocks.append(BasicBlock(in_chs, width, stride, attn_layer=attn_layer, shortcut=shortcut, **factory))
                in_chs = width
            stages.append(nn.Sequential(*blocks))
        self.layer1, self.layer2, self.layer3 = stages
        self.drop = nn.Dropout(drop_rate)
        self.fc = nn.Linear(in_chs, num_classes, **factory)
        self._init_weights(zero_init_last)

    def _init_weights(self, zero_init_last: bool) -> None:
        for module in self.modules():
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)
        if zero_init_last:
            for module in self.modules():
                if isinstance(module, BasicBlock):
                    nn.init.zeros_(module.bn2.weight)

    def forward_features(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, in_chans, H, W]`` → ``[B, 64, H/4, W/4]``."""
        x = F.relu(self.bn1(self.conv1(x)), inplace=True)
        return self.layer3(self.layer2(self.layer1(x)))

    def forward_head(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, C, h, w]`` → ``[B, num_classes]``."""
        return self.fc(self.drop(x.mean((2, 3))))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_head(self.forward_features(x))


def _register_depth(depth: int) -> None:
    def build(
        *,
        num_classes: int = 10,
        in_chans: int = 3,
        ca: str = "none",
        ca_kwargs: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> CifarResNet:
        return CifarResNet(
            depth,
            num_classes=num_classes,
            in_chans=in_chans,
            attn_layer=channel_attention_layer(ca, ca_kwargs),
            **kwargs,
        )

    build.__name__ = build.__qualname__ = f"resnet{depth}"
    build.__doc__ = f"CIFAR-style ResNet-{depth} (see :class:`CifarResNet`) with channel attention ``ca``."
    BACKBONE.register(f"resnet{depth}", aliases=(f"cifar_resnet{depth}",))(build)


for _depth in (20, 32, 44, 56, 110):
    _register_depth(_depth)
