"""The MiniMax-Text-01 architecture as a configurable language model (``MODEL`` name ``hybrid_lm``).

A stack of decoder layers, each a token mixer from ``ATTENTION`` (lightning or softmax, per layer from a hybrid
pattern) and a feed-forward block from ``FFN`` (dense SwiGLU or a top-k MoE, per layer), then a final RMSNorm and an
untied LM head. MiniMax's layer (minimax.md §2.3, DeepNorm-style post-norm with residual factors α, β)::

    u  = RMSNorm_in(h);    h1 = α_attn · u  + β_attn · Attn(u)
    u1 = RMSNorm_post(h1); h2 = α_ffn  · u1 + β_ffn  · FFN(u1)

and the usual pre-norm layer (``norm="pre"``)::

    h1 = h + Attn(RMSNorm_in(h));  h2 = h1 + FFN(RMSNorm_post(h1))

Parameter names follow Hugging Face's ``MiniMaxForCausalLM`` (``model.layers.N.self_attn.qkv_proj``,
``model.layers.N.mlp.experts.gate_up_proj``, ``lm_head``, …), so :mod:`zoo.interop.minimax` maps weights 1:1.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.attention.hybrid import AttentionSpec, attention_specs
from zoo.ffn.moe import MoEExperts
from zoo.generation import generate
from zoo.layers.linear_cross_entropy import linear_cross_entropy
from zoo.layers.norm import RMSNorm
from zoo.layers.rope import RotaryEmbedding
from zoo.registries import ATTENTION, FFN, MODEL

NORM_PLACEMENTS = ("post", "pre")
FFN_LETTERS = {"M": "moe", "D": "dense"}


@dataclass
class HybridLMConfig:
    """Every shape and option of :class:`HybridLM` (primitives only, so Hydra and checkpoints carry it as a dict).

    Attributes:
        vocab_size: token ids ``[0, vocab_size)``.
        hidden_size: model width d.
        num_layers: L.
        attention: the layout of token mixers (:mod:`zoo.attention.hybrid`): a pattern of letters repeated
            (``"LLLLLLLS"``: L lightning, S softmax), or one entry per layer — a letter, an ``ATTENTION`` name, or
            ``{name, alpha, beta, **kwargs}`` for any registered attention with its own arguments and factors.
        num_heads: attention heads (both types).
        num_kv_heads: key/value heads of the softmax layers (GQA; default ``num_heads``).
        head_dim: D (default ``hidden_size // num_heads``).
        rope_fraction: fraction of D rotated in softmax layers (MiniMax: 0.5).
        rope_theta: RoPE base (MiniMax's release: 1e7; 1e4 for its 8K pretraining).
        ffn: ``"moe"``/``"dense"`` for every layer, a pattern of ``M``/``D`` letters repeated, or one ``FFN`` name
            per layer.
        intermediate_size: hidden width of each expert (MoE layers) and of dense layers unless
            ``dense_intermediate_size`` is set.
        dense_intermediate_size: hidden width of dense SwiGLU layers.
        num_experts, top_k: MoE shape (MiniMax: 32, 2).
        moe_kwargs: further ``moe`` arguments (``capacity_factor``, ``aux_loss_coef``, ``aux_loss_type``,
            ``z_loss_coef``, ``jitter_noise``, ``impl``).
        norm: ``"post"`` (MiniMax) or ``"pre"``.
        lightning_alpha, softmax_alpha, ffn_alpha: residual factors α (default: ``(2L)^{1/4}`` for post-norm, as in
            MiniMax's config — 3.5566 at L = 80 — and 1 for pre-norm).
        lightning_beta, softmax_beta, ffn_beta: branch factors β (MiniMax: 1).
        rms_norm_eps: epsilon of the layer norms (MiniMax: 1e-5).
        lightning_norm_eps: epsilon of the lightning output RMSNorm (MiniMax's code: 1e-6).
        decay_convention: ``"minimax"`` or ``"hf"`` (see :func:`zoo.attention.lightning.decay_rates`).
        attention_backend: lightning kernel backend (``auto``, ``triton``, ``torch``).
        tie_embeddings: share the embedding and LM head weights (MiniMax: no).
        lm_head_fp32: compute the LM head in fp32 under autocast (MiniMax-M1 §3.2).
        init_std: normal init std of every weight matrix (MiniMax's config: 0.02).
    """

    vocab_size: int = 257
    hidden_size: int = 128
    num_layers: int = 4
    attention: str | list[Any] = "LLLS"
    num_heads: int = 4
    num_kv_heads: int | None = None
    head_dim: int | None = None
    rope_fraction: float = 0.5
    rope_theta: float = 10_000.0
    ffn: str | list[str] = "moe"
    intermediate_size: int = 256
    dense_intermediate_size: int | None = None
    num_experts: int = 4
    top_k: int = 2
    moe_kwargs: dict[str, Any] = field(default_factory=dict)
    norm: str = "post"
    lightning_alpha: float | None = None
    lightning_beta: float = 1.0
    softmax_alpha: float | None = None
    softmax_beta: float = 1.0
    ffn_alpha: float | None = None
    ffn_beta: float = 1.0
    rms_norm_eps: float = 1e-5
    lightning_norm_eps: float = 1e-6
    decay_convention: str = "minimax"
    attention_backend: str = "auto"
    tie_embeddings: bool = False
    lm_head_fp32: bool = False
    init_std: float = 0.02

    def __post_init__(self) -> None:
        if self.norm not in NORM_PLACEMENTS:
            raise ValueError(f"model.config.norm='{self.norm}' is unknown; valid: {', '.join(NORM_PLACEMENTS)}")
        if self.hidden_size % self.num_heads and self.head_dim is None:
            raise ValueError(f"hidden_size={self.hidden_size} is not a multiple of num_heads={self.num_heads}")
        if self.top_k > self.num_experts:
            raise ValueError(f"top_k={self.top_k} exceeds num_experts={self.num_experts}")
        _ = self.attention_layout, self.ffn_layout  # validate the patterns now

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> HybridLMConfig:
        """Build from a plain dict, naming unknown keys and the valid ones."""
        valid = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - valid)
        if unknown:
            raise ValueError(f"unknown model.config keys {unknown}; valid: {', '.join(sorted(valid))}")
        return cls(**values)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @property
    def attention_specs(self) -> list[AttentionSpec]:
        """Each layer's token mixer: name, own kwargs, residual factors."""
        return attention_specs(self.attention, self.num_layers)

    @property
    def attention_layout(self) -> list[str]:
        """The ``ATTENTION`` name of each layer."""
        return [spec.name for spec in self.attention_specs]

    def attention_kwargs(self, spec: AttentionSpec) -> dict[str, Any]:
        """What the model passes a layer's attention besides ``(dim, num_heads, layer_idx, num_layers)``: the
        model-level options of the built-in types, then the layer's own kwargs (which win). A third-party
        attention gets only its own."""
        shared: dict[str, Any] = {}
        if spec.name == "lightning":
            shared = {"head_dim": self.head_dim, "norm_eps": self.lightning_norm_eps,
                      "decay_convention": self.decay_convention, "backend": self.attention_backend}  # fmt: skip
        elif spec.name == "softmax":
            shared = {"head_dim": self.head_dim, "num_kv_heads": self.num_kv_heads,
                      "rope_fraction": self.rope_fraction, "rope_theta": self.rope_theta}  # fmt: skip
        return {**shared, **spec.kwargs}

    @property
    def ffn_layout(self) -> list[str]:
        """The ``FFN`` name of each layer."""
        spec = self.ffn
        if isinstance(spec, str):
            if spec.lower() in FFN or spec.lower() in ("moe", "dense"):
                return [spec.lower()] * self.num_layers
            letters = spec.upper()
            bad = sorted({c for c in letters if c not in FFN_LETTERS})
            if bad or not letters:
                raise ValueError(
                    f"model.config.ffn='{spec}': use an FFN name ({', '.join(FFN.names(aliases=False))}) or a pattern "
                    f"of M (moe) / D (dense) letters"
                )
            return [FFN_LETTERS[letters[i % len(letters)]] for i in range(self.num_layers)]
        names = [FFN_LETTERS.get(str(s).upper(), str(s).lower()) for s in spec]
        if len(names) != self.num_layers:
            raise ValueError(f"model.config.ffn lists {len(names)} layers; the model has {self.num_layers}")
        for name in names:
            FFN.get(name)  # raises with the valid names
        return names

    def residual_factors(self, kind: str | AttentionSpec) -> tuple[float, float]:
        """(α, β) of a layer's attention (its :class:`AttentionSpec`, or a name) or of ``"ffn"``: the spec's own
        factors, else the model's for that type (``lightning_alpha``, …), else ``(2L)^{1/4}`` (post-norm) or 1 and
        β = 1."""
        spec = kind if isinstance(kind, AttentionSpec) else AttentionSpec(kind)
        default_alpha = (2 * self.num_layers) ** 0.25 if self.norm == "post" else 1.0
        alpha, beta = {
            "lightning": (self.lightning_alpha, self.lightning_beta),
            "softmax": (self.softmax_alpha, self.softmax_beta),
            "ffn": (self.ffn_alpha, self.ffn_beta),
        }.get(spec.name, (None, 1.0))
        alpha = spec.alpha if spec.alpha is not None else alpha
        beta = spec.beta if spec.beta is not None else beta
        return (default_alpha if alpha is None else float(alpha)), float(beta)


class DecoderLayer(nn.Module):
    """One attention + FFN layer with MiniMax's post-norm (or pre-norm) residuals; names as in Hugging Face."""

    def __init__(self, config: HybridLMConfig, layer_idx: int, *, device=None, dtype=None) -> None:
        super().__init__()
        c = config
        factory = {"device": device, "dtype": dtype}
        self.layer_idx = layer_idx
        self.postnorm = c.norm == "post"
        spec = c.attention_specs[layer_idx]
        self.attention_type = spec.name
        self.ffn_type = c.ffn_layout[layer_idx]
        self.self_attn = ATTENTION.build(
            spec.name, c.hidden_size, c.num_heads, layer_idx=layer_idx, num_layers=c.num_layers,
            **c.attention_kwargs(spec), **factory,
        )  # fmt: skip
        if self.ffn_type == "moe":
            self.mlp = FFN.build(
                "moe", c.hidden_size, c.intermediate_size, num_experts=c.num_experts, top_k=c.top_k,
                **c.moe_kwargs, **factory,
            )  # fmt: skip
        else:
            self.mlp = FFN.build(
                self.ffn_type, c.hidden_size, c.dense_intermediate_size or c.intermediate_size, **factory
            )
        self.input_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, **factory)
        self.post_attention_layernorm = RMSNorm(c.hidden_size, c.rms_norm_eps, **factory)
        self.attn_alpha, self.attn_beta = c.residual_factors(spec)
        self.mlp_alpha, self.mlp_beta = c.residual_factors("ffn")

    def extra_repr(self) -> str:
        return (
            f"{self.attention_type}+{self.ffn_type}, {'post' if self.postnorm else 'pre'}-norm, "
            f"α=({self.attn_alpha:.4g}, {self.mlp_alpha:.4g}), β=({self.attn_beta:g}, {self.mlp_beta:g})"
        )

    def _residual(self, h: torch.Tensor, u: torch.Tensor, branch: torch.Tensor, alpha: float, beta: float):
        """``α·base + β·branch`` (base = the normed input for post-norm, the raw input for pre-norm) in one kernel
        when β = 1."""
        base = u if self.postnorm else h
        return torch.add(branch if beta == 1.0 else branch * beta, base, alpha=alpha)

    def forward(
        self, h: torch.Tensor, *, cu_seqlens: torch.Tensor | None = None, cache: Any = None, step: bool = False
    ) -> torch.Tensor:
        """``h`` ``[B, T, d]`` → ``[B, T, d]``; ``step`` decodes one token per sequence from ``cache``."""
        u = self.input_layernorm(h)
        if step:
            a = self.self_attn.step(u, cache)
        else:
            a = self.self_attn(u, cu_seqlens=cu_seqlens, cache=cache)
        h = self._residual(h, u, a, self.attn_alpha, self.attn_beta)
        u = self.post_attention_layernorm(h)
        return self._residual(h, u, self.mlp(u), self.mlp_alpha, self.mlp_beta)

    def _ffn_for_generation(self, u: torch.Tensor) -> torch.Tensor:
        inference = getattr(self.mlp, "inference", None)  # the MoE's sync-free path; a dense FFN as it is
        return inference(u) if inference is not None else self.mlp(u)

    def prefill_static(
        self, h: torch.Tensor, cu_seqlens: torch.Tensor, cache: Any, slots: torch.Tensor
    ) -> torch.Tensor:
        """Packed prompts ``h`` ``[1, ΣT, d]``, their attention state written into ``cache`` at ``slots``."""
        u = self.input_layernorm(h)
        h = self._residual(h, u, self.self_attn.prefill_static(u, cu_seqlens, cache, slots), self.attn_alpha,
                           self.attn_beta)  # fmt: skip
        u = self.post_attention_layernorm(h)
        return self._residual(h, u, self._ffn_for_generation(u), self.mlp_alpha, self.mlp_beta)

    def decode_static(
        self, h: torch.Tensor, cache: Any, positions: torch.Tensor, span: int | None = None
    ) -> torch.Tensor:
        """One token per slot, ``h`` ``[B, 1, d]`` at ``positions`` ``[B]`` (all below ``span``); fixed shapes, no
        host sync."""
        u = self.input_layernorm(h)
        a = self.self_attn.decode_static(u, cache, positions, span=span)
        h = self._residual(h, u, a, self.attn_alpha, self.attn_beta)
        u = self.post_attention_layernorm(h)
        return self._residual(h, u, self._ffn_for_generation(u), self.mlp_alpha, self.mlp_beta)


class HybridLMBody(nn.Module):
    """Embedding, decoder layers, final norm (Hugging Face's ``MiniMaxModel``, hence the ``model.`` prefix)."""

    def __init__(self, config: HybridLMConfig, *, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.embed_tokens = nn.Embedding(config.vocab_size, config.hidden_size, **factory)
        self.layers = nn.ModuleList(DecoderLayer(config, i, **factory) for i in range(config.num_layers))
        self.norm = RMSNorm(config.hidden_size, config.rms_norm_eps, **factory)


class GenerationCache:
    """What generation carries between steps: one cache per layer (lightning state or softmax KV) and the length."""

    def __init__(self, layers: Sequence[nn.Module]) -> None:
        self.layers = [layer.self_attn.new_cache() for layer in layers]
        self.length = 0


def _owns_tensors(module: nn.Module) -> bool:
    return any(True for _ in module.parameters(recurse=False)) or any(True for _ in module.buffers(recurse=False))


@MODEL.register("hybrid_lm", aliases=("minimax",))
class HybridLM(nn.Module):
    """MiniMax-Text-01-style causal LM: ``logits = lm_head(norm(layers(embed(ids))))``.

    Args:
        config: a :class:`HybridLMConfig` or its dict.

    ``forward(input_ids [B, T], cu_seqlens=None, cache=None, inputs_embeds=None) → logits [B, T, vocab]``. With
    ``cu_seqlens`` (int32 ``[N+1]`` offsets over the flattened ``B·T`` tokens) the batch is one packed stream of N
    documents and no token attends across a boundary, in either attention type. ``inputs_embeds`` ``[B, T, d]``
    replaces the embedding lookup. After each forward, :meth:`moe_loss` is the sum of the MoE layers' weighted
    auxiliary losses and :meth:`moe_stats` their per-expert loads.
    """

    def __init__(self, config: HybridLMConfig | dict[str, Any], *, device=None, dtype=None) -> None:
        super().__init__()
        self.config = config if isinstance(config, HybridLMConfig) else HybridLMConfig.from_dict(dict(config))
        c = self.config
        target = torch.device(device) if device is not None else torch.get_default_device()
        # built on the meta device, then allocated and initialised once (reset_parameters): the random draws are
        # the same whether the model is built whole or on meta and initialised shard by shard (zoo.parallel)
        self.model = HybridLMBody(c, device="meta", dtype=dtype)
        self.lm_head = nn.Linear(c.hidden_size, c.vocab_size, bias=False, device="meta", dtype=dtype)
        if c.tie_embeddings:
            self.lm_head.weight = self.model.embed_tokens.weight
        if target.type != "meta":
            self.to_empty(device=target)
            self.reset_parameters()

    # ----------------------------------------------------------------------------------------------- weights
    @torch.no_grad()
    def reset_parameters(self) -> None:
        """Normal(0, ``init_std``) for every weight matrix, embedding and expert; ones for the norms; the rotary
        tables recomputed (:meth:`init_weights` on every module, in module order)."""
        for module in self.modules():
            self.init_weights(module)

    @torch.no_grad()
    def init_weights(self, module: nn.Module) -> None:
        """Initialise what ``module`` (one of this model's modules) owns directly: Normal(0, ``init_std``) for
        ``nn.Linear`` / ``nn.Embedding`` weights and the experts' ``gate_up_proj`` / ``down_proj``, ones for RMSNorm
        weights, the rotary ``inv_freq`` table recomputed. A model built on the meta device is initialised this way
        one module at a time (:func:`zoo.parallel.materialize_`), with the same random draws as
        :meth:`reset_parameters`."""
        std = self.config.init_std
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, 0.0, std)
        elif isinstance(module, RMSNorm):
            nn.init.ones_(module.weight)
        elif isinstance(module, MoEExperts):
            module.reset_parameters(std)
        elif isinstance(module, RotaryEmbedding):
            module.reset_parameters()
        elif module is not self and hasattr(module, "reset_parameters") and _owns_tensors(module):
            module.reset_parameters()  # a plugin's module (e.g. a third-party ATTENTION): its own initialiser

    def count_params(self) -> dict[str, int]:
        """Parameter counts: ``total``; ``embedding`` and ``lm_head``; ``active`` = what one token uses without the
        embedding and LM head (all non-expert weights plus ``top_k / E`` of each MoE layer's experts)."""
        total = embedding = head = active = 0
        seen: set[int] = set()
        for name, param in self.named_parameters():
            if id(param) in seen:
                continue
            seen.add(id(param))
            n = param.numel()
            total += n
            if name.startswith("model.embed_tokens"):
                embedding += n
            elif name.startswith("lm_head"):
                head += n
            elif ".experts." in name:
                active += n * self.config.top_k // self.config.num_experts
            else:
                active += n
        return {"total": total, "embedding": embedding, "lm_head": head, "active": active}

    # ----------------------------------------------------------------------------------------------- protocol
    @property
    def vocab_size(self) -> int:
        return self.config.vocab_size

    @property
    def hidden_size(self) -> int:
        return self.config.hidden_size

    def blocks(self) -> list[nn.Module]:
        """The decoder layers: the units of sharding and activation checkpointing."""
        return list(self.model.layers)

    def input_embeddings(self) -> nn.Module:
        return self.model.embed_tokens

    def output_layers(self) -> list[nn.Module]:
        """The final norm and the LM head (one FSDP unit)."""
        return [self.model.norm, self.lm_head]

    def flops_per_token(self, seq_len: int) -> float:
        """Training (forward + backward) FLOPs per token at ``seq_len`` (:func:`training_flops_per_token`)."""
        cache = self.__dict__.setdefault("_flops_per_token", {})
        if seq_len not in cache:
            cache[seq_len] = training_flops_per_token(self.config, seq_len)
        return cache[seq_len]

    # ----------------------------------------------------------------------------------------------- forward
    def forward_head(self, h: torch.Tensor) -> torch.Tensor:
        """Logits ``[..., vocab]`` from final hidden states ``[..., d]`` (fp32 when ``lm_head_fp32``)."""
        if self.config.lm_head_fp32:
            with torch.autocast(h.device.type, enabled=False):
                return F.linear(h.float(), self.lm_head.weight.float())
        return self.lm_head(h)

    def hidden_states(
        self,
        input_ids: torch.Tensor,
        *,
        cu_seqlens: torch.Tensor | None = None,
        cache: GenerationCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """The final-norm hidden states ``[B, T, d]``. With ``inputs_embeds`` ``[B, T, d]`` (e.g. text embeddings
        with image features spliced in, :mod:`zoo.vision_language`) the embedding lookup is skipped; ``input_ids``
        still gives ``B, T``."""
        B, T = input_ids.shape
        if inputs_embeds is None:
            h = self.model.embed_tokens(input_ids)
        elif inputs_embeds.shape != (B, T, self.config.hidden_size):
            raise ValueError(
                f"inputs_embeds has shape {tuple(inputs_embeds.shape)}; input_ids {tuple(input_ids.shape)} needs "
                f"{(B, T, self.config.hidden_size)}"
            )
        else:
            h = inputs_embeds
        if cu_seqlens is not None:
            if cache is not None:
                raise ValueError("packed sequences (cu_seqlens) cannot be combined with a generation cache")
            if not cu_seqlens.is_cuda and int(cu_seqlens[-1]) != B * T:  # (no host sync on the GPU)
                raise ValueError(f"cu_seqlens ends at {int(cu_seqlens[-1])}, but the batch has B·T = {B * T} tokens")
            h = h.reshape(1, B * T, -1)
        step = cache is not None and T == 1 and cache.length > 0
        for i, layer in enumerate(self.model.layers):
            h = layer(h, cu_seqlens=cu_seqlens, cache=None if cache is None else cache.layers[i], step=step)
        if cache is not None:
            cache.length += T
        return self.model.norm(h).reshape(B, T, -1)

    def forward(
        self,
        input_ids: torch.Tensor,
        *,
        cu_seqlens: torch.Tensor | None = None,
        cache: GenerationCache | None = None,
        inputs_embeds: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` (fp32 when ``lm_head_fp32``) for ``input_ids`` ``[B, T]``; with a ``cache`` the
        tokens continue the cached ones (prefill through the chunked kernel, single tokens through the decode step).
        ``inputs_embeds`` ``[B, T, d]`` replaces the embedding lookup (:meth:`hidden_states`).
        """
        hidden = self.hidden_states(input_ids, cu_seqlens=cu_seqlens, cache=cache, inputs_embeds=inputs_embeds)
        return self.forward_head(hidden)

    def forward_loss(
        self,
        input_ids: torch.Tensor,
        labels: torch.Tensor,
        *,
        cu_seqlens: torch.Tensor | None = None,
        inputs_embeds: torch.Tensor | None = None,
        ignore_index: int = -100,
        chunk_size: int | None = None,
    ) -> torch.Tensor:
        """The mean next-token cross-entropy of ``labels`` ``[B, T]`` (``ignore_index``: no loss) without the
        ``[B, T, vocab]`` logits: the LM head and the loss run fused, chunk by chunk
        (:func:`zoo.layers.linear_cross_entropy`); equal to ``F.cross_entropy(forward(...).float(), labels)``."""
        hidden = self.hidden_states(input_ids, cu_seqlens=cu_seqlens, inputs_embeds=inputs_embeds)
        weight = self.lm_head.weight
        if not self.config.lm_head_fp32 and torch.is_autocast_enabled(hidden.device.type):
            weight = weight.to(torch.get_autocast_dtype(hidden.device.type))  # what autocast's lm_head would use
            hidden = hidden.to(weight.dtype)
        with torch.autocast(hidden.device.type, enabled=False):
            return linear_cross_entropy(
                hidden, weight, labels, ignore_index=ignore_index, chunk_size=chunk_size,
                fp32_logits=self.config.lm_head_fp32,
            )  # fmt: skip

    def moe_layers(self) -> list[nn.Module]:
        return [layer.mlp for layer in self.model.layers if layer.ffn_type == "moe"]

    def moe_loss(self) -> torch.Tensor | None:
        """Σ over MoE layers of ``aux_loss_coef · aux + z_loss_coef · z`` from the last forward (None without MoE)."""
        losses = [m.loss for m in self.moe_layers() if getattr(m, "loss", None) is not None]
        return torch.stack(losses).sum() if losses else None

    def moe_stats(self) -> dict[str, torch.Tensor]:
        """Per-expert load ``[n_moe_layers, E]`` (fraction of routed assignments) and the dropped fraction."""
        layers = [m for m in self.moe_layers() if getattr(m, "expert_load", None) is not None]
        if not layers:
            return {}
        return {
            "expert_load": torch.stack([m.expert_load for m in layers]),
            "dropped_fraction": torch.stack([torch.as_tensor(m.dropped_fraction) for m in layers]).mean(),
            "aux_loss": torch.stack([m.aux_loss.detach() for m in layers]).mean(),
        }

    # ----------------------------------------------------------------------------------------------- generation
    def new_cache(self) -> GenerationCache:
        return GenerationCache(self.model.layers)

    def supports_static_cache(self) -> bool:
        """Whether every layer's token mixer has the static-cache methods (``new_static_cache``,
        ``prefill_static``, ``decode_static``) that :mod:`zoo.generation`'s engine runs; a plugin mixer without
        them generates through :meth:`new_cache` instead."""
        return all(hasattr(layer.self_attn, "decode_static") for layer in self.model.layers)

    def new_static_cache(
        self,
        batch_size: int,
        max_len: int,
        *,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> list[Any]:
        """One preallocated cache per layer for ``batch_size`` slots of up to ``max_len`` positions (lightning
        states fp32 ``[B, H, D, D]``, softmax keys and values ``[B, H_kv, T_max, D]`` in the model's dtype)."""
        weight = self.model.embed_tokens.weight
        device, dtype = device or weight.device, dtype or weight.dtype
        return [
            layer.self_attn.new_static_cache(batch_size, max_len, device=device, dtype=dtype)
            for layer in self.model.layers
        ]

    def prefill(
        self,
        input_ids: torch.Tensor,
        cu_seqlens: torch.Tensor,
        cache: list[Any],
        slots: torch.Tensor,
        *,
        inputs_embeds: torch.Tensor | None = None,
    ):
        """Prompts of any lengths packed into ``input_ids`` ``[ΣT]`` (int32 offsets ``cu_seqlens`` ``[N+1]``): each
        one's attention state lands in its slot ``slots[n]`` of ``cache``; no padding token enters any state.
        ``inputs_embeds`` ``[ΣT, d]``: the embeddings to read instead of the tokens' (e.g. image features).
        Returns the logits after each prompt's last token, ``[N, vocab]``."""
        h = (self.model.embed_tokens(input_ids) if inputs_embeds is None else inputs_embeds)[None]
        for layer, layer_cache in zip(self.model.layers, cache, strict=True):
            h = layer.prefill_static(h, cu_seqlens, layer_cache, slots)
        last = cu_seqlens[1:].long() - 1
        return self.forward_head(self.model.norm(h[0, last]))

    def decode(
        self, tokens: torch.Tensor, positions: torch.Tensor, cache: list[Any], *, span: int | None = None
    ) -> torch.Tensor:
        """One token for each of the first ``B`` slots: ``tokens`` ``[B]`` at ``positions`` ``[B]`` (int64, the
        tokens each slot already holds, all below ``span``: the cached positions softmax layers attend over, all
        of them when None) → logits ``[B, vocab]``. Fixed shapes, in-place cache updates, no host sync: the step a
        CUDA graph captures."""
        h = self.model.embed_tokens(tokens)[:, None]
        for layer, layer_cache in zip(self.model.layers, cache, strict=True):
            h = layer.decode_static(h, layer_cache, positions, span=span)
        return self.forward_head(self.model.norm(h[:, 0]))

    generate = generate  # zoo.generation.generate as a method (model.generate(prompts, n, …)), for users who call it


def training_flops_per_token(config: HybridLMConfig, seq_len: int) -> float:
    """Forward+backward FLOPs per token (for MFU): ``6·N_active`` (plus the LM head) and the attention terms —
    softmax ``6·2·T/2·H·D`` per layer (causal average), lightning ``6·(2·D·D_h + block terms)`` per layer
    (state products ``2·2·H·D²`` and the intra-block quadratic part with 64-token blocks)."""
    c = config
    D = c.head_dim or c.hidden_size // c.num_heads
    layout = c.attention_layout
    with torch.device("meta"):
        counts = HybridLM(c).count_params()
    flops = 6.0 * (counts["active"] + counts["lm_head"])
    block = 64
    for kind in layout:
        if kind == "softmax":
            flops += 6.0 * 2 * (seq_len / 2) * c.num_heads * D
        else:
            flops += 6.0 * c.num_heads * (2 * D * D + 2 * D * D + 2 * (block / 2) * D)
    return flops


__all__ = ["DecoderLayer", "GenerationCache", "HybridLM", "HybridLMConfig", "training_flops_per_token"]
