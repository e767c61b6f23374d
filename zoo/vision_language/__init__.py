"""Vision-language modelling after MiniMax-VL-01 ("ViT–MLP–LLM"): vision towers, projectors, the model, tiling.

==================  ================  ==========================================================================
registry            name              component
==================  ================  ==========================================================================
``VISION_TOWER``    ``timm_vit``      any timm ViT by name (:class:`~.towers.TimmViT`): tiles ``[N, 3, S, S]`` →
                                      patch features ``[N, P, C]`` without prefix tokens or pooling
``VISION_TOWER``    ``timm_convnet``  any timm CNN by name, cut at the stage of stride ``patch_size``: one feature
                                      per position of its map (:class:`~.towers.TimmConvNet`)
``PROJECTOR``       ``mlp2x_gelu``    ``Linear(C, d) → GELU → Linear(d, d)``, MiniMax's projector
                                      (:class:`~.projectors.MLPProjector`)
``PROJECTOR``       ``linear``        ``Linear(C, d)`` (:class:`~.projectors.LinearProjector`)
``MODEL``           ``vlm``           tower + projector + any causal LM, image features spliced in at the
                                      ``<image>`` placeholders (:class:`~.model.VisionLanguageModel`; alias
                                      ``minimax_vl``)
==================  ================  ==========================================================================

Contracts: a ``VISION_TOWER`` is ``cls(*, image_size, **kw)`` with ``forward(pixels float [N, 3, S, S]) → [N, P,
C]`` and attributes ``num_patches`` (P), ``hidden_size`` (C), ``image_size`` (S), plus ``blocks()`` (its transformer
blocks) and optionally ``init_weights(module)``; a ``PROJECTOR`` is ``cls(in_dim, out_dim)`` mapping ``[..., C] →
[..., d]``. How images become tiles and how many tokens each takes: :mod:`zoo.vision_language.tiling`.
"""

from __future__ import annotations

from zoo.vision_language.model import CLIP_MEAN, CLIP_STD, VisionLanguageConfig, VisionLanguageModel
from zoo.vision_language.projectors import LinearProjector, MLPProjector
from zoo.vision_language.tiling import ImageTooLargeError, Tiling, best_grid, candidate_grids, image_token_count
from zoo.vision_language.towers import TimmConvNet, TimmViT

__all__ = [
    "CLIP_MEAN",
    "CLIP_STD",
    "ImageTooLargeError",
    "LinearProjector",
    "MLPProjector",
    "Tiling",
    "TimmConvNet",
    "TimmViT",
    "VisionLanguageConfig",
    "VisionLanguageModel",
    "best_grid",
    "candidate_grids",
    "image_token_count",
]
