"""The RL task (``task=rl``): one Lightning step per rollout, μ manual optimizer steps on it."""

from __future__ import annotations

import copy
import time
from typing import Any, ClassVar

import torch
from torch import nn
from torchmetrics import MeanMetric

from tasks.base import BaseTask, TrainingBudget
from tasks.data.tokenizer import ByteTokenizer
from tasks.rl.rollout import Completion, encode_problem, pad, repetition_cut, sample_completions, token_logprobs
from tasks.rl.scoring import EVAL_KEYS, mean_scores, overlong_penalty, score_completion
from tasks.rl.warm_start import WARM_START_OPTIM, load_policy_weights, warm_start
from zoo.config import check_kwargs
from zoo.cuda_graphs import GraphedStep
from zoo.errors import ConfigError
from zoo.models import build_causal_lm
from zoo.optim import OptimSettings, resolve_optim, settings_param_groups
from zoo.parallel.fsdp import is_sharded
from zoo.registries import ADVANTAGE, OBJECTIVE, TASK

GRAPH_PAD = 8
"""On CUDA, rollout batches are padded to a multiple of this many tokens: one update graph per bucket."""


@TASK.register("rl")
class RLTask(BaseTask):
    """RL fine-tuning of a causal LM against an environment's verifiable reward.

    Args:
        arch, config: the policy (``MODEL`` name and its configuration; byte-level vocabulary of 257).
        init_checkpoint: a ``task=lm`` (or ``task=rl``) checkpoint to start from instead of the warm start.
        objective, objective_kwargs: ``OBJECTIVE`` name and its hyperparameters (each objective's paper defaults
            otherwise; e.g. ``{eps_high: 4.0}`` for CISPO).
        advantage, advantage_kwargs: ``ADVANTAGE`` name; ``auto`` = ``gae`` for objectives that need values (PPO,
            which then gets a value head on the policy's last hidden state), else ``group_norm``.
        rollouts: the training budget, in rollout steps (each samples G completions for ``data.prompts_per_step``
            prompts and takes μ optimizer steps on them); validation runs every ``data.steps_per_epoch`` rollouts.
        group_size: G completions per prompt.
        minibatches, epochs: each rollout batch is split into ``minibatches`` and passed ``epochs`` times: μ =
            minibatches × epochs optimizer steps per rollout (μ > 1 is where the objectives differ).
        max_new_tokens: generation budget (default: the environment's longest answer + 2).
        temperature, top_p: sampling of the rollouts.
        decode_engine: generate rollouts and validation through :mod:`zoo.generation`'s decode engine where the
            policy allows it (None: not sharded), or through the dynamic path (False: the pre-engine baseline,
            for comparisons); both draw the same tokens.
        compile_decode: whether the engine compiles its decode step (None: on CUDA; see
            :func:`zoo.generation.generate`'s ``compile``).
        dynamic_sampling: DAPO's filter: drop prompts whose G rewards are all equal before the update.
        overlong_buffer: DAPO's soft overlong punishment over the last ``overlong_buffer`` tokens of the budget.
        repetition_run: M1's early truncation, scaled: a completion is cut (unfinished) after this many consecutive
            tokens each with p > 0.99 (None: off).
        warm_start_steps, warm_start_batch, warm_start_error_rate: supervised warm start on demonstrations that
            are wrong with probability ``warm_start_error_rate`` (skipped with ``init_checkpoint`` or when resuming;
            :func:`tasks.rl.warm_start.warm_start`).
        warm_start_optim: its optimizer settings over :data:`~tasks.rl.warm_start.WARM_START_OPTIM` (AdamW 3e-3,
            β = (0.9, 0.95), cosine to 0), see :class:`~zoo.optim.OptimSettings`.
        value_lr_scale: learning-rate multiplier of the value head (PPO).
        grad_clip: gradient-norm clip per optimizer step (manual optimization: ``trainer.gradient_clip_val`` does
            not apply).
        graph_update: replay each minibatch's loss, backward and clip as a CUDA graph
            (:class:`zoo.cuda_graphs.GraphedStep`; the optimizer step stays eager). None: on where it applies —
            CUDA, one process, fp32 or bf16 precision, an unsharded policy; False: the eager loop (the baseline of
            comparisons). On CUDA rollout batches are padded to a multiple of :data:`GRAPH_PAD` tokens (masked
            out of the objective), so that few shapes need a graph.
        optim: the RL updates' optimizer settings over :attr:`optim_defaults` (AdamW 3e-4, no weight decay,
            constant), see :class:`~zoo.optim.OptimSettings` (M1: ``optimizer_kwargs: {betas: [0.9, 0.95]}``).

    Logged per step: ``rollout/reward``, ``rollout/acc``, ``rollout/length``, ``rollout/zero_std_groups``,
    ``rollout/kept``, ``rollout/tokens_per_s`` (generated tokens over the sampling's wall time), ``time/generate_s``,
    ``time/rollout_s`` (sampling, scoring and the old log-probs), ``time/update_s`` (the μ optimizer steps),
    ``time/graphed`` (the fraction of them replayed from CUDA graphs),
    ``train/loss``, ``train/clip_frac``, ``train/approx_kl``, ``train/entropy`` (and the
    objective's own metrics); per validation: ``val/acc`` (greedy exact match on the environment's held-out set),
    ``val/reward``, ``val/format``, ``val/length``, ``val/acc_best``.
    """

    optim_defaults: ClassVar[OptimSettings] = {
        "optimizer": "adamw",
        "lr": 3e-4,
        "weight_decay": 0.0,
        "optimizer_kwargs": {},
        "scheduler": "constant",
        "scheduler_kwargs": {},
    }

    def __init__(
        self,
        arch: str = "hybrid_lm",
        config: dict[str, Any] | None = None,
        init_checkpoint: str | None = None,
        objective: str = "cispo",
        objective_kwargs: dict[str, Any] | None = None,
        advantage: str = "auto",
        advantage_kwargs: dict[str, Any] | None = None,
        rollouts: int = 200,
        group_size: int = 8,
        minibatches: int = 4,
        epochs: int = 1,
        max_new_tokens: int | None = None,
        temperature: float = 1.0,
        top_p: float = 1.0,
        decode_engine: bool | None = None,
        compile_decode: bool | None = None,
        dynamic_sampling: bool = False,
        overlong_buffer: int | None = None,
        repetition_run: int | None = None,
        warm_start_steps: int = 300,
        warm_start_batch: int = 64,
        warm_start_error_rate: float = 0.3,
        warm_start_optim: OptimSettings | None = None,
        value_lr_scale: float = 10.0,
        grad_clip: float | None = 1.0,
        graph_update: bool | None = None,
        optim: OptimSettings | None = None,
    ) -> None:
        super().__init__(optim=optim)
        self.save_hyperparameters()
        self.automatic_optimization = False
        for key, value in {
            "rollouts": rollouts,
            "group_size": group_size,
            "minibatches": minibatches,
            "epochs": epochs,
        }.items():
            if value < 1:
                raise ConfigError(f"rl.{key}={value} must be ≥ 1")
        check_kwargs(OBJECTIVE.get(objective), dict(objective_kwargs or {}), "rl.objective_kwargs")
        self.objective = OBJECTIVE.build(objective, **dict(objective_kwargs or {}))
        if advantage == "auto":
            advantage = "gae" if self.objective.needs_values else "group_norm"
        check_kwargs(ADVANTAGE.get(advantage), dict(advantage_kwargs or {}), "rl.advantage_kwargs")
        self.advantage_name = advantage
        self.advantage = ADVANTAGE.build(advantage, **dict(advantage_kwargs or {}))
        if self.objective.needs_values and advantage != "gae":
            raise ConfigError(f"rl.objective={objective} trains a value function: use rl.advantage=gae (or auto)")
        self.warm_start_optim = resolve_optim(warm_start_optim, WARM_START_OPTIM, "rl.warm_start_optim")
        self.tokenizer = ByteTokenizer()
        self.policy = build_causal_lm(arch, config)
        vocab = self.policy.vocab_size
        if vocab < self.tokenizer.vocab_size:
            raise ConfigError(f"model.config.vocab_size={vocab} is smaller than the byte tokenizer's 257")
        self.value_head = nn.Linear(self.policy.hidden_size, 1) if self.objective.needs_values else None
        self.reference = copy.deepcopy(self.policy).requires_grad_(False) if self.objective.needs_ref else None
        self.register_buffer("warm_started", torch.tensor(False))
        self.register_buffer("rollouts_done", torch.tensor(0, dtype=torch.long))  # in the checkpoint: resumes count on
        self.best_val_acc = 0.0
        self._graphed_step: GraphedStep | None = None
        # held-out means weighted by problems, reduced over every process (each evaluates its share)
        self.eval_means = nn.ModuleDict(
            {f"{stage}_{key}": MeanMetric() for stage in ("val", "test") for key in EVAL_KEYS}
        )

    # ------------------------------------------------------------------------------------------- setup
    def optimizer_steps_per_batch(self) -> int:
        return self.hparams.minibatches * self.hparams.epochs

    def training_batches(self) -> float:
        """Rollout steps the run takes: ``rl.rollouts``, or fewer when ``trainer.max_epochs`` ends it first."""
        budget = float(self.hparams.rollouts)
        if self.trainer.max_epochs and self.trainer.max_epochs > 0:
            budget = min(budget, self.trainer.max_epochs * self._rollouts_per_epoch())
        return budget

    def optimizer_steps_per_epoch(self, total_steps: float) -> float:
        """An epoch is ``data.steps_per_epoch`` rollouts of μ optimizer steps (what ``warmup_epochs`` counts)."""
        return self._rollouts_per_epoch() * self.optimizer_steps_per_batch()

    def _rollouts_per_epoch(self) -> float:
        """``data.steps_per_epoch``, as the training loader reports it (set up on first use, as Lightning does)."""
        if self.trainer.train_dataloader is None:
            self.trainer.fit_loop.setup_data()
        return self.trainer.num_training_batches

    def training_budget(self) -> TrainingBudget:
        """Rollouts done of the run's rollouts (the progress bars count these, not optimizer steps)."""
        return TrainingBudget("rollout", int(self.rollouts_done), int(self.training_batches()))

    def setup(self, stage: str) -> None:
        if stage == "fit" and self.trainer.max_steps not in (None, -1):
            raise ConfigError(
                f"task=rl counts its budget in rollouts: set rl.rollouts={self.trainer.max_steps} instead of "
                f"trainer.max_steps={self.trainer.max_steps} (which would count optimizer steps, "
                f"μ = {self.optimizer_steps_per_batch()} per rollout)"
            )

    def parallel_modules(self) -> list[nn.Module]:
        return [self.policy] + ([self.reference] if self.reference is not None else [])

    def optimizer_param_groups(self) -> list[dict[str, Any]]:
        """The policy's parameters (the frozen reference is not trained) and the value head's at
        ``value_lr_scale × lr`` (it learns faster than the policy, as in verl/OpenRLHF's critic)."""
        c = self.optim_config
        groups = settings_param_groups(self.policy, c)
        if self.value_head is not None:
            value_lr = c["lr"] * self.hparams.value_lr_scale
            groups.append({"params": list(self.value_head.parameters()), "weight_decay": 0.0, "lr": value_lr})
        return groups

    def parameters_for_training(self) -> list[nn.Parameter]:
        params = list(self.policy.parameters())
        return params + (list(self.value_head.parameters()) if self.value_head is not None else [])

    @property
    def env(self):
        return self.trainer.datamodule.env

    def _seed(self) -> int:
        """The run's seed (the prompt stream's), so rollouts are reproducible and a resumed run samples alike."""
        return int(getattr(self.trainer.datamodule, "hparams", {}).get("seed", 0) or 0)

    def budget(self) -> int:
        return self.hparams.max_new_tokens or self.env.max_answer_chars + 2

    def on_fit_start(self) -> None:
        if bool(self.warm_started):
            return  # resumed: the weights (and reference) come from the checkpoint
        h = self.hparams
        if h.init_checkpoint:
            load_policy_weights(self.policy, h.init_checkpoint)
        elif h.warm_start_steps > 0:
            warm_start(
                self.policy, self.env, self.tokenizer, steps=h.warm_start_steps, batch_size=h.warm_start_batch,
                error_rate=h.warm_start_error_rate, optim=self.warm_start_optim, device=self.device,
            )  # fmt: skip
        if self.reference is not None:
            self.reference.load_state_dict(self.policy.state_dict())
        self.warm_started.fill_(True)
        accuracy = self._evaluate(self.env.eval_set())["acc"]
        self.print(f"starting policy: greedy accuracy {accuracy:.3f} on the held-out set")
        if self.logger is not None:
            self.logger.log_metrics({"warm_start/acc": accuracy}, step=0)

    # ------------------------------------------------------------------------------------------- rollouts
    def _sample(self, problems: list, repeats: int, greedy: bool, seed: int) -> list[Completion]:
        """``repeats`` completions of each problem (greedy, or at the configured temperature / top-p)."""
        h = self.hparams
        prompts = [encode_problem(self.tokenizer, p) for p in problems]
        return sample_completions(
            self.policy, prompts, repeats, max_new_tokens=self.budget(), eos=self.tokenizer.eos_id, seed=seed,
            temperature=0.0 if greedy else h.temperature, top_p=h.top_p, engine=h.get("decode_engine"),
            compile=h.get("compile_decode"),
        )  # fmt: skip

    def rollout(self, problems: list) -> dict[str, Any]:
        """Sample, score and assemble the training batch of one step."""
        h = self.hparams
        G = h.group_size
        start = time.perf_counter()
        samples = self._sample(problems, G, greedy=False, seed=self._seed() * 1_000_003 + self.global_step)
        generate_s = time.perf_counter() - start
        rows, masks, rewards, correct, lengths = [], [], [], [], []
        for index, (prompt, completion, logprobs) in enumerate(samples):
            problem = problems[index // G]
            if h.repetition_run:
                cut = repetition_cut(logprobs, h.repetition_run)
                if cut is not None and cut < len(completion):
                    completion = completion[:cut]
            reward, ok, _, length = score_completion(self.env, self.tokenizer, problem, completion)
            if h.overlong_buffer:
                reward += overlong_penalty(length, self.budget(), h.overlong_buffer)
            rows.append(prompt + completion)
            # loss positions: the targets that are completion tokens (position t predicts token t + 1)
            masks.append([0] * (len(prompt) - 1) + [1] * len(completion))
            rewards.append(reward)
            correct.append(float(ok))
            lengths.append(float(length))
        rewards_t = torch.tensor(rewards, device=self.device)
        group_ids = torch.arange(len(problems), device=self.device).repeat_interleave(G)
        stats = {
            "rollout/reward": rewards_t.mean(),
            "rollout/acc": torch.tensor(correct).mean(),
            "rollout/length": torch.tensor(lengths).mean(),
            "rollout/tokens_per_s": sum(len(tokens) for _, tokens, _ in samples) / generate_s,
            "time/generate_s": generate_s,
        }
        keep = torch.ones(len(rows), dtype=torch.bool, device=self.device)
        group_std = rewards_t.view(len(problems), G).std(dim=1, unbiased=False)  # each prompt's G rewards
        stats["rollout/zero_std_groups"] = (group_std == 0).float().mean()
        if h.dynamic_sampling:
            keep = (group_std != 0)[group_ids]
        stats["rollout/kept"] = keep.float().mean()
        multiple = GRAPH_PAD if self.device.type == "cuda" else 1  # few shapes: few update graphs
        ids = pad(rows, self.tokenizer.eos_id, self.device, multiple=multiple)
        mask = pad([[*m, 0] for m in masks], 0, self.device, multiple=multiple)[:, : ids.shape[1] - 1].float()
        batch = {"input_ids": ids, "mask": mask, "rewards": rewards_t, "group_ids": group_ids, "keep": keep}
        with torch.no_grad():
            self.policy.eval()
            old, values, _ = token_logprobs(self.policy, ids, self.value_head)
            batch["old_logprobs"] = old
            if values is not None:
                batch["old_values"] = values
            if self.reference is not None:
                self.reference.eval()  # Lightning puts the whole module back in train mode after validation
                batch["ref_logprobs"] = token_logprobs(self.reference, ids)[0]
            batch["advantages"], batch["returns"] = self._advantages(batch)
        return {"batch": batch, "stats": stats}

    def _advantages(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor | None]:
        if self.advantage_name == "gae":
            from zoo.objectives.advantages import outcome_to_token_rewards

            token_rewards = outcome_to_token_rewards(batch["rewards"], batch["mask"])
            return self.advantage(token_rewards, batch["old_values"], batch["mask"])
        return self.advantage(batch["rewards"], batch["group_ids"]), None

    # ------------------------------------------------------------------------------------------- training
    def training_step(self, problems: list, batch_idx: int) -> None:
        h = self.hparams
        self.rollouts_done += 1
        start = time.perf_counter()
        result = self.rollout(problems)
        batch, stats = result["batch"], result["stats"]
        stats["time/rollout_s"] = time.perf_counter() - start
        for key, value in stats.items():
            self.log(key, value, prog_bar=key == "rollout/acc", batch_size=len(problems))
        index = batch["keep"].nonzero().squeeze(-1)
        if index.numel() == 0:
            return  # every group was all-equal (dynamic sampling): nothing to learn from this rollout
        start = time.perf_counter()
        optimizer = self.optimizers()
        scheduler = self.lr_schedulers()
        step = self._update_step()
        replays, steps = step.graphed, 0
        generator = torch.Generator().manual_seed(1_000_003 * self._seed() + self.global_step + 1)
        self.policy.train()
        logged: dict[str, list[torch.Tensor]] = {}
        for _ in range(h.epochs):
            order = index[torch.randperm(index.numel(), generator=generator).to(index.device)]
            for chunk in order.chunk(h.minibatches):
                if chunk.numel() == 0:
                    continue
                loss, metrics = step({k: v[chunk] for k, v in batch.items() if v is not None})
                steps += 1
                optimizer.step()
                if scheduler is not None:
                    scheduler.step()
                metrics["loss"] = loss
                for key, value in metrics.items():  # kept on the device: one host sync after the loop
                    logged.setdefault(key, []).append(torch.as_tensor(value, dtype=torch.float32).detach())
        means = torch.stack([torch.stack(v).mean() for v in logged.values()]).cpu()
        self.log_dict(dict(zip([f"train/{k}" for k in logged], means)), batch_size=len(problems))
        self.log("time/update_s", time.perf_counter() - start, batch_size=len(problems))  # metrics read: synced
        self.log("time/graphed", (step.graphed - replays) / steps, batch_size=len(problems))

    def _use_graphs(self) -> bool:
        """Whether the updates replay CUDA graphs (``rl.graph_update``; None: where the graphed step equals
        Lightning's eager one — CUDA, one process, fp32/bf16 precision, an unsharded policy)."""
        if self.hparams.graph_update is not None:
            return bool(self.hparams.graph_update)
        precision = str(self.trainer.precision)
        return (
            self.device.type == "cuda"
            and self.trainer.world_size == 1
            and (precision.startswith("32") or precision.startswith("bf16"))
            and not is_sharded(self.policy)
        )

    def _update_step(self) -> GraphedStep:
        """The minibatch step: the loss, its backward and the clip (:class:`~zoo.cuda_graphs.GraphedStep`, built
        once; eager through ``manual_backward`` where graphs are off)."""
        if self._graphed_step is None:
            self._graphed_step = GraphedStep(
                self._update_loss,
                self.parameters_for_training(),
                max_norm=self.hparams.grad_clip,
                backward=self.manual_backward,
                enabled=self._use_graphs(),
                modules=[self.policy],
            )
        return self._graphed_step

    def _update_loss(self, mb: dict[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        logp, values, entropy = token_logprobs(self.policy, mb["input_ids"], self.value_head, with_entropy=True)
        extra: dict[str, torch.Tensor] = {"entropy": entropy.detach()}
        if self.reference is not None:
            extra["ref_logprobs"] = mb["ref_logprobs"]
        if values is not None:
            extra.update(values=values, old_values=mb["old_values"], returns=mb["returns"])
        loss, metrics = self.objective(logp, mb["old_logprobs"], mb["advantages"], mb["mask"], **extra)
        moe = self.policy.moe_loss() if hasattr(self.policy, "moe_loss") else None
        if moe is not None:
            loss = loss + moe
        return loss, dict(metrics)

    # ------------------------------------------------------------------------------------------- evaluation
    def _evaluate(self, problems: list) -> dict[str, float]:
        samples = self._sample(problems, 1, greedy=True, seed=0)
        return mean_scores([score_completion(self.env, self.tokenizer, p, c.tokens) for p, c in zip(problems, samples)])

    def on_train_batch_end(self, outputs: Any, batch: Any, batch_idx: int) -> None:
        if int(self.rollouts_done) >= self.hparams.rollouts:
            self.trainer.should_stop = True  # Lightning validates, saves last.ckpt and ends fit

    def validation_step(self, problems: list, batch_idx: int) -> None:
        self._eval_step(problems, "val")

    def test_step(self, problems: list, batch_idx: int) -> None:
        self._eval_step(problems, "test")

    def _eval_step(self, problems: list, stage: str) -> None:
        result = self._evaluate(problems)
        n = int(result.pop("count"))
        for key in EVAL_KEYS:
            mean = self.eval_means[f"{stage}_{key}"]
            mean.update(torch.tensor(result[key], device=self.device), weight=n)
            self.log(f"{stage}/{key}", mean, prog_bar=key == "acc")

    def on_validation_epoch_end(self) -> None:
        if self.trainer.sanity_checking:
            return
        accuracy = self.eval_means["val_acc"]
        if accuracy.update_count:  # this validation's accuracy over every process (not the last one logged)
            self.best_val_acc = max(self.best_val_acc, float(accuracy.compute()))
            self.log("val/acc_best", self.best_val_acc, sync_dist=True)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        checkpoint["best_val_acc"] = self.best_val_acc

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.best_val_acc = float(checkpoint.get("best_val_acc", 0.0))
