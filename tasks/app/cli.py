"""The LightningCLI front end (``tools/cli.py``) and the Hydra → LightningCLI config translation.

Both front ends construct the same classes with the same primitive arguments: Hydra from ``conf/`` by registry
names (``task=vision model.ca=mca``), LightningCLI from ``conf/cli/*.yaml`` by class names
(``--model VisionTask --model.ca mca``). ``conf/cli/*.yaml`` are generated from the Hydra presets by
:func:`hydra_to_cli` (``tools/hydra2cli.py``), so the two start from identical values.
"""

from __future__ import annotations

import contextlib
import importlib
from typing import Any

import lightning as L
from lightning.pytorch.cli import LightningCLI
from omegaconf import DictConfig, OmegaConf

from tasks.app.checkpoint import AtomicCheckpointIO
from tasks.app.quiet import quiet_library_noise
from zoo.parallel import models_on_meta_device
from zoo.registries import DATA, TASK


class ZooCLI(LightningCLI):
    """LightningCLI whose trainer writes checkpoints atomically and whose sharding strategies get their networks
    built on the meta device, like the Hydra front end's."""

    def instantiate_classes(self) -> None:
        config = self.config.get(self.subcommand, self.config) if self.subcommand else self.config
        strategy = (config.get("trainer") or {}).get("strategy")
        with models_on_meta_device() if _is_sharding(strategy) else contextlib.nullcontext():
            super().instantiate_classes()

    def _instantiate_trainer(self, config: dict[str, Any], callbacks: list[Any]) -> L.Trainer:
        plugins = config.get("plugins") or []
        plugins = list(plugins) if isinstance(plugins, (list, tuple)) else [plugins]
        sharded = _is_sharding(config.get("strategy"))  # distributed checkpoints: the strategy writes them atomically
        if not sharded and not any(hasattr(p, "save_checkpoint") for p in plugins):
            plugins.append(AtomicCheckpointIO())
        config["plugins"] = plugins
        return super()._instantiate_trainer(config, callbacks)


def _is_sharding(strategy: Any) -> bool:
    """Whether a CLI ``trainer.strategy`` (an object, or a ``class_path`` spec) is a ModelParallelStrategy."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    if isinstance(strategy, ModelParallelStrategy):
        return True
    spec = strategy.get("class_path") if isinstance(strategy, dict) else getattr(strategy, "class_path", None)
    module, _, name = str(spec or "").rpartition(".")
    try:
        cls = getattr(importlib.import_module(module), name, None) if module else None
    except ImportError:
        return False
    return isinstance(cls, type) and issubclass(cls, ModelParallelStrategy)


def make_cli(args: list[str] | None = None, *, run: bool = True, **kwargs: Any) -> LightningCLI:
    """Build the CLI. Every registered task and datamodule (plugins included) is imported first, so
    ``--model VisionTask`` and ``--data FashionMNISTDataModule`` resolve to their classes (and the zoo's callbacks,
    e.g. ``LastCheckpoint``, to theirs)."""
    TASK.names()
    DATA.names()
    import tasks.callbacks  # noqa: F401
    from tasks.base import BaseTask

    quiet_library_noise()
    return ZooCLI(
        BaseTask,
        L.LightningDataModule,
        subclass_mode_model=True,
        subclass_mode_data=True,
        auto_configure_optimizers=False,
        save_config_kwargs={"overwrite": True},
        args=args,
        run=run,
        **kwargs,
    )


def _class_spec(target: str, init_args: dict[str, Any]) -> dict[str, Any]:
    return {"class_path": target, "init_args": init_args}


def hydra_to_cli(cfg: DictConfig) -> dict[str, Any]:
    """A LightningCLI config with the same task, data, trainer, callbacks and loggers as a composed Hydra config.

    Registry names become class names (``vision`` → ``VisionTask``); ``_target_`` entries become
    ``class_path``/``init_args``. Paths must already be resolved (compose with ``paths.output_dir=<dir>``).
    """
    plain = OmegaConf.to_container(cfg, resolve=True)
    data = dict(plain["data"])
    data_name = data.pop("name")

    def objects(group: dict[str, Any] | None) -> list[dict[str, Any]]:
        out = []
        for item in (group or {}).values():
            if item and "_target_" in item:
                item = dict(item)
                target = item.pop("_target_")
                out.append(_class_spec(target.rsplit(".", 1)[-1], item))
        return out

    from tasks.app.runner import task_kwargs

    trainer = dict(plain["trainer"])
    strategy = plain.get("strategy") or {}
    if "_target_" in strategy:
        strategy = dict(strategy)
        trainer["strategy"] = _class_spec(strategy.pop("_target_"), strategy)
    elif strategy.get("name", "auto") != "auto":
        trainer["strategy"] = strategy["name"]
    trainer["callbacks"] = objects(plain.get("callbacks"))
    trainer["logger"] = objects(plain.get("logger")) or False
    return {
        "seed_everything": plain.get("seed", True),
        "trainer": trainer,
        "model": _class_spec(TASK.get(plain["task"]["name"]).__name__, task_kwargs(plain)),
        "data": _class_spec(DATA.get(data_name).__name__, data),
    }
