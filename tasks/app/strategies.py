"""Lightning strategies that carry the zoo's parallelism plan (``conf/strategy/``)."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

from lightning.pytorch.strategies import ModelParallelStrategy

from zoo.parallel import ParallelPlan


class FSDP2Strategy(ModelParallelStrategy):
    """Lightning's :class:`~lightning.pytorch.strategies.ModelParallelStrategy` with data parallelism over every
    rank (no tensor parallelism) and a :class:`~zoo.parallel.ParallelPlan` that the tasks' ``configure_model``
    applies (:func:`zoo.parallel.parallelize`).

    Args:
        activation_checkpointing, reshard_after_forward, cpu_offload, param_dtype, expert_parallel_size,
            global_router: the :class:`~zoo.parallel.ParallelPlan` (checked here, so a bad value fails before any
            process starts).
        save_distributed_checkpoint: checkpoints as PyTorch Distributed Checkpoint directories (each rank writes its
            shards; a resume may use another world size); False gathers one file on rank 0.
        process_group_backend: ``gloo`` / ``nccl`` (default: by accelerator).
    """

    def __init__(
        self,
        activation_checkpointing: str = "none",
        reshard_after_forward: bool = True,
        cpu_offload: bool = False,
        param_dtype: str = "auto",
        expert_parallel_size: int = 1,
        global_router: bool = True,
        save_distributed_checkpoint: bool = True,
        process_group_backend: str | None = None,
    ) -> None:
        self.parallel_plan = ParallelPlan(
            activation_checkpointing=activation_checkpointing,
            reshard_after_forward=reshard_after_forward,
            cpu_offload=cpu_offload,
            param_dtype=param_dtype,
            expert_parallel_size=expert_parallel_size,
            global_router=global_router,
        )
        super().__init__(
            data_parallel_size="auto",
            tensor_parallel_size=1,
            save_distributed_checkpoint=save_distributed_checkpoint,
            process_group_backend=process_group_backend,
        )

    def setup_environment(self) -> None:
        self._data_parallel_size = self.world_size  # Lightning's "auto" would be the number of nodes
        super().setup_environment()

    def save_checkpoint(self, checkpoint: dict[str, Any], filepath: Any, storage_options: Any = None) -> None:
        """Write a distributed checkpoint atomically: every rank writes its shards into ``<name>.partial``, then
        rank 0 swaps it into place (the previous checkpoint is renamed aside first and removed last), so a crash
        never leaves a half-written ``last.ckpt``."""
        if not self._save_distributed_checkpoint:
            return super().save_checkpoint(checkpoint, filepath, storage_options)
        final = Path(self.broadcast(str(filepath)))
        staging, previous = final.with_name(final.name + ".partial"), final.with_name(final.name + ".previous")
        if self.global_rank == 0:
            for leftover in (staging, previous):
                _remove(leftover)
        self.barrier("zoo_checkpoint_staging")
        super().save_checkpoint(checkpoint, staging, storage_options)
        self.barrier("zoo_checkpoint_written")
        if self.global_rank == 0:
            if final.exists():
                final.rename(previous)
            staging.rename(final)
            _remove(previous)
        self.barrier("zoo_checkpoint_in_place")


def _remove(path: Path) -> None:
    if path.is_dir():
        shutil.rmtree(path)
    elif path.exists():
        path.unlink()
