"""Vision-language training (``task=vlm``): MiniMax-VL-01's stages, scaled down, on LLaVA-format data."""

from __future__ import annotations

from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn
from torch.distributed.fsdp import FSDPModule
from torchmetrics import MeanMetric
from torchmetrics.text import BLEUScore

from tasks.base import BaseTask
from tasks.data.text.packing import IGNORE_INDEX
from tasks.data.tokenizer import ByteTokenizer
from tasks.data.vlm import QUESTION_TYPES, normalize_answer
from zoo.errors import ConfigError
from zoo.generation import generate
from zoo.models import build_causal_lm
from zoo.optim import OptimSettings
from zoo.registries import TASK

STAGES = ("align", "instruct")


def load_warm_start(model: nn.Module, path: str, key: str = "vlm.init_checkpoint") -> str:
    """Load a Lightning checkpoint into a vision-language ``model``: the whole model from a ``task=vlm`` checkpoint
    (``model.vision_tower.*``, ``model.language_model.*``, …), or the language model alone from a ``task=lm``
    (``model.*``) or ``task=rl`` (``policy.*``) one. Returns which (``"vlm"`` or ``"lm"``).

    Raises:
        ConfigError: the checkpoint holds none of these, or its tensors do not fit the configured model.
    """
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    whole = {k[len("model.") :]: v for k, v in state.items() if k.startswith("model.")}
    try:
        if any(k.startswith(("vision_tower.", "language_model.")) for k in whole):
            model.load_state_dict(whole)
            return "vlm"
        for prefix in ("model.", "policy."):
            lm = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
            if lm:
                model.language_model.load_state_dict(lm)
                return "lm"
    except RuntimeError as error:
        raise ConfigError(f"{key}={path} does not fit model.config: {error}") from error
    raise ConfigError(f"{key}={path} holds no model weights (keys 'model.*' of task=vlm/lm or 'policy.*' of task=rl)")


