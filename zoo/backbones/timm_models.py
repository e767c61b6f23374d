"""timm's ResNets with a zoo channel attention as ``attn_layer``: timm's code, our attention, no fork."""

from __future__ import annotations

from typing import Any

from torch import nn

from zoo.backbones.common import channel_attention_layer
from zoo.registries import BACKBONE

TIMM_RESNETS = ("resnet18", "resnet26", "resnet34", "resnet50", "resnet101", "resnet152", "resnet50d", "resnet101d")


def create_timm_backbone(
    model_name: str,
    *,
    num_classes: int = 1000,
    in_chans: int = 3,
    ca: str = "none",
    ca_kwargs: dict[str, Any] | None = None,
    pretrained: bool = False,
    **kwargs: Any,
) -> nn.Module:
    """``timm.create_model(model_name, block_args=dict(attn_layer=<ca>), ...)``.

    timm's ResNet blocks build ``attn_layer(channels, device=..., dtype=...)`` after their last BatchNorm, which is
    our channel-attention contract. ``ca="none"`` gives timm's plain architecture (identical parameter names).
    Other keyword arguments go to ``timm.create_model`` (``drop_rate``, ``zero_init_last``, ``features_only``, …).
    With ``pretrained`` and an attention, the published weights load non-strictly (``pretrained_strict=False``
    unless given): the attention's parameters are new and keep their initialisation, everything else loads.
    """
    import timm

    block_args = dict(kwargs.pop("block_args", None) or {})
    attn_layer = channel_attention_layer(ca, ca_kwargs)
    if attn_layer is not None:
        block_args["attn_layer"] = attn_layer
        if pretrained:
            kwargs.setdefault("pretrained_strict", False)
    return timm.create_model(
        model_name,
        pretrained=pretrained,
        num_classes=num_classes,
        in_chans=in_chans,
        block_args=block_args or None,
        **kwargs,
    )


def _register(model_name: str) -> None:
    def build(**kwargs: Any) -> nn.Module:
        return create_timm_backbone(model_name, **kwargs)

    build.__name__ = build.__qualname__ = model_name
    build.__doc__ = f"timm's ``{model_name}`` with channel attention ``ca`` in every block."
    BACKBONE.register(model_name)(build)


for _name in TIMM_RESNETS:
    _register(_name)

BACKBONE.register("timm")(create_timm_backbone)
