"""The hybrid layout: which token mixer each layer of a stack gets, with its own arguments and residual factors.

MiniMax-01 puts one softmax layer after every seven lightning layers: pattern ``"LLLLLLLS"`` repeated over 80
layers gives softmax at layers 7, 15, …, 79. A layout is either

* a string of letters repeated to the stack's depth (``L`` = lightning, ``S`` = softmax), or
* a list with one entry per layer, each a letter, an ``ATTENTION`` name, or a mapping
  ``{name: <ATTENTION name>, alpha: …, beta: …, <the attention's own keyword arguments>}`` — so a third-party
  attention registered in ``ATTENTION`` takes its place in the stack with its own arguments and residual factors
  (``alpha``/``beta`` of the post-norm residual ``α·u + β·Attn(u)``; defaults come from the model).

This is the stack's only hybrid mechanism; :class:`~zoo.models.HybridLMConfig` ``attention`` takes either form.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from zoo.registries import ATTENTION

LETTERS = {"L": "lightning", "S": "softmax"}
MINIMAX_PATTERN = "LLLLLLLS"
SPEC_KEYS = ("name", "alpha", "beta")


@dataclass(frozen=True)
class AttentionSpec:
    """One layer's token mixer: an ``ATTENTION`` name, its keyword arguments, and residual factors (None: the
    model's defaults for that name)."""

    name: str
    kwargs: dict[str, Any] = field(default_factory=dict)
    alpha: float | None = None
    beta: float | None = None


def _valid_names() -> str:
    return ", ".join(ATTENTION.names(aliases=False))


def _parse_entry(entry: Any, layer: int) -> AttentionSpec:
    if isinstance(entry, Mapping):
        values = dict(entry)
        if "name" not in values:
            raise ValueError(f"layer {layer}: an attention mapping needs a 'name' (one of {_valid_names()})")
        name = LETTERS.get(str(values.pop("name")).upper()) or str(entry["name"])
        alpha, beta = values.pop("alpha", None), values.pop("beta", None)
        spec = AttentionSpec(
            name, values, None if alpha is None else float(alpha), None if beta is None else float(beta)
        )
    else:
        spec = AttentionSpec(LETTERS.get(str(entry).upper(), str(entry)))
    if spec.name not in ATTENTION:
        raise ValueError(f"layer {layer}: unknown attention '{spec.name}'; valid: L, S or one of {_valid_names()}")
    return spec


def attention_specs(pattern: str | Sequence[Any], num_layers: int) -> list[AttentionSpec]:
    """Every layer's :class:`AttentionSpec`.

    Args:
        pattern: a string of ``L``/``S`` letters repeated to ``num_layers`` (not longer than the stack), or a list
            with one entry per layer (a letter, an ``ATTENTION`` name, or a mapping with ``name`` and optional
            ``alpha``, ``beta`` and the attention's keyword arguments).
        num_layers: depth of the stack.

    Raises:
        ValueError: an unknown letter or name, an empty pattern, a string pattern longer than the stack, or a list
            of the wrong length.
    """
    if num_layers < 1:
        raise ValueError(f"num_layers must be ≥ 1, got {num_layers}")
    if isinstance(pattern, str):
        if not pattern:
            raise ValueError("the hybrid pattern is empty; e.g. 'LLLLLLLS' (L = lightning, S = softmax)")
        if len(pattern) > num_layers:
            raise ValueError(
                f"hybrid pattern '{pattern}' has {len(pattern)} layers but the stack has only {num_layers}"
            )
        bad = sorted({c for c in pattern if c.upper() not in LETTERS})
        if bad:
            raise ValueError(f"hybrid pattern '{pattern}' has unknown letters {bad}; valid: L (lightning), S (softmax)")
        return [AttentionSpec(LETTERS[pattern[i % len(pattern)].upper()]) for i in range(num_layers)]
    entries = list(pattern)
    if len(entries) != num_layers:
        raise ValueError(f"an explicit hybrid layout needs one entry per layer: got {len(entries)} for {num_layers}")
    return [_parse_entry(entry, i) for i, entry in enumerate(entries)]


def hybrid_layout(pattern: str | Sequence[Any], num_layers: int) -> list[str]:
    """The ``ATTENTION`` name of every layer (see :func:`attention_specs`)."""
    return [spec.name for spec in attention_specs(pattern, num_layers)]


__all__ = ["MINIMAX_PATTERN", "AttentionSpec", "attention_specs", "hybrid_layout"]
