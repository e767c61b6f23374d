"""The hybrid layout (``ATTENTION`` name ``hybrid``): which attention each layer of a stack gets.

MiniMax-01 puts one softmax layer after every seven lightning layers: pattern ``"LLLLLLLS"`` repeated over 80
layers gives softmax at layers 7, 15, …, 79. A pattern is either a string of letters repeated to the stack's depth
(``L`` = lightning, ``S`` = softmax), or an explicit per-layer list of letters or ``ATTENTION`` names.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from torch import nn

from zoo.registries import ATTENTION

LETTERS = {"L": "lightning", "S": "softmax"}
MINIMAX_PATTERN = "LLLLLLLS"


def hybrid_layout(pattern: str | Sequence[str], num_layers: int) -> list[str]:
    """The ``ATTENTION`` name of every layer.

    Args:
        pattern: a string of ``L``/``S`` letters repeated to ``num_layers`` (its length must not exceed the stack),
            or a list with one letter or registry name per layer (exactly ``num_layers`` entries).
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
        return [LETTERS[pattern[i % len(pattern)].upper()] for i in range(num_layers)]
    entries = list(pattern)
    if len(entries) != num_layers:
        raise ValueError(f"an explicit hybrid layout needs one entry per layer: got {len(entries)} for {num_layers}")
    names = []
    for i, entry in enumerate(entries):
        name = LETTERS.get(str(entry).upper(), str(entry))
        if name == "hybrid" or name not in ATTENTION:
            valid = ", ".join(n for n in ATTENTION.names(aliases=False) if n != "hybrid")
            raise ValueError(f"layer {i}: unknown attention '{entry}'; valid: L, S or one of {valid}")
        names.append(name)
    return names


@ATTENTION.register("hybrid")
def hybrid_attention(
    dim: int,
    num_heads: int,
    *,
    layer_idx: int,
    num_layers: int,
    pattern: str | Sequence[str] = MINIMAX_PATTERN,
    lightning_kwargs: dict[str, Any] | None = None,
    softmax_kwargs: dict[str, Any] | None = None,
    **common: Any,
) -> nn.Module:
    """Layer ``layer_idx``'s attention under ``pattern``: a :class:`LightningAttention` or a
    :class:`SoftmaxAttention` (or any registered attention named in an explicit list), built with the shared
    ``common`` kwargs plus that type's own (``lightning_kwargs`` / ``softmax_kwargs``)."""
    name = hybrid_layout(pattern, num_layers)[layer_idx]
    own = {"lightning": lightning_kwargs, "softmax": softmax_kwargs}.get(name) or {}
    return ATTENTION.build(name, dim, num_heads, layer_idx=layer_idx, num_layers=num_layers, **common, **own)
