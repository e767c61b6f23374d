"""Helpers shared by the backbones."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

from zoo.registries import CHANNEL_ATTENTION


def channel_attention_layer(
    ca: str = "none", ca_kwargs: dict[str, Any] | None = None
) -> Callable[..., nn.Module] | None:
    """The constructor ``f(channels, *, device, dtype)`` for a channel-attention name, or None for ``none``.

    None (rather than an identity module) keeps a ``none`` model identical to the plain architecture, so its
    parameter names and counts equal timm's ``resnet50`` exactly.
    """
    if CHANNEL_ATTENTION.canonical(ca) == "none":
        if ca_kwargs:
            raise ValueError(f"channel attention 'none' takes no options, got ca_kwargs={dict(ca_kwargs)}")
        return None
    return CHANNEL_ATTENTION.partial(ca, **(ca_kwargs or {}))
