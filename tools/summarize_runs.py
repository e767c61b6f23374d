#!/usr/bin/env python
"""Aggregate the runs of a sweep: mean ± std of a metric per setting, as a Markdown table and JSON.

    python tools/summarize_runs.py logs/vision/multiruns/2026-11-27_15-30-00 --by model.ca --metric test/acc
    python tools/summarize_runs.py runs/ --metric test/bbox_map test/segm_map --baseline none --plot-points ap.png

Reads every ``metrics.json`` under the directory and the run's composed config (``.hydra/config.yaml``), groups
by the config key ``--by`` and reports the sample standard deviation across the group (the seeds). Accuracies and
COCO AP/AR (``*acc*``, ``*_map*``, ``*_mar*``) are printed in percent. With ``--baseline``, each metric's first
column also gives the difference of the group's mean to the baseline group's, ± its standard error
(sqrt(s_a²/n_a + s_b²/n_b), the groups taken as independent samples).
"""

from __future__ import annotations

import argparse
import json
import math
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
        runs.append(
            {
                "dir": str(metrics_path.parent),
                "metrics": json.loads(metrics_path.read_text()),
                "config": yaml.safe_load(config_path.read_text()),
            }
        )
    return runs


def lookup(config: dict, dotted: str):
    return reduce(lambda node, key: node[key], dotted.split("."), config)


def summarize(runs: list[dict], by: str, metrics: list[str]) -> list[dict]:
    groups: dict[str, list[dict]] = {}
    for run in runs:
        groups.setdefault(str(lookup(run["config"], by)), []).append(run)
    rows = []
    for key, members in groups.items():
        members = sorted(members, key=lambda m: lookup(m["config"], "seed"))  # values in seed order: pairable
        row = {by: key, "runs": len(members), "seeds": [lookup(m["config"], "seed") for m in members]}
        for metric in metrics:
            values = [float(m["metrics"][metric]) for m in members if metric in m["metrics"]]
            row[metric] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
        rows.append(row)
    return rows


def in_order(rows: list[dict], by: str, order: list[str] | None) -> list[dict]:
    """``rows`` with their ``by`` values in ``order`` first (as listed), the others after, as they came."""
    if not order:
        return rows
    return sorted(rows, key=lambda r: order.index(r[by]) if r[by] in order else len(order))


def percent_scale(metric: str) -> int:
    """100 for fractions reported in percent (accuracy, COCO AP and AR), else 1."""
    name = metric.rsplit("/", 1)[-1]
    return 100 if "acc" in name or "map" in name.split("_") or "mar" in name.split("_") else 1


def difference(row: dict, base: dict, metric: str) -> tuple[float, float] | None:
    """Mean of ``row`` minus mean of ``base`` for ``metric`` and its standard error, or None without values."""
    a, b = row[metric], base[metric]
    if a["mean"] is None or b["mean"] is None:
        return None
    se = math.sqrt(a["std"] ** 2 / len(a["values"]) + b["std"] ** 2 / len(b["values"]))
    return a["mean"] - b["mean"], se


