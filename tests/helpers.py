"""Test-only Lightning callbacks, instantiated from configs by ``_target_``."""

from __future__ import annotations

import os
import signal

import lightning as L


class StopAfterEpochs(L.Callback):
    """Stop training after ``epochs`` epochs, as if the job had been killed there (the schedule still spans
    ``trainer.max_epochs``)."""

    def __init__(self, epochs: int) -> None:
        self.epochs = epochs

    def on_train_epoch_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if trainer.current_epoch + 1 >= self.epochs:
            trainer.should_stop = True


class StopAfterSteps(L.Callback):
    """Stop training after ``steps`` optimizer steps (mid-epoch), as if the job had been killed right after the
    checkpoint of that step (the schedule still spans ``trainer.max_steps``)."""

    def __init__(self, steps: int) -> None:
        self.steps = steps

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        if trainer.global_step >= self.steps:
            trainer.should_stop = True


class SignalAtStep(L.Callback):
    """Send this process ``signum`` (SIGTERM: what a scheduler sends) right after optimizer step ``step``."""

    def __init__(self, step: int, signum: int = signal.SIGTERM) -> None:
        self.step = step
        self.signum = signum

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: L.LightningModule, *args, **kwargs) -> None:
        if trainer.global_step == self.step:
            os.kill(os.getpid(), self.signum)
