"""Test-only Lightning callbacks, instantiated from configs by ``_target_``."""

from __future__ import annotations

import lightning as L


class StopAfterEpochs(L.Callback):
    """Stop training after ``epochs`` epochs, as if the job had been killed there (the schedule still spans
    ``trainer.max_epochs``)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True
