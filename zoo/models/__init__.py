"""Whole networks, registered in ``MODEL``, and the causal-LM protocol the tasks rely on.

=============== ==================================================================================================
name            model
=============== ==================================================================================================
``hybrid_lm``   MiniMax-Text-01's architecture: lightning/softmax hybrid attention, dense or MoE FFNs, post-norm
                with residual factors, untied LM head, cached generation (:class:`HybridLM`)
``vlm``         MiniMax-VL-01's "ViT–MLP–LLM": a ``VISION_TOWER``, a ``PROJECTOR`` and any causal LM of this
                protocol, image features spliced in at ``<image>`` placeholders
                (:class:`zoo.vision_language.VisionLanguageModel`, registered by :mod:`zoo.vision_language`)
=============== ==================================================================================================

Construction: ``cls(config: dict | dataclass, *, device=None, dtype=None)``.

**The causal-LM protocol** (:class:`CausalLM`) is everything ``task=lm``, ``task=rl`` (and the parallelism and
generation code) may call on a model; a third-party ``MODEL`` that implements it works in every task. Tasks call
:func:`check_causal_lm` when they build one, so a missing method is reported by name at construction.
"""

from __future__ import annotations

import contextlib
from typing import Any, Protocol, runtime_checkable

import torch
from torch import nn

from zoo.errors import ConfigError
from zoo.generation import sample_token
from zoo.models.hybrid_lm import GenerationCache, HybridLM, HybridLMConfig, training_flops_per_token


@runtime_checkable
class CausalLM(Protocol):
    """What a task may call on a causal language model (all tensors on the model's device).

    Shapes: ``input_ids`` ``[B, T]`` int64; ``cu_seqlens`` int32 ``[N+1]`` offsets over the flattened ``B·T`` tokens
    (the batch is then one packed stream of N documents and no token attends across a boundary); hidden states
    ``[B, T, hidden_size]``; logits ``[B, T, vocab_size]``.

    Optional: :meth:`forward` and :meth:`hidden_states` may take ``inputs_embeds`` ``[B, T, hidden_size]``, which
    replaces the token-embedding lookup (``input_ids`` still gives ``B, T``); :class:`HybridLM` does, and the
    vision-language model (:mod:`zoo.vision_language`) needs it of its language model.
    """

    vocab_size: int
    hidden_size: int

    def forward(
        self, input_ids: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None, cache: Any = None
    ) -> torch.Tensor:
        """Logits. With a ``cache`` (from :meth:`new_cache`) the tokens continue the cached ones and the cache is
        updated in place (prefill, then ``[B, 1]`` decode steps)."""

    def hidden_states(
        self, input_ids: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None, cache: Any = None
    ) -> torch.Tensor:
        """The final hidden states, before the head (for value heads and fused losses)."""

    def forward_head(self, hidden: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab_size]`` from hidden states ``[..., hidden_size]``."""

    def new_cache(self) -> Any:
        """An empty generation cache for :meth:`forward`'s ``cache`` argument."""

    def blocks(self) -> list[nn.Module]:
        """The repeated layers, in order: the units of sharding (FSDP) and activation checkpointing."""

    def input_embeddings(self) -> nn.Module:
        """The token embedding (its own FSDP unit)."""

    def output_layers(self) -> list[nn.Module]:
        """The modules after the blocks (final norm, head), sharded as one unit."""

    def moe_layers(self) -> list[nn.Module]:
        """The MoE feed-forward modules (each with ``.experts``; expert parallelism places these); [] if none."""

    def moe_loss(self) -> torch.Tensor | None:
        """The MoE layers' weighted auxiliary losses of the last forward, summed (None without MoE)."""

    def moe_stats(self) -> dict[str, torch.Tensor]:
        """Per-expert statistics of the last forward (``expert_load`` ``[layers, E]``, ``dropped_fraction``); {}
        without MoE."""

    def flops_per_token(self, seq_len: int) -> float | None:
        """Training (forward + backward) FLOPs per token at ``seq_len`` for MFU; None if unknown."""

    # Optional: ``forward_loss(input_ids, labels, *, cu_seqlens=None) -> scalar`` the mean cross-entropy without
    # materialising the logits (HybridLM: the LM head and loss fused, chunked); task=lm trains through it when
    # present (``fused_loss``), else through ``forward``.
    # Optional: ``init_weights(module)`` initialises what ``module`` owns directly (as ``reset_parameters`` does
    # for the whole model); a model built on the meta device for sharding is initialised with it, shard by shard
    # (zoo.parallel.materialize_). Without it each module's own ``reset_parameters()`` runs.


PROTOCOL_METHODS = (
    "forward", "hidden_states", "forward_head", "new_cache", "blocks", "input_embeddings", "output_layers",
    "moe_layers", "moe_loss", "moe_stats", "flops_per_token",
)  # fmt: skip
PROTOCOL_ATTRIBUTES = ("vocab_size", "hidden_size")


def check_causal_lm(model: Any, key: str = "model.arch") -> Any:
    """``model`` if it implements :class:`CausalLM`; otherwise a :class:`~zoo.errors.ConfigError` naming ``key``
    and what is missing."""
    missing = [name for name in PROTOCOL_METHODS if not callable(getattr(model, name, None))]
    missing += [name for name in PROTOCOL_ATTRIBUTES if not isinstance(getattr(model, name, None), int)]
    if missing:
        raise ConfigError(
            f"{key}: {type(model).__name__} is not a causal LM of the model protocol (zoo.models.CausalLM); it lacks "
            f"{', '.join(missing)}"
        )
    return model


def build_causal_lm(arch: str, config: dict[str, Any] | None = None, key: str = "model.arch") -> Any:
    """``MODEL.build(arch, config)``, checked against the protocol (:func:`check_causal_lm`); on the meta device
    (nothing allocated) inside :func:`zoo.parallel.models_on_meta_device`, which the front ends enter when the
    strategy shards the model (the task's ``configure_model`` then shards and initialises it)."""
    from zoo.parallel.init import build_on_meta
    from zoo.registries import MODEL

    with torch.device("meta") if build_on_meta() else contextlib.nullcontext():
        return check_causal_lm(MODEL.build(arch, dict(config or {})), key)


__all__ = [
    "CausalLM",
    "GenerationCache",
    "HybridLM",
    "HybridLMConfig",
    "build_causal_lm",
    "check_causal_lm",
    "sample_token",
    "training_flops_per_token",
]
