#!/usr/bin/env python
"""Aggregate the runs of a sweep: mean ± std of a metric per setting, as a Markdown table and JSON.

    python tools/summarize_runs.py logs/vision/multiruns/2026-11-27_15-30-00 --by model.ca --metric test/acc

Reads every ``metrics.json`` under the directory and the run's composed config (``.hydra/config.yaml``), groups
by the config key ``--by`` and reports the sample standard deviation across the group (the seeds).
"""

from __future__ import annotations

import argparse
import json
import statistics
from functools import reduce
from pathlib import Path

import yaml


def load_runs(root: Path) -> list[dict]:
    runs = []
    for metrics_path in sorted(root.glob("**/metrics.json")):
        config_path = metrics_path.parent / ".hydra" / "config.yaml"
        if not config_path.is_file():
            continue
        runs.append({"dir": str(metrics_path.parent), "metrics": json.loads(metrics_path.read_text()),
                     "config": yaml.safe_load(config_path.read_text())})
    return runs


def lookup(config: dict, dotted: str):
    return reduce(lambda node, key: node[key], dotted.split("."), config)


def summarize(runs: list[dict], by: str, metrics: list[str]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(str(lookup(run["config"], by)), []).append(run)
    rows = []
    for key, members in groups.items():
        row = {by: key, "runs": len(members), "seeds": sorted(lookup(m["config"], "seed") for m in members)}
        for metric in metrics:
            values = [float(m["metrics"][metric]) for m in members if metric in m["metrics"]]
            row[metric] = {"mean": statistics.fmean(values) if values else None,
                           "std": statistics.stdev(values) if len(values) > 1 else 0.0, "values": values}
        rows.append(row)
    return rows


def to_markdown(rows: list[dict], by: str, metrics: list[str], order: list[str] | None = None) -> str:
    if order:
        rows = sorted(rows, key=lambda r: order.index(r[by]) if r[by] in order else len(order))
    lines = [f"| {by} | runs | " + " | ".join(f"{m} (mean ± std)" for m in metrics) + " |",
             "|---|---|" + "---|" * len(metrics)]
    for row in rows:
        cells = []
        for metric in metrics:
            stat = row[metric]
            scale = 100 if "acc" in metric else 1
            cells.append("n/a" if stat["mean"] is None else f"{scale * stat['mean']:.2f} ± {scale * stat['std']:.2f}")
        lines.append(f"| {row[by]} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--by", default="model.ca")
    parser.add_argument("--metric", nargs="+", default=["test/acc", "val/acc_best"])
    parser.add_argument("--order", nargs="*", help="row order of the --by values")
    parser.add_argument("--output", type=Path, help="write the rows as JSON here")
    args = parser.parse_args()
    runs = load_runs(args.root)
    if not runs:
        parser.error(f"no metrics.json with a .hydra/config.yaml under {args.root}")
    rows = summarize(runs, args.by, args.metric)
    print(to_markdown(rows, args.by, args.metric, args.order))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"root": str(args.root), "by": args.by, "rows": rows}, indent=2) + "\n")


if __name__ == "__main__":
    main()
