"""VisionTask built from the real Hydra config: fit/test on real data, resume, checkpoints, metrics."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.app.checkpoint import AtomicCheckpointIO, resolve_ckpt_path
from tasks.app.runner import build, train
from tasks.vision import VisionTask
from tests.conftest import needs_fashion_mnist
from zoo.errors import ConfigError, RegistryError

pytestmark = needs_fashion_mnist


@pytest.mark.parametrize("ca", ["none", "se", "eca", "mca_e", "mca_s"])
def test_fit_and_test_each_channel_attention(make_cfg, ca):
    cfg = make_cfg(f"model.ca={ca}", name=ca)
    metrics = train(cfg)
    assert 0.0 <= metrics["test/acc"] <= 1.0 and metrics["test/loss"] > 0
    saved = json.loads(
        (cfg.paths.output_dir and __import__("pathlib").Path(cfg.paths.output_dir) / "metrics.json").read_text()
    )
    assert saved["test/acc"] == pytest.approx(metrics["test/acc"])
    ckpt = torch.load(saved["test/ckpt"], map_location="cpu", weights_only=False)
    assert ckpt["hyper_parameters"]["ca"] == ca


def test_test_ckpt_last_scores_the_final_weights(make_cfg, tmp_path):
    """test_ckpt=last (fixed schedules): test scores the weights training ended with, not the best checkpoint."""
    cfg = make_cfg("model.ca=eca", "trainer.max_epochs=2", "test_ckpt=last")
    _, datamodule, trainer = build(cfg)
    metrics = train(cfg)
    assert metrics["test/ckpt"] == "(final weights)"
    final = VisionTask.load_from_checkpoint(tmp_path / "run" / "checkpoints" / "last.ckpt", map_location="cpu")
    assert torch.load(tmp_path / "run" / "checkpoints" / "last.ckpt", weights_only=False)["global_step"] == 6
    (again,) = trainer.test(final, datamodule=datamodule, verbose=False)
    assert again["test/acc"] == pytest.approx(metrics["test/acc"])
    best = train(make_cfg("model.ca=eca", "trainer.max_epochs=2", name="best"))
    assert best["test/ckpt"].endswith(".ckpt")
    with pytest.raises(ConfigError, match=r"test_ckpt='final' is unknown; valid choices: best, last"):
        train(make_cfg("test_ckpt=final", name="bad"))


def test_checkpoints_last_and_best_and_load_from_checkpoint(make_cfg, tmp_path):
    cfg = make_cfg("model.ca=mca", "trainer.max_epochs=2")
    train(cfg)
    ckpt_dir = tmp_path / "run" / "checkpoints"
    names = sorted(p.name for p in ckpt_dir.iterdir())
    assert "last.ckpt" in names and any(n.startswith("epoch") for n in names)
    assert not any(n.endswith(".tmp") for n in names)
    model = VisionTask.load_from_checkpoint(ckpt_dir / "last.ckpt", map_location="cpu")
    assert model.hparams.ca == "mca" and model.hparams.backbone_kwargs == {"widths": [4, 8, 8]}
    assert (tmp_path / "run" / "csv" / "metrics.csv").is_file()


def test_two_epochs_straight_equal_one_plus_resume_plus_one(make_cfg, tmp_path):
    """Exact resume: same weights, optimizer state and schedule position, bit for bit, on the CPU."""
    straight = make_cfg("model.ca=mca", "trainer.max_epochs=2", name="straight")
    train(straight)
    stop = ["+callbacks.stop._target_=tests.helpers.StopAfterEpochs", "+callbacks.stop.epochs=1"]
    first = make_cfg("model.ca=mca", "trainer.max_epochs=2", "test=false", *stop, name="first")
    train(first)
    interrupted = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=False)
    assert interrupted["global_step"] == 3
    resumed = make_cfg("model.ca=mca", "trainer.max_epochs=2", "ckpt_path=last", name="first")
    train(resumed)
    a = torch.load(tmp_path / "straight" / "checkpoints" / "last.ckpt", weights_only=False)
    b = torch.load(tmp_path / "first" / "checkpoints" / "last.ckpt", weights_only=False)
    assert a["global_step"] == b["global_step"] == 6 and a["epoch"] == b["epoch"]
    assert a["state_dict"].keys() == b["state_dict"].keys()
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    moments_a = a["optimizer_states"][0]["state"]
    moments_b = b["optimizer_states"][0]["state"]
    assert all(torch.equal(moments_a[k]["momentum_buffer"], moments_b[k]["momentum_buffer"]) for k in moments_a)


def test_resolve_ckpt_path(tmp_path):
    assert resolve_ckpt_path(None, tmp_path, tmp_path) is None
    with pytest.raises(ConfigError, match=r"no last\.ckpt"):
        resolve_ckpt_path("last", tmp_path / "run", tmp_path)
    older = tmp_path / "a" / "checkpoints" / "last.ckpt"
    newer = tmp_path / "b" / "checkpoints" / "last.ckpt"
    for path in (older, newer):
        path.parent.mkdir(parents=True)
        path.write_bytes(b"x")
    import os

    os.utime(older, (1, 1))
    assert resolve_ckpt_path("last", tmp_path / "run", tmp_path) == str(newer)
    with pytest.raises(ConfigError, match=r"does not exist"):
        resolve_ckpt_path(str(tmp_path / "missing.ckpt"), tmp_path, tmp_path)


def test_checkpoint_write_is_atomic(tmp_path, monkeypatch):
    io = AtomicCheckpointIO()
    path = tmp_path / "last.ckpt"
    io.save_checkpoint({"step": 1}, path)

    def failing_save(obj, handle):
        handle.write(b"partial")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", failing_save)
    with pytest.raises(OSError, match="disk full"):
        io.save_checkpoint({"step": 2}, path)
    monkeypatch.undo()
    assert torch.load(path, weights_only=False) == {"step": 1}  # the old checkpoint is intact
    assert [p.name for p in tmp_path.iterdir()] == ["last.ckpt"]  # no temporary file left behind


def test_model_data_mismatch_is_a_config_error(make_cfg):
    cfg = make_cfg("model.num_classes=5", "fit=true")
    task, datamodule, trainer = build(cfg)
    with pytest.raises(ConfigError, match=r"model\.num_classes=5 does not match"):
        trainer.fit(task, datamodule=datamodule)


def test_label_smoothing_adamw_and_schedules_build(make_cfg):
    cfg = make_cfg(
        "model.label_smoothing=0.1",
        "model.optim.optimizer=adamw",
        "model.optim.lr=0.001",
        "~model.optim.optimizer_kwargs.nesterov",
        "~model.optim.optimizer_kwargs.momentum",
        "model.optim.scheduler=multistep",
        "~model.optim.scheduler_kwargs.min_lr_ratio",
        "+model.optim.scheduler_kwargs.milestones=[0.5]",
    )
    metrics = train(cfg)
    assert metrics["test/loss"] > 0


def test_optimizer_and_scheduler_kwargs_are_checked_at_construction():
    with pytest.raises(ConfigError, match=r"model.optim.scheduler_kwargs.min_lr_ratio is not an option of multistep"):
        VisionTask(optim={"scheduler": "multistep", "scheduler_kwargs": {"min_lr_ratio": 0.1}})
    with pytest.raises(ConfigError, match=r"model.optim.optimizer_kwargs.momentum=.* has the wrong type"):
        VisionTask(optim={"optimizer_kwargs": {"momentum": "high"}})
    with pytest.raises(ConfigError, match=r"model.optim.lrr is not an optimizer setting.*Did you mean model.optim.lr"):
        VisionTask(optim={"lrr": 0.1})
    with pytest.raises(ConfigError, match=r"model.optim.weight_decay='high' has the wrong type: expected float"):
        VisionTask(optim={"weight_decay": "high"})
    with pytest.raises(RegistryError, match=r"sgdd.*sgd"):
        VisionTask(optim={"optimizer": "sgdd"})


def test_optim_settings_resolve_over_the_task_defaults():
    """Given keys replace the task's defaults; the defaults' kwargs stay with the default optimizer / scheduler."""
    from tasks.detection import DetectionTask
    from zoo.optim import resolve_optim

    defaults = DetectionTask.default_optim()
    assert resolve_optim({"lr": 0.01}, defaults, "model.optim") == {**defaults, "lr": 0.01}
    switched = resolve_optim({"optimizer": "adamw", "scheduler": "constant"}, defaults, "model.optim")
    assert switched["optimizer_kwargs"] == {} and switched["scheduler_kwargs"] == {}
    assert switched["weight_decay"] == defaults["weight_decay"]
    assert resolve_optim({"optimizer_kwargs": {"nesterov": True}}, defaults, "k")["optimizer_kwargs"] == {
        "nesterov": True
    }  # a given kwargs dict replaces the default one (as a Hydra node would), it is not merged key by key


def test_optim_settings_build_what_they_name():
    from zoo.optim import build_optimizer, build_scheduler, resolve_optim

    net = torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.LayerNorm(4))
    settings = resolve_optim(
        {"optimizer": "adamw", "lr": 0.5, "weight_decay": 0.1, "optimizer_kwargs": {"betas": [0.8, 0.9]},
         "scheduler": "warmup_cosine", "scheduler_kwargs": {"min_lr_ratio": 0.2}},
        VisionTask.default_optim(), "model.optim",
    )  # fmt: skip
    optimizer = build_optimizer(settings, net)
    assert isinstance(optimizer, torch.optim.AdamW) and optimizer.defaults["betas"] == (0.8, 0.9)
    assert [g["weight_decay"] for g in optimizer.param_groups] == [0.1, 0.0]  # matrices decayed; bias, norm not
    schedule = build_scheduler(settings, optimizer, total_steps=10, steps_per_epoch=5)
    for _ in range(10):
        optimizer.step()
        schedule.step()
    assert optimizer.param_groups[0]["lr"] == pytest.approx(0.5 * 0.2)


def test_compile_option_compiles_the_network_and_keeps_checkpoint_names(make_cfg):
    """``model.compile`` without a sharding strategy (dynamo with the eager backend, to stay fast on the CPU): the
    whole network is compiled in place (one graph across the blocks), it trains as the uncompiled run does, and its
    checkpoint loads into an uncompiled task."""
    from zoo.parallel.compile import is_compiled

    seen = []
    original = VisionTask.configure_model

    def spy(self):
        original(self)
        seen.append(is_compiled(self.net))

    plain = train(make_cfg("model.ca=mca", name="plain"))
    VisionTask.configure_model = spy
    try:
        metrics = train(make_cfg("model.ca=mca", "model.compile={backend: eager}", name="compiled"))
    finally:
        VisionTask.configure_model = original
    assert seen and all(seen)
    assert metrics["test/loss"] == pytest.approx(plain["test/loss"], abs=1e-4)
    model = VisionTask.load_from_checkpoint(metrics["test/ckpt"], map_location="cpu", compile=False)
    assert not is_compiled(model.net) and not any("_orig_mod" in k for k in model.state_dict())
