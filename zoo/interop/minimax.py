"""Hugging Face interop: :class:`~zoo.models.HybridLM` ⇄ ``transformers``' ``MiniMaxForCausalLM`` (same weights).

Our parameter names are Hugging Face's (``model.layers.N.self_attn.qkv_proj.weight``,
``model.layers.N.mlp.experts.gate_up_proj``, …), so the conversion is a config translation plus a state-dict copy.
What Hugging Face's port can express, and so what :func:`to_hf` requires:

- every layer an MoE FFN (``ffn: moe``), post-norm, SwiGLU experts, dropless routing at inference;
- RoPE over the whole head (``rope_fraction: 1.0``; the port has no partial rotary, unlike MiniMax's own code,
  which rotates half of each head — minimax.md §2.2);
- the lightning output norm's epsilon 1e-6 (hard-coded in the port);
- its decay slopes: ``decay_convention: hf`` reproduces them exactly; ``minimax`` is accepted when the head count
  is a power of two (the slopes agree and the layer factors differ by ≤ 1e-5 relative).

:func:`from_hf` returns a model with ``decay_convention="hf"`` and ``rope_fraction=1.0``, whose logits match the
original's to ~1e-6 in fp32 (the tests require ≤ 1e-4 both ways round).
"""

from __future__ import annotations

import math
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from zoo.models.hybrid_lm import HybridLM, HybridLMConfig

LAYER_TYPES = {"lightning": "linear_attention", "softmax": "full_attention"}


def _transformers():
    try:
        from transformers import MiniMaxConfig, MiniMaxForCausalLM
    except ImportError as exc:  # pragma: no cover - depends on the environment
        raise ImportError("Hugging Face interop needs transformers ≥ 5 with MiniMax: pip install -e '.[hf]'") from exc
    return MiniMaxConfig, MiniMaxForCausalLM


def config_from_hf(hf_config: Any) -> HybridLMConfig:
    """Our :class:`HybridLMConfig` for a ``transformers`` ``MiniMaxConfig``."""
    letters = {"linear_attention": "L", "full_attention": "S"}
    unknown = sorted({t for t in hf_config.layer_types if t not in letters})
    if unknown:
        raise ValueError(f"MiniMaxConfig.layer_types has {unknown}; supported: {', '.join(letters)}")
    rope = hf_config.rope_parameters or {}
    if rope.get("rope_type", "default") != "default":
        raise ValueError(f"RoPE type '{rope.get('rope_type')}' is not supported; only 'default'")
    if hf_config.hidden_act != "silu":
        raise ValueError(f"hidden_act '{hf_config.hidden_act}' is not supported; MiniMax uses silu")
    if getattr(hf_config, "sliding_window", None):
        raise ValueError("sliding-window softmax attention is not supported")
    return HybridLMConfig(
        vocab_size=hf_config.vocab_size,
        hidden_size=hf_config.hidden_size,
        num_layers=hf_config.num_hidden_layers,
        attention=[letters[t] for t in hf_config.layer_types],
        num_heads=hf_config.num_attention_heads,
        num_kv_heads=hf_config.num_key_value_heads,
        head_dim=getattr(hf_config, "head_dim", None) or hf_config.hidden_size // hf_config.num_attention_heads,
        rope_fraction=1.0,
        rope_theta=float(rope.get("rope_theta", 10_000.0)),
        ffn="moe",
        intermediate_size=hf_config.intermediate_size,
        num_experts=hf_config.num_local_experts,
        top_k=hf_config.num_experts_per_tok,
        moe_kwargs={
            "aux_loss_coef": float(hf_config.router_aux_loss_coef),
            "aux_loss_type": "switch",
            "jitter_noise": float(hf_config.router_jitter_noise),
        },
        norm="post",
        lightning_alpha=float(hf_config.linear_attn_alpha_factor),
        lightning_beta=float(hf_config.linear_attn_beta_factor),
        softmax_alpha=float(hf_config.full_attn_alpha_factor),
        softmax_beta=float(hf_config.full_attn_beta_factor),
        ffn_alpha=float(hf_config.mlp_alpha_factor),
        ffn_beta=float(hf_config.mlp_beta_factor),
        rms_norm_eps=float(hf_config.rms_norm_eps),
        lightning_norm_eps=1e-6,
        decay_convention="hf",
        tie_embeddings=bool(hf_config.tie_word_embeddings),
        init_std=float(hf_config.initializer_range),
    )


