"""Object detectors from torchvision on the zoo's timm ResNets with channel attention and an FPN, in ``DETECTOR``.

Contract::

    DETECTOR.build(name, *, num_classes: int, backbone: str = "resnet50", ca: str = "none",
                   ca_kwargs: dict | None = None, norm: str = "gn", pretrained_backbone: bool = False,
                   min_size: int = 256, max_size: int = 256, anchor_sizes: Sequence[int] | None = None,
                   **kwargs) -> nn.Module

``num_classes`` counts object categories *without* background; the builder adds the background class, so labels
are ``1..num_classes`` (0 = background) for every detector. The result follows torchvision's detection API:

* train mode: ``model(images, targets) → dict[str, Tensor]`` of losses;
* eval mode: ``model(images) → list[dict(boxes=[N, 4] xyxy, labels=[N], scores=[N], masks=[N, 1, H, W])]``

with ``images`` a list of ``[3, H, W]`` floats in 0..1 (any sizes; the model resizes to ``min_size``/``max_size``
and normalises with ImageNet statistics) and ``targets`` a list of ``dict(boxes=[N, 4] xyxy absolute pixels,
labels=int64 [N], masks=uint8 [N, H, W])`` (``masks`` only for ``mask_rcnn``).

================ ======================================================================================
name             detector
================ ======================================================================================
``faster_rcnn``  torchvision's ``FasterRCNN``: RPN + RoIAlign box head on FPN levels P2–P5 (+ P6 max-pool)
``mask_rcnn``    torchvision's ``MaskRCNN``: Faster R-CNN + a 14×14 RoIAlign mask head
``retinanet``    torchvision's ``RetinaNet``: focal-loss dense head on P3–P7 (P6/P7 from P5)
================ ======================================================================================

The body is ``timm.create_model(backbone, features_only=True, block_args=dict(attn_layer=<ca>))`` (so the
channel attention sits in every residual block exactly as in the classification backbones) under torchvision's
``FeaturePyramidNetwork`` with 256 channels.

Normalisation (``norm``): detection trains on a few images per device, where BatchNorm's batch statistics are
poor. ``gn`` (the default: GroupNorm with 32 groups in the body, the FPN and RetinaNet's head, as in He et al.,
"Rethinking ImageNet Pre-training", 2019) is the choice for training from scratch, which is this zoo's default.
``frozen_bn`` (BatchNorm with fixed statistics and affine parameters) is the choice with
``pretrained_backbone=True``, as in torchvision and mmdetection; ``bn`` keeps ordinary BatchNorm (large batches).
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from zoo.backbones.timm_models import TIMM_RESNETS, create_timm_backbone
from zoo.errors import ConfigError
from zoo.registries import DETECTOR

__all__ = ["DETECTION_BACKBONES", "NORMS", "FPNBackbone", "build_fpn_backbone"]

DETECTION_BACKBONES = TIMM_RESNETS
NORMS = ("gn", "frozen_bn", "bn")
DEFAULT_ANCHOR_SIZES = (32, 64, 128, 256, 512)


def _group_norm(num_channels: int, **kwargs: Any) -> nn.Module:
    """GroupNorm with 32 groups (fewer where the channels don't divide), called like BatchNorm: ``f(channels)``."""
    kwargs.pop("device", None), kwargs.pop("dtype", None)
    groups = 32
    while num_channels % groups:
        groups //= 2
    return nn.GroupNorm(groups, num_channels, **kwargs)


class FPNBackbone(nn.Module):
    """A timm ResNet's feature maps under a feature pyramid network.

    Args:
        body: a timm ``features_only`` model returning a list of ``[B, C_i, H / s_i, W / s_i]``.
        in_channels: ``C_i`` of those maps.
        out_channels: the pyramid's channels (256).
        extra_blocks: torchvision's ``LastLevelMaxPool`` (adds ``"pool"``) or ``LastLevelP6P7`` (adds ``"p6"``,
            ``"p7"``).
        norm_layer: normalisation in the FPN's convolutions (None: none, with conv biases).

    Shapes: ``[B, 3, H, W]`` → ``OrderedDict`` of ``[B, out_channels, H / s, W / s]`` named ``"0"``, ``"1"``, …
    then the extra levels. ``out_channels`` is an attribute, as torchvision's detectors require.
    """

    def __init__(
        self,
        body: nn.Module,
        in_channels: Sequence[int],
        out_channels: int = 256,
        extra_blocks: nn.Module | None = None,
        norm_layer: Any = None,
    ) -> None:
        from torchvision.ops.feature_pyramid_network import FeaturePyramidNetwork

        super().__init__()
        self.body = body
        self.fpn = FeaturePyramidNetwork(
            list(in_channels), out_channels, extra_blocks=extra_blocks, norm_layer=norm_layer
        )
        self.out_channels = out_channels

    def forward(self, x: torch.Tensor) -> OrderedDict[str, torch.Tensor]:
        features = self.body(x)
        return self.fpn(OrderedDict((str(i), f) for i, f in enumerate(features)))


def build_fpn_backbone(
    backbone: str = "resnet50",
    *,
    ca: str = "none",
    ca_kwargs: dict[str, Any] | None = None,
    norm: str = "gn",
    pretrained: bool = False,
    out_indices: Sequence[int] = (1, 2, 3, 4),
    extra_blocks: nn.Module | None = None,
    out_channels: int = 256,
) -> FPNBackbone:
    """A timm ResNet (``backbone``, one of :data:`DETECTION_BACKBONES`) with channel attention ``ca`` in every
    block, stages ``out_indices`` (1 = stride 4 … 4 = stride 32) under an FPN; see the module docstring for
    ``norm``.

    Raises:
        ConfigError: an unknown ``backbone`` or ``norm``, or ``pretrained`` with ``norm="gn"`` (the published
            weights are BatchNorm's).
    """
    if backbone not in DETECTION_BACKBONES:
        raise ConfigError(
            f"model.backbone={backbone!r} is not a detection backbone; valid choices: {', '.join(DETECTION_BACKBONES)}"
        )
    if norm not in NORMS:
        raise ConfigError(f"model.norm={norm!r} is unknown; valid choices: {', '.join(NORMS)}")
    if pretrained and norm == "gn":
        raise ConfigError("model.pretrained_backbone=true needs BatchNorm weights: set model.norm=frozen_bn (or bn)")
    kwargs: dict[str, Any] = {}
    if norm == "gn":
        kwargs["norm_layer"] = _group_norm
    body = create_timm_backbone(
        backbone,
        num_classes=0,
        ca=ca,
        ca_kwargs=ca_kwargs,
        pretrained=pretrained,
        features_only=True,
        out_indices=tuple(out_indices),
        **kwargs,
    )
    if norm == "frozen_bn":
        from timm.layers import freeze_batch_norm_2d

        body = freeze_batch_norm_2d(body)
    return FPNBackbone(
        body,
        body.feature_info.channels(),
        out_channels,
        extra_blocks=extra_blocks,
        norm_layer=_group_norm if norm == "gn" else None,
    )


def _anchor_sizes(anchor_sizes: Sequence[int] | None, levels: str) -> tuple[int, ...]:
    """The base anchor size of each of the 5 pyramid levels (``levels`` names them in the error)."""
    sizes = tuple(anchor_sizes or DEFAULT_ANCHOR_SIZES)
    if len(sizes) != 5:
        raise ConfigError(f"model.anchor_sizes needs 5 sizes ({levels}), got {list(sizes)}")
    return sizes


@DETECTOR.register("faster_rcnn", aliases=("fasterrcnn",))
def faster_rcnn(
    *,
    num_classes: int,
    backbone: str = "resnet50",
    ca: str = "none",
    ca_kwargs: dict[str, Any] | None = None,
    norm: str = "gn",
    pretrained_backbone: bool = False,
    min_size: int = 256,
    max_size: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    mask: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """torchvision's ``FasterRCNN`` (``MaskRCNN`` with ``mask=True``) on an FPN over ``backbone`` + ``ca``.

    ``anchor_sizes``: one anchor size per level P2–P6 (default 32…512), aspect ratios 0.5/1/2. Further
    ``kwargs`` go to torchvision's constructor (``rpn_batch_size_per_image``, ``box_detections_per_img``, …).
    """
    from torchvision.models.detection import FasterRCNN, MaskRCNN
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.ops.feature_pyramid_network import LastLevelMaxPool

    sizes = _anchor_sizes(anchor_sizes, "P2–P6")
    anchors = AnchorGenerator(tuple((s,) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes))
    body = build_fpn_backbone(
        backbone,
        ca=ca,
        ca_kwargs=ca_kwargs,
        norm=norm,
        pretrained=pretrained_backbone,
        extra_blocks=LastLevelMaxPool(),
    )
    cls = MaskRCNN if mask else FasterRCNN
    return cls(
        body, num_classes=num_classes + 1, min_size=min_size, max_size=max_size, rpn_anchor_generator=anchors, **kwargs
    )


@DETECTOR.register("mask_rcnn", aliases=("maskrcnn",))
def mask_rcnn(**kwargs: Any) -> nn.Module:
    """torchvision's ``MaskRCNN``: :func:`faster_rcnn` with a mask head (targets need ``masks``)."""
    return faster_rcnn(**kwargs, mask=True)


@DETECTOR.register("retinanet")
def retinanet(
    *,
    num_classes: int,
    backbone: str = "resnet50",
    ca: str = "none",
    ca_kwargs: dict[str, Any] | None = None,
    norm: str = "gn",
    pretrained_backbone: bool = False,
    min_size: int = 256,
    max_size: int = 256,
    anchor_sizes: Sequence[int] | None = None,
    **kwargs: Any,
) -> nn.Module:
    """torchvision's ``RetinaNet`` on an FPN (P3–P5 from the body, P6/P7 from P5) over ``backbone`` + ``ca``.

    ``num_classes + 1`` classification outputs, so labels keep torchvision's 1-based convention (column 0, the
    background, is never a positive and only costs one channel). ``anchor_sizes``: the base size per level P3–P7
    (default 32…512), each at scales 2^0, 2^(1/3), 2^(2/3) and aspect ratios 0.5/1/2. With ``norm="gn"`` the
    head's convolutions have GroupNorm too (torchvision's v2 recipe).
    """
    from torchvision.models.detection import RetinaNet
    from torchvision.models.detection.anchor_utils import AnchorGenerator
    from torchvision.models.detection.retinanet import RetinaNetHead
    from torchvision.ops.feature_pyramid_network import LastLevelP6P7

    sizes = _anchor_sizes(anchor_sizes, "P3–P7")
    anchors = AnchorGenerator(
        tuple(tuple(round(s * 2 ** (i / 3)) for i in range(3)) for s in sizes), ((0.5, 1.0, 2.0),) * len(sizes)
    )
    body = build_fpn_backbone(
        backbone,
        ca=ca,
        ca_kwargs=ca_kwargs,
        norm=norm,
        pretrained=pretrained_backbone,
        out_indices=(2, 3, 4),
        extra_blocks=LastLevelP6P7(256, 256),
    )
    head = RetinaNetHead(
        body.out_channels,
        anchors.num_anchors_per_location()[0],
        num_classes + 1,
        norm_layer=_group_norm if norm == "gn" else None,
    )
    return RetinaNet(
        body,
        num_classes=num_classes + 1,
        min_size=min_size,
        max_size=max_size,
        anchor_generator=anchors,
        head=head,
        **kwargs,
    )
