"""Build a run from a composed Hydra config and execute it: ``fit`` → ``test`` → ``metrics.json``.

The config's top-level keys:

============ ======================================================================================================
key          meaning
============ ======================================================================================================
``task``     ``name`` (a ``TASK`` key), ``monitor`` and ``monitor_mode`` (what the best checkpoint maximises)
``model``    keyword arguments of the task's ``__init__`` (``model.ca=mca``); ``task.kwargs_from`` may list more
             sections (``task=rl``: ``[model, rl]``)
``data``     ``name`` (a ``DATA`` key) and the DataModule's keyword arguments
``trainer``  keyword arguments of ``lightning.Trainer``
``callbacks``, ``logger``   third-party objects by ``_target_`` (Lightning's callbacks and loggers)
``seed``     global seed; ``ckpt_path``: ``null``, ``last`` or a file to resume from
``test_ckpt`` which weights ``test`` scores: ``best`` (the best checkpoint by ``task.monitor``) or ``last`` (the
             weights training ended with: a fixed schedule, or validation data that doubles as the test set)
``imports``  modules to import first, so that their components register (like mmengine's ``custom_imports``)
============ ======================================================================================================
"""

from __future__ import annotations

import contextlib
import logging
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import LearningRateMonitor
from lightning.pytorch.utilities.exceptions import SIGTERMException
from omegaconf import DictConfig, OmegaConf
from omegaconf.errors import OmegaConfBaseException

from tasks.app.checkpoint import AtomicCheckpointIO, resolve_ckpt_path
from tasks.app.quiet import quiet_library_noise
from zoo.config import check_kwargs
from zoo.errors import ConfigError, RegistryError, find_zoo_error
from zoo.io import write_json
from zoo.parallel import models_on_meta_device
from zoo.registries import DATA, TASK
from zoo.registry import import_modules

log = logging.getLogger(__name__)


def data_property(data_cfg: Any, key: str) -> Any:
    """What the configured dataset implies for the model: ``num_classes`` or ``in_chans``.

    A value set in the data config wins; otherwise the DataModule class's own (``in_chans`` ← ``native_chans``), or
    what its ``infer_property(data_cfg, key)`` reads from the data (``image_folder``: the class folders).
    Used by the ``${zoo.data:num_classes}`` interpolation in the model configs.
    """
    value = data_cfg.get(key) if hasattr(data_cfg, "get") else None
    if value is not None:
        return value
    cls = DATA.get(data_cfg["name"])
    value = getattr(cls, "native_chans" if key == "in_chans" else key, None)
    if not value and hasattr(cls, "infer_property"):  # e.g. image_folder counts its class folders
        value = cls.infer_property(data_cfg, key)
    if not value:
        raise ConfigError(f"data '{data_cfg['name']}' does not know its {key}; set data.{key}")
    return value


def register_resolvers() -> None:
    """Register the ``zoo.*`` OmegaConf resolvers (idempotent)."""
    if not OmegaConf.has_resolver("zoo.data"):
        OmegaConf.register_new_resolver("zoo.data", lambda key, *, _root_: data_property(_root_.data, key))


register_resolvers()


def _find_keys(node: Any, value: Any, prefix: str = "") -> list[str]:
    """Config keys whose value is ``value`` (to say which setting named an unknown component)."""
    if isinstance(node, dict):
        return [k for key, child in node.items() for k in _find_keys(child, value, f"{prefix}{key}.")]
    return [prefix[:-1]] if node == value else []


def instantiate_group(group: Any) -> list[Any]:
    """Instantiate every entry of a ``callbacks`` / ``logger`` group that has a ``_target_``; null entries are off."""
    from hydra.utils import instantiate

    if not group:
        return []
    items = group.values() if hasattr(group, "values") else group
    return [instantiate(item) for item in items if item is not None and "_target_" in item]


