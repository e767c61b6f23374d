"""Per-layer caches for generation: the lightning state and the softmax key/value history."""

from __future__ import annotations

from dataclasses import dataclass

import torch


@dataclass
class LightningCache:
    """The recurrent state of one lightning-attention layer: ``state`` ``[B, H, D, D]`` fp32 (None before prefill)."""

    state: torch.Tensor | None = None

    @property
    def seen(self) -> bool:
        return self.state is not None


@dataclass
class KVCache:
    """Keys and values seen so far by one softmax-attention layer, ``[B, T_seen, H_kv, D]`` each."""

    key: torch.Tensor | None = None
    value: torch.Tensor | None = None

    @property
    def length(self) -> int:
        return 0 if self.key is None else self.key.shape[1]

    def append(self, key: torch.Tensor, value: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Add ``[B, T_new, H_kv, D]`` keys and values; return the whole history."""
        if self.key is None:
            self.key, self.value = key, value
        else:
            self.key = torch.cat([self.key, key], dim=1)
            self.value = torch.cat([self.value, value], dim=1)
        return self.key, self.value


@dataclass
class StaticLightningCache:
    """A lightning layer's recurrent states for a fixed batch of slots, allocated once: ``state``
    ``[B_max, H, D, DV]`` fp32, row ``i`` the state of the sequence in slot ``i`` (updated in place)."""

    state: torch.Tensor


@dataclass
class StaticKVCache:
    """A softmax layer's keys and values for a fixed batch of slots and length, allocated once: ``key``, ``value``
    ``[B_max, H_kv, T_max, D]``; slot ``i`` holds its sequence's first ``length_i`` positions (the lengths are the
    caller's: the positions it decodes at)."""

    key: torch.Tensor
    value: torch.Tensor

    @property
    def max_len(self) -> int:
        return self.key.shape[2]
