"""Sampling and the generation loop for any causal LM of the model protocol (:class:`zoo.models.CausalLM`).

The model owns its cache (``model.new_cache()``: lightning states and softmax KV for :class:`~zoo.models.HybridLM`);
this module owns what happens between forwards: choosing the next token and deciding when to stop.
"""

from __future__ import annotations

from typing import Any

import torch

from zoo.parallel.fsdp import is_sharded


def sample_token(
    logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of ``logits`` ``[B, V]`` → ``[B]``: greedy when ``temperature == 0``, else
    softmax(logits / T) restricted to the smallest set of tokens whose probability reaches ``top_p`` (nucleus
    sampling; the most likely token always stays)."""
    if temperature < 0 or not 0 < top_p <= 1:
        raise ValueError(f"need temperature ≥ 0 and 0 < top_p ≤ 1, got {temperature}, {top_p}")
    if temperature == 0:
        return logits.argmax(-1)
    probs = torch.softmax(logits.float() / temperature, -1)
    if top_p < 1:
        sorted_probs, order = probs.sort(-1, descending=True)
        keep = sorted_probs.cumsum(-1) - sorted_probs < top_p  # the first token always stays
        sorted_probs = sorted_probs * keep
        probs = torch.zeros_like(probs).scatter_(-1, order, sorted_probs)
    return torch.multinomial(probs, 1, generator=generator)[:, 0]


@torch.no_grad()
def generate(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    eos: int | None = None,
    *,
    generator: torch.Generator | None = None,
    return_logprobs: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Sample ``max_new_tokens`` after the prompts ``input_ids`` ``[B, T0]`` (same length, no padding).

    The prompt is prefilled once (``model(input_ids, cache=cache)`` with ``cache = model.new_cache()``), then each
    new token is one cached forward of ``[B, 1]``. ``temperature = 0`` is greedy; ``top_p < 1`` samples from the
    nucleus. A sequence that produced ``eos`` keeps producing ``eos``, and generation stops when every sequence has.

    Args:
        model: a causal LM of the model protocol (``forward(ids, cache=…)`` and ``new_cache()``).

    Returns:
        ``[B, T0 + n]`` token ids (n ≤ ``max_new_tokens``); with ``return_logprobs`` also ``[B, n]`` fp32
        log-probabilities of the sampled tokens under the temperature-1 distribution (0 after ``eos``).
    """
    if input_ids.ndim != 2 or input_ids.shape[1] == 0:
        raise ValueError(f"input_ids must be [B, T0] with T0 ≥ 1, got {tuple(input_ids.shape)}")
    if max_new_tokens < 0:
        raise ValueError(f"max_new_tokens must be ≥ 0, got {max_new_tokens}")
    tokens, logprobs = [input_ids], []
    if max_new_tokens > 0:
        cache = model.new_cache()
        logits = model(input_ids, cache=cache)[:, -1]
        finished = torch.zeros(input_ids.shape[0], dtype=torch.bool, device=input_ids.device)
        sharded = is_sharded(model)
        for i in range(max_new_tokens):
            next_token = sample_token(logits, temperature, top_p, generator)
            logp = torch.log_softmax(logits.float(), -1).gather(-1, next_token[:, None])[:, 0]
            if eos is not None:
                next_token = torch.where(finished, torch.full_like(next_token, eos), next_token)
                logp = torch.where(finished, torch.zeros_like(logp), logp)
                finished |= next_token == eos
            tokens.append(next_token[:, None])
            logprobs.append(logp)
            if (eos is not None and _all_finished(finished, sharded)) or i == max_new_tokens - 1:
                break
            logits = model(next_token[:, None], cache=cache)[:, -1]
    out = torch.cat(tokens, dim=1)
    if return_logprobs:
        lp = torch.stack(logprobs, 1) if logprobs else out.new_zeros(out.shape[0], 0, dtype=torch.float32)
        return out, lp
    return out


__all__ = ["generate", "sample_token"]


def _all_finished(finished: torch.Tensor, sharded: bool) -> bool:
    """Whether every sequence is done: on this process, or on every process when the model is sharded (each
    forward of a sharded model is a collective, so all ranks must take the same number of decode steps)."""
    done = finished.all()
    if sharded:
        import torch.distributed as dist

        flag = done.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        done = flag.bool()
    return bool(done)
