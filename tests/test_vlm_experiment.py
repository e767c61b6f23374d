"""tools/vlm_experiment.py: the two stages' command lines, skipping finished runs, and the per-variant summary."""

from __future__ import annotations

import importlib.util
import json
import statistics

import pytest

from tests.conftest import ROOT

spec = importlib.util.spec_from_file_location("vlm_experiment", ROOT / "tools" / "vlm_experiment.py")
tool = importlib.util.module_from_spec(spec)
spec.loader.exec_module(tool)

COUNT = {"dynamic": [0.4, 0.5, 0.45], "blind": [0.1, 0.2, 0.15]}


def test_variants_parse_and_stages_chain(tmp_path):
    assert tool.parse_variant("dynamic=") == ("dynamic", [])
    assert tool.parse_variant("t=a.b=1,c=x") == ("t", ["a.b=1", "c=x"])
    with pytest.raises(Exception, match="NAME=override"):
        tool.parse_variant("nameless")
    align, instruct = tool.stage_commands(tmp_path / "r", 2, ["model=vlm_small"], ["vlm.blind=true"], ["a=1"], ["b=2"])
    assert align[2:] == ["task=vlm", "seed=2", "model=vlm_small", "vlm.blind=true", "vlm.stage=align", "test=false",
                         "a=1", f"hydra.run.dir={tmp_path / 'r' / 'align'}"]  # fmt: skip
    assert f"vlm.init_checkpoint={tmp_path / 'r' / 'align' / 'checkpoints' / 'last.ckpt'}" in instruct
    assert "vlm.stage=instruct" in instruct and "b=2" in instruct and "a=1" not in instruct


def test_finished_runs_are_summarised_without_rerunning(tmp_path, monkeypatch):
    for variant, values in COUNT.items():
        for seed, value in enumerate(values):
            run = tmp_path / variant / f"seed{seed}" / "instruct"
            run.mkdir(parents=True)
            (run / "metrics.json").write_text(json.dumps({"test/acc_count": value, "test/loss": 1.0 + seed}))
    monkeypatch.setattr(tool.subprocess, "run", lambda *a, **k: pytest.fail("a finished run was started again"))
    argv = [
        "--out",
        str(tmp_path),
        "--seeds",
        "0",
        "1",
        "2",
        "--variant",
        "dynamic=",
        "--variant",
        "blind=vlm.blind=true",
    ]
    record = tool.main(argv)
    written = json.loads((tmp_path / "summary.json").read_text())
    assert written["summary"] == record["summary"] and written["variants"] == {
        "dynamic": [],
        "blind": ["vlm.blind=true"],
    }
    for variant, values in COUNT.items():
        stat = record["summary"][variant]["test/acc_count"]
        assert stat["values"] == values  # in seed order
        assert stat["mean"] == pytest.approx(statistics.fmean(values)) and stat["std"] == pytest.approx(0.05)
        assert record["summary"][variant]["test/acc_presence"]["mean"] is None  # not reported: n/a
    table = tool.to_markdown(record["summary"])
    assert "| dynamic | 0.450 ± 0.050 (0.400 / 0.500 / 0.450) | n/a |" in table


def test_a_failed_stage_is_reported(tmp_path, monkeypatch):
    class Done:
        returncode = 3

    monkeypatch.setattr(tool.subprocess, "run", lambda *a, **k: Done())
    with pytest.raises(SystemExit):
        tool.main(["--out", str(tmp_path), "--seeds", "0", "--variant", "dynamic="])
    failures = json.loads((tmp_path / "summary.json").read_text())["failures"]
    assert len(failures) == 1 and "align failed (exit 3)" in failures[0]
