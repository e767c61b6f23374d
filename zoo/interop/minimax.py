"""Hugging Face interop: :class:`~zoo.models.HybridLM` ⇄ ``transformers``' ``MiniMaxForCausalLM`` (same weights).

Our parameter names are Hugging Face's (``model.layers.N.self_attn.qkv_proj.weight``,
``model.layers.N.mlp.experts.gate_up_proj``, …), so the conversion is a config translation plus a state-dict copy.
What Hugging Face's port can express, and so what :func:`to_hf` requires:

- every layer an MoE FFN (``ffn: moe``), post-norm, SwiGLU experts, dropless routing at inference;
- RoPE over the whole head (``rope_fraction: 1.0``; the port has no partial rotary, unlike MiniMax's own code,
  which rotates half of each head — minimax.md §2.2);
- the lightning output norm's epsilon 1e-6 (hard-coded in the port).

Decay rates convert exactly under both conventions. The port computes its rates from the config (the
``decay_convention: hf`` formula) but keeps them, and the block-decay tables derived from them, in persistent
buffers (``model.layers.N.self_attn.slope_rate``, ``query_decay``, ``key_decay``, ``diagonal_decay``) that
``from_pretrained`` loads from the checkpoint. :func:`to_hf` writes our rates there, so a ``decay_convention:
minimax`` model exports exactly too: its deepest lightning layer's factor ``1 − l/(L−1) + 1e−5`` differs from the
port's formula by up to 100 % (L = 2), and ALiBi's slopes for a head count that is not a power of two differ from
the port's geometric ones. :func:`from_hf` reads the rates back from those buffers and picks the convention that
reproduces them (``hf`` when both do), refusing a checkpoint whose rates match neither.

Logits agree to ~1e-6 in fp32 both ways round (the tests require ≤ 1e-4 at 2048 tokens).
"""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

import torch

from zoo.attention.lightning import DECAY_CONVENTIONS, decay_rates
from zoo.extras import MissingExtraError, install_hint, require
from zoo.models.hybrid_lm import HybridLM, HybridLMConfig

LAYER_TYPES = {"lightning": "linear_attention", "softmax": "full_attention"}


def _transformers():
    transformers = require("transformers", "hf", needed_for="Hugging Face interop (zoo.interop.minimax)")
    try:
        found = hasattr(transformers, "MiniMaxForCausalLM")
    except ImportError as exc:  # transformers ≥ 5.25 imports Hugging Face's `kernels`, shadowed by ours
        raise MissingExtraError(
            f"transformers {transformers.__version__} fails to import its MiniMax model ({exc}): from 5.25 it imports "
            f"Hugging Face's 'kernels' package, which this project's kernels/ package shadows; install the [hf] "
            f"extra (transformers < 5.25): {install_hint('hf')}",
            extra="hf",
            module="transformers",
        ) from exc
    if not found:
        raise MissingExtraError(
            f"Hugging Face interop needs transformers ≥ 5 with MiniMax, found {transformers.__version__}; install the "
            f"[hf] extra: {install_hint('hf')}",
            extra="hf",
            module="transformers",
        )
    return transformers.MiniMaxConfig, transformers.MiniMaxForCausalLM


def config_from_hf(hf_config: Any, decay_convention: str = "hf") -> HybridLMConfig:
    """Our :class:`HybridLMConfig` for a ``transformers`` ``MiniMaxConfig`` (``decay_convention``: see
    :func:`decay_convention_of`)."""
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
        decay_convention=decay_convention,
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
    if (c.moe_kwargs or {}).get("aux_loss_type", "switch") not in ("switch",):
        problems.append("moe_kwargs.aux_loss_type: the port's aux loss is the switch form")
    for i, spec in enumerate(c.attention_specs):
        if spec.name not in LAYER_TYPES:
            problems.append(f"attention layer {i} is '{spec.name}': the port has only {', '.join(LAYER_TYPES)}")
        elif spec.kwargs or spec.alpha is not None or spec.beta is not None:
            problems.append(f"attention layer {i} has its own arguments or residual factors: the port shares them")
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


#: Relative agreement of a checkpoint's decay rates with a convention's (fp32 rounding of the same formula is ~1e-7).
DECAY_RTOL = 1e-6


def _lightning_layers(model: torch.nn.Module) -> dict[int, torch.nn.Module]:
    """Global layer index → the lightning attention module (ours or the port's), for every lightning layer."""
    return {
        i: layer.self_attn
        for i, layer in enumerate(model.model.layers)
        if hasattr(layer.self_attn, "slope_rate") or hasattr(layer.self_attn, "decay")
    }


def _rates_match(hf_model: Any, layer: int, convention: str) -> bool:
    config = hf_model.config
    rates = hf_model.model.layers[layer].self_attn.slope_rate.detach().double().flatten().cpu()
    want = decay_rates(config.num_attention_heads, layer, config.num_hidden_layers, convention).double()
    return torch.allclose(rates, want, rtol=DECAY_RTOL, atol=0.0)


def decay_convention_of(hf_model: Any) -> str:
    """The decay convention whose rates a ``MiniMaxForCausalLM`` holds in its ``slope_rate`` buffers: ``"hf"``
    (the port's formula; also when both conventions give the same fp32 rates) or ``"minimax"``.

    Raises:
        ValueError: the rates match neither convention (naming the first such layer's buffer), or the layers
            mix conventions.
    """
    layers = list(_lightning_layers(hf_model))
    for convention in ("hf", "minimax"):  # the port's own first
        if all(_rates_match(hf_model, i, convention) for i in layers):
            return convention
    for i in layers:
        if not any(_rates_match(hf_model, i, c) for c in DECAY_CONVENTIONS):
            rates = hf_model.model.layers[i].self_attn.slope_rate.flatten().tolist()
            raise ValueError(
                f"model.layers.{i}.self_attn.slope_rate = {rates} matches neither decay convention "
                f"({', '.join(DECAY_CONVENTIONS)}); the zoo cannot express these rates"
            )
    raise ValueError(
        f"the checkpoint's slope_rate buffers mix the decay conventions ({', '.join(DECAY_CONVENTIONS)}) across "
        "layers; the zoo cannot express that"
    )


def _write_decay_buffers(ours: HybridLM, hf: torch.nn.Module) -> None:
    """Put our decay rates into the port's persistent buffers (the rates and the block tables built from them)."""
    hf_layers = _lightning_layers(hf)
    with torch.no_grad():
        for i, attn in _lightning_layers(ours).items():
            target = hf_layers[i]
            rate = attn.decay.to(dtype=target.slope_rate.dtype).view_as(target.slope_rate)
            tables = (rate, *target.decay_factors(rate))
            for name, value in zip(("slope_rate", "query_decay", "key_decay", "diagonal_decay"), tables):
                getattr(target, name).copy_(value)


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
    model = HybridLM(config_from_hf(hf.config, decay_convention_of(hf)))
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
    ``MiniMaxForCausalLM.from_pretrained(path)`` loads, with our decay rates in its ``slope_rate`` buffers (exact
    under either convention). Written to a temporary sibling directory first and renamed into place, so a crash
    never leaves a half-written export.

    Returns:
        the directory.
    """
    _, MiniMaxForCausalLM = _transformers()
    hf = MiniMaxForCausalLM(config_to_hf(model.config))
    _copy_weights({k: v.cpu() for k, v in _weights(model).items()}, hf, "our model")
    _write_decay_buffers(model, hf)
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
