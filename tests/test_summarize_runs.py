"""tools/summarize_runs.py on a directory of run folders laid out as tools/train.py writes them."""

from __future__ import annotations

import json
import math
import statistics

import yaml

from tests.conftest import ROOT, run_tool

TOOL = str(ROOT / "tools" / "summarize_runs.py")
AP = {"none": [0.10, 0.11, 0.12], "mca": [0.12, 0.14, 0.13]}


def write_runs(root):
    for ca, values in AP.items():
        for seed, value in enumerate(values):
            run = root / f"{ca}_{seed}"
            (run / ".hydra").mkdir(parents=True)
            (run / ".hydra" / "config.yaml").write_text(yaml.safe_dump({"seed": seed, "model": {"ca": ca}}))
            (run / "metrics.json").write_text(json.dumps({"test/bbox_map": value, "time/fit_s": 1.0}))


def test_percent_table_baseline_difference_and_points_plot(tmp_path):
    write_runs(tmp_path / "runs")
    args = ["--metric", "test/bbox_map", "--order", "none", "mca", "--baseline", "none"]
    out = run_tool(TOOL, str(tmp_path / "runs"), *args, "--plot-points", str(tmp_path / "ap.png"), cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    delta = statistics.fmean(AP["mca"]) - statistics.fmean(AP["none"])
    se = math.sqrt(sum(statistics.variance(v) / len(v) for v in AP.values()))
    assert "| none | 3 | 11.00 ± 1.00 | — |" in out.stdout
    assert f"| mca | 3 | 13.00 ± 1.00 | {100 * delta:+.2f} ± {100 * se:.2f} |" in out.stdout
    assert (tmp_path / "ap.png").stat().st_size > 1000
    bad = run_tool(TOOL, str(tmp_path / "runs"), "--metric", "test/bbox_map", "--baseline", "se", cwd=tmp_path)
    assert bad.returncode != 0 and "--baseline 'se' is not a value of model.ca; values: mca, none" in bad.stderr
