"""Generation for any causal LM of the model protocol (:class:`zoo.models.CausalLM`).

``generate(model, prompts, max_new_tokens, *, temperature=0.0, top_p=1.0, top_k=0, eos=None, seed=None)`` takes
prompts of any lengths and returns a :class:`GenerationOutput`. Two implementations, the same tokens:

- :mod:`zoo.generation.engine`: the decode engine, for models with a static cache (:class:`~zoo.models.HybridLM`)
  that are not sharded: ragged prompts prefilled packed, a preallocated cache updated in place, the decode step
  compiled by ``torch.compile`` and replayed as a CUDA graph per batch bucket on the GPU (eager on the CPU), no host
  synchronisation per token;
- :mod:`zoo.generation.dynamic`: the model's own growing cache (``model.new_cache()``), prompts batched by length,
  one forward per token — for other models and for sharded ones (every rank runs the same forwards).

Sampling (:mod:`zoo.generation.sampling`) draws from a hash of each sequence's seed and step, so a sequence's
tokens depend on its seed only, on either path.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from zoo.generation.dynamic import generate_dynamic
from zoo.generation.engine import DecodeEngine
from zoo.generation.sampling import check_sampling, sample_logits, sample_token, uniform_noise
from zoo.parallel.fsdp import is_sharded

#: The engine's positions per slot are rounded up to a multiple of this (an engine is reused while it fits).
LENGTH_QUANTUM = 256


@dataclass
class GenerationOutput:
    """What :func:`generate` returns, one list per prompt: ``tokens``, the new token ids (ending at ``eos`` if it
    was produced), and ``logprobs``, their log-probabilities under the temperature-1 distribution."""

    tokens: list[list[int]]
    logprobs: list[list[float]]


def _seeds(seed: int | None, n: int) -> torch.Tensor:
    """Per-sequence seeds ``[n]`` int64: ``seed``'s n consecutive values, or n random ones (torch's global RNG)."""
    if seed is None:
        return torch.randint(0, 2**31 - 1, (n,), dtype=torch.int64)
    return torch.arange(n, dtype=torch.int64) + int(seed) * 1_000_003


def _as_lists(prompts: Sequence[Sequence[int]] | torch.Tensor) -> list[list[int]]:
    if isinstance(prompts, torch.Tensor) and prompts.ndim != 2:
        raise ValueError(f"prompts as a tensor must be [B, T0], got {tuple(prompts.shape)}")
    rows = prompts.tolist() if isinstance(prompts, torch.Tensor) else [list(map(int, p)) for p in prompts]
    if any(len(row) == 0 for row in rows):
        raise ValueError("every prompt needs at least one token")
    return rows


def _check_embeds(inputs_embeds: Sequence[torch.Tensor] | None, rows: list[list[int]]) -> list[torch.Tensor] | None:
    if inputs_embeds is None:
        return None
    embeds = list(inputs_embeds)
    if len(embeds) != len(rows) or any(e.ndim != 2 or e.shape[0] != len(r) for e, r in zip(embeds, rows)):
        shapes = [tuple(e.shape) for e in embeds]
        raise ValueError(f"inputs_embeds must be one [len(prompt), hidden] tensor per prompt; got {shapes} for "
                         f"prompts of lengths {[len(r) for r in rows]}")  # fmt: skip
    return embeds


def engine_for(model: Any, n: int, max_len: int, compile: bool | None = None) -> DecodeEngine:
    """The model's decode engine, reused while it holds ``n`` sequences of ``max_len`` positions and compiles as
    asked (``compile``: as :class:`DecodeEngine`'s; None: its default). A larger one is built, and the old one's
    caches and graphs released, when not."""
    engine = model.__dict__.get("_zoo_decode_engine")
    weight = next(model.parameters())
    stale = engine is not None and (
        not engine.fits(n, max_len)
        or (engine.device, engine.dtype) != (weight.device, weight.dtype)
        or (compile is not None and engine.compile_requested != compile)
    )
    if engine is None or stale:
        size = -(-max_len // LENGTH_QUANTUM) * LENGTH_QUANTUM
        if engine is not None:
            size, n = max(size, engine.max_len), max(n, engine.max_batch)
        model.__dict__["_zoo_decode_engine"] = None  # free the old caches before allocating new ones
        engine = DecodeEngine(model, n, size, compile=compile)
        model.__dict__["_zoo_decode_engine"] = engine
    return engine


def uses_engine(model: Any) -> bool:
    """Whether :func:`generate` runs ``model`` through the decode engine (a static cache, not sharded)."""
    supports = getattr(model, "supports_static_cache", None)
    return callable(supports) and bool(supports()) and not is_sharded(model)


@torch.no_grad()
def generate(
    model: Any,
    prompts: Sequence[Sequence[int]] | torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float = 0.0,
    top_p: float = 1.0,
    top_k: int = 0,
    eos: int | None = None,
    seed: int | None = None,
    engine: bool | None = None,
    compile: bool | None = None,
    inputs_embeds: Sequence[torch.Tensor] | None = None,
) -> GenerationOutput:
    """Continue each prompt by up to ``max_new_tokens`` tokens.

    Args:
        model: a causal LM of the model protocol; it generates in eval mode and is given back in the mode it had.
        prompts: token-id lists of any lengths (or a ``[B, T0]`` tensor).
        max_new_tokens: the budget; a sequence stops early at ``eos``.
        temperature: 0 is greedy; otherwise the logits are divided by it before ``top_k`` / ``top_p``.
        top_p: nucleus sampling (1: off). top_k: keep the k most likely tokens (0: off).
        eos: the stop token (kept as the last token of a sequence that produced it).
        seed: sequence i draws from seed ``seed·1000003 + i``, whatever the batch (None: random seeds).
        engine: generate through the decode engine (True: required), through the dynamic path (False), or
            through the engine where :func:`uses_engine` allows it (None). Both draw the same tokens.
        compile: whether the engine compiles its decode step with ``torch.compile`` before capturing it (None: on
            CUDA). Compiling costs seconds per (batch bucket, span, sampling) setting and pays for large models
            and long generations; a tiny model's graph-captured step is already launch-bound either way.
        inputs_embeds: per prompt ``[len(prompt), hidden_size]``, the input embeddings its prefill reads instead of
            its tokens' (a vision-language model's image features in place of its ``<image>`` placeholders; the
            model's ``prefill`` / ``forward`` must take ``inputs_embeds``); the new tokens are embedded as usual.

    Returns:
        :class:`GenerationOutput` with ``tokens`` and ``logprobs`` per prompt.
    """
    check_sampling(temperature, top_p, top_k)
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    rows = _as_lists(prompts)
    if not rows:
        return GenerationOutput([], [])
    if engine and not uses_engine(model):
        raise ValueError(f"engine=True needs a model with a static cache that is not sharded; "
                         f"{type(model).__name__} has none or is sharded: use engine=None or False")  # fmt: skip
    embeds = _check_embeds(inputs_embeds, rows)
    seeds = _seeds(seed, len(rows))
    sampling = {"temperature": temperature, "top_p": top_p, "top_k": top_k, "eos": eos, "inputs_embeds": embeds}
    was_training = model.training
    model.eval()
    try:
        if uses_engine(model) if engine is None else engine:
            decode_engine = engine_for(model, len(rows), max(map(len, rows)) + max_new_tokens, compile)
            tokens, logprobs = decode_engine.run(rows, max_new_tokens, **sampling, seeds=seeds)
        else:
            device = next(model.parameters()).device
            tokens, logprobs = generate_dynamic(model, rows, max_new_tokens, **sampling, seeds=seeds.to(device),
                                                device=device)  # fmt: skip
    finally:
        model.train(was_training)
    return GenerationOutput(tokens, logprobs)


__all__ = [
    "DecodeEngine",
    "GenerationOutput",
    "engine_for",
    "generate",
    "generate_dynamic",
    "sample_logits",
    "sample_token",
    "uniform_noise",
    "uses_engine",
]