def build(cfg: DictConfig) -> tuple[L.LightningModule, L.LightningDataModule, L.Trainer]:
    """Construct the task, the datamodule and the trainer a config describes, checking keys and types first.

    Raises:
        ZooError: an unknown registry name (the message names the config key that set it), a key or value that
            the target does not take, a missing dataset.
    """
    quiet_library_noise()
    import_modules(cfg.get("imports") or [])
    try:
        plain = _resolve(cfg)
        task_cls = TASK.get(plain["task"]["name"])
        data_kwargs = dict(plain["data"])
        data_cls = DATA.get(data_kwargs.pop("name"))
        model_kwargs = task_kwargs(plain)
        for node in plain["task"].get("kwargs_from") or ["model"]:
            check_kwargs(task_cls, dict(plain[node]), node)
        check_kwargs(data_cls, data_kwargs, "data")
        check_kwargs(L.Trainer, plain["trainer"], "trainer")
        strategy = build_strategy(plain.get("strategy"), plain["trainer"])
        datamodule = data_cls(**data_kwargs)
        with models_on_meta_device() if _is_sharded(strategy) else contextlib.nullcontext():
            task = task_cls(**model_kwargs)  # sharded: the networks on the meta device, until configure_model
    except RegistryError as exc:
        keys = _find_keys(OmegaConf.to_container(cfg, resolve=False), exc.name)
        if keys:
            raise RegistryError(
                f"{exc} (set by {', '.join(keys)})", kind=exc.kind, name=exc.name, choices=exc.choices
            ) from exc
        raise
    loggers = instantiate_group(cfg.get("logger"))
    callbacks = instantiate_group(cfg.get("callbacks"))
    if not loggers:  # logger=null: drop what can only report to a logger instead of failing at fit start
        callbacks = [c for c in callbacks if not isinstance(c, LearningRateMonitor)]
    trainer_kwargs = {**plain["trainer"], "strategy": strategy}
    plugins = [] if _is_sharded(trainer_kwargs["strategy"]) else [AtomicCheckpointIO()]
    trainer = L.Trainer(**trainer_kwargs, callbacks=callbacks, logger=loggers or False, plugins=plugins)
    return task, datamodule, trainer


def build_strategy(strategy_cfg: Any, trainer_cfg: dict[str, Any]) -> Any:
    """The Trainer's ``strategy`` from the ``strategy`` group (``single``, ``ddp``, ``fsdp2``): a Lightning name, or
    an object for entries with a ``_target_``. ``trainer.strategy`` set to something other than ``auto`` is used
    as it is, and may not be combined with another ``strategy=`` choice.

    Raises:
        ConfigError: both ``trainer.strategy`` and a ``strategy=`` group other than ``single`` are set.
    """
    own = trainer_cfg.get("strategy", "auto")
    if not strategy_cfg:
        return own
    if "_target_" in strategy_cfg:
        from hydra.utils import get_class

        values = {k: v for k, v in dict(strategy_cfg).items() if k != "_target_"}
        cls = get_class(strategy_cfg["_target_"])
        check_kwargs(cls, values, "strategy")
        try:
            chosen: Any = cls(**values)
        except ValueError as exc:  # e.g. an unknown strategy.activation_checkpointing
            raise ConfigError(str(exc)) from None
    else:
        chosen = strategy_cfg.get("name", "auto")
    if own not in (None, "auto") and chosen != "auto":
        raise ConfigError(f"trainer.strategy={own} and the strategy group both choose a strategy; set one of them")
    return own if chosen == "auto" else chosen


def _is_sharded(strategy: Any) -> bool:
    """Strategies that write checkpoints themselves (distributed checkpoint directories)."""
    from lightning.pytorch.strategies import ModelParallelStrategy

    return isinstance(strategy, ModelParallelStrategy)


def task_kwargs(plain: dict[str, Any]) -> dict[str, Any]:
    """The task's keyword arguments: the ``model`` node, or the union of the nodes listed in ``task.kwargs_from``
    (``task=rl`` takes ``model`` for the policy and ``rl`` for the algorithm, so that ``rl.objective=cispo`` works).

    Raises:
        ConfigError: a listed node is missing, or two nodes set the same key.
    """
    kwargs: dict[str, Any] = {}
    for node in plain["task"].get("kwargs_from") or ["model"]:
        values = plain.get(node)
        if not isinstance(values, dict):
            raise ConfigError(f"task.kwargs_from names '{node}', but the configuration has no '{node}' section")
        clash = sorted(set(kwargs) & set(values))
        if clash:
            raise ConfigError(f"{node}.{clash[0]} is also set by another section of task.kwargs_from; set it once")
        kwargs.update(values)
    return kwargs


