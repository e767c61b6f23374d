"""Choosing the next token: greedy, temperature, top-k and nucleus (top-p) sampling, on the device.

Sampling draws its noise from a counter-based hash of ``(seed of the sequence, step)`` instead of a stateful
generator, so a sequence's samples depend only on its own seed (not on the batch it shares or on how many steps the
other sequences took), two implementations of generation draw the same tokens from the same logits, and the draw is a
pure function of device tensors that a CUDA graph can capture.
"""

from __future__ import annotations

import torch

_M32 = 0xFFFFFFFF


def _mix32(h: torch.Tensor) -> torch.Tensor:
    """MurmurHash3's 32-bit finaliser on int64 tensors holding values in ``[0, 2³²)``."""
    h = h ^ (h >> 16)
    h = (h * 0x85EBCA6B) & _M32
    h = h ^ (h >> 13)
    h = (h * 0xC2B2AE35) & _M32
    return h ^ (h >> 16)


def uniform_noise(seeds: torch.Tensor, counters: torch.Tensor, size: int) -> torch.Tensor:
    """``[B, size]`` fp32 uniforms in ``(0, 1)``, a hash of ``(seeds[b], counters[b], column)`` (int64 ``[B]``
    each): the same numbers on every device, for every batch that holds the sequence."""
    row = _mix32((seeds & _M32) ^ _mix32((counters * 0x9E3779B9) & _M32))
    columns = torch.arange(size, device=seeds.device)
    h = _mix32((row[:, None] + columns[None, :] * 0x27D4EB2F) & _M32)
    return ((h >> 8).float() + 0.5) * 2.0**-24


def check_sampling(temperature: float, top_p: float, top_k: int) -> None:
    """Raise ``ValueError`` for a negative temperature, ``top_p`` outside ``(0, 1]`` or a negative ``top_k``."""
    if temperature < 0 or not 0 < top_p <= 1 or top_k < 0:
        raise ValueError(f"need temperature ≥ 0, 0 < top_p ≤ 1 and top_k ≥ 0, got {temperature}, {top_p}, {top_k}")


def sample_logits(
    logits: torch.Tensor,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    seeds: torch.Tensor,
    counters: torch.Tensor,
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token per row of ``logits`` ``[B, V]``, and its log-probability under the temperature-1 distribution.

    ``temperature == 0`` is greedy. Otherwise the logits are divided by the temperature, restricted to the ``top_k``
    largest (``top_k > 0``) and then to the smallest set whose probability reaches ``top_p`` (the most likely token
    always stays), and a token is drawn by the Gumbel-max race ``argmax(z − log(−log u))`` with ``u`` from
    :func:`uniform_noise` — a draw from ``softmax(z)`` with no host synchronisation.

    Returns:
        ``(tokens [B] int64, logprobs [B] fp32)``.
    """
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    if temperature == 0:
        tokens = logits.argmax(-1)
    else:
        z = logits.float() / temperature
        if 0 < top_k < z.shape[-1]:
            kth = torch.topk(z, top_k, dim=-1).values[:, -1:]
            z = z.masked_fill(z < kth, float("-inf"))
        if top_p < 1:
            probs = torch.softmax(z, dim=-1)
            sorted_probs, order = probs.sort(dim=-1, descending=True)
            keep_sorted = sorted_probs.cumsum(-1) - sorted_probs < top_p
            keep = torch.zeros_like(keep_sorted).scatter_(-1, order, keep_sorted)
            z = z.masked_fill(~keep, float("-inf"))
        gumbel = -torch.log(-torch.log(uniform_noise(seeds, counters, z.shape[-1])))
        tokens = (z + gumbel).argmax(-1)
    return tokens, logp_all.gather(-1, tokens[:, None])[:, 0]


def mask_finished(
    token: torch.Tensor, logp: torch.Tensor, finished: torch.Tensor, eos: int | None
) -> tuple[torch.Tensor, torch.Tensor]:
    """A step's ``token`` / ``logp`` ``[B]`` with rows already ``finished`` set to ``eos`` (log-prob 0); rows that
    produce ``eos`` now are marked in ``finished`` (in place). Without ``eos``, all unchanged."""
    if eos is None:
        return token, logp
    token = torch.where(finished, torch.full_like(token, eos), token)
    logp = torch.where(finished, torch.zeros_like(logp), logp)
    finished |= token == eos
    return token, logp


def cut_at_eos(tokens: list[int], logprobs: list[float], eos: int | None) -> tuple[list[int], list[float]]:
    """A sequence's new tokens and log-probs up to and including its first ``eos`` (all of them without one)."""
    cut = tokens.index(eos) + 1 if eos is not None and eos in tokens else len(tokens)
    return tokens[:cut], logprobs[:cut]


def sample_token(
    logits: torch.Tensor, temperature: float = 1.0, top_p: float = 1.0, generator: torch.Generator | None = None
) -> torch.Tensor:
    """One token per row of ``logits`` ``[B, V]`` → ``[B]`` from a stateful ``generator``: greedy when
    ``temperature == 0``, else softmax(logits / T) restricted to the smallest set of tokens whose probability
    reaches ``top_p`` (nucleus sampling; the most likely token always stays)."""
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
