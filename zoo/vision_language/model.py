"""MiniMax-VL-01's vision-language model, "ViT–MLP–LLM" (``MODEL`` name ``vlm``).

Every image tile (:mod:`zoo.vision_language.tiling`) goes through the vision tower; its patch features are mapped to
the language model's width by the projector and laid out per image as the thumbnail's features, then each row of
tiles followed by the learned ``image_newline``. The prompt holds one ``<image>`` placeholder token
(``image_token_id``) per image token; :meth:`VisionLanguageModel.embed` replaces them, in order, by these features
and the language model runs on the result (``inputs_embeds``). Module names follow MiniMax's release
(``vision_tower``, ``multi_modal_projector``, ``image_newline``, ``language_model``).
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.generation import generate
from zoo.models import build_causal_lm
from zoo.registries import MODEL, PROJECTOR, VISION_TOWER
from zoo.vision_language.tiling import Tiling, image_token_count

__all__ = ["CLIP_MEAN", "CLIP_STD", "VisionLanguageConfig", "VisionLanguageModel"]

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
_TILING_KEYS = tuple(f.name for f in dataclasses.fields(Tiling))
_LM_KEYS = ("arch", "config")


def _check_keys(values: dict[str, Any], valid: Iterable[str], prefix: str) -> None:
    valid = tuple(valid)
    unknown = sorted(set(values) - set(valid))
    if unknown:
        raise ConfigError(f"unknown {prefix} keys {unknown}; valid: {', '.join(sorted(valid))}")


@dataclass
class VisionLanguageConfig:
    """The options of :class:`VisionLanguageModel` (primitives only, so Hydra and checkpoints carry it as a dict).

    Attributes:
        vision_tower: a ``VISION_TOWER`` name.
        vision_kwargs: its arguments; ``image_size`` defaults to ``tiling.tile_size``.
        projector: a ``PROJECTOR`` name (MiniMax: ``mlp2x_gelu``).
        language_model: ``{arch: <MODEL name>, config: {...}}``, any causal LM of the model protocol that takes
            ``inputs_embeds`` (default: the default :class:`~zoo.models.HybridLM`).
        image_token_id: the ``<image>`` placeholder id, inside the language model's vocabulary.
        tiling: :class:`~zoo.vision_language.tiling.Tiling`'s fields (``tile_size``, ``max_tiles``, ``dynamic``).
        image_mean, image_std: per-channel normalisation of pixels in [0, 1] (default: CLIP's).
    """

    vision_tower: str = "timm_vit"
    vision_kwargs: dict[str, Any] = field(default_factory=dict)
    projector: str = "mlp2x_gelu"
    language_model: dict[str, Any] = field(default_factory=lambda: {"arch": "hybrid_lm", "config": {}})
    image_token_id: int = 257
    tiling: dict[str, Any] = field(default_factory=dict)
    image_mean: tuple[float, float, float] | list[float] = CLIP_MEAN
    image_std: tuple[float, float, float] | list[float] = CLIP_STD

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> VisionLanguageConfig:
        """Build from a plain dict, naming unknown keys (also inside ``tiling`` and ``language_model``) and the
        valid ones (:class:`~zoo.errors.ConfigError`)."""
        _check_keys(values, (f.name for f in dataclasses.fields(cls)), "model.config")
        config = cls(**values)
        _check_keys(config.tiling, _TILING_KEYS, "model.config.tiling")
        _check_keys(config.language_model, _LM_KEYS, "model.config.language_model")
        for name in ("image_mean", "image_std"):
            value = getattr(config, name)
            if len(value) != 3:
                raise ConfigError(f"model.config.{name} needs 3 values (R, G, B), got {list(value)}")
        if min(config.image_std) <= 0:
            raise ConfigError(f"model.config.image_std={list(config.image_std)} must be positive")
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@MODEL.register("vlm", aliases=("minimax_vl",))
class VisionLanguageModel(nn.Module):
    """Vision tower + projector + causal LM, with MiniMax-VL-01's dynamic-resolution image layout.

    Args:
        config: a :class:`VisionLanguageConfig` or its dict.

    The model is built on the meta device and, unless the target device is meta, allocated and initialised once
    (:meth:`reset_parameters`), so the random draws are the same as when it is built on meta and initialised module
    by module (:func:`zoo.parallel.materialize_`). ``image_newline`` ``[d]`` starts as Normal(0, 1/√d)
    (LLaVA-NeXT's choice), independent of the language model's ``init_std``. A ``pretrained`` tower is built on
    the target device directly and keeps its weights.

    Shapes: ``input_ids`` ``[B, T]``; ``pixel_values`` ``uint8 [N_tiles, 3, S, S]``; ``image_grids`` ``int64
    [N_images, 2]``; logits ``[B, T, vocab_size]``.
    """

    def __init__(self, config: VisionLanguageConfig | dict[str, Any], *, device=None, dtype=None) -> None:
        super().__init__()
        if isinstance(config, VisionLanguageConfig):
            self.config = config
        else:
            self.config = VisionLanguageConfig.from_dict(dict(config))
        c = self.config
        self.tiling = Tiling(**c.tiling)
        target = torch.device(device) if device is not None else torch.get_default_device()
        vision_kwargs = {"image_size": self.tiling.tile_size, **c.vision_kwargs}
        lm = {"arch": "hybrid_lm", "config": {}, **c.language_model}
        with torch.device(target if vision_kwargs.get("pretrained") else "meta"):
            vision_tower = VISION_TOWER.build(c.vision_tower, **vision_kwargs)
        with torch.device("meta"):
            language_model = build_causal_lm(lm["arch"], dict(lm["config"] or {}), "model.config.language_model")
            d = language_model.hidden_size
            projector = PROJECTOR.build(c.projector, vision_tower.hidden_size, d)
        # registered in MiniMax's order (state-dict order and the order of initialisation)
        self.vision_tower = vision_tower
        self.multi_modal_projector = projector
        self.image_newline = nn.Parameter(torch.empty(d, device="meta"))
        self.language_model = language_model
        if not 0 <= c.image_token_id < self.language_model.vocab_size:
            raise ConfigError(
                f"model.config.image_token_id={c.image_token_id} is outside the language model's vocabulary "
                f"[0, {self.language_model.vocab_size}); raise its vocab_size or choose an id below it"
            )
        if self.vision_tower.image_size != self.tiling.tile_size:
            raise ConfigError(
                f"model.config.vision_kwargs.image_size={self.vision_tower.image_size} differs from "
                f"model.config.tiling.tile_size={self.tiling.tile_size}"
            )
        if dtype is not None:
            self._cast_parameters(dtype)
        if target.type != "meta":
            self._allocate(target)

    def _cast_parameters(self, dtype: torch.dtype) -> None:
        """Floating-point parameters to ``dtype`` (tied ones stay tied); buffers such as the rotary tables keep
        their precision, as when the language model is built with ``dtype``."""
        cast: dict[int, nn.Parameter] = {}
        for module in self.modules():
            for name, p in module._parameters.items():
                if p is not None and p.is_floating_point():
                    if id(p) not in cast:
                        cast[id(p)] = nn.Parameter(p.detach().to(dtype), requires_grad=p.requires_grad)
                    module._parameters[name] = cast[id(p)]

    def _allocate(self, device: torch.device) -> None:
        """Move the meta parts to ``device`` and initialise them (a pretrained tower is there already)."""
        keep = getattr(self.vision_tower, "pretrained", False)
        for module in self.children():
            if not (keep and module is self.vision_tower):
                module.to_empty(device=device)
        self.image_newline = nn.Parameter(torch.empty_like(self.image_newline, device=device))
        self.reset_parameters()

    # ----------------------------------------------------------------------------------------------- weights
    def _part_of(self, module: nn.Module) -> str:
        """``"vision"``, ``"projector"``, ``"language"`` or ``"self"``: which part owns ``module``."""
        if module is self:
            return "self"
        owner, parts = self.__dict__.get("_parts", (None, {}))
        if owner != id(self) or id(module) not in parts:  # (a copy of the model, or a module added since)
            parts = {id(m): "vision" for m in self.vision_tower.modules()}
            parts |= {id(m): "projector" for m in self.multi_modal_projector.modules()}
            parts |= {id(m): "language" for m in self.language_model.modules()}
            self.__dict__["_parts"] = (id(self), parts)
        return parts.get(id(module), "other")

    @torch.no_grad()
    def reset_parameters(self) -> None:
        """:meth:`init_weights` on every module, in module order."""
        for module in self.modules():
            self.init_weights(module)

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """Initialise what ``module`` owns directly (nothing if it owns no tensors): ``image_newline``
        Normal(0, 1/√d); a tower module by the tower's ``init_weights`` (timm's ViT init; nothing for a pretrained
        tower); a language-model module by the language model's ``init_weights`` if it has one; otherwise the
        module's own ``reset_parameters`` (the projector's ``nn.Linear`` default)."""
        part = self._part_of(module)
        owns = any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))
        if not owns:  # (so the draws match zoo.parallel.materialize_, which visits only modules owning tensors)
            return
        if part == "self":
            nn.init.normal_(self.image_newline, 0.0, 1.0 / math.sqrt(self.image_newline.numel()))
            return
        owner = {"vision": self.vision_tower, "language": self.language_model}.get(part)
        if owner is self.vision_tower and getattr(owner, "pretrained", False):
            return
        init = getattr(owner, "init_weights", None)
        if init is not None:
            init(module)
        elif callable(getattr(module, "reset_parameters", None)):
            module.reset_parameters()

    def vision_parameters(self) -> list[nn.Parameter]:
        """The vision tower's parameters."""
        return list(self.vision_tower.parameters())

    def projector_parameters(self) -> list[nn.Parameter]:
        """The projector's parameters and ``image_newline``."""
        return [*self.multi_modal_projector.parameters(), self.image_newline]

    def language_parameters(self) -> list[nn.Parameter]:
        """The language model's parameters."""
        return list(self.language_model.parameters())

    def count_params(self) -> dict[str, int]:
        """``total``; ``vision_tower``, ``projector`` (with ``image_newline``), ``language_model``; and the language
        model's own ``active``, ``embedding``, ``lm_head`` (:meth:`zoo.models.HybridLM.count_params`)."""
        vision = sum(p.numel() for p in self.vision_parameters())
        projector = sum(p.numel() for p in self.projector_parameters())
        language = sum(p.numel() for p in {id(p): p for p in self.language_parameters()}.values())
        lm_counts = getattr(self.language_model, "count_params", None)
        if lm_counts is not None:
            own = {k: v for k, v in lm_counts().items() if k in ("active", "embedding", "lm_head")}
        else:
            embedding = sum(p.numel() for p in self.language_model.input_embeddings().parameters())
            own = {"active": language - embedding, "embedding": embedding, "lm_head": 0}
        return {"total": vision + projector + language, "vision_tower": vision, "projector": projector,
                "language_model": language, **own}  # fmt: skip

    # ----------------------------------------------------------------------------------------------- protocol
    @property
    def vocab_size(self) -> int:
        return self.language_model.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.language_model.hidden_size

    @property
    def image_token_id(self) -> int:
        return self.config.image_token_id

    @property
    def patches_per_tile(self) -> int:
        """P, the tower's patch features per tile."""
        return self.vision_tower.num_patches

    def blocks(self) -> list[nn.Module]:
        """The vision tower's blocks, then the language model's: the units of sharding and checkpointing."""
        return [*self.vision_tower.blocks(), *self.language_model.blocks()]

    def input_embeddings(self) -> nn.Module:
        return self.language_model.input_embeddings()

    def output_layers(self) -> list[nn.Module]:
        return self.language_model.output_layers()

    def forward_head(self, hidden: torch.Tensor) -> torch.Tensor:
        return self.language_model.forward_head(hidden)

    def moe_layers(self) -> list[nn.Module]:
        return self.language_model.moe_layers()

    def moe_loss(self) -> torch.Tensor | None:
        return self.language_model.moe_loss()

    def moe_stats(self) -> dict[str, torch.Tensor]:
        return self.language_model.moe_stats()

    def flops_per_token(self, seq_len: int) -> float | None:
        """The language model's training FLOPs per token (the vision tower's are not included)."""
        return self.language_model.flops_per_token(seq_len)

    # ----------------------------------------------------------------------------------------------- images
    def encode_images(self, pixel_values: torch.Tensor, image_grids: torch.Tensor) -> torch.Tensor:
        """The language-model tokens of a batch of images, ``[Σ_i image_token_count(grid_i, P), d]``.

        Args:
            pixel_values: ``uint8 [N_tiles, 3, S, S]`` (or float in [0, 1]): the tiles of all images in image
                order, each image's thumbnail first, then its ``rows × cols`` tiles row-major.
            image_grids: ``int64 [N_images, 2]`` (rows, cols); ``(0, 0)`` for a thumbnail-only image.

        All tiles go through the tower in one call, then the projector. Per image: the thumbnail's P features,
        then per row of tiles the row's features left to right followed by ``image_newline``.
        """
        grids = [(int(r), int(c)) for r, c in image_grids.reshape(-1, 2).tolist()]
        for rows, cols in grids:
            if rows < 0 or cols < 0 or (rows == 0) != (cols == 0):
                raise ValueError(f"image grid ({rows}, {cols}) is invalid: use rows, cols ≥ 1, or (0, 0)")
        needed = sum(1 + r * c for r, c in grids)
        if pixel_values.shape[0] != needed:
            raise ValueError(
                f"the image grids need {needed} tiles (a thumbnail plus rows·cols tiles per image), but "
                f"pixel_values holds {pixel_values.shape[0]}"
            )
        features = self.multi_modal_projector(self.vision_tower(self._normalise(pixel_values)))  # [N, P, d]
        P, d = features.shape[1:]
        newline = self.image_newline.to(features.dtype)
        pieces, start = [], 0
        for rows, cols in grids:
            pieces.append(features[start])
            if rows:
                tiles = features[start + 1 : start + 1 + rows * cols].reshape(rows, cols * P, d)
                lines = torch.cat([tiles, newline.expand(rows, 1, d)], dim=1)  # [rows, cols·P + 1, d]
                pieces.append(lines.reshape(-1, d))
            start += 1 + rows * cols
        out = torch.cat(pieces) if pieces else features.new_zeros(0, d)
        assert out.shape[0] == sum(image_token_count(g, P) for g in grids)
        return out

    def _normalise(self, pixel_values: torch.Tensor) -> torch.Tensor:
        """``uint8`` (or float in [0, 1]) ``[N, 3, S, S]`` → ``(x / 255 - mean) / std`` in the model's dtype."""
        x = pixel_values
        dtype = self.image_newline.dtype
        x = x.to(dtype) / 255.0 if not x.is_floating_point() else x.to(dtype)
        mean = torch.tensor(self.config.image_mean, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        std = torch.tensor(self.config.image_std, device=x.device, dtype=dtype).view(1, 3, 1, 1)
        return (x - mean) / std

    def embed(
        self,
        input_ids: torch.Tensor,
        pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``inputs_embeds`` ``[B, T, d]``: the token embeddings of ``input_ids`` ``[B, T]``, each ``<image>``
        placeholder (in row-major order over B, T) replaced by the next row of :meth:`encode_images`."""
        mask = input_ids == self.config.image_token_id
        embedding = self.language_model.input_embeddings()
        embeds = embedding(input_ids.masked_fill(mask, 0))
        placeholders = int(mask.sum())
        if pixel_values is None:
            if placeholders:
                raise ValueError(f"the prompts hold {placeholders} <image> tokens but the images give 0")
            return embeds
        if image_grids is None:
            raise ValueError("pixel_values needs image_grids (rows, cols per image)")
        features = self.encode_images(pixel_values, image_grids)
        if placeholders != features.shape[0]:
            raise ValueError(f"the prompts hold {placeholders} <image> tokens but the images give {features.shape[0]}")
        return embeds.masked_scatter(mask[..., None], features.to(embeds.dtype))

    # ----------------------------------------------------------------------------------------------- forward
    def hidden_states(
        self,
        input_ids: torch.Tensor,
        *,
        pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The language model's final hidden states ``[B, T, d]``. Without ``inputs_embeds`` they come from
        :meth:`embed` (images needed only when placeholders are present; a decode step, ``[B, 1]`` with a
        non-empty ``cache``, skips the placeholder check and its host sync)."""
        if inputs_embeds is None:
            decoding = cache is not None and input_ids.shape[1] == 1 and getattr(cache, "length", 0) > 0
            if pixel_values is not None or not decoding:
                inputs_embeds = self.embed(input_ids, pixel_values, image_grids)
        return self.language_model.hidden_states(
            input_ids, cu_seqlens=cu_seqlens, cache=cache, inputs_embeds=inputs_embeds
        )

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        pixel_values: torch.Tensor | None = None,
        image_grids: torch.Tensor | None = None,
        cu_seqlens: torch.Tensor | None = None,
        cache: Any = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` (:meth:`hidden_states`, then the head)."""
        hidden = self.hidden_states(
            input_ids, pixel_values=pixel_values, image_grids=image_grids, cu_seqlens=cu_seqlens, cache=cache,
            inputs_embeds=inputs_embeds,
        )  # fmt: skip
        return self.forward_head(hidden)

    # ----------------------------------------------------------------------------------------------- generation
    def new_cache(self) -> Any:
        return self.language_model.new_cache()

    def supports_static_cache(self) -> bool:
        """Whether the language model runs :mod:`zoo.generation`'s decode engine (text-only prompts)."""
        supports = getattr(self.language_model, "supports_static_cache", None)
        return callable(supports) and bool(supports())

    def new_static_cache(self, *args: Any, **kwargs: Any) -> Any:
        return self.language_model.new_static_cache(*args, **kwargs)

    def prefill(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        """The language model's packed prefill (text tokens only: no images)."""
        return self.language_model.prefill(*args, **kwargs)

    def decode(self, *args: Any, **kwargs: Any) -> torch.Tensor:
        return self.language_model.decode(*args, **kwargs)

    generate = generate  # zoo.generation.generate as a method (text-only prompts)
