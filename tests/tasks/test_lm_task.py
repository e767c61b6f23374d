"""LMTask built from the real Hydra config (task=lm) on the embedded standard-library corpus."""

from __future__ import annotations

import json

import pytest
import torch

from tasks.app.runner import train
from tasks.lm import LMTask
from tests.conftest import ROOT, run_tool

# A very small hybrid MoE LM on a few hundred KB of the standard library: a fit takes a few seconds.
LM_TINY = [
    "task=lm",
    "model.config.hidden_size=32",
    "model.config.num_heads=2",
    "model.config.num_kv_heads=1",
    "model.config.head_dim=16",
    "model.config.intermediate_size=48",
    "data.max_docs=40",
    "data.seq_len=64",
    "data.batch_size=8",
    "trainer.max_steps=30",
    "trainer.val_check_interval=15",
    "trainer.limit_val_batches=4",
    "trainer.limit_test_batches=4",
    "trainer.num_sanity_val_steps=0",
    "trainer.log_every_n_steps=5",
    "logger=csv",
]


@pytest.fixture
def lm_cfg(make_cfg, tmp_path):
    def factory(*overrides: str, name: str = "run"):
        return make_cfg(*LM_TINY, f"data.cache_dir={tmp_path / 'cache'}", *overrides, tiny=False, name=name)

    return factory


def test_fit_lowers_validation_loss_and_writes_metrics(lm_cfg, tmp_path):
    cfg = lm_cfg()
    metrics = train(cfg)
    # untrained: ln(257) = 5.55 nats per byte; 30 steps of AdamW at 3e-3 must get well below that
    assert metrics["val/loss"] < 4.5 and metrics["test/loss"] < 4.5
    assert metrics["test/ppl"] == pytest.approx(torch.exp(torch.tensor(metrics["test/loss"])).item(), rel=0.05)
    saved = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert saved["val/loss_best"] <= saved["val/loss"] + 1e-6
    log = (tmp_path / "run" / "csv" / "metrics.csv").read_text().splitlines()[0]
    for column in ("train/loss", "train/aux_loss", "moe/max_load", "train/device/items_per_sec"):
        assert column in log, column
    ckpt = torch.load(saved["test/ckpt"], map_location="cpu", weights_only=False)
    assert "tokenizer" in json.dumps(ckpt.get("TextDataModule", {}))
    model = LMTask.load_from_checkpoint(saved["test/ckpt"], map_location="cpu")
    assert model.hparams.config["hidden_size"] == 32


def last_ckpt(tmp_path, name: str) -> dict:
    return torch.load(tmp_path / name / "checkpoints" / "last.ckpt", weights_only=False)


def assert_same_final_state(tmp_path, straight: str, resumed: str, step: int) -> None:
    """Both runs' last.ckpt at ``step`` with identical weights and Adam moments."""
    a, b = last_ckpt(tmp_path, straight), last_ckpt(tmp_path, resumed)
    assert a["global_step"] == b["global_step"] == step
    for key in a["state_dict"]:
        assert torch.equal(a["state_dict"][key], b["state_dict"][key]), key
    for k, state in a["optimizer_states"][0]["state"].items():
        assert torch.equal(state["exp_avg"], b["optimizer_states"][0]["state"][k]["exp_avg"])


def test_resume_mid_epoch_is_exact(lm_cfg, tmp_path):
    """20 steps straight == 10 steps, kill, ckpt_path=last, 10 more: identical weights and Adam moments."""
    common = ["trainer.max_steps=20", "trainer.val_check_interval=10", "test=false"]
    train(lm_cfg(*common, name="straight"))
    stop = ["+callbacks.stop._target_=tests.helpers.StopAfterSteps", "+callbacks.stop.steps=10"]
    train(lm_cfg(*common, *stop, name="first"))
    assert last_ckpt(tmp_path, "first")["global_step"] == 10
    train(lm_cfg(*common, "ckpt_path=last", name="first"))
    assert_same_final_state(tmp_path, "straight", "first", step=20)


