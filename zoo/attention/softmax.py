"""Softmax attention with grouped KV heads and partial RoPE (``ATTENTION`` name ``softmax``): MiniMax-01's 1-in-8
layers."""

from __future__ import annotations

import itertools

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.nn.attention.bias import causal_lower_right

from kernels.varlen import equal_length_groups
from zoo.attention.cache import KVCache, StaticKVCache
from zoo.layers import RotaryEmbedding, apply_rotary
from zoo.registries import ATTENTION

_CACHED_BACKENDS = [SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION, SDPBackend.MATH]


@ATTENTION.register("softmax")
class SoftmaxAttention(nn.Module):
    """Causal multi-head attention with GQA, RoPE on a fraction of each head and PyTorch SDPA.

    ``q_proj``, ``k_proj``, ``v_proj``, ``o_proj`` without bias (Hugging Face's MiniMax names); scale ``1/√D``; RoPE
    (NeoX rotate-half) on the first ``rope_fraction · D`` dimensions of q and k, ``θ = rope_theta``; ``num_kv_heads``
    key/value heads shared by groups of query heads. Attention runs through
    ``F.scaled_dot_product_attention``, which picks flash / cuDNN / memory-efficient kernels on GPUs. Packed
    sequences (``cu_seqlens``) attend only within their own document, with positions restarting at 0.

    Args:
        dim: model width.
        num_heads: query heads H.
        layer_idx, num_layers: position in the stack (unused; part of the ``ATTENTION`` contract).
        num_kv_heads: key/value heads (default H; MiniMax: 8).
        head_dim: D (default ``dim // num_heads``).
        rope_fraction: fraction of D that rotates (MiniMax: 0.5).
        rope_theta: RoPE base θ (MiniMax's release: 1e7).

    Shapes: ``x`` ``[B, T, dim]`` → ``[B, T, dim]``.
    """

    def __init__(
        self,
        dim: int,
        num_heads: int,
        *,
        layer_idx: int = 0,
        num_layers: int = 1,
        num_kv_heads: int | None = None,
        head_dim: int | None = None,
        rope_fraction: float = 0.5,
        rope_theta: float = 10_000.0,
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_heads = num_heads
        self.num_kv_heads = num_kv_heads or num_heads
        if num_heads % self.num_kv_heads:
            raise ValueError(f"num_heads={num_heads} must be a multiple of num_kv_heads={self.num_kv_heads}")
        self.head_dim = head_dim or dim // num_heads
        self.layer_idx = layer_idx
        self.q_proj = nn.Linear(dim, num_heads * self.head_dim, bias=False, **factory)
        self.k_proj = nn.Linear(dim, self.num_kv_heads * self.head_dim, bias=False, **factory)
        self.v_proj = nn.Linear(dim, self.num_kv_heads * self.head_dim, bias=False, **factory)
        self.o_proj = nn.Linear(num_heads * self.head_dim, dim, bias=False, **factory)
        rotary_dim = round(self.head_dim * rope_fraction / 2) * 2
        self.rotary = RotaryEmbedding(self.head_dim, rotary_dim, rope_theta, device=device)

    def extra_repr(self) -> str:
        return f"heads={self.num_heads}, kv_heads={self.num_kv_heads}, head_dim={self.head_dim}"

    def _project(self, x: torch.Tensor, positions: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        B, T, _ = x.shape
        q = self.q_proj(x).view(B, T, self.num_heads, self.head_dim)
        k = self.k_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        v = self.v_proj(x).view(B, T, self.num_kv_heads, self.head_dim)
        cos, sin = self.rotary(positions, torch.promote_types(x.dtype, torch.float32))
        return apply_rotary(q, cos, sin), apply_rotary(k, cos, sin), v

    def _attend(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool) -> torch.Tensor:
        """``[B, Tq, H, D]``, ``[B, Tk, Hkv, D]`` → ``[B, Tq, H, D]``; causal aligned to the end of the keys."""
        qh, kh, vh = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        gqa = self.num_kv_heads != self.num_heads
        if q.shape[1] == k.shape[1]:  # training and a first prefill: any SDPA backend (cuDNN is fastest on Hopper)
            return F.scaled_dot_product_attention(qh, kh, vh, is_causal=causal, enable_gqa=gqa).transpose(1, 2)
        # After a cache: the key length changes every step, and cuDNN builds a new execution plan for each new
        # shape (~35 ms on an H100), so these calls use the flash / memory-efficient kernels.
        if gqa:
            groups = self.num_heads // self.num_kv_heads
            kh, vh = kh.repeat_interleave(groups, dim=1), vh.repeat_interleave(groups, dim=1)
        # queries are the last Tq of the keys: a lower-right causal bias (a dense mask would rule out flash)
        bias = causal_lower_right(q.shape[1], k.shape[1]) if causal and q.shape[1] > 1 else None
        with sdpa_kernel(_CACHED_BACKENDS):
            out = F.scaled_dot_product_attention(qh, kh, vh, attn_mask=bias)
        return out.transpose(1, 2)

    def forward(
        self, x: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None, cache: KVCache | None = None
    ) -> torch.Tensor:
        """Causal attention over ``x``; with ``cache`` the new tokens follow (and are appended to) the cached ones."""
        B, T, _ = x.shape
        if cu_seqlens is not None:
            if cache is not None:
                raise ValueError("a KV cache cannot be combined with packed sequences (cu_seqlens)")
            outputs = []
            for start, end in itertools.pairwise(cu_seqlens.tolist()):
                positions = torch.arange(end - start, device=x.device)
                q, k, v = self._project(x[:, start:end], positions)
                outputs.append(self._attend(q, k, v, causal=True))
            o = torch.cat(outputs, dim=1)
        else:
            offset = cache.length if cache is not None else 0
            q, k, v = self._project(x, torch.arange(offset, offset + T, device=x.device))
            if cache is not None:
                k, v = cache.append(k, v)
            o = self._attend(q, k, v, causal=T > 1 or cache is None)
        return self.o_proj(o.reshape(B, T, -1))

    def step(self, x: torch.Tensor, cache: KVCache) -> torch.Tensor:
        """One new token per sequence after the cached ones: ``x`` ``[B, 1, dim]``."""
        return self.forward(x, cache=cache)

    def new_cache(self) -> KVCache:
        return KVCache()

    # ------------------------------------------------------------------------------ static cache (zoo.generation)
    def new_static_cache(
        self, batch_size: int, max_len: int, *, device: torch.device | str, dtype: torch.dtype
    ) -> StaticKVCache:
        """Zeroed keys and values for ``batch_size`` slots of up to ``max_len`` positions, ``[B, H_kv, T_max, D]``."""
        shape = (batch_size, self.num_kv_heads, max_len, self.head_dim)
        return StaticKVCache(*(torch.zeros(shape, device=device, dtype=dtype) for _ in range(2)))

    def prefill_static(
        self, x: torch.Tensor, cu_seqlens: torch.Tensor, cache: StaticKVCache, slots: torch.Tensor
    ) -> torch.Tensor:
        """Packed prompts ``x`` ``[1, ΣT, dim]`` (N documents at ``cu_seqlens``, positions from 0 in each): causal
        attention within each document, whose keys and values land in ``cache`` at ``[slots[n], :, 0:T_n]``.
        Documents of equal length run as one batch (no padding), so a batch of few distinct lengths (an RL
        group's prompts) costs few attention calls."""
        out = x.new_empty(x.shape[1], self.num_heads * self.head_dim)
        for length, docs, rows in equal_length_groups(cu_seqlens.tolist(), x.device):
            q, k, v = self._project(x[0, rows].view(len(docs), length, -1), torch.arange(length, device=x.device))
            where = slots[torch.tensor(docs, device=slots.device)]
            cache.key[where, :, :length] = k.transpose(1, 2).to(cache.key.dtype)
            cache.value[where, :, :length] = v.transpose(1, 2).to(cache.value.dtype)
            out[rows] = self._attend(q, k, v, causal=True).reshape(len(docs) * length, -1).to(out.dtype)  # autocast
        return self.o_proj(out[None])

    def decode_static(
        self, x: torch.Tensor, cache: StaticKVCache, positions: torch.Tensor, span: int | None = None
    ) -> torch.Tensor:
        """One token for each of the first ``B = x.shape[0]`` slots, at ``positions`` ``[B]`` (int64: the number
        of tokens each slot holds, each below ``span``): its key and value are written there, and it attends to
        positions ``0..positions[b]`` of its slot. Fixed shapes, no host sync (CUDA-graph safe): the attention
        spans the first ``span`` positions (all ``T_max`` when None), masked, as two batched matmuls that read
        each of those cached keys and values once.

        Shapes: ``x`` ``[B, 1, dim]`` → ``[B, 1, dim]``.
        """
        B = x.shape[0]
        # the batch as the time axis: every row gets its own rotary position
        q, k, v = self._project(x.view(1, B, -1), positions)  # [1, B, H(kv), D]
        rows = torch.arange(B, device=x.device)
        key, value = cache.key[:B, :, :span], cache.value[:B, :, :span]
        key[rows, :, positions] = k[0].to(key.dtype)
        value[rows, :, positions] = v[0].to(value.dtype)
        groups = self.num_heads // self.num_kv_heads
        qg = q[0].view(B, self.num_kv_heads, groups, self.head_dim).to(key.dtype)
        scores = torch.matmul(qg, key.transpose(-1, -2)).float() * self.head_dim**-0.5  # [B, H_kv, G, T_max]
        visible = torch.arange(key.shape[2], device=x.device)[None, :] <= positions[:, None]  # [B, T_max]
        scores = scores.masked_fill(~visible[:, None, None, :], float("-inf"))
        o = torch.matmul(scores.softmax(-1).to(value.dtype), value)  # [B, H_kv, G, D]
        return self.o_proj(o.reshape(B, 1, -1).to(x.dtype))