@TASK.register("vlm")
class VLMTask(BaseTask):
    """A vision-language model (``MODEL`` ``vlm``: ViT → projector → causal LM) trained on conversations about
    images; the loss is the next-token cross-entropy of the answer turns (``labels`` ``-100`` elsewhere) plus the
    language model's MoE auxiliary loss.

    Stages (MiniMax-VL-01 §6, scaled down):

    - ``align``: the projector (and, with ``train_vision``, the vision tower) learns from captions; the language
      model is frozen unless ``train_language``;
    - ``instruct``: every weight learns from the question turns.

    Batches are the ``llava_json`` / ``copy_paste_vqa`` datamodules' (:mod:`tasks.data.vlm`): ``input_ids``,
    ``labels`` ``[B, T]``, ``cu_seqlens`` (packed samples do not attend to each other), ``pixel_values`` uint8
    ``[N_tiles, 3, S, S]`` and ``image_grids`` ``[N_images, 2]``. After each validation (and in test) the model
    answers the split's prompts greedily through the decode engine, with the images' features in the prefill; the
    answers are scored by exact match per question type, captions by BLEU.

    Args:
        arch, config: the model (``MODEL`` name and its configuration).
        compile: ``torch.compile`` the training forward.
        stage: ``align`` or ``instruct``.
        train_vision: whether the vision tower learns.
        train_language: whether the language model learns (None: in ``instruct`` only).
        init_checkpoint: warm start (skipped when resuming): a ``task=vlm`` checkpoint (the whole model, e.g. the
            previous stage) or a ``task=lm`` / ``task=rl`` one (the language model).
        blind: the datamodule's blank-image baseline (set through ``data.blind``; recorded here with the run).
        max_new_tokens: the answers' generation budget.
        describe_tokens: describe-then-answer (``data.describe_first`` / ``data.describe_prompt``): the budget of
            the description generated before each answer.
        eval_batches: generation batches per evaluation (None: the whole split).
        optim: the optimizer settings over :attr:`optim_defaults` (AdamW 1e-3, weight decay 0.05, warmup +
            cosine), see :class:`~zoo.optim.OptimSettings`.

    Logged: ``train/loss``, ``train/aux_loss``, ``val/loss``, ``test/loss``; ``{val,test}/acc`` (exact match over
    every question) and ``{val,test}/acc_<type>`` for each type of :data:`~tasks.data.vlm.QUESTION_TYPES`,
    ``{val,test}/bleu`` for captions.
    """

    optim_defaults: ClassVar[OptimSettings] = {
        "optimizer": "adamw",
        "lr": 1e-3,
        "weight_decay": 0.05,
        "optimizer_kwargs": {},
        "scheduler": "warmup_cosine",
    }

    def __init__(
        self,
        arch: str = "vlm",
        config: dict[str, Any] | None = None,
        compile: bool = False,
        stage: str = "instruct",
        train_vision: bool = True,
        train_language: bool | None = None,
        init_checkpoint: str | None = None,
        blind: bool = False,
        max_new_tokens: int = 24,
        describe_tokens: int = 64,
        eval_batches: int | None = None,
        optim: OptimSettings | None = None,
    ) -> None:
        super().__init__(optim=optim)
        self.save_hyperparameters()
        if stage not in STAGES:
            raise ConfigError(f"vlm.stage={stage!r} is not a stage; valid choices: {', '.join(STAGES)}")
        self.model = build_causal_lm(arch, config)
        for name in ("encode_images", "embed", "vision_parameters", "language_parameters"):
            if not callable(getattr(self.model, name, None)):
                raise ConfigError(f"model.arch={arch}: task=vlm needs a vision-language MODEL (e.g. vlm); {name} is "
                                  f"missing")  # fmt: skip
        self.train_language = stage == "instruct" if train_language is None else train_language
        for p in self.model.vision_parameters():
            p.requires_grad_(train_vision)
        for p in self.model.language_parameters():
            p.requires_grad_(self.train_language)
        self._forward = torch.compile(self.model) if compile else self.model
        self.eos_id = ByteTokenizer().eos_id
        self.losses = nn.ModuleDict({stage: MeanMetric() for stage in ("val", "test")})
        self.accuracy = nn.ModuleDict(
            {f"{s}_{t}": MeanMetric() for s in ("val", "test") for t in ("all", *QUESTION_TYPES)}
        )
        self.bleu = nn.ModuleDict({s: BLEUScore(n_gram=2, smooth=True) for s in ("val", "test")})

    def parallel_modules(self) -> list[nn.Module]:
        return [self.model]

    def on_fit_start(self) -> None:
        path = self.hparams.init_checkpoint
        if path and self.trainer.ckpt_path is None:
            load_warm_start(self.model, path)

    # ------------------------------------------------------------------------------------------- training
    def forward(self, batch: dict[str, Any]) -> torch.Tensor:
        """Logits ``[B, T, vocab]`` of a batch with its images."""
        return self._forward(batch["input_ids"], pixel_values=batch.get("pixel_values"),
                             image_grids=batch.get("image_grids"), cu_seqlens=batch.get("cu_seqlens"))  # fmt: skip

    def _loss(self, batch: dict[str, Any]) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self(batch)
        ce = F.cross_entropy(logits.flatten(0, 1).float(), batch["labels"].flatten(), ignore_index=IGNORE_INDEX)
        return ce, self.model.moe_loss()

    def training_step(self, batch: dict[str, Any], batch_idx: int) -> torch.Tensor:
        ce, aux = self._loss(batch)
        size = int(batch["images_per_sample"].numel())
        self.log("train/loss", ce, prog_bar=True, batch_size=size)
        if aux is not None:
            self.log("train/aux_loss", aux.detach(), batch_size=size)
        return ce if aux is None or not self.train_language else ce + aux

    def validation_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss_step(batch, "val")

    def test_step(self, batch: dict[str, Any], batch_idx: int) -> None:
        self._loss_step(batch, "test")

    def _loss_step(self, batch: dict[str, Any], stage: str) -> None:
        ce, _ = self._loss(batch)
        self.losses[stage].update(ce, weight=int((batch["labels"] != IGNORE_INDEX).sum()))
        self.log(f"{stage}/loss", self.losses[stage], prog_bar=True, batch_size=int(batch["images_per_sample"].numel()))

    # ------------------------------------------------------------------------------------------- answers
    @torch.no_grad()
    def answer(self, batch: dict[str, Any]) -> list[str]:
        """Greedy answers to a generation batch (``prompts``, ``pixel_values``, ``image_grids``): the prompts'
        embeddings with the images' features spliced in feed the decode engine's prefill. Describe-then-answer
        (``described`` / ``followups``, from ``data.describe_prompt``): each prompt is first continued by a
        description of up to ``describe_tokens`` tokens, then that description, its eos and the followup (the
        question) are appended and the answer is generated after them."""
        prompts: list[list[int]] = batch["prompts"]
        followups = batch.get("followups") or [None] * len(prompts)
        pixels, grids = batch.get("pixel_values"), batch.get("image_grids")
        if batch.get("described") or any(f is not None for f in followups):  # (every process: FSDP collectives)
            described = self._continue(prompts, pixels, grids, self.hparams.describe_tokens)
            prompts = [
                prompt if followup is None else [*prompt, *(t for t in said if t != self.eos_id), self.eos_id,
                                                 *followup]
                for prompt, said, followup in zip(prompts, described, followups, strict=True)
            ]  # fmt: skip
        tokenizer = ByteTokenizer()
        return [tokenizer.decode(tokens) for tokens in self._continue(prompts, pixels, grids,
                                                                        self.hparams.max_new_tokens)]  # fmt: skip

    def _continue(
        self, prompts: list[list[int]], pixels: torch.Tensor | None, grids: torch.Tensor | None, budget: int
    ) -> list[list[int]]:
        """Greedy continuations (token ids, eos kept) of ``prompts`` whose ``<image>`` placeholders are the
        images' features."""
        ids = torch.tensor([t for p in prompts for t in p], device=self.device)[None]
        was_training = self.model.training
        self.model.eval()
        sharded = isinstance(self.model, FSDPModule)
        if sharded:  # embed is not the root's forward: gather the root's own parameters (projector, newline) for it
            self.model.unshard()
        try:
            embeds = self.model.embed(ids, None if pixels is None else pixels.to(self.device),
                                      None if grids is None else grids.to(self.device))[0]  # fmt: skip
        finally:
            if sharded:
                self.model.reshard()
            self.model.train(was_training)
        parts = list(embeds.split([len(p) for p in prompts]))
        out = generate(self.model, prompts, budget, eos=self.eos_id, inputs_embeds=parts)
        return [list(map(int, tokens)) for tokens in out.tokens]

    def _score(self, split: str) -> None:
        """Answer the split's generation prompts and log exact match per type (and BLEU for captions)."""
        datamodule = self.trainer.datamodule
        loader = datamodule.generation_dataloader(split) if hasattr(datamodule, "generation_dataloader") else []
        limit = self.hparams.eval_batches
        batches = [batch for index, batch in enumerate(loader) if limit is None or index < limit]
        # every process runs as many generations as the busiest (a sharded model's forwards are collectives);
        # the extra ones repeat the last batch and are not scored
        rounds = int(self.all_gather(torch.tensor(len(batches), device=self.device)).max())
        if rounds and not batches:
            raise ConfigError(f"the {split} split has fewer generation batches than processes: give it more prompts")
        captions = 0
        for index in range(rounds):
            answers = self.answer(batches[min(index, len(batches) - 1)])
            if index >= len(batches):
                continue
            batch = batches[index]
            for answer, truth, kind in zip(answers, batch["answers"], batch["types"], strict=True):
                if kind == "caption":
                    self.bleu[split].update([normalize_answer(answer)], [[normalize_answer(truth)]])
                    captions += 1
                    continue
                correct = torch.tensor(float(normalize_answer(answer) == normalize_answer(truth)), device=self.device)
                self.accuracy[f"{split}_all"].update(correct)
                if f"{split}_{kind}" in self.accuracy:
                    self.accuracy[f"{split}_{kind}"].update(correct)
        for kind in ("all", *QUESTION_TYPES):
            metric = self.accuracy[f"{split}_{kind}"]
            if metric.update_count:
                self.log(f"{split}/acc" if kind == "all" else f"{split}/acc_{kind}", metric.compute(), sync_dist=True)
            metric.reset()
        if captions:
            self.log(f"{split}/bleu", self.bleu[split].compute(), sync_dist=True)
        self.bleu[split].reset()

    def on_validation_epoch_end(self) -> None:
        if not self.trainer.sanity_checking:
            self._score("val")

    def on_test_epoch_end(self) -> None:
        self._score("test")
