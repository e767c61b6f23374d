"""Packed (varlen) batches: the documents of a ``cu_seqlens`` stream grouped by length, so that code without a
varlen kernel runs each group as one dense batch instead of a loop over documents."""

from __future__ import annotations

import itertools
from typing import NamedTuple

import torch


class LengthGroup(NamedTuple):
    """The documents of one length: ``length``, their indices ``docs`` (in packed order) and ``rows``, the
    ``len(docs) · length`` stream positions of their tokens, document by document (int64 on the stream's device)."""

    length: int
    docs: list[int]
    rows: torch.Tensor


def equal_length_groups(bounds: list[int], device: torch.device | str) -> list[LengthGroup]:
    """The documents between consecutive ``bounds`` (cu_seqlens as a list, ``[N+1]``) grouped by length, each
    group's tokens as the rows ``x[rows].view(len(docs), length, …)`` of the packed stream; groups in order of
    each length's first document."""
    by_length: dict[int, list[int]] = {}
    for n, (start, end) in enumerate(itertools.pairwise(bounds)):
        by_length.setdefault(end - start, []).append(n)
    groups = []
    for length, docs in by_length.items():
        starts = torch.tensor([bounds[n] for n in docs], device=device)
        rows = (starts[:, None] + torch.arange(length, device=device)[None, :]).reshape(-1)
        groups.append(LengthGroup(length, docs, rows))
    return groups