def to_markdown(
    rows: list[dict], by: str, metrics: list[str], order: list[str] | None = None, baseline: str | None = None
) -> str:
    rows = in_order(rows, by, order)
    base = next((r for r in rows if r[by] == baseline), None)
    if baseline is not None and base is None:
        raise SystemExit(f"--baseline {baseline!r} is not a value of {by}; values: {', '.join(r[by] for r in rows)}")
    header = [f"{m} (mean ± std)" for m in metrics]
    if base is not None:
        header.insert(1, f"Δ{metrics[0]} vs {baseline} (± s.e.)")
    lines = [f"| {by} | runs | " + " | ".join(header) + " |", "|---|---|" + "---|" * len(header)]
    for row in rows:
        cells = []
        for metric in metrics:
            stat, scale = row[metric], percent_scale(metric)
            cells.append("n/a" if stat["mean"] is None else f"{scale * stat['mean']:.2f} ± {scale * stat['std']:.2f}")
        if base is not None:
            delta = None if row is base else difference(row, base, metrics[0])
            scale = percent_scale(metrics[0])
            cells.insert(1, "—" if delta is None else f"{scale * delta[0]:+.2f} ± {scale * delta[1]:.2f}")
        lines.append(f"| {row[by]} | {row['runs']} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_points(rows: list[dict], by: str, metrics: list[str], path: Path, order: list[str] | None = None) -> None:
    """One panel per metric: each run's value (a dot per seed) and the group mean ± std, per ``--by`` value."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = in_order(rows, by, order)
    fig, axes = plt.subplots(1, len(metrics), figsize=(3.2 * len(metrics) + 0.6, 3.4), squeeze=False)
    for ax, metric in zip(axes[0], metrics, strict=True):
        scale = percent_scale(metric)
        for x, row in enumerate(rows):
            stat = row[metric]
            values = [scale * v for v in stat["values"]]
            spread = 0.3 / max(len(values) - 1, 1)
            jitter = [x - 0.15 + spread * i for i in range(len(values))]  # the seeds side by side, in seed order
            ax.scatter(jitter, values, s=12, alpha=0.6, color="tab:blue")
            if stat["mean"] is not None:
                ax.errorbar(x + 0.25, scale * stat["mean"], yerr=scale * stat["std"], fmt="o", color="black", ms=4)
        ax.set_xticks(range(len(rows)), [r[by] for r in rows])
        ax.set_title(metric + (" (%)" if scale == 100 else ""), fontsize=9)
        ax.grid(alpha=0.3, axis="y")
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def plot_curves(runs: list[dict], by: str, metric: str, path: Path, order: list[str] | None = None) -> None:
    """Mean (over seeds) of an epoch-level metric from each run's ``csv/metrics.csv``, one line per group."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    curves: dict[str, list[dict[int, float]]] = {}
    for run in runs:
        table = Path(run["dir"]) / "csv" / "metrics.csv"
        if not table.is_file():
            continue
        per_epoch = {}
        with table.open() as handle:
            for record in csv.DictReader(handle):
                if record.get(metric):
                    per_epoch[int(record["epoch"])] = float(record[metric])
        curves.setdefault(str(lookup(run["config"], by)), []).append(per_epoch)
    fig, ax = plt.subplots(figsize=(6.5, 4))
    for key in sorted(curves, key=lambda k: order.index(k) if order and k in order else 99):
        epochs = sorted(set.intersection(*(set(c) for c in curves[key])))
        means = [statistics.fmean(c[e] for c in curves[key]) for e in epochs]
        ax.plot([e + 1 for e in epochs], [100 * m for m in means], marker="o", markersize=3, label=key)
    ax.set_xlabel("epoch")
    ax.set_ylabel(f"{metric} (%), mean over seeds")
    ax.grid(alpha=0.3)
    ax.legend(title=by)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("root", type=Path)
    parser.add_argument("--by", default="model.ca")
    parser.add_argument("--metric", nargs="+", default=["test/acc", "val/acc_best"])
    parser.add_argument("--order", nargs="*", help="row order of the --by values")
    parser.add_argument("--output", type=Path, help="write the rows as JSON here")
    parser.add_argument("--plot", type=Path, help="write a PNG of the validation curves here (needs matplotlib)")
    parser.add_argument("--plot-metric", default="val/acc")
    parser.add_argument("--baseline", help="a --by value: add each group's difference to it (first --metric)")
    parser.add_argument("--plot-points", type=Path, help="write a PNG of every run's --metric values here")
    args = parser.parse_args()
    runs = load_runs(args.root)
    if not runs:
        parser.error(f"no metrics.json with a .hydra/config.yaml under {args.root}")
    rows = summarize(runs, args.by, args.metric)
    print(to_markdown(rows, args.by, args.metric, args.order, args.baseline))
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"root": str(args.root), "by": args.by, "rows": rows}, indent=2) + "\n")
    if args.plot:
        plot_curves(runs, args.by, args.plot_metric, args.plot, args.order)
    if args.plot_points:
        plot_points(rows, args.by, args.metric, args.plot_points, args.order)


if __name__ == "__main__":
    main()
