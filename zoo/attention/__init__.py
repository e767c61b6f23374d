"""Token mixers, registered in ``ATTENTION``.

Contract::

    cls(dim, num_heads, *, layer_idx, num_layers, device=None, dtype=None, **kw) -> nn.Module
    module(x [B, T, dim], *, cu_seqlens=None, cache=None) -> [B, T, dim]      # prefill / training
    module.step(x [B, 1, dim], cache) -> [B, 1, dim]                           # one generated token
    module.new_cache() -> a cache object for generation

``layer_idx`` and ``num_layers`` are required because lightning attention's decay depends on the depth. Which
mixer each layer of a stack gets is a layout (:mod:`zoo.attention.hybrid`): ``"LLLLLLLS"`` letters, or one entry
per layer naming any ``ATTENTION`` (a third party's too) with its arguments and residual factors.

============= =====================================================================================================
name          component
============= =====================================================================================================
``lightning`` MiniMax's lightning attention: SiLU'd interleaved qkv, decayed linear attention (Triton kernels),
              RMSNorm over all heads, sigmoid output gate
``softmax``   causal softmax attention, GQA, RoPE on a fraction of each head, SDPA, KV cache
============= =====================================================================================================
"""

from zoo.attention.cache import KVCache, LightningCache
from zoo.attention.hybrid import MINIMAX_PATTERN, AttentionSpec, attention_specs, hybrid_layout
from zoo.attention.lightning import LightningAttention, alibi_slopes, decay_rates
from zoo.attention.softmax import SoftmaxAttention

__all__ = [
    "MINIMAX_PATTERN",
    "AttentionSpec",
    "KVCache",
    "LightningAttention",
    "LightningCache",
    "SoftmaxAttention",
    "alibi_slopes",
    "attention_specs",
    "decay_rates",
    "hybrid_layout",
]
