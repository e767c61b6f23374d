"""Prompts of an RL environment (``data=addition``, ``data=countdown``): lists of :class:`~tasks.envs.Problem`.

A batch is a plain ``list[Problem]`` — strings, no tensors: the RL task tokenizes, samples completions and scores
them with the environment (``datamodule.env``). Training step ``g`` (counted over all epochs: epoch ``e``'s step
``i`` is ``g = e · steps_per_epoch + i``) draws ``prompts_per_step`` problems with
``random.Random(f"rl_prompts:{seed}:{g}:{rank}")`` (a string seed is hashed with SHA-512, so it is the same in
every process, unlike ``hash()``), so any two runs with the same seed see the same prompts at the same step, and a
run resumed mid-epoch continues with the prompts of an uninterrupted one. Under DDP every process draws its own
prompts (``rank`` in the seed). Validation and test go through the environment's fixed evaluation set in chunks of
``eval_batch_size`` problems (under DDP, process ``r`` takes chunks ``r, r + world_size, …``, none twice; the chunks
are then balanced so that every process gets as many).

Lightning would fail moving frozen dataclasses to the device, so :meth:`RLPromptData.transfer_batch_to_device`
returns batches unchanged (it takes precedence over the LightningModule's hook). Lightning cannot infer a batch
size from a list of problems either: pass ``batch_size=len(problems)`` to ``self.log``.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from typing import Any

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler

from tasks.data.text import ResumableLoader
from tasks.envs.base import Environment, Problem
from zoo.config import check_kwargs
from zoo.errors import ConfigError
from zoo.registries import DATA, ENVIRONMENT

BYTE_VOCAB = 257  # tasks.data.tokenizer.ByteTokenizer: 256 bytes + EOS


def step_rng(seed: int, step: int, rank: int = 0) -> random.Random:
    """The generator of training step ``step``'s problems on process ``rank`` (stable across processes)."""
    return random.Random(f"rl_prompts:{seed}:{step}:{rank}")


def identity(batch: Any) -> Any:
    """The collate function: a batch is the dataset's item as it is."""
    return batch


class StepProblems(Dataset):
    """Map-style: item ``g`` is the list of problems of training step ``g`` (any non-negative integer)."""

    def __init__(self, env: Environment, prompts_per_step: int, seed: int, rank: int = 0) -> None:
        self.env = env
        self.prompts_per_step = prompts_per_step
        self.seed = seed
        self.rank = rank

    def __getitem__(self, step: int) -> list[Problem]:
        return self.env.sample(self.prompts_per_step, step_rng(self.seed, int(step), self.rank))


class StepSampler(DistributedSampler):
    """The global step numbers of an epoch: ``e · steps_per_epoch + i`` for ``i < steps_per_epoch``.

    A ``DistributedSampler`` so that Lightning neither wraps nor replaces it under DDP and calls :meth:`set_epoch`
    (every process runs the same steps; :class:`StepProblems` makes their prompts differ). :meth:`resume_at` makes
    the next pass over a given epoch leave out its first steps (mid-epoch resumption).
    """

    def __init__(self, steps_per_epoch: int) -> None:  # no super().__init__: it needs a dataset and a process group
        self.steps_per_epoch = steps_per_epoch
        self.num_replicas, self.rank = 1, 0
        self.epoch = 0
        self.shuffle = False
        self.drop_last = True
        self.num_samples = self.total_size = steps_per_epoch
        self.skipped = 0
        self._resume: tuple[int, int] | None = None

    def resume_at(self, epoch: int, steps: int) -> None:
        """Start the next pass, if it is over ``epoch``, after its first ``steps`` steps."""
        self._resume = (epoch, steps)

    def __iter__(self) -> Iterator[int]:
        # A generator: the DataLoader (batch_size=None) calls iter() on the sampler when Lightning creates the
        # loader's iterator, before set_epoch; the epoch is read at the first step.
        self.skipped = 0
        if self._resume is not None:
            epoch, steps = self._resume
            self._resume = None
            if epoch == self.epoch:
                self.skipped = min(steps, self.steps_per_epoch)
        start = self.epoch * self.steps_per_epoch
        yield from range(start + self.skipped, start + self.steps_per_epoch)

    def __len__(self) -> int:
        return self.steps_per_epoch


class StepLoader(ResumableLoader):
    """The training loader (one batch per step); Lightning checkpoints its position (``{"epoch", "steps"}``) for
    mid-epoch resumption."""

    count_key = "steps"


