"""The progress display: Rich's bars on a terminal, one plain line at a time anywhere else."""

from __future__ import annotations

import math
import sys
import time
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import RichProgressBar

from tasks.base import TrainingBudget


def training_budget(pl_module: L.LightningModule) -> TrainingBudget | None:
    """The module's :meth:`~tasks.base.BaseTask.training_budget` when it has one (any LightningModule works)."""
    method = getattr(pl_module, "training_budget", None)
    return method() if callable(method) else None


def format_duration(seconds: float) -> str:
    """``75`` → ``"1m15s"``, ``3725`` → ``"1h02m"``."""
    if not math.isfinite(seconds):
        return "?"
    seconds = round(seconds)
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    if seconds >= 60:
        return f"{seconds // 60}m{seconds % 60:02d}s"
    return f"{seconds}s"


def format_value(value: Any) -> str:
    """A metric for one line: four significant digits for floats."""
    if hasattr(value, "item"):
        value = value.item()
    return f"{value:.4g}" if isinstance(value, float) else str(value)


class BudgetProgressBar(RichProgressBar):
    """Lightning's ``RichProgressBar`` that counts a run's own budget, and prints plain lines when the output is not
    a terminal.

    * **Step budgets.** When the module's ``training_budget()`` (:class:`~tasks.base.TrainingBudget`) names one —
      ``task=lm``'s optimizer steps (``trainer.max_steps``), ``task=rl``'s rollouts (``rl.rollouts``) — the training
      bar reads ``Steps 120/600`` or ``Rollouts 37/200`` across epochs instead of Lightning's ``Epoch 0/-2``.
    * **Not a terminal** (a file, a pipe, a scheduler's log; ``plain=None`` decides by ``sys.stdout.isatty()``):
      a live bar writes nothing useful there, so one line is printed every ``interval`` seconds and at the end of
      training, e.g. ``epoch 2/3 · step 512/1290 (40%) · 3.1 steps/s · 2m45s elapsed, 4m11s left · train/loss 0.31``,
      plus one line per validation with its metrics.

    Args:
        interval: seconds between two plain lines.
        plain: force plain lines (True) or Rich's bars (False); None: plain when stdout is not a terminal.
        **kwargs: :class:`~lightning.pytorch.callbacks.RichProgressBar` arguments (``refresh_rate``, ``leave``,
            ``theme``, ``console_kwargs``).
    """

    def __init__(self, interval: float = 30.0, plain: bool | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.interval = interval
        self.plain = (not sys.stdout.isatty()) if plain is None else bool(plain)
        self._started = 0.0
        self._last_line = -math.inf
        self._first_step = 0

    # Rich's own machinery is switched off in plain mode: every hook of RichProgressBar checks these.
    @property
    def is_enabled(self) -> bool:
        return not self.plain and super().is_enabled

    @property
    def is_disabled(self) -> bool:
        return not self.is_enabled

    @property
    def prints_lines(self) -> bool:
        """Whether plain lines are printed (plain mode and not disabled, e.g. on ranks other than 0)."""
        return self.plain and self._enabled

    # ---------------------------------------------------------------------------------------- Rich, step budgets
    @property
    def total_train_batches(self) -> int | float:
        budget = training_budget(self.trainer.lightning_module)
        return budget.total if budget is not None else super().total_train_batches

    def _get_train_description(self, current_epoch: int) -> str:
        budget = training_budget(self.trainer.lightning_module)
        if budget is None:
            return super()._get_train_description(current_epoch)
        return f"{budget.unit.capitalize()}s".ljust(len(self.validation_description))

    def on_train_epoch_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        budget = training_budget(pl_module)
        if budget is not None and self.is_enabled and self.train_progress_bar_id is not None:
            self._update(self.train_progress_bar_id, budget.done)  # one bar for the whole budget
            return
        super().on_train_epoch_start(trainer, pl_module)
        if budget is not None:
            self._update(self.train_progress_bar_id, budget.done)

    def on_train_batch_end(
        self, trainer: L.Trainer, pl_module: L.LightningModule, outputs: Any, batch: Any, batch_idx: int
    ) -> None:
        budget = training_budget(pl_module)
        if budget is None:
            super().on_train_batch_end(trainer, pl_module, outputs, batch, batch_idx)
        elif self.is_enabled:
            if self.train_progress_bar_id is None:
                self._initialize_train_progress_bar_id()
            self._update(self.train_progress_bar_id, budget.done)
            self._update_metrics(trainer, pl_module)
            self.refresh()
        if self.prints_lines and time.monotonic() - self._last_line >= self.interval:
            self._print_train_line(trainer, pl_module)

    # ---------------------------------------------------------------------------------------- plain lines
    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_train_start(trainer, pl_module)
        self._started = self._last_line = time.monotonic()
        budget = training_budget(pl_module)
        self._first_step = budget.done if budget is not None else trainer.global_step

    def on_train_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        if self.prints_lines:
            self._print_train_line(trainer, pl_module)
        super().on_train_end(trainer, pl_module)

    def on_validation_end(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        super().on_validation_end(trainer, pl_module)
        if self.prints_lines and trainer.state.fn == "fit" and not trainer.sanity_checking:
            metrics = {k: v for k, v in trainer.callback_metrics.items() if k.startswith("val/")}
            budget = training_budget(pl_module)
            count = f"{budget.unit} {budget.done}" if budget is not None else f"step {trainer.global_step}"
            where = f"epoch {trainer.current_epoch + 1}, {count}"
            self._print(
                f"validation ({where}): " + " · ".join(f"{k} {format_value(v)}" for k, v in sorted(metrics.items()))
            )

    def train_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> str:
        """``epoch 2/3 · step 512/1290 (40%) · 3.1 steps/s · 2m45s elapsed, 4m11s left · train/loss 0.31``."""
        budget = training_budget(pl_module)
        if budget is None:
            total = trainer.estimated_stepping_batches
            budget = TrainingBudget("step", trainer.global_step, int(total) if math.isfinite(total) else 0)
        parts = []
        if budget.unit == "step" and trainer.max_epochs and trainer.max_epochs > 0:
            epoch = min(trainer.current_epoch + 1, trainer.max_epochs)  # (Lightning counts past the last at the end)
            parts.append(f"epoch {epoch}/{trainer.max_epochs}")
        elapsed = time.monotonic() - self._started
        rate = (budget.done - self._first_step) / elapsed if elapsed > 0 else 0.0
        if budget.total > 0:
            parts.append(f"{budget.unit} {budget.done}/{budget.total} ({100 * budget.done / budget.total:.0f}%)")
            left = (budget.total - budget.done) / rate if rate > 0 else math.inf
            timing = f"{format_duration(elapsed)} elapsed, {format_duration(left)} left"
        else:
            parts.append(f"{budget.unit} {budget.done}")
            timing = f"{format_duration(elapsed)} elapsed"
        parts += [f"{rate:.3g} {budget.unit}s/s", timing]
        metrics = self.get_metrics(trainer, pl_module)
        parts += [f"{k} {format_value(v)}" for k, v in metrics.items() if k != "v_num"]
        return " · ".join(parts)

    def _print_train_line(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self._last_line = time.monotonic()
        self._print(self.train_line(trainer, pl_module))

    @staticmethod
    def _print(line: str) -> None:
        print(line, flush=True)
