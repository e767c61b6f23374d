"""task=lm and task=rl use only the causal-LM protocol: a GRU registered from the tests trains in both."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from tasks.app.runner import build, train
from zoo.errors import ConfigError
from zoo.models import CausalLM, HybridLM, check_causal_lm

TOY = ["imports=[tests.toy_lm]", "model.arch=toy_gru_lm", "~model.config", "+model.config.hidden_size=32"]


def test_lm_task_trains_a_model_registered_from_the_tests(make_cfg, tmp_path):
    cfg = make_cfg(
        "task=lm", *TOY, "data.max_docs=20", "data.seq_len=32", "data.batch_size=8", f"data.cache_dir={tmp_path / 'c'}",
        "trainer.max_steps=12", "trainer.val_check_interval=12", "trainer.limit_val_batches=2",
        "trainer.limit_test_batches=2", "model.optim.lr=1e-2", "logger=csv", tiny=False,
    )  # fmt: skip
    metrics = train(cfg)
    assert metrics["val/loss"] < 5.0 < torch.log(torch.tensor(257.0)).item()  # below the uniform 5.55 nats
    assert (tmp_path / "run" / "checkpoints" / "last.ckpt").is_file()


def test_rl_task_trains_it_too(make_cfg, tmp_path):
    cfg = make_cfg(
        "task=rl", *TOY, "rl.warm_start_steps=5", "rl.group_size=2", "data.prompts_per_step=2",
        "data.steps_per_epoch=2", "data.env_kwargs.eval_size=8", "rl.rollouts=2", "logger=csv", tiny=False,
    )  # fmt: skip
    metrics = train(cfg)
    assert {"val/acc", "test/acc"} <= set(metrics)
    task, _, _ = build(cfg)
    assert type(task.policy).__name__ == "ToyGRULM" and task.optimizer_steps_per_batch() == 4


def test_the_zoo_model_satisfies_the_protocol():
    model = HybridLM({"hidden_size": 32, "num_heads": 2, "num_layers": 2, "attention": "LS", "intermediate_size": 48})
    assert isinstance(model, CausalLM) and check_causal_lm(model) is model
    assert len(model.blocks()) == 2 and model.output_layers()[-1] is model.lm_head
    assert model.flops_per_token(64) > 6 * model.count_params()["active"]


def test_a_model_outside_the_protocol_is_named_with_what_it_lacks():
    with pytest.raises(ConfigError, match=r"model\.arch: Linear .* lacks hidden_states, forward_head, new_cache"):
        check_causal_lm(nn.Linear(2, 2))
