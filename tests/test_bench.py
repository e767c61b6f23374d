"""The benchmark scripts run end to end at toy sizes (their numbers are only meaningful on real hardware)."""

from __future__ import annotations

import json

from tests.conftest import ROOT, run_tool


def test_vision_ca_bench_smoke(tmp_path):
    out = tmp_path / "bench.json"
    result = run_tool(
        str(ROOT / "tools/bench/vision_ca.py"),
        "--device",
        "cpu",
        "--configs",
        "resnet20:16:4",
        "--warmup",
        "0",
        "--repeats",
        "1",
        "--output",
        str(out),
        cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-2000:]
    rows = {r["variant"]: r for r in json.loads(out.read_text())["rows"]}
    assert set(rows) == {"none", "se", "eca", "mca_e", "mca_s"}
    assert rows["mca_s"]["extra_params"] == 9 * 7 and rows["eca"]["extra_params"] == 9 * 3
    assert rows["mca_s"]["gflops_attention"] > rows["mca_e"]["gflops_attention"] > rows["eca"]["gflops_attention"] > 0
    assert all(r["images_per_s"] > 0 for r in rows.values())
    assert "vs none" in result.stdout


def test_cpu_sharing_bench_smoke(tmp_path):
    """Two tiny runs side by side and one alone: every run finishes and the table compares them."""
    out = tmp_path / "sharing.json"
    result = run_tool(
        str(ROOT / "tools/bench/cpu_sharing.py"),
        "--steps", "2", "--scenarios", "adaptive:1,fixed:2", "--output", str(out),
        "--override", "+model.backbone_kwargs.widths=[4,8,8]", "data.batch_size=16", "data.train_subset=64",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    rows = json.loads(out.read_text())["rows"]
    assert [(r["policy"], r["runs_at_once"], len(r["fit_s"])) for r in rows] == [("adaptive", 1, 1), ("fixed", 2, 2)]
    assert rows[0]["vs_reference"] == 1.0 and all(s > 0 for r in rows for s in r["fit_s"])
    assert "vs adaptive ×1" in result.stdout


def test_rl_step_bench_smoke(tmp_path):
    """Both RL paths (dynamic rollouts + eager updates; engine + graphed updates) run two rollouts each; the JSON
    holds each run's per-step times and the table the speedup."""
    out = tmp_path / "rl_step.json"
    result = run_tool(
        str(ROOT / "tools/bench/rl_step.py"),
        "--rollouts", "2", "--seeds", "0", "--skip", "0", "--output", str(out), "--workdir", str(tmp_path / "runs"),
        "--overrides", "rl.warm_start_steps=5", "trainer.accelerator=cpu", "data.prompts_per_step=4",
        "rl.group_size=4", "data.env_kwargs.eval_size=16", "data.steps_per_epoch=2",
        cwd=tmp_path,
    )  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    saved = json.loads(out.read_text())
    assert set(saved["runs"]) == {"dynamic", "engine"} and saved["speedup"] > 0
    for runs in saved["runs"].values():
        assert len(runs[0]["rollout_s"]) == len(runs[0]["update_s"]) == len(runs[0]["reward"]) == 2
    assert "per step:" in result.stdout
