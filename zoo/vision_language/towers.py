"""Vision towers (``VISION_TOWER``): image tiles → patch features, one feature vector per patch.

Contract: ``cls(*, image_size: int, **kw)``; ``forward(pixels float [N, 3, S, S]) → [N, P, C]`` with the prefix
(class / register) tokens dropped and no pooling; attributes ``num_patches`` (P), ``hidden_size`` (C),
``image_size`` (S); ``blocks()`` lists the transformer blocks (units of FSDP sharding); ``init_weights(module)``
initialises what one of its modules owns directly (for models built on the meta device).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.registries import VISION_TOWER

__all__ = ["TimmConvNet", "TimmViT"]


@VISION_TOWER.register("timm_vit")
class TimmViT(nn.Module):
    """Any timm Vision Transformer by name, as a patch-feature encoder (MiniMax-VL-01: ViT-L/14 at 336 px).

    Args:
        model_name: a timm ViT (``vit_base_patch16_224``, ``vit_large_patch14_clip_336``, …); its shape can be
            overridden through ``timm_kwargs`` (``patch_size``, ``embed_dim``, ``depth``, ``num_heads``,
            ``mlp_ratio``, …) for small towers.
        image_size: S, the tile side in pixels (timm's ``img_size``).
        pretrained: load timm's pretrained weights (default: from scratch, as MiniMax trained its ViT).
        feature_layer: which features come out. ``-1``: the final output after the last norm; ``-k`` (k ≥ 2): the
            output of block ``depth - k`` (``-2``: the penultimate block, LLaVA's choice), before any norm; ``i ≥ 0``:
            the output of block ``i``. The blocks after the chosen one and the final norm are removed from the
            network (they would get no gradient), so the parameter count is what is used.
        **timm_kwargs: further ``timm.create_model`` arguments.

    ``forward(pixels [N, 3, S, S]) → [N, P, C]``, P = (S / patch)² patches in row-major order.
    """

    def __init__(
        self,
        model_name: str = "vit_base_patch16_224",
        *,
        image_size: int,
        pretrained: bool = False,
        feature_layer: int = -1,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm  # here, not at module level: listing the MODEL registry should not import timm

        if torch.get_default_device().type == "meta" and pretrained:
            raise ConfigError("model.config.vision_kwargs.pretrained=true cannot load weights on the meta device")
        self.model = timm.create_model(
            model_name, pretrained=pretrained, num_classes=0, global_pool="", img_size=image_size, **timm_kwargs
        )
        if not hasattr(self.model, "blocks") or not hasattr(self.model, "num_prefix_tokens"):
            raise ConfigError(f"model.config.vision_kwargs.model_name={model_name!r} is not a timm VisionTransformer")
        depth = len(self.model.blocks)
        if not -depth <= feature_layer < depth:
            raise ConfigError(
                f"model.config.vision_kwargs.feature_layer={feature_layer} is outside the tower's {depth} blocks "
                f"(valid: {-depth} … {depth - 1})"
            )
        if feature_layer != -1:
            last = feature_layer if feature_layer >= 0 else depth + feature_layer
            self.model.prune_intermediate_layers([last], prune_norm=True, prune_head=True)
        self.model_name = model_name
        self.feature_layer = feature_layer
        self.pretrained = pretrained
        self.image_size = image_size
        self.num_patches: int = self.model.patch_embed.num_patches
        self.hidden_size: int = self.model.embed_dim
        self.num_prefix_tokens: int = self.model.num_prefix_tokens

    def extra_repr(self) -> str:
        return (
            f"{self.model_name}, image_size={self.image_size}, P={self.num_patches}, C={self.hidden_size}, "
            f"feature_layer={self.feature_layer}"
        )

    def blocks(self) -> list[nn.Module]:
        """The transformer blocks, in order."""
        return list(self.model.blocks)

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """timm's default ViT initialisation of what ``module`` owns directly: truncated normal (std 0.02) for
        ``nn.Linear`` weights and the position embedding, zero biases, normal (std 1e-6) class / register tokens,
        every other module's own ``reset_parameters`` (patch convolution, LayerNorms)."""
        from timm.models.vision_transformer import init_weights_vit_timm

        vit = self.model
        if module is vit:
            if vit.pos_embed is not None:
                nn.init.trunc_normal_(vit.pos_embed, std=0.02)
            for token in (vit.cls_token, vit.reg_token):
                if token is not None:
                    nn.init.normal_(token, std=1e-6)
        elif module is not self:
            init_weights_vit_timm(module)

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` float ``[N, 3, S, S]`` (normalised) → patch features ``[N, P, C]``."""
        features = self.model.forward_features(pixels)  # [N, prefix + P, C]
        return features[:, self.num_prefix_tokens :]


@VISION_TOWER.register("timm_convnet")
class TimmConvNet(nn.Module):
    """Any timm convolutional network by name (``features_only``), cut at the stage of stride ``patch_size``: each
    position of that stage's ``[C, S/patch, S/patch]`` feature map is one patch feature (ConvLLaVA's design; on
    little data a from-scratch CNN learns what a from-scratch ViT does not, see ``docs/results.md``).

    Args:
        model_name: a timm CNN with ``features_only`` support (``resnet18``, ``convnext_atto``, …); its widths can be
            set through ``timm_kwargs`` (e.g. ``channels`` and ``stem_width`` of a ResNet).
        image_size: S, the tile side in pixels.
        patch_size: the stride of the stage whose features come out (one token per ``patch_size²`` pixels); the
            stages after it are not built.
        pretrained: load timm's pretrained weights (default: from scratch).
        **timm_kwargs: further ``timm.create_model`` arguments.

    ``forward(pixels [N, 3, S, S]) → [N, P, C]``, P = (S / patch_size)² positions in row-major order.
    """

    def __init__(
        self,
        model_name: str = "resnet18",
        *,
        image_size: int,
        patch_size: int = 8,
        pretrained: bool = False,
        **timm_kwargs: Any,
    ) -> None:
        super().__init__()
        import timm

        if torch.get_default_device().type == "meta" and pretrained:
            raise ConfigError("model.config.vision_kwargs.pretrained=true cannot load weights on the meta device")
        probe = timm.create_model(model_name, pretrained=False, features_only=True, device="meta", **timm_kwargs)
        strides = [int(r) for r in probe.feature_info.reduction()]
        if patch_size not in strides:
            raise ConfigError(
                f"model.config.vision_kwargs.patch_size={patch_size}: {model_name}'s stages have strides "
                f"{', '.join(map(str, strides))}; valid choices: those"
            )
        if image_size % patch_size:
            raise ConfigError(
                f"model.config.vision_kwargs.image_size={image_size} is not a multiple of patch_size={patch_size}"
            )
        stage = len(strides) - 1 - strides[::-1].index(patch_size)  # the last stage of that stride
        self.model = timm.create_model(
            model_name, pretrained=pretrained, features_only=True, out_indices=(stage,), **timm_kwargs
        )
        self.model_name = model_name
        self.pretrained = pretrained
        self.image_size = image_size
        self.patch_size = patch_size
        self.num_patches: int = (image_size // patch_size) ** 2
        self.hidden_size: int = int(self.model.feature_info.channels()[-1])

    def extra_repr(self) -> str:
        return (
            f"{self.model_name}, image_size={self.image_size}, P={self.num_patches}, C={self.hidden_size}, "
            f"stride={self.patch_size}"
        )

    def blocks(self) -> list[nn.Module]:
        """No transformer blocks: the network is one unit (of sharding and checkpointing) with its owner."""
        return []

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """PyTorch's default initialisation of what ``module`` owns directly (``reset_parameters``; batch-norm
        statistics reset too)."""
        if module is not self and hasattr(module, "reset_parameters"):
            module.reset_parameters()

    def forward(self, pixels: torch.Tensor) -> torch.Tensor:
        """``pixels`` float ``[N, 3, S, S]`` (normalised) → patch features ``[N, P, C]``."""
        features = self.model(pixels)[-1]  # [N, C, S/patch, S/patch]
        return features.flatten(2).transpose(1, 2)
