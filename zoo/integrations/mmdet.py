"""mmdet bridge: the zoo's timm ResNets with a channel attention as an mmdet backbone, ``ZooResNet``.

Importing this module registers ``ZooResNet`` in mmdet's ``MODELS`` (mmdet 3.3 / mmengine 0.10 / full mmcv 2.1,
the ``[mmdet]`` extra; see README). In an mmdet config::

    custom_imports = dict(imports=["zoo.integrations.mmdet"], allow_failed_imports=False)
    model = dict(..., backbone=dict(type="ZooResNet", depth=50, ca="mca"), neck=dict(type="FPN", ...))

It is a drop-in for mmdet's ``ResNet`` (``type="ResNet"``): same stages, ``out_indices`` (0 = ``layer1``, stride 4
… 3 = ``layer4``, stride 32), output channels (256, 512, 1024, 2048 for depth 50/101/152; 64, 128, 256, 512 for
depth 18/34), ``frozen_stages``, ``norm_cfg`` / ``norm_eval`` and parameter names (``conv1``, ``bn1``,
``layer1.0.conv1`` … as in torchvision and timm), so the FPN neck and the heads of mmdet's R-50 configs work
unchanged, and ``init_cfg=dict(type="Pretrained", checkpoint="torchvision://resnet50")`` loads torchvision's
weights (the attention's parameters stay freshly initialised). The body is built by the zoo's own
:func:`zoo.backbones.timm_models.create_timm_backbone` (timm's ResNet with ``attn_layer`` = the zoo's registered
channel attention ``ca``), so an unknown ``ca`` raises the zoo's ``RegistryError`` naming the valid choices.

Differences from mmdet's ``ResNet``: timm's ResNet-B blocks (stride on the 3×3 conv, i.e. mmdet's
``style="pytorch"``, its default; ``style="caffe"``, ``dcn``, ``plugins`` and ``with_cp`` are not supported), and
``pretrained=True`` loads timm's ImageNet weights (through the zoo's builder) rather than a checkpoint path.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from zoo.backbones.timm_models import create_timm_backbone
from zoo.errors import ConfigError
from zoo.extras import require

_NEEDED_FOR = "the mmdet bridge (zoo.integrations.mmdet)"
_MMCV_HINT = (
    "It also needs full mmcv 2.1.0 with its compiled ops (not mmcv-lite), which has no wheel for torch 2.14: build "
    "it once as the README's mmdet section says and pip install --no-deps the wheel"
)
MODELS = require("mmdet.registry", "mmdet", needed_for=_NEEDED_FOR, hint=_MMCV_HINT).MODELS
BaseModule = require("mmengine.model", "mmdet", needed_for=_NEEDED_FOR).BaseModule
require("mmcv.ops", "mmdet", needed_for=_NEEDED_FOR, hint=_MMCV_HINT)

__all__ = ["DEPTHS", "ZooResNet"]

#: mmdet's ResNet depths → the zoo's (timm's) ResNet names.
DEPTHS: dict[int, str] = {18: "resnet18", 34: "resnet34", 50: "resnet50", 101: "resnet101", 152: "resnet152"}


def _norm_layer(norm_cfg: dict[str, Any] | None) -> Any:
    """timm's ``norm_layer(channels, *, device=None, dtype=None)`` for an mmcv ``norm_cfg``; None: timm's default.

    ``dict(type="BN", requires_grad=True)`` (mmdet's default) keeps timm's ``nn.BatchNorm2d``; any other
    ``norm_cfg`` mmcv's ``build_norm_layer`` understands (``SyncBN``, ``GN`` with ``num_groups``, ``IN``, ``LN``, …,
    and ``requires_grad=False``) is built by mmcv.
    """
    if norm_cfg is None:
        return None
    cfg = dict(norm_cfg)
    if cfg.get("type") in ("BN", "BN2d") and cfg.get("requires_grad", True) and set(cfg) <= {"type", "requires_grad"}:
        return None
    from mmcv.cnn import build_norm_layer

    def norm_layer(num_features: int, **kwargs: Any) -> nn.Module:
        kwargs.pop("device", None), kwargs.pop("dtype", None)
        if kwargs:
            raise TypeError(f"unexpected norm_layer arguments {sorted(kwargs)}")
        return build_norm_layer(cfg, num_features)[1]

    return norm_layer


@MODELS.register_module()
class ZooResNet(BaseModule):
    """timm's ResNet (``depth`` 18/34/50/101/152) with the zoo's channel attention ``ca`` in every block.

    Args:
        depth: 18, 34 (basic blocks) or 50, 101, 152 (bottlenecks).
        ca: a ``CHANNEL_ATTENTION`` name (``none``, ``se``, ``eca``, ``mca``, ``mca_e``, ``mca_s``, ``mca_t``).
        ca_kwargs: options of the channel attention (``kernel_size``, …).
        in_channels: input channels.
        out_indices: stages to return, 0 (``layer1``, stride 4) … 3 (``layer4``, stride 32), ascending.
        frozen_stages: stages whose parameters are frozen and kept in eval mode: -1 none, 0 the stem, ``k`` the stem
            and ``layer1`` … ``layer{k}`` (mmdet's convention).
        norm_cfg: mmcv normalisation config of every norm layer (default ``dict(type="BN", requires_grad=True)``).
        norm_eval: keep BatchNorm layers in eval mode (frozen running statistics) while training, as mmdet's
            ResNet (default True, for fine-tuning pretrained weights with small batches; set False from scratch).
        zero_init_residual: zero-initialise each block's last norm layer (timm's ``zero_init_last``), as mmdet.
        pretrained: load timm's ImageNet weights for ``resnet{depth}`` (the attention's parameters stay new).
        init_cfg: mmengine's init config, e.g. ``dict(type="Pretrained", checkpoint="torchvision://resnet50")``.

    Shapes: ``[B, in_channels, H, W]`` → tuple of ``[B, C_i, H / 2^(i+2), W / 2^(i+2)]`` for ``i`` in ``out_indices``.
    """

    def __init__(
        self,
        depth: int = 50,
        ca: str = "none",
        ca_kwargs: dict[str, Any] | None = None,
        in_channels: int = 3,
        out_indices: Sequence[int] = (0, 1, 2, 3),
        frozen_stages: int = -1,
        norm_cfg: dict[str, Any] | None = None,
        norm_eval: bool = True,
        zero_init_residual: bool = True,
        pretrained: bool = False,
        init_cfg: dict[str, Any] | list[dict[str, Any]] | None = None,
        style: str = "pytorch",
    ) -> None:
        super().__init__(init_cfg=init_cfg)
        if depth not in DEPTHS:
            raise ConfigError(f"ZooResNet depth={depth!r} is invalid; valid choices: {', '.join(map(str, DEPTHS))}")
        out_indices = tuple(int(i) for i in out_indices)
        if not out_indices or list(out_indices) != sorted(set(out_indices)) or not set(out_indices) <= {0, 1, 2, 3}:
            raise ConfigError(f"ZooResNet out_indices={out_indices} must be ascending stages among 0, 1, 2, 3")
        if not -1 <= frozen_stages <= 4:
            raise ConfigError(f"ZooResNet frozen_stages={frozen_stages} must be in -1..4")
        if style != "pytorch":
            raise ConfigError(f"ZooResNet style={style!r} is unsupported; valid choices: pytorch (timm's ResNet-B)")
        if pretrained and init_cfg is not None:
            raise ConfigError("ZooResNet: set pretrained=True or init_cfg, not both")
        self.depth = depth
        self.ca = ca
        self.out_indices = out_indices
        self.frozen_stages = frozen_stages
        self.norm_eval = norm_eval

        kwargs: dict[str, Any] = {}
        norm_layer = _norm_layer(norm_cfg)
        if norm_layer is not None:
            kwargs["norm_layer"] = norm_layer
        body: Any = create_timm_backbone(  # timm's FeatureListNet
            DEPTHS[depth],
            num_classes=0,
            in_chans=in_channels,
            ca=ca,
            ca_kwargs=ca_kwargs,
            pretrained=pretrained,
            features_only=True,
            zero_init_last=zero_init_residual,
            out_indices=tuple(i + 1 for i in out_indices),  # timm's 0 is the stride-2 stem
            **kwargs,
        )
        # Flat children (conv1, bn1, act1, maxpool, layer1, …) so parameter names equal mmdet's / torchvision's.
        self._return_layers = tuple(body.return_layers)
        self.out_channels = tuple(body.feature_info.channels())
        for name, module in body.items():
            self.add_module(name, module)
        self._freeze_stages()

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, ...]:
        outs = []
        for name, module in self.named_children():
            x = module(x)
            if name in self._return_layers:
                outs.append(x)
        return tuple(outs)

    def _frozen_modules(self) -> list[nn.Module]:
        if self.frozen_stages < 0:
            return []
        names = ["conv1", "bn1"] + [f"layer{i}" for i in range(1, self.frozen_stages + 1)]
        return [m for n in names if (m := getattr(self, n, None)) is not None]

    def _freeze_stages(self) -> None:
        for module in self._frozen_modules():
            module.eval()
            for p in module.parameters():
                p.requires_grad = False

    def train(self, mode: bool = True) -> ZooResNet:
        super().train(mode)
        self._freeze_stages()
        if mode and self.norm_eval:
            for m in self.modules():
                if isinstance(m, _BatchNorm):
                    m.eval()
        return self
