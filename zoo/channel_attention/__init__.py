"""Channel attention: SE, ECA and MCA (Moment Channel Attention), registered in ``CHANNEL_ATTENTION``.

Contract (timm's ``attn_layer`` convention)::

    cls(channels: int, *, device=None, dtype=None, **kwargs) -> nn.Module      # x: [B, C, H, W] -> [B, C, H, W]

so every registered class plugs into timm's ResNets as
``timm.create_model("resnet50", block_args=dict(attn_layer=CHANNEL_ATTENTION.partial("mca")))``. The module goes
where SE, ECA and MCA put it: after the last BatchNorm of a residual branch, before the addition.

========== ===================================================================================================
name       component
========== ===================================================================================================
``none``   identity (no attention)
``se``     squeeze-and-excitation, exactly timm's ``SEModule`` defaults (r = 1/16, divisor 8, biases, ReLU)
``eca``    efficient channel attention, exactly timm's ``EcaModule`` defaults (adaptive k ≥ 3, no bias)
``mca_e``  MCA-E: moments [mean, std], cross-moment Conv1d with the paper's k = 11
``mca_s``  MCA-S: moments [mean, skewness], k = 3 (``mca`` is an alias: the paper's strong variant)
``mca_t``  MCA with all three moments [mean, std, skewness] (the paper's M_triple ablation), k = 3
========== ===================================================================================================
"""

from zoo.channel_attention.eca import EfficientChannelAttention, eca_kernel_size
from zoo.channel_attention.identity import NoChannelAttention
from zoo.channel_attention.mca import MomentChannelAttention, channel_moments
from zoo.channel_attention.se import SqueezeExcite

__all__ = [
    "EfficientChannelAttention",
    "MomentChannelAttention",
    "NoChannelAttention",
    "SqueezeExcite",
    "channel_moments",
    "eca_kernel_size",
]
