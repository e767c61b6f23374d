"""Components that are not the zoo's, registered from the tests (``imports=[tests.toy_lm]``): a GRU causal LM, to
prove that ``task=lm`` and ``task=rl`` use only the model protocol (:class:`zoo.models.CausalLM`), and a token mixer,
to prove that a third party's attention takes its place in the hybrid stack."""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import nn

from zoo.registries import ATTENTION, MODEL


class ToyCache:
    """The GRU's hidden state ``[1, B, d]`` after the tokens seen so far (None before the first)."""

    def __init__(self) -> None:
        self.state: torch.Tensor | None = None


@MODEL.register("toy_gru_lm")
class ToyGRULM(nn.Module):
    """Embedding → one GRU layer → LayerNorm → linear head. ``config``: ``vocab_size``, ``hidden_size``."""

    def __init__(self, config: dict[str, Any] | None = None, *, device=None, dtype=None) -> None:
        super().__init__()
        c = {"vocab_size": 257, "hidden_size": 32, **(config or {})}
        self.vocab_size, self.hidden_size = int(c["vocab_size"]), int(c["hidden_size"])
        factory = {"device": device, "dtype": dtype}
        self.embed = nn.Embedding(self.vocab_size, self.hidden_size, **factory)
        self.layers = nn.ModuleList([nn.GRU(self.hidden_size, self.hidden_size, batch_first=True, **factory)])
        self.norm = nn.LayerNorm(self.hidden_size, **factory)
        self.head = nn.Linear(self.hidden_size, self.vocab_size, bias=False, **factory)

    def hidden_states(self, input_ids, *, cu_seqlens=None, cache=None):
        B, T = input_ids.shape
        x = self.embed(input_ids)
        gru = self.layers[0]
        if cu_seqlens is not None:  # every document starts from a zero state
            flat = x.reshape(1, B * T, -1)
            bounds = cu_seqlens.tolist()
            pieces = [gru(flat[:, a:b])[0] for a, b in itertools.pairwise(bounds) if b > a]
            h = torch.cat(pieces, dim=1).reshape(B, T, -1)
        elif cache is not None:
            h, cache.state = gru(x, cache.state)
        else:
            h = gru(x)[0]
        return self.norm(h)

    def forward_head(self, hidden):
        return self.head(hidden)

    def forward(self, input_ids, *, cu_seqlens=None, cache=None):
        return self.forward_head(self.hidden_states(input_ids, cu_seqlens=cu_seqlens, cache=cache))

    def new_cache(self) -> ToyCache:
        return ToyCache()

    def blocks(self):
        return list(self.layers)

    def input_embeddings(self):
        return self.embed

    def output_layers(self):
        return [self.norm, self.head]

    def moe_layers(self):
        return []

    def moe_loss(self):
        return None

    def moe_stats(self):
        return {}

    def flops_per_token(self, seq_len: int) -> float:
        return 6.0 * sum(p.numel() for p in self.parameters())


@ATTENTION.register("toy_causal_mean")
class ToyCausalMean(nn.Module):
    """A third-party token mixer: ``y_t = scale · W · mean(x_1..x_t)`` (restarting at document boundaries)."""

    def __init__(self, dim, num_heads, *, layer_idx, num_layers, scale: float = 1.0, device=None, dtype=None):
        super().__init__()
        self.scale = scale
        self.proj = nn.Linear(dim, dim, bias=False, device=device, dtype=dtype)

    def _means(self, x, start_sum=None, start_count=0):
        sums = x.cumsum(1) + (0 if start_sum is None else start_sum[:, None])
        counts = torch.arange(1, x.shape[1] + 1, device=x.device, dtype=x.dtype)[None, :, None] + start_count
        return sums / counts, sums[:, -1], start_count + x.shape[1]

    def forward(self, x, *, cu_seqlens=None, cache=None):
        if cu_seqlens is not None:
            bounds = cu_seqlens.tolist()
            means = torch.cat([self._means(x[:, a:b])[0] for a, b in itertools.pairwise(bounds) if b > a], dim=1)
        elif cache is not None:
            means, cache["sum"], cache["count"] = self._means(x, cache.get("sum"), cache.get("count", 0))
        else:
            means = self._means(x)[0]
        return self.scale * self.proj(means)

    def step(self, x, cache):
        return self.forward(x, cache=cache)

    def new_cache(self) -> dict:
        return {}
