"""Whole networks, registered in ``MODEL``.

=============== ==================================================================================================
name            model
=============== ==================================================================================================
``hybrid_lm``   MiniMax-Text-01's architecture: lightning/softmax hybrid attention, dense or MoE FFNs, post-norm
                with residual factors, untied LM head, cached generation (:class:`HybridLM`)
=============== ==================================================================================================

Contract: ``cls(config: dict | dataclass, *, device=None, dtype=None)``; ``model(input_ids [B, T], *,
cu_seqlens=None, cache=None) → logits [B, T, vocab]``.
"""

from zoo.models.hybrid_lm import GenerationCache, HybridLM, HybridLMConfig, sample_token, training_flops_per_token

__all__ = ["GenerationCache", "HybridLM", "HybridLMConfig", "sample_token", "training_flops_per_token"]
