"""Image classification backbones, registered in ``BACKBONE``.

Contract::

    BACKBONE.build(name, *, num_classes: int, in_chans: int, ca: str = "none", ca_kwargs: dict | None = None,
                   **kwargs) -> nn.Module          # images [B, in_chans, H, W] -> logits [B, num_classes]

``ca`` is a ``CHANNEL_ATTENTION`` name; the backbone places that module in every residual block after the last
BatchNorm, before the addition (where SE, ECA and MCA go). Every backbone also has
``forward_features(x) -> [B, C, h, w]`` and ``forward_head(features) -> logits``.

==================================== ==============================================================================
names                                backbone
==================================== ==============================================================================
``resnet20 resnet32 resnet44``       CIFAR-style ResNets of He et al. (2016) §4.2: 3×3 stem, three stages of
``resnet56 resnet110``               6n + 2 layers, widths 16/32/64; for 28–32 px inputs
``resnet18 resnet34 resnet50``       timm's ImageNet ResNets, with the channel attention passed as
``resnet101 resnet152 resnet50d``    ``block_args=dict(attn_layer=...)``
``timm``                             any timm model whose blocks take ``attn_layer`` (``model_name=``)
==================================== ==============================================================================
"""

from zoo.backbones.cifar_resnet import CifarResNet
from zoo.backbones.common import channel_attention_layer
from zoo.backbones.timm_models import create_timm_backbone

__all__ = ["CifarResNet", "channel_attention_layer", "create_timm_backbone"]
