"""``last.ckpt``: the newest training state, whatever ends the run."""

from __future__ import annotations

from typing import Any

import lightning as L
from lightning.pytorch.callbacks import ModelCheckpoint
from lightning.pytorch.utilities.exceptions import SIGTERMException


class LastCheckpoint(ModelCheckpoint):
    """``last.ckpt``, the newest training state, for ``ckpt_path=last``: written at every validation (monitor-free:
    Lightning's ``save_last`` writes only when the monitored metric improved), when fit ends (a ``max_steps`` budget
    that ends between validations), and when the run is terminated by SIGTERM (what schedulers send; the loops stop
    at a batch boundary, so the state is consistent and resumes exactly).

    Args:
        dirpath: the checkpoint directory.
        filename: the file's stem (``last``).
        **kwargs: further :class:`~lightning.pytorch.callbacks.ModelCheckpoint` arguments.
    """

    def __init__(self, dirpath: str, filename: str = "last", **kwargs: Any) -> None:
        kwargs = {"monitor": None, "save_top_k": 1, "enable_version_counter": False, **kwargs}
        super().__init__(dirpath=dirpath, filename=filename, **kwargs)

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_end(trainer, pl_module)
        self._save_newest(trainer)

    def on_exception(self, trainer: L.Trainer, pl_module: L.LightningModule, exception: BaseException) -> None:
        super().on_exception(trainer, pl_module, exception)
        if isinstance(exception, SIGTERMException):
            self._save_newest(trainer)

    def _save_newest(self, trainer: L.Trainer) -> None:
        if not self._should_skip_saving_checkpoint(trainer):
            self._save_none_monitor_checkpoint(trainer, self._monitor_candidates(trainer))