def config_to_hf(config: HybridLMConfig) -> Any:
    """A ``transformers`` ``MiniMaxConfig`` for our config.

    Raises:
        ValueError: an option Hugging Face's port cannot express (see the module docstring), naming the key.
    """
    MiniMaxConfig, _ = _transformers()
    c = config
    problems = []
    if set(c.ffn_layout) != {"moe"}:
        problems.append(f"ffn={c.ffn!r}: the port has an MoE in every layer (set ffn: moe)")
    if c.norm != "post":
        problems.append("norm='pre': the port is post-norm only")
    if c.rope_fraction != 1.0:
        problems.append(f"rope_fraction={c.rope_fraction}: the port rotates the whole head (set rope_fraction: 1.0)")
    if c.lightning_norm_eps != 1e-6:
        problems.append(f"lightning_norm_eps={c.lightning_norm_eps}: the port hard-codes 1e-6")
    if c.decay_convention == "minimax" and not math.log2(c.num_heads).is_integer():
        problems.append(
            f"num_heads={c.num_heads} is not a power of two: MiniMax's ALiBi slopes differ from the port's (train "
            f"with decay_convention: hf to export)"
        )
    if (c.moe_kwargs or {}).get("aux_loss_type", "switch") not in ("switch",):
        problems.append("moe_kwargs.aux_loss_type: the port's aux loss is the switch form")
    if problems:
        raise ValueError("cannot express this model in transformers' MiniMax: " + "; ".join(problems))
    alpha = {k: c.residual_factors(k) for k in ("lightning", "softmax", "ffn")}
    return MiniMaxConfig(
        vocab_size=c.vocab_size,
        hidden_size=c.hidden_size,
        intermediate_size=c.intermediate_size,
        num_hidden_layers=c.num_layers,
        num_attention_heads=c.num_heads,
        num_key_value_heads=c.num_kv_heads or c.num_heads,
        head_dim=c.head_dim or c.hidden_size // c.num_heads,
        hidden_act="silu",
        rms_norm_eps=c.rms_norm_eps,
        tie_word_embeddings=c.tie_embeddings,
        num_experts_per_tok=c.top_k,
        num_local_experts=c.num_experts,
        router_aux_loss_coef=float((c.moe_kwargs or {}).get("aux_loss_coef", 0.001)),
        router_jitter_noise=float((c.moe_kwargs or {}).get("jitter_noise", 0.0)),
        rope_parameters={"rope_type": "default", "rope_theta": c.rope_theta},
        layer_types=[LAYER_TYPES[name] for name in c.attention_layout],
        linear_attn_alpha_factor=alpha["lightning"][0],
        linear_attn_beta_factor=alpha["lightning"][1],
        full_attn_alpha_factor=alpha["softmax"][0],
        full_attn_beta_factor=alpha["softmax"][1],
        mlp_alpha_factor=alpha["ffn"][0],
        mlp_beta_factor=alpha["ffn"][1],
        initializer_range=c.init_std,
        pad_token_id=None,
    )


def _weights(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Parameters only (buffers such as HF's decay tables and rotary caches are rebuilt from the config)."""
    return {name: p.detach() for name, p in model.named_parameters()}


def from_hf(
    model_or_path: Any, *, dtype: torch.dtype | None = None, device: str | torch.device | None = None
) -> HybridLM:
    """Our :class:`HybridLM` with the weights of a ``MiniMaxForCausalLM`` object or of a directory it was saved to.

    Raises:
        ValueError: the HF model uses something ours does not express, or a weight has no counterpart.
    """
    _, MiniMaxForCausalLM = _transformers()
    hf = model_or_path
    if isinstance(model_or_path, (str, os.PathLike)):
        hf = MiniMaxForCausalLM.from_pretrained(str(model_or_path))
    model = HybridLM(config_from_hf(hf.config))
    _copy_weights(_weights(hf), model, "the HF model")
    return model.to(device=device, dtype=dtype)


def _copy_weights(source: dict[str, torch.Tensor], target: torch.nn.Module, source_name: str) -> None:
    """Copy every parameter of ``target`` from ``source`` (same names and shapes), or say what does not match."""
    params = dict(target.named_parameters())
    missing = sorted(set(params) - set(source))
    extra = sorted(set(source) - set(params))
    wrong = sorted(k for k in set(params) & set(source) if params[k].shape != source[k].shape)
    if missing or extra or wrong:
        raise ValueError(
            f"weights do not correspond: missing in {source_name} {missing[:5]}, unexpected {extra[:5]}, "
            f"shape mismatch {wrong[:5]}"
        )
    with torch.no_grad():
        for name, param in params.items():
            param.copy_(source[name])


def to_hf(model: HybridLM, path: str | os.PathLike, *, safe_serialization: bool = True) -> Path:
    """Save ``model`` as a ``transformers`` directory (``config.json`` + safetensors) that
    ``MiniMaxForCausalLM.from_pretrained(path)`` loads. Written to a temporary sibling directory first and renamed
    into place, so a crash never leaves a half-written export.

    Returns:
        the directory.
    """
    _, MiniMaxForCausalLM = _transformers()
    hf = MiniMaxForCausalLM(config_to_hf(model.config))
    _copy_weights({k: v.cpu() for k, v in _weights(model).items()}, hf, "our model")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
    try:
        hf.save_pretrained(staging, safe_serialization=safe_serialization)
        if target.exists():
            backup = target.with_name(f".{target.name}.old")
            shutil.rmtree(backup, ignore_errors=True)
            target.rename(backup)
            staging.rename(target)
            shutil.rmtree(backup, ignore_errors=True)
        else:
            staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target
