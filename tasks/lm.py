"""Language-model pretraining (``task=lm``): next-token loss plus the MoE auxiliary loss on packed documents."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from lightning.pytorch.callbacks import Callback, ThroughputMonitor
from torchmetrics import MeanMetric, MinMetric
from torchmetrics.text import Perplexity

from tasks.base import BaseTask
from tasks.data.text.packing import IGNORE_INDEX
from zoo.models import build_causal_lm
from zoo.optim import OptimSettings
from zoo.registries import TASK


class TokenThroughputMonitor(ThroughputMonitor):
    """Lightning's :class:`ThroughputMonitor` for ``{"input_ids": [B, T], …}`` batches: logs samples/s, tokens/s
    (``train/device/items_per_sec``) and, where Lightning knows the device's peak, MFU (``train/device/mfu``) from
    the task's ``flops_per_batch``."""

    def __init__(self, window_size: int = 20) -> None:
        super().__init__(
            batch_size_fn=lambda batch: batch["input_ids"].shape[0],
            length_fn=lambda batch: batch["input_ids"].numel(),
            window_size=window_size,
        )


@TASK.register("lm")
class LMTask(BaseTask):
    """Causal language modelling with any ``MODEL`` of the causal-LM protocol (:class:`~zoo.models.CausalLM`;
    default: the MiniMax-style :class:`~zoo.models.HybridLM`).

    Loss: ``CE(logits, labels) + Σ_MoE-layers (aux_coef · L_aux + z_coef · L_z)``, labels ``-100`` ignored. Batches
    are ``{"input_ids": [B, T], "labels": [B, T], "cu_seqlens": int32 [N+1]}`` (see :mod:`tasks.data.text`):
    with ``cu_seqlens`` the model sees one packed stream and attention restarts at every document.

    Args:
        arch: ``MODEL`` name.
        config: the model's configuration (for ``hybrid_lm``: :class:`~zoo.models.HybridLMConfig` fields).
        compile: ``torch.compile`` each block in place when the model is configured, true or ``torch.compile``'s
            keyword arguments (after activation checkpointing, before FSDP2; :mod:`zoo.parallel.compile`).
        fused_loss: train through the model's ``forward_loss`` when it has one (the LM head and cross-entropy fused
            and chunked: no ``[B, T, vocab]`` logits; :func:`zoo.layers.linear_cross_entropy`); evaluation keeps
            the logits (perplexity).
        log_expert_load: log each MoE layer's busiest expert share and the dropped fraction.
        throughput: add a :class:`TokenThroughputMonitor` (tokens/s, MFU).
        optim: the optimizer settings over :attr:`optim_defaults` (AdamW 1e-3, weight decay 0.1, warmup + cosine),
            see :class:`~zoo.optim.OptimSettings` (MiniMax: ``optimizer_kwargs: {betas: [0.9, 0.95]}``).

    Logged: ``train/loss`` (CE), ``train/aux_loss``, ``train/ppl``, ``val/loss``, ``val/ppl``, ``val/loss_best``,
    ``test/loss``, ``test/ppl``, ``moe/max_load``, ``moe/dropped``, ``train/device/items_per_sec`` (tokens/s),
    ``train/device/mfu``.
    """

    optim_defaults: ClassVar[OptimSettings] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.1,
        "optimizer_kwargs": {},
        "scheduler": "warmup_cosine",
    }

    def __init__(
        self,
        arch: str = "hybrid_lm",
        config: dict[str, Any] | None = None,
        compile: bool | dict[str, Any] = False,
        fused_loss: bool = True,
        log_expert_load: bool = True,
        throughput: bool = True,
        optim: OptimSettings | None = None,
    ) -> None:
        super().__init__(optim=optim)
        self.save_hyperparameters()
        self.model = build_causal_lm(arch, config)
        self._fused_loss = getattr(self.model, "forward_loss", None) if fused_loss else None
        self.val_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.test_ppl = Perplexity(ignore_index=IGNORE_INDEX)
        self.val_loss = MeanMetric()
        self.test_loss = MeanMetric()
        self.val_loss_best = MinMetric()
        self.flops_per_batch: int | None = None

    def parallel_modules(self) -> list[torch.nn.Module]:
        return [self.model]

    def compile_blocks(self) -> bool | dict[str, Any]:
        return self.hparams.compile

    def configure_callbacks(self) -> list[Callback]:
        if not self.hparams.throughput or any(isinstance(c, TokenThroughputMonitor) for c in self.trainer.callbacks):
            return []  # test after fit: the monitor of fit is still attached (Lightning would warn on replacing it)
        return [TokenThroughputMonitor()]

    def forward(self, input_ids: torch.Tensor, cu_seqlens: torch.Tensor | None = None) -> torch.Tensor:
        """Logits ``[B, T, vocab]``."""
        return self.model(input_ids, cu_seqlens=cu_seqlens)

    def _step(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]:
        logits = self(batch["input_ids"], batch.get("cu_seqlens"))
        ce = F.cross_entropy(
            logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE_INDEX, reduction="mean"
        )
        return logits, ce, self.model.moe_loss()

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        if self._fused_loss is not None:  # the LM head and the loss fused: no [B, T, vocab] logits
            ce = self._fused_loss(batch["input_ids"], batch["labels"], cu_seqlens=batch.get("cu_seqlens"),
                                  ignore_index=IGNORE_INDEX)  # fmt: skip
            aux = self.model.moe_loss()
        else:
            _, ce, aux = self._step(batch)
        loss = ce if aux is None else ce + aux
        B = batch["input_ids"].shape[0]
        self.log("train/loss", ce, prog_bar=True, batch_size=B)
        self.log("train/ppl", torch.exp(ce.detach()), batch_size=B)
        if aux is not None:
            self.log("train/aux_loss", aux.detach(), batch_size=B)
        if self.hparams.log_expert_load:
            stats = self.model.moe_stats()
            if stats:
                self.log("moe/max_load", stats["expert_load"].max(dim=-1).values.mean(), batch_size=B)
                self.log("moe/dropped", stats["dropped_fraction"], batch_size=B)
        flops = self.model.flops_per_token(batch["input_ids"].shape[1])
        if flops is not None:
            self.flops_per_batch = int(flops * batch["input_ids"].numel())
        return loss

    def _evaluate(self, batch: dict[str, torch.Tensor], ppl: Perplexity, mean_loss: MeanMetric, stage: str) -> None:
        logits, ce, _ = self._step(batch)
        n = int((batch["labels"] != IGNORE_INDEX).sum())
        ppl.update(logits.float(), batch["labels"])
        mean_loss.update(ce, weight=n)
        self.log(f"{stage}/loss", mean_loss, prog_bar=True, batch_size=batch["input_ids"].shape[0])
        self.log(f"{stage}/ppl", ppl, batch_size=batch["input_ids"].shape[0])

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.val_ppl, self.val_loss, "val")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        self.val_loss_best(self.val_loss.compute())
        self.log("val/loss_best", self.val_loss_best.compute(), sync_dist=True)  # (equal on every rank)

    def test_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._evaluate(batch, self.test_ppl, self.test_loss, "test")
