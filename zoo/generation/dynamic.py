"""Generation through the model's own growing cache (``model.new_cache()``), one forward per token.

The path for models that have no static cache (a plugin token mixer without ``decode_static``, a model of the
protocol such as the tests' GRU LM) and for sharded models, whose every forward is a collective: prompts are
batched by length (the cache takes no padding), and under a sharded model every rank runs the same sequence of
forwards (the lengths of every rank, a blank prompt where a rank has none of a length, and the same number of
steps).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from zoo.generation.sampling import cut_at_eos, mask_finished, sample_logits
from zoo.parallel.fsdp import is_sharded


def generate_dynamic(
    model: Any,
    prompts: Sequence[Sequence[int]],
    max_new_tokens: int,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    eos: int | None,
    seeds: torch.Tensor,
    device: torch.device,
    inputs_embeds: Sequence[torch.Tensor] | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """New tokens and their log-probabilities for each prompt (see :func:`zoo.generation.generate`)."""
    tokens: list[Any] = [None] * len(prompts)
    logprobs: list[Any] = [None] * len(prompts)
    by_length: dict[int, list[int]] = {}
    for i, prompt in enumerate(prompts):
        by_length.setdefault(len(prompt), []).append(i)
    sharded = is_sharded(model)
    for length in _lengths(by_length, sharded):
        members = by_length.get(length, [])
        blank = not members  # only another rank has prompts of this length
        rows = [[eos or 0] * length] if blank else [list(prompts[i]) for i in members]
        group_seeds = seeds[:1] if blank else seeds[torch.tensor(members, device=seeds.device)]
        embeds = None
        if inputs_embeds is not None:  # a blank group reads zeros: every rank then skips the embedding alike
            width, dtype = inputs_embeds[0].shape[-1], inputs_embeds[0].dtype
            embeds = (torch.stack([inputs_embeds[i] for i in members]) if members
                      else torch.zeros(1, length, width, dtype=dtype)).to(device)  # fmt: skip
        out, lp = _generate_batch(
            model, torch.tensor(rows, device=device), max_new_tokens, temperature=temperature, top_p=top_p,
            top_k=top_k, eos=eos, seeds=group_seeds, sharded=sharded, inputs_embeds=embeds,
        )  # fmt: skip
        for row, i in enumerate(members):
            tokens[i], logprobs[i] = cut_at_eos(out[row], lp[row], eos)
    return tokens, logprobs


def _generate_batch(
    model: Any,
    input_ids: torch.Tensor,
    max_new_tokens: int,
    *,
    temperature: float,
    top_p: float,
    top_k: int,
    eos: int | None,
    seeds: torch.Tensor,
    sharded: bool,
    inputs_embeds: torch.Tensor | None = None,
) -> tuple[list[list[int]], list[list[float]]]:
    """Equal-length prompts ``[B, T0]`` (their embeddings ``[B, T0, d]`` in place of the tokens' if given):
    prefill once, then one cached forward of ``[B, 1]`` per token."""
    B = input_ids.shape[0]
    steps_tokens, steps_logp = [], []
    cache = model.new_cache()
    if inputs_embeds is None:
        logits = model(input_ids, cache=cache)[:, -1]
    else:
        logits = model(input_ids, cache=cache, inputs_embeds=inputs_embeds.to(next(model.parameters()).dtype))[:, -1]
    finished = torch.zeros(B, dtype=torch.bool, device=input_ids.device)
    counters = torch.zeros(B, dtype=torch.int64, device=input_ids.device)
    for i in range(max_new_tokens):
        token, logp = sample_logits(
            logits, temperature=temperature, top_p=top_p, top_k=top_k, seeds=seeds, counters=counters
        )
        token, logp = mask_finished(token, logp, finished, eos)
        steps_tokens.append(token)
        steps_logp.append(logp)
        if i == max_new_tokens - 1 or (eos is not None and _all_finished(finished, sharded)):
            break
        counters += 1
        logits = model(token[:, None], cache=cache)[:, -1]
    if not steps_tokens:
        return [[] for _ in range(B)], [[] for _ in range(B)]
    return torch.stack(steps_tokens, 1).tolist(), torch.stack(steps_logp, 1).tolist()


def _lengths(by_length: dict[int, list[int]], sharded: bool) -> list[int]:
    """The prompt lengths to generate for, in order: this rank's, or under a sharded model those of every rank."""
    lengths = sorted(by_length)
    if not sharded:
        return lengths
    import torch.distributed as dist

    every: list[Any] = [None] * dist.get_world_size()
    dist.all_gather_object(every, lengths)
    return sorted({n for rank_lengths in every for n in rank_lengths})


def _all_finished(finished: torch.Tensor, sharded: bool) -> bool:
    """Whether every sequence is done: on this process, or on every process when the model is sharded (all ranks
    must take the same number of decode steps)."""
    done = finished.all()
    if sharded:
        import torch.distributed as dist

        flag = done.to(torch.int32)
        dist.all_reduce(flag, op=dist.ReduceOp.MIN)
        done = flag.bool()
    return bool(done)