def _resolve(cfg: DictConfig) -> dict[str, Any]:
    """The config as plain containers; an error raised by a ``zoo.*`` resolver surfaces as itself."""
    try:
        return OmegaConf.to_container(cfg, resolve=True)  # type: ignore[return-value]
    except OmegaConfBaseException as exc:
        cause = find_zoo_error(exc)
        if cause is not None:
            raise cause from None
        raise ConfigError(f"the configuration does not resolve: {exc}") from exc


TEST_CKPTS = ("best", "last")
#: The exit status of a run terminated by SIGTERM (128 + 15, as a shell reports it): not a success.
SIGTERM_EXIT = 143


def train(cfg: DictConfig) -> dict[str, Any]:
    """Fit, test the best (``test_ckpt=best``) or final (``test_ckpt=last``) weights, write ``metrics.json`` into the
    run directory and return the metrics.

    Returns the test metrics, the last epoch's validation metrics (``val/*``), ``time/fit_s`` and ``test/ckpt``.
    When the config names ``optimized_metric``, the caller (``tools/train.py``) returns that value to Hydra's
    sweeper.

    Raises:
        SystemExit: status 143 when the run is terminated by SIGTERM; ``checkpoints/last.ckpt`` then holds the state
            it stopped at (:class:`tasks.callbacks.LastCheckpoint`) and ``metrics.json`` is not written.
    """
    output_dir = Path(cfg.paths.output_dir)
    test_ckpt = cfg.get("test_ckpt", "best")
    if test_ckpt not in TEST_CKPTS:
        raise ConfigError(f"test_ckpt={test_ckpt!r} is unknown; valid choices: {', '.join(TEST_CKPTS)}")
    if cfg.get("seed") is not None:
        L.seed_everything(int(cfg.seed), workers=True)
    task, datamodule, trainer = build(cfg)
    ckpt_path = resolve_ckpt_path(cfg.get("ckpt_path"), output_dir, Path(cfg.paths.log_dir) / str(cfg.task.name))
    metrics: dict[str, Any] = {}
    start = time.perf_counter()
    try:
        if cfg.get("fit", True):
            trainer.fit(task, datamodule=datamodule, ckpt_path=ckpt_path)
            metrics.update({k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")})
            ckpt_path = None
        metrics["time/fit_s"] = time.perf_counter() - start
        if cfg.get("test", True):
            best = ""
            if test_ckpt == "best" and trainer.checkpoint_callback is not None:
                best = trainer.checkpoint_callback.best_model_path
            tested = trainer.test(task, datamodule=datamodule, ckpt_path=best or ckpt_path or None)
            for result in tested:
                metrics.update({k: float(v) for k, v in result.items()})
            metrics["test/ckpt"] = best or ckpt_path or "(final weights)"
    except SIGTERMException:  # Lightning's SystemExit without a status, which would exit 0
        log.warning(
            "terminated by SIGTERM at step %d: checkpoints/last.ckpt holds that state, resume with ckpt_path=last "
            "(no metrics.json); exit status %d",
            trainer.global_step,
            SIGTERM_EXIT,
        )
        raise SystemExit(SIGTERM_EXIT) from None
    if trainer.is_global_zero:
        write_json(output_dir / "metrics.json", metrics)
        log.info("metrics written to %s", output_dir / "metrics.json")
    return metrics


def objective_value(cfg: DictConfig, metrics: dict[str, Any]) -> float | None:
    """The metric a Hydra sweeper optimises (``optimized_metric``), or None when the config names none."""
    name = cfg.get("optimized_metric")
    if not name:
        return None
    if name not in metrics:
        raise ConfigError(
            f"optimized_metric={name} was not logged (metrics.json is written); set optimized_metric to one of "
            f"{', '.join(sorted(metrics))}, or to null when no sweeper reads it"
        )
    return float(metrics[name])
