"""``task=vision`` under ``strategy=ddp`` and ``strategy=fsdp2``, and ``task=rl`` (rollouts through the sharded
policy) under ``strategy=fsdp2``, end to end through Lightning on 2 CPU processes (gloo): each run finishes,
writes its checkpoint in the strategy's format, and the checkpoint loads back into the task."""

from __future__ import annotations

import csv
import json

import pytest

from tests.conftest import ROOT, consolidated, run_tool

CPU2 = ["trainer=cpu", "trainer.devices=2", "logger=csv", "trainer.limit_val_batches=2", "trainer.limit_test_batches=2"]
VISION = ["task=vision", "trainer.max_epochs=2", "data.train_subset=256", "+model.backbone_kwargs.widths=[4,8,8]"]
RL = [
    "task=rl", "rl.rollouts=3", "rl.warm_start_steps=5", "rl.warm_start_batch=8", "rl.group_size=2",
    "data.steps_per_epoch=3", "data.prompts_per_step=4", "data.eval_batch_size=32",
]  # fmt: skip


def train(tmp_path, name: str, *overrides: str) -> dict:
    result = run_tool(
        str(ROOT / "tools" / "train.py"), *overrides, *CPU2, f"hydra.run.dir={tmp_path / name}", cwd=tmp_path
    )
    assert result.returncode == 0, result.stderr[-4000:]
    return json.loads((tmp_path / name / "metrics.json").read_text())


@pytest.mark.slow
def test_vision_under_ddp_and_fsdp2(tmp_path):
    from tasks.vision import VisionTask

    for strategy in ("ddp", "fsdp2"):
        metrics = train(tmp_path, strategy, *VISION, f"strategy={strategy}")
        assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["val/loss"] == metrics["val/loss"]  # finite
    ddp_last = tmp_path / "ddp" / "checkpoints" / "last.ckpt"
    assert ddp_last.is_file()
    VisionTask.load_from_checkpoint(ddp_last, map_location="cpu")
    sharded = tmp_path / "fsdp2" / "checkpoints" / "last.ckpt"
    assert sharded.is_dir() and len(list(sharded.glob("*.distcp"))) == 2
    checkpoint = consolidated(tmp_path, "fsdp2")
    task = VisionTask(**checkpoint["hyper_parameters"])
    task.load_state_dict(checkpoint["state_dict"])  # strict: every weight of the sharded run, under its own name
    assert checkpoint["global_step"] == 2  # 2 epochs of one batch of 128 per rank


@pytest.mark.slow
def test_rl_under_fsdp2(tmp_path):
    from tasks.rl import RLTask

    metrics = train(tmp_path, "rl", *RL, "strategy=fsdp2")
    assert {"val/acc", "val/reward", "test/acc"} <= set(metrics)
    checkpoint = consolidated(tmp_path, "rl")
    task = RLTask(**checkpoint["hyper_parameters"])
    task.load_state_dict(checkpoint["state_dict"])
    assert int(checkpoint["state_dict"]["rollouts_done"]) == 3
    # a sharded policy starts from that consolidated checkpoint (GRPO: with a sharded frozen reference too) and
    # trains: the KL to the reference is logged
    train(tmp_path, "rl_init", *RL, "strategy=fsdp2", "rl.rollouts=1", "rl.objective=grpo",
          f"rl.init_checkpoint={tmp_path / 'rl.ckpt'}")  # fmt: skip
    with open(tmp_path / "rl_init" / "csv" / "metrics.csv") as f:
        rows = list(csv.DictReader(f))
    assert any(row.get("warm_start/acc") for row in rows) and any(row.get("train/kl_ref") for row in rows)
