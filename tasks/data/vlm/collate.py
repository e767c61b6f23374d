"""Batching of vision-language samples: which samples form a batch (:class:`RowSampler`), and how they are
stacked (:class:`Collate` for the loss, :func:`eval_collate` for generation).

A training/evaluation sample is ``{"input_ids": list[int] [L], "labels": list[int] [L], "tiles": uint8
[n, 3, S, S], "grids": list[(rows, cols)]}`` (the tiles of all its images in placeholder order: per image the
thumbnail, then its tiles row-major); a generation sample has ``"prompt"``, ``"answer"``, ``"type"`` and ``"id"``
instead of ``input_ids`` / ``labels``.

Loss batches::

    input_ids          int64 [B, T]
    labels             int64 [B, T]        IGNORE_INDEX where not an answer token (and on padding)
    cu_seqlens         int32 [N + 1]       packed only: B = 1, the N samples concatenated; 0, each sample's start
                                           in the flattened B·T tokens, B·T (as tasks.data.text.packing)
    pixel_values       uint8 [N_tiles, 3, S, S]   every tile of the batch, in placeholder order
    image_grids        int64 [N_images, 2]        (rows, cols) per image, (0, 0) for a thumbnail-only image
    images_per_sample  int64 [N] (packed) or [B] (padded)
    num_tokens         int                 labels not ignored

Padded batches (``pack=False``) put one sample per row, right-padded with ``pad_id`` (eos) and ignored labels:
under causal attention no real token sees the padding, so they need no attention mask.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from typing import Any

import numpy as np
import torch
from torch.utils.data import Dataset, DistributedSampler

from tasks.data.text.packing import IGNORE_INDEX

__all__ = ["Collate", "RowSampler", "Rows", "eval_collate", "pack_rows"]

Sample = dict[str, Any]


def _images(samples: Sequence[Sample]) -> dict[str, torch.Tensor]:
    """``pixel_values``, ``image_grids`` and ``images_per_sample`` of the samples, in order."""
    grids = [g for s in samples for g in s["grids"]]
    return {
        "pixel_values": torch.cat([s["tiles"] for s in samples]),
        "image_grids": torch.tensor(grids, dtype=torch.int64).reshape(-1, 2),
        "images_per_sample": torch.tensor([len(s["grids"]) for s in samples], dtype=torch.int64),
    }


class Collate:
    """Samples → a loss batch (module docstring): one packed row (``pack``) or one right-padded row per sample."""

    def __init__(self, pack: bool, pad_id: int) -> None:
        self.pack = pack
        self.pad_id = pad_id

    def __call__(self, samples: Sequence[Sample]) -> dict[str, Any]:
        lengths = [len(s["input_ids"]) for s in samples]
        if self.pack:
            input_ids = torch.tensor([[t for s in samples for t in s["input_ids"]]], dtype=torch.int64)
            labels = torch.tensor([[t for s in samples for t in s["labels"]]], dtype=torch.int64)
            starts = np.concatenate([[0], np.cumsum(lengths)])
            batch: dict[str, Any] = {
                "input_ids": input_ids,
                "labels": labels,
                "cu_seqlens": torch.from_numpy(starts).to(torch.int32),
            }
        else:
            width = max(lengths)
            input_ids = torch.full((len(samples), width), self.pad_id, dtype=torch.int64)
            labels = torch.full((len(samples), width), IGNORE_INDEX, dtype=torch.int64)
            for row, (s, n) in enumerate(zip(samples, lengths, strict=True)):
                input_ids[row, :n] = torch.tensor(s["input_ids"], dtype=torch.int64)
                labels[row, :n] = torch.tensor(s["labels"], dtype=torch.int64)
            batch = {"input_ids": input_ids, "labels": labels}
        batch.update(_images(samples))
        batch["num_tokens"] = int((batch["labels"] != IGNORE_INDEX).sum())
        return batch


def eval_collate(samples: Sequence[Sample]) -> dict[str, Any]:
    """Generation samples → ``{"prompts": list[list[int]] (placeholders expanded), "followups": list[list[int] |
    None] (describe-then-answer: what follows the generated description), "described": bool (the set is
    describe-then-answer: the same on every process), "answers": list[str], "types": list[str], "ids": list[str],
    "pixel_values", "image_grids", "images_per_sample"}``."""
    return {
        "prompts": [list(s["prompt"]) for s in samples],
        "described": any(s.get("described", False) for s in samples),
        "followups": [None if s.get("followup") is None else list(s["followup"]) for s in samples],
        "answers": [s["answer"] for s in samples],
        "types": [s["type"] for s in samples],
        "ids": [s["id"] for s in samples],
        **_images(samples),
    }


class Rows(Dataset):
    """Map-style over rows: item ``[i, j, …]`` (a row of :class:`RowSampler`) is ``[get(i), get(j), …]``; used with
    ``DataLoader(batch_size=None)`` so that workers load and collate whole rows."""

    def __init__(self, get: Callable[[int], Sample], size: int) -> None:
        self.get = get
        self.size = size

    def __len__(self) -> int:
        return self.size

    def __getitem__(self, row: Sequence[int]) -> list[Sample]:
        return [self.get(int(i)) for i in row]


def pack_rows(lengths: Sequence[int], order: Sequence[int], max_tokens: int) -> list[list[int]]:
    """Greedy packing: samples in ``order`` fill a row while its total length stays ≤ ``max_tokens``, then the
    next row starts (every length must be ≤ ``max_tokens``)."""
    rows: list[list[int]] = []
    used = max_tokens + 1
    for i in order:
        n = int(lengths[i])
        if n > max_tokens:
            raise ValueError(f"sample {i} has {n} tokens, more than max_tokens={max_tokens}")
        if used + n > max_tokens:
            rows.append([])
            used = 0
        rows[-1].append(int(i))
        used += n
    return rows


class RowSampler(DistributedSampler):
    """Rows of sample indices (one per batch), deterministic by seed and sharded across processes.

    Packed (``max_tokens`` set): the samples, in an order drawn once from ``seed`` (or in order without
    ``shuffle``), are packed into rows by :func:`pack_rows`; each epoch visits the rows in an order drawn from
    ``(seed, epoch)``. Padded (``max_tokens=None``): each epoch chunks a permutation drawn from ``(seed, epoch)``
    into rows of ``batch_size`` (``drop_last``: the last short one left out). Either way the number of rows is the
    same every epoch. Process ``rank`` of ``num_replicas`` takes rows ``rank, rank + num_replicas, …`` (of the
    first multiple of ``num_replicas`` with ``drop_last``, so that every process runs as many steps). With ``even``
    (and not ``drop_last``) the rows are padded to the next multiple of ``num_replicas`` by repeating the first ones,
    as ``DistributedSampler`` does: every process runs as many (collective) steps, a few samples counting twice.

    A ``DistributedSampler`` so that Lightning neither wraps nor replaces it and calls ``set_epoch``; with
    ``epoch`` / ``skipped`` / :meth:`resume_at` it drives :class:`tasks.data.text.ResumableLoader`.
    """

    def __init__(
        self,
        lengths: Sequence[int],
        *,
        max_tokens: int | None,
        batch_size: int,
        shuffle: bool,
        seed: int,
        drop_last: bool,
        num_replicas: int = 1,
        rank: int = 0,
        even: bool = False,
    ) -> None:  # no super().__init__: it needs a dataset and a process group
        self.lengths = list(lengths)
        self.max_tokens, self.batch_size = max_tokens, batch_size
        self.shuffle, self.seed, self.drop_last = shuffle, seed, drop_last
        self.num_replicas, self.rank = num_replicas, rank
        self.epoch = 0
        self.skipped = 0
        self._resume: tuple[int, int] | None = None
        n = len(self.lengths)
        self.packed: list[list[int]] | None = None
        if max_tokens is not None:
            order = np.random.default_rng([seed, 1]).permutation(n) if shuffle else np.arange(n)
            self.packed = pack_rows(self.lengths, order, max_tokens)
            total = len(self.packed)
        else:
            total = n // batch_size if drop_last else -(-n // batch_size)
        if drop_last:
            self.total_size = total // num_replicas * num_replicas
        else:
            self.total_size = -(-total // num_replicas) * num_replicas if even and total else total
        self.num_samples = len(range(rank, self.total_size, num_replicas))

    def rows(self, epoch: int) -> list[list[int]]:
        """This process's rows of ``epoch``, in order."""
        rng = np.random.default_rng([self.seed, 2, epoch])
        if self.packed is not None:
            order = rng.permutation(len(self.packed)) if self.shuffle else range(len(self.packed))
            rows = [self.packed[i] for i in order]
        else:
            n = len(self.lengths)
            order = rng.permutation(n) if self.shuffle else np.arange(n)
            rows = [order[i : i + self.batch_size].tolist() for i in range(0, n, self.batch_size)]
        while rows and len(rows) < self.total_size:  # even: repeat the first rows
            rows += rows[: self.total_size - len(rows)]
        return rows[: self.total_size][self.rank :: self.num_replicas]

    def resume_at(self, epoch: int, rows: int) -> None:
        """Start the next pass, if it is over ``epoch``, after its first ``rows`` rows."""
        self._resume = (epoch, rows)

    def __iter__(self) -> Iterator[list[int]]:
        # A generator: the loader calls iter() before Lightning's set_epoch; the epoch is read at the first row.
        rows = self.rows(self.epoch)
        self.skipped = 0
        if self._resume is not None:
            epoch, count = self._resume
            self._resume = None
            if epoch == self.epoch:
                self.skipped = min(count, len(rows))
        yield from rows[self.skipped :]

    def __len__(self) -> int:
        return self.num_samples
