"""Packing a token stream into windows of ``seq_len + 1`` tokens, and windows into the batch dict.

A window may span several documents: :class:`PackedCollate` makes ``cu_seqlens`` restart attention at each one and
masks the label of every EOS input with :data:`IGNORE_INDEX`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset

IGNORE_INDEX = -100


class PackedCollate:
    """Windows of ``T + 1`` tokens → the batch dict (``input_ids``, ``labels``, ``cu_seqlens``, ``num_tokens``).

    ``input_ids`` / ``labels``: ``int64 [B, T]``; ``cu_seqlens``: ``int32 [N + 1]`` over the flattened ``B·T``
    tokens (0, every row start, every token after an EOS, and ``B·T``); ``num_tokens``: labels not ignored.
    """

    def __init__(self, eos_id: int) -> None:
        self.eos_id = eos_id

    def __call__(self, windows: Sequence[np.ndarray]) -> dict[str, Any]:
        w = torch.from_numpy(np.stack(windows).astype(np.int64))  # [B, T + 1]
        inputs, targets = w[:, :-1].contiguous(), w[:, 1:]
        is_eos = inputs == self.eos_id
        labels = targets.masked_fill(is_eos, IGNORE_INDEX)
        batch, length = inputs.shape
        starts = torch.zeros(batch, length, dtype=torch.bool)
        starts[:, 0] = True
        starts[:, 1:] = is_eos[:, :-1]
        offsets = starts.flatten().nonzero().flatten()
        cu_seqlens = torch.cat([offsets, torch.tensor([batch * length])]).to(torch.int32)
        return {
            "input_ids": inputs,
            "labels": labels,
            "cu_seqlens": cu_seqlens,
            "num_tokens": int((labels != IGNORE_INDEX).sum()),
        }


class TrainWindows(Dataset):
    """Training windows of ``seq_len + 1`` tokens (``[T + 1]``), indexed by their start offset in the stream (drawn
    by :class:`~tasks.data.text.sampling.WindowSampler`). The stream is read as a ring: it ends with EOS, so a
    window running past the end continues with the first document. ``len`` is the number of windows in an epoch."""

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        self.tokens = tokens
        self.seq_len = seq_len

    def __len__(self) -> int:
        return len(self.tokens) // self.seq_len

    def __getitem__(self, offset: int) -> np.ndarray:
        n, end = len(self.tokens), offset + self.seq_len + 1
        if end <= n:
            return self.tokens[offset:end]
        return np.concatenate([self.tokens[offset:], self.tokens[: end - n]])


class EvalWindows(Dataset):
    """Consecutive non-overlapping windows (inputs ``[k·T, (k+1)·T)`` and one more token for the last target);
    the tail shorter than a window is left out. ``limit`` keeps that many windows, evenly spread over the split."""

    def __init__(self, tokens: np.ndarray, seq_len: int, limit: int | None = None) -> None:
        self.tokens = tokens
        self.seq_len = seq_len
        n = max(0, (len(tokens) - 1) // seq_len)
        index = np.arange(n)
        if limit is not None and limit < n:
            index = np.unique(np.linspace(0, n - 1, limit).round().astype(np.int64))
        self.starts = index * seq_len

    def __len__(self) -> int:
        return len(self.starts)

    def __getitem__(self, i: int) -> np.ndarray:
        start = int(self.starts[i])
        return self.tokens[start : start + self.seq_len + 1]
