"""Where the policy starts: a ``task=lm`` / ``task=rl`` checkpoint, or a short supervised warm start on the
environment's imperfect demonstrations (so that the starting pass rate is neither 0 nor 1)."""

from __future__ import annotations

import random
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from tasks.data.text.packing import IGNORE_INDEX
from tasks.data.tokenizer import Tokenizer
from tasks.rl.rollout import encode_problem, pad
from zoo.errors import ConfigError
from zoo.optim import OptimSettings, build_optimizer, build_scheduler
from zoo.parallel.clip import clip_grad_norm_
from zoo.parallel.fsdp import is_sharded

#: The warm start's optimizer (``rl.warm_start_optim`` overrides any key): AdamW β = (0.9, 0.95) with torch's
#: default decoupled decay on every parameter, cosine from 3e-3 to 0.
WARM_START_OPTIM: OptimSettings = {
    "optimizer": "adamw",
    "lr": 3e-3,
    "weight_decay": 0.01,
    "optimizer_kwargs": {"betas": [0.9, 0.95]},
    "scheduler": "warmup_cosine",
    "scheduler_kwargs": {},
    "decay_norm_and_bias": True,
}


def warm_start(
    policy: nn.Module,
    env: Any,
    tokenizer: Tokenizer,
    *,
    steps: int,
    batch_size: int,
    error_rate: float,
    optim: OptimSettings,
    grad_clip: float = 1.0,
    device: torch.device | str | None = None,
) -> None:
    """``steps`` supervised steps of ``policy`` on ``prompt + demonstration + EOS`` of ``batch_size`` problems
    each (cross-entropy on the answer tokens only), the demonstrations wrong with probability ``error_rate``
    (``env.demonstration``). The optimizer and schedule are the resolved ``optim`` settings over ``steps``; the
    problems are drawn from a seed of ``steps``, so a warm start is reproducible. Batches are made on ``device``
    (the policy's compute device, which differs from its parameters' under CPU offload)."""
    rng = random.Random(steps * 7919 + 17)
    optimizer = build_optimizer(optim, policy)
    schedule = build_scheduler(optim, optimizer, total_steps=steps, steps_per_epoch=steps)
    policy.train()
    for _ in range(steps):
        rows, targets = [], []
        for problem in env.sample(batch_size, rng):
            prompt = encode_problem(tokenizer, problem)
            full = encode_problem(tokenizer, problem, env.demonstration(problem, rng, error_rate))
            rows.append(full)
            targets.append([IGNORE_INDEX] * (len(prompt) - 1) + full[len(prompt) :])
        ids, labels = pad(rows, tokenizer.eos_id, device), pad(targets, IGNORE_INDEX, device)
        logits = policy(ids[:, :-1])
        loss = F.cross_entropy(
            logits.flatten(0, 1).float(), labels[:, : logits.shape[1]].flatten(), ignore_index=IGNORE_INDEX
        )
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        clip_grad_norm_(policy.parameters(), grad_clip)
        optimizer.step()
        schedule.step()
    policy.zero_grad(set_to_none=True)


def load_policy_weights(policy: nn.Module, path: str, key: str = "rl.init_checkpoint") -> None:
    """Load a Lightning checkpoint's policy weights (``policy.*`` of ``task=rl`` or ``model.*`` of ``task=lm``)
    into ``policy``; under a sharded policy the full tensors go into this rank's shards.

    Raises:
        ConfigError: the checkpoint holds neither.
    """
    state = torch.load(path, map_location="cpu", weights_only=False)["state_dict"]
    for prefix in ("policy.", "model."):
        own = {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if own:
            if is_sharded(policy):
                from torch.distributed.checkpoint.state_dict import StateDictOptions, set_model_state_dict

                set_model_state_dict(policy, own, options=StateDictOptions(full_state_dict=True))
            else:
                policy.load_state_dict(own)
            return
    raise ConfigError(f"{key}={path} holds no policy weights (keys 'policy.*' or 'model.*')")
