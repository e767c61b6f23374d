"""What every task shares: optimizer and learning-rate schedule built by registry name."""

from __future__ import annotations

import math
import typing
from dataclasses import dataclass
from typing import Any, ClassVar

import lightning as L

from zoo.errors import ConfigError
from zoo.optim import OptimSettings, build_optimizer, build_scheduler, resolve_optim, settings_param_groups


@dataclass(frozen=True)
class TrainingBudget:
    r"""How far a run is through its budget: ``done`` of ``total`` ``unit``\ s (``"step"``, ``"rollout"``)."""

    unit: str
    done: int
    total: int


class BaseTask(L.LightningModule):
    """A LightningModule whose optimizer and schedule are chosen by name.

    Every task takes them as one argument, ``optim`` (:class:`~zoo.optim.OptimSettings`: ``optimizer``, ``lr``,
    ``weight_decay``, ``optimizer_kwargs``, ``scheduler``, ``scheduler_kwargs``, ``decay_norm_and_bias``), resolved
    over the task's :attr:`optim_defaults` into :attr:`optim_config`. Subclasses pass ``optim`` up and call
    ``self.save_hyperparameters()`` themselves, so that the saved hyperparameters are exactly the leaf's
    ``__init__`` arguments (primitives only, which Hydra, LightningCLI and ``load_from_checkpoint`` all handle).

    Args:
        optim: the optimizer settings that differ from the task's defaults (``{lr: 0.05}``), or None.
    """

    #: Complete settings; a subclass overrides any of them (its recipe: ``{optimizer: sgd, lr: 0.1, …}``).
    optim_defaults: ClassVar[OptimSettings] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.0,
        "optimizer_kwargs": {},
        "scheduler": "constant",
        "scheduler_kwargs": {},
        "decay_norm_and_bias": False,
    }

    def __init__(self, *, optim: OptimSettings | None = None) -> None:
        super().__init__()
        # fail at construction, not after the data has loaded
        self.optim_config: OptimSettings = resolve_optim(optim, self.default_optim(), "model.optim")

    @classmethod
    def default_optim(cls) -> OptimSettings:
        """The complete settings an ``optim`` of None gives: the task's :attr:`optim_defaults` over the base's."""
        return typing.cast(OptimSettings, {**BaseTask.optim_defaults, **cls.optim_defaults})

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """What the optimizer updates: every trainable parameter, weight matrices decayed (see
        :func:`zoo.optim.param_groups`)."""
        return settings_param_groups(self, self.optim_config)

    def training_budget(self) -> TrainingBudget | None:
        """The budget the progress bars count when the run is limited by steps (``trainer.max_steps``, e.g.
        ``task=lm``): optimizer steps done of the steps the run will take; None for an epoch budget (the bars then
        count the batches of each epoch)."""
        trainer = self._trainer
        if trainer is None or not trainer.max_steps or trainer.max_steps < 0:
            return None
        return TrainingBudget(
            "step", trainer.global_step, int(min(trainer.max_steps, trainer.estimated_stepping_batches))
        )

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        """A ``trainer.max_steps`` budget that ends between validations still ends with one: asking Lightning to
        stop makes it validate at that step, so the best checkpoint and ``val/*`` reflect the final weights (and
        ``ModelCheckpoint`` finds its monitored metric)."""
        trainer = self.trainer
        if trainer.max_steps and 0 < trainer.max_steps <= trainer.global_step:
            trainer.should_stop = True

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        checkpoint["zoo_task_class"] = type(self).__name__  # which task a consolidated checkpoint rebuilds

    def parallel_modules(self) -> list[Any]:
        """The causal LMs of the model protocol that a sharding strategy parallelises (:meth:`configure_model`);
        tasks without any return [] and run under data parallelism only."""
        return []

    def shard_units(self) -> tuple[Any, list[Any]] | None:
        """For a task whose network is not a causal LM: ``(root, units)``, the network and the submodules FSDP2
        shards one by one (e.g. a backbone's residual blocks; :func:`zoo.parallel.parallelize_units`); None if
        the task has none."""
        return None

    def compile_blocks(self) -> bool | dict[str, Any]:
        """Whether :meth:`configure_model` compiles in place (:mod:`zoo.parallel.compile`) each block of
        :meth:`parallel_modules`, and :meth:`shard_units`' blocks under FSDP2 or else its whole network (one graph
        across the blocks: ResNet-50 on an H200 trains at 1.14× eager compiled whole, 0.90× compiled block by
        block): ``model.compile`` of the tasks that offer it, ``true`` or ``torch.compile``'s keyword arguments
        (``{mode: max-autotune}``)."""
        return False

    def configure_model(self) -> None:
        """Apply the strategy's :class:`~zoo.parallel.ParallelPlan` (``strategy=fsdp2``) to
        :meth:`parallel_modules` over the data-parallel mesh, then shard what is left (e.g. a value head) with the
        root. A model the front end built on the meta device is then allocated and initialised shard by shard
        (:func:`zoo.parallel.materialize_`), so it never exists whole on one device. Idempotent: Lightning calls it
        for every stage."""
        plan = getattr(self._trainer.strategy, "parallel_plan", None) if self._trainer is not None else None
        compile = self.compile_blocks()
        if plan is None:
            from zoo.parallel.compile import compile_kwargs, compile_units, is_compiled

            if (kwargs := compile_kwargs(compile)) is not None:
                for module in self.parallel_modules():
                    compile_units(module, module.blocks(), **kwargs)
                if (units := self.shard_units()) is not None and not is_compiled(units[0]):
                    units[0].compile(**kwargs)
            return
        from torch.distributed.fsdp import FSDPModule, fully_shard

        from zoo.parallel import has_meta_tensors, materialize_, parallelize

        modules = self.parallel_modules()
        mesh = self.device_mesh["data_parallel"]
        units = self.shard_units()
        if not modules and units is None:
            raise ConfigError(f"strategy=fsdp2: {type(self).__name__} has no model to shard; use strategy=ddp")
        if units is not None:
            from zoo.parallel import parallelize_units

            parallelize_units(*units, mesh, plan, compile=compile)
        device = self._trainer.strategy.root_device
        for module in modules:
            parallelize(module, mesh, plan, compile=compile)
            if has_meta_tensors(module):
                materialize_(module, device, param_device="cpu" if plan.cpu_offload else None)
        leftovers = [
            m for m in self.children() if not isinstance(m, FSDPModule) and any(p.requires_grad for p in m.parameters())
        ]
        for module in leftovers:
            fully_shard(module, mesh=mesh)

    def configure_gradient_clipping(
        self, optimizer: Any, gradient_clip_val: float | None = None, gradient_clip_algorithm: str | None = None
    ) -> None:
        """Lightning's clipping, except the norm of sharded parameters (``strategy=fsdp2``), which may live on
        several meshes under expert parallelism: :func:`zoo.parallel.clip_grad_norm_` combines them."""
        params = [p for group in optimizer.param_groups for p in group["params"]]
        sharded = any(hasattr(p, "device_mesh") for p in params)
        if gradient_clip_val and sharded and str(gradient_clip_algorithm or "norm") == "norm":
            from zoo.parallel import clip_grad_norm_

            clip_grad_norm_(params, gradient_clip_val)
            return
        self.clip_gradients(optimizer, gradient_clip_val, gradient_clip_algorithm)

    def training_batches(self) -> float:
        """Training batches the run takes (Lightning's estimate from ``max_epochs`` / ``max_steps``); times
        :meth:`optimizer_steps_per_batch` it is the learning-rate schedule's length."""
        return self.trainer.estimated_stepping_batches

    def optimizer_steps_per_epoch(self, total_steps: float) -> float:
        """What the schedule's ``*_epochs`` arguments count: ``total_steps / trainer.max_epochs``, or all of
        ``total_steps`` for a step budget (``warmup_epochs: 0.05`` is then 5 % of the run)."""
        epochs = self.trainer.max_epochs
        return total_steps / epochs if epochs and epochs > 0 else total_steps

    def optimizer_steps_per_batch(self) -> int:
        """Optimizer steps per training batch (1; RL takes several per rollout), for the schedule's length."""
        return 1

    def configure_optimizers(self) -> dict[str, Any]:
        optimizer = build_optimizer(self.optim_config, groups=self.optimizer_param_groups())
        total_steps = self.training_batches() * self.optimizer_steps_per_batch()
        if not math.isfinite(total_steps):
            raise ConfigError("set trainer.max_epochs or trainer.max_steps: the learning-rate schedule needs a length")
        steps_per_epoch = max(1.0, self.optimizer_steps_per_epoch(total_steps))
        schedule = build_scheduler(
            self.optim_config, optimizer, total_steps=int(total_steps), steps_per_epoch=steps_per_epoch
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}
