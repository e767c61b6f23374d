"""Rollouts: sampling completions from the policy (:mod:`zoo.generation`), M1's repetition cut, and the per-token
log-probabilities (and values) of a forward pass that the objectives compare.

A completion is ``(prompt ids, completion ids incl. EOS if produced, per-token log-probs of the sampling policy)``.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any, NamedTuple

import torch
from torch import nn

from tasks.data.tokenizer import Tokenizer
from zoo.generation import generate


class Completion(NamedTuple):
    """One sampled completion: ``prompt`` and ``tokens`` (ids; ``tokens`` ends with EOS if the policy finished)
    and ``logprobs``, the sampling policy's log-probability of each of ``tokens``."""

    prompt: list[int]
    tokens: list[int]
    logprobs: list[float]


def encode_problem(tokenizer: Tokenizer, problem: Any, answer: str | None = None) -> list[int]:
    """The ids of ``problem.prompt``, followed by ``answer`` and EOS when given."""
    ids = list(tokenizer.encode(problem.prompt))
    if answer is not None:
        ids += [*tokenizer.encode(answer), tokenizer.eos_id]
    return ids


def pad(
    rows: Sequence[Sequence[int]], value: int, device: torch.device | str | None = None, multiple: int = 1
) -> torch.Tensor:
    """Right-pad id lists to one ``[len(rows), W]`` int64 tensor, ``W`` the longest row rounded up to a multiple of
    ``multiple``."""
    width = -(-max(len(r) for r in rows) // multiple) * multiple
    return torch.tensor([[*r, *([value] * (width - len(r)))] for r in rows], device=device)


def sample_completions(
    policy: nn.Module,
    prompts: Sequence[list[int]],
    repeats: int,
    *,
    max_new_tokens: int,
    eos: int,
    seed: int,
    temperature: float = 1.0,
    top_p: float = 1.0,
    engine: bool | None = None,
    compile: bool | None = None,
) -> list[Completion]:
    """``repeats`` completions of each prompt, in order (prompt 0's first), from :func:`zoo.generation.generate`
    (``temperature`` 0: greedy): all prompts in one ragged batch through the decode engine (or, for a sharded
    policy, batched by length with every rank in step). ``engine`` and ``compile`` as :func:`generate`'s.
    Completion ``j`` of the batch draws from seed ``seed·1000003 + j``."""
    rows = [list(p) for p in prompts for _ in range(repeats)]
    out = generate(policy, rows, max_new_tokens, temperature=temperature, top_p=top_p, eos=eos, seed=seed,
                   engine=engine, compile=compile)  # fmt: skip
    return [Completion(row, tokens, logprobs) for row, tokens, logprobs in zip(rows, out.tokens, out.logprobs)]


def repetition_cut(logprobs: Sequence[float], run: int, threshold: float = 0.99) -> int | None:
    """MiniMax-M1's early truncation rule (§3.2: stop after 3,000 consecutive tokens each with p > 0.99), with the
    run length scaled down: the index after which a run of ``run`` such tokens ends, or None."""
    streak, log_threshold = 0, math.log(threshold)
    for i, lp in enumerate(logprobs):
        streak = streak + 1 if lp > log_threshold else 0
        if streak >= run:
            return i + 1
    return None


def sequence_logprobs(
    logits: torch.Tensor, targets: torch.Tensor, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """Log-probabilities ``[B, T]`` of ``targets`` under ``logits`` ``[B, T, V]`` (fp32), and the entropy of each
    position's distribution when asked."""
    logp_all = torch.log_softmax(logits.float(), dim=-1)
    logp = logp_all.gather(-1, targets.unsqueeze(-1)).squeeze(-1)
    entropy = -(logp_all.exp() * logp_all).sum(-1) if with_entropy else None
    return logp, entropy


def token_logprobs(
    model: nn.Module, ids: torch.Tensor, value_head: nn.Module | None = None, with_entropy: bool = False
) -> tuple[torch.Tensor, torch.Tensor | None, torch.Tensor | None]:
    """One forward of a causal LM (the model protocol's ``hidden_states`` and ``forward_head``) over ``ids``
    ``[B, T]``: ``(log-probs of ids[:, 1:] [B, T−1], the value head's values [B, T−1] or None, entropy or None)``."""
    hidden = model.hidden_states(ids[:, :-1])
    logp, entropy = sequence_logprobs(model.forward_head(hidden), ids[:, 1:], with_entropy)
    values = value_head(hidden.float()).squeeze(-1) if value_head is not None else None
    return logp, values, entropy