def test_generate_tool_samples_from_the_checkpoint(lm_cfg, tmp_path):
    cfg = lm_cfg("trainer.max_steps=5", "trainer.val_check_interval=5", "test=false")
    train(cfg)
    ckpt = tmp_path / "run" / "checkpoints" / "last.ckpt"
    done = run_tool(
        "tools/generate.py", str(ckpt), "--prompt", "def ", "--max-new-tokens", "20", "--num-samples", "2",
        "--device", "cpu", cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert done.stdout.count("--- sample") == 2 and "def " in done.stdout
    assert "tokens/s" in done.stderr


def test_count_params_tool_prints_the_minimax_shape():
    done = run_tool("tools/count_params.py", "model=minimax_text_01", cwd=ROOT)
    assert done.returncode == 0, done.stderr
    assert "456,089,655,296" in done.stdout and "(456.090B)" in done.stdout
    assert "45,944,920,064" in done.stdout and "(45.945B)" in done.stdout


def test_count_params_reports_fsdp2_bytes_per_rank_on_the_meta_device():
    """456.09 B parameters over 64 ranks: 7.13 B each (the 32 stacked experts are sharded along their rows, not
    padded to 64 along the expert axis), 16 bytes each with fp32 gradients and AdamW; nothing is allocated."""
    from tasks.app.entry_points import count_params

    counts = count_params(["model=minimax_text_01", "strategy=fsdp2", "--world-size", "64", "--json"])
    per_rank = counts["per_rank"]
    assert abs(per_rank["params"] - counts["total"] / 64) / (counts["total"] / 64) < 1e-3
    assert per_rank["total_gib"] == 16 * per_rank["params"] / 2**30


def test_bad_model_key_is_a_clear_error(lm_cfg):
    from zoo.errors import ZooError

    with pytest.raises((ZooError, ValueError), match=r"unknown model\.config keys"):
        train(lm_cfg("+model.config.flash=true"))


def test_bench_lm_runs_on_the_cpu(tmp_path):
    out = tmp_path / "lm.json"
    done = run_tool(
        "tools/bench/lm.py", "--device", "cpu", "--preset", "tiny", "--lengths", "64", "--tokens", "256",
        "--gen-prompt", "64", "--gen-tokens", "4", "--gen-batches", "2", "--repeats", "2", "--warmup", "1",
        "--output", str(out), cwd=ROOT,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    result = json.loads(out.read_text())
    assert {r["pattern"] for r in result["train"]} == {"hybrid", "softmax", "lightning"}
    assert all(r["tokens_per_s"] > 0 for r in result["train"])
    assert result["moe"]


def test_a_short_run_succeeds_and_leaves_last_ckpt(lm_cfg, tmp_path):
    """max_steps ending between validations (none ran): the run returns normally (no optimized_metric demanded
    outside sweeps), writes metrics.json, and leaves last.ckpt at the final step for tools/generate.py."""
    from tasks.app.entry_points import run_job

    cfg = lm_cfg("trainer.max_steps=7", "trainer.val_check_interval=15", name="short")
    assert run_job(cfg) is None
    assert (tmp_path / "short" / "metrics.json").is_file()
    assert last_ckpt(tmp_path, "short")["global_step"] == 7


def test_sigterm_saves_last_ckpt_exits_143_and_resumes_exactly(lm_cfg, tmp_path):
    """SIGTERM after step 7 of 20 (between validations): exit status 143, no metrics.json, last.ckpt at step 7;
    ckpt_path=last then ends where an uninterrupted run ends, bit for bit."""
    common = ["trainer.max_steps=20", "trainer.val_check_interval=10", "test=false"]
    train(lm_cfg(*common, name="straight"))
    term = ["+callbacks.term._target_=tests.helpers.SignalAtStep", "+callbacks.term.step=7"]
    with pytest.raises(SystemExit) as info:
        train(lm_cfg(*common, *term, name="killed"))
    assert info.value.code == 143
    assert not (tmp_path / "killed" / "metrics.json").exists()
    assert last_ckpt(tmp_path, "killed")["global_step"] == 7
    train(lm_cfg(*common, "ckpt_path=last", name="killed"))
    assert_same_final_state(tmp_path, "straight", "killed", step=20)


def test_compile_option_compiles_each_block_and_keeps_checkpoint_names(lm_cfg, tmp_path):
    """``model.compile`` (here dynamo with the eager backend, to stay fast on the CPU): the trained run's blocks
    were compiled in place, it trains as the uncompiled run does, and its checkpoint loads into an uncompiled task."""
    from zoo.parallel.compile import is_compiled

    seen = []
    original = LMTask.configure_model

    def spy(self):
        original(self)
        seen.append([is_compiled(b) for b in self.model.blocks()])

    common = ["trainer.max_steps=10", "trainer.val_check_interval=5"]
    plain = train(lm_cfg(*common, name="plain"))
    cfg = lm_cfg(*common, "model.compile={backend: eager}", name="compiled")
    LMTask.configure_model = spy
    try:
        metrics = train(cfg)
    finally:
        LMTask.configure_model = original
    assert seen and all(all(flags) and len(flags) == 4 for flags in seen)
    assert abs(metrics["val/loss"] - plain["val/loss"]) < 1e-4
    model = LMTask.load_from_checkpoint(metrics["test/ckpt"], map_location="cpu", compile=False)
    assert not any(is_compiled(b) for b in model.model.blocks())
