"""Resumable sampling: the training windows' shuffled, sharded order, and a loader that Lightning checkpoints
mid-epoch so that a resumed run trains on exactly the batches of an uninterrupted one (also under DDP)."""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch.utils.data import DataLoader, DistributedSampler


class WindowSampler(DistributedSampler):
    """Start offsets of an epoch's training windows, shuffled by ``seed + epoch`` and sharded across processes.

    Epoch ``e`` draws a shift ``s`` in ``[0, seq_len)`` and a permutation of the ``n = len(tokens) // seq_len``
    windows starting at ``s + k·seq_len`` (mod the stream length): every token is an input once per epoch, at a
    position that changes from epoch to epoch. Process ``rank`` of ``num_replicas`` takes every ``num_replicas``-th
    offset of the first ``n // num_replicas · num_replicas``. A ``DistributedSampler`` so that Lightning neither
    wraps nor replaces it, and calls :meth:`set_epoch`; a resumed run draws the same windows.

    :meth:`resume_at` makes the next pass over a given epoch leave out its first samples (mid-epoch resumption);
    ``skipped`` is how many the current pass left out.
    """

    def __init__(self, num_tokens: int, seq_len: int, num_replicas: int = 1, rank: int = 0, seed: int = 0) -> None:
        self.num_tokens = num_tokens
        self.seq_len = seq_len
        self.num_windows = num_tokens // seq_len
        self.num_replicas = num_replicas
        self.rank = rank
        self.seed = seed
        self.epoch = 0
        self.shuffle = True
        self.drop_last = True
        self.num_samples = self.num_windows // num_replicas
        self.total_size = self.num_samples * num_replicas
        self.skipped = 0
        self._resume: tuple[int, int] | None = None

    def offsets(self, epoch: int) -> list[int]:
        """This process's window offsets of ``epoch``, in order."""
        generator = torch.Generator().manual_seed(self.seed + epoch)
        shift = int(torch.randint(self.seq_len, (1,), generator=generator))
        order = torch.randperm(self.num_windows, generator=generator)[: self.total_size]
        offsets = (shift + order * self.seq_len) % self.num_tokens
        return offsets[self.rank : self.total_size : self.num_replicas].tolist()

    def resume_at(self, epoch: int, samples: int) -> None:
        """Start the next pass, if it is over ``epoch``, after its first ``samples`` offsets."""
        self._resume = (epoch, samples)

    def __iter__(self) -> Iterator[int]:
        offsets = self.offsets(self.epoch)
        self.skipped = 0
        if self._resume is not None:
            epoch, samples = self._resume
            self._resume = None
            if epoch == self.epoch:
                self.skipped = min(samples, len(offsets))
        return iter(offsets[self.skipped :])

    def __len__(self) -> int:
        return self.num_samples


class ResumableLoader(DataLoader):
    """A training loader that Lightning checkpoints mid-epoch (it has ``state_dict`` / ``load_state_dict``).

    Its state is the epoch and the number of batches it has yielded in it (under the key :attr:`count_key`); after
    :meth:`load_state_dict` the next pass over that epoch starts after those batches, so a run resumed from a
    mid-epoch checkpoint trains on exactly the batches an uninterrupted run would. (Lightning fetches no batch
    ahead from a loader with a length, so the count is that of the batches trained on.)

    The sampler must expose ``epoch``, ``skipped`` (sampler items left out at the start of the current pass) and
    ``resume_at(epoch, items)`` — :class:`WindowSampler`, :class:`tasks.data.rl_prompts.StepSampler`. A batch is
    ``batch_size`` sampler items, or one with ``batch_size=None``.
    """

    count_key = "batches"

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._position: tuple[int, int] | None = None  # (epoch, batches yielded in it)

    @property
    def items_per_batch(self) -> int:
        return self.batch_size or 1

    def __iter__(self) -> Iterator[Any]:
        return self._counted(super().__iter__())

    def _counted(self, batches: Iterable[Any]) -> Iterator[Any]:
        self._position = None
        for batch in batches:  # the sampler runs at the first batch, after Lightning's set_epoch
            if self._position is None:
                self._position = (self.sampler.epoch, self.sampler.skipped // self.items_per_batch)
            epoch, count = self._position
            self._position = (epoch, count + 1)
            yield batch

    def state_dict(self) -> dict[str, int]:
        if self._position is None:
            return {}
        epoch, count = self._position
        return {"epoch": epoch, self.count_key: count}

    def load_state_dict(self, state_dict: dict[str, int]) -> None:
        if state_dict:
            self.sampler.resume_at(state_dict["epoch"], state_dict[self.count_key] * self.items_per_batch)