class Chunks(Dataset):
    """Map-style: item ``k`` is the ``k``-th chunk of ``size`` problems of a list (the last may be shorter); with
    ``count``, the list cut into ``count`` chunks whose sizes differ by at most one (none empty while the list has
    ``count`` problems)."""

    def __init__(self, problems: list[Problem], size: int, count: int | None = None) -> None:
        self.problems = problems
        self.size = size
        self.count = count

    def __len__(self) -> int:
        return self.count if self.count is not None else -(-len(self.problems) // self.size)

    def __getitem__(self, index: int) -> list[Problem]:
        if self.count is not None:
            n = len(self.problems)
            return self.problems[index * n // self.count : (index + 1) * n // self.count]
        return self.problems[index * self.size : (index + 1) * self.size]

    @classmethod
    def balanced(cls, problems: list[Problem], size: int, world: int) -> Chunks:
        """Chunks of at most ``size`` problems, a multiple of ``world`` of them, so every process gets the same
        number of batches (a sharded model's forward is a collective: every rank must run as many)."""
        per_rank = max(1, -(-len(problems) // (world * size)))
        return cls(problems, size, count=per_rank * world)


class ShardSampler(DistributedSampler):
    """Process ``rank`` of ``num_replicas`` takes items ``rank, rank + num_replicas, …``: every item once, no
    padding (processes may get one item fewer). A ``DistributedSampler`` so that Lightning leaves it alone."""

    def __init__(self, size: int, num_replicas: int = 1, rank: int = 0) -> None:
        self.size, self.num_replicas, self.rank = size, num_replicas, rank
        self.epoch, self.shuffle, self.drop_last = 0, False, False
        self.num_samples = len(range(rank, size, num_replicas))
        self.total_size = size

    def __iter__(self) -> Iterator[int]:
        return iter(range(self.rank, self.size, self.num_replicas))

    def __len__(self) -> int:
        return self.num_samples


def _positive(value: Any, key: str) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ConfigError(f"data.{key}={value!r} must be an integer ≥ 1")
    return value


@DATA.register("rl_prompts")
class RLPromptData(L.LightningDataModule):
    """Problems of an ``ENVIRONMENT`` for RL: a training step's prompts, and the held-out evaluation set.

    Args:
        env: the environment's registry name (``addition``, ``countdown``).
        env_kwargs: keyword arguments of the environment (e.g. ``digits``, ``eval_size``, ``eval_seed``).
        prompts_per_step: problems per training step and process (each is sampled G times by the task).
        steps_per_epoch: training steps per epoch (the problems are drawn on the fly; an epoch is a bookkeeping
            unit for validation and checkpoints).
        eval_batch_size: evaluation problems per validation/test batch.
        seed: seed of the training prompts (step ``g`` of process ``r`` uses ``(seed, g, r)``).
        vocab_size: the model's id space: at least 257 (the byte tokenizer's 256 bytes + EOS).

    Attributes:
        env: the environment (the task scores completions with it).
    """

    vocab_size: int = BYTE_VOCAB  # ``${zoo.data:vocab_size}`` falls back to it

    def __init__(
        self,
        env: str = "addition",
        env_kwargs: dict[str, Any] | None = None,
        prompts_per_step: int = 32,
        steps_per_epoch: int = 100,
        eval_batch_size: int = 256,
        seed: int = 0,
        vocab_size: int = BYTE_VOCAB,
    ) -> None:
        super().__init__()
        self.save_hyperparameters()
        self.prompts_per_step = _positive(prompts_per_step, "prompts_per_step")
        self.steps_per_epoch = _positive(steps_per_epoch, "steps_per_epoch")
        self.eval_batch_size = _positive(eval_batch_size, "eval_batch_size")
        if isinstance(seed, bool) or not isinstance(seed, int):
            raise ConfigError(f"data.seed={seed!r} must be an integer")
        self.seed = seed
        if isinstance(vocab_size, bool) or not isinstance(vocab_size, int) or vocab_size < BYTE_VOCAB:
            raise ConfigError(
                f"data.vocab_size={vocab_size!r} is too small: the byte tokenizer needs at least {BYTE_VOCAB} ids "
                f"(256 bytes + EOS)"
            )
        self.vocab_size = vocab_size
        kwargs = dict(env_kwargs or {})
        check_kwargs(ENVIRONMENT.get(env), kwargs, "data.env_kwargs")
        self.env: Environment = ENVIRONMENT.build(env, **kwargs)
        self.env.eval_set()  # configuration errors (eval_size too large) now rather than at the first step

    # ------------------------------------------------------------------ Lightning hooks
    def transfer_batch_to_device(self, batch: Any, device: torch.device, dataloader_idx: int) -> Any:
        """Batches are lists of :class:`Problem` (strings): nothing to move."""
        return batch

    def _world(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.world_size, trainer.global_rank) if trainer is not None else (1, 0)

    def train_dataloader(self) -> DataLoader:
        _, rank = self._world()
        dataset = StepProblems(self.env, self.prompts_per_step, self.seed, rank)
        return StepLoader(dataset, batch_size=None, sampler=StepSampler(self.steps_per_epoch), collate_fn=identity)

    def val_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def test_dataloader(self) -> DataLoader:
        return self._eval_loader()

    def _eval_loader(self) -> DataLoader:
        world, rank = self._world()
        problems = self.env.eval_set()
        chunks = (
            Chunks(problems, self.eval_batch_size)
            if world == 1
            else Chunks.balanced(problems, self.eval_batch_size, world)
        )
        return DataLoader(chunks, batch_size=None, sampler=ShardSampler(len(chunks), world, rank), collate_fn=identity)
