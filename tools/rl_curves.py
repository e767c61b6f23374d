#!/usr/bin/env python
"""Tabulate and plot RL runs: eval accuracy and rollout reward vs rollout steps, per objective, mean ± std over seeds.

    python tools/rl_curves.py RUNS_DIR --output docs/results/rl_addition.json --plot docs/results/rl_addition.png

``RUNS_DIR`` holds one run directory per job (each with ``csv/metrics.csv``): a Hydra multirun directory (the
objective and seed are read from each job's ``.hydra/config.yaml``) or folders named ``<objective>_<seed>``.
Steps are rollout steps (a validation every ``data.steps_per_epoch`` of them); "steps to 90 %" is the first
validation whose greedy accuracy on the held-out set reaches the threshold (— if none did).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from zoo.io import write_json


def read_run(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """``{"val/acc": [(rollout step, value)], "rollout/reward": [...]}`` of one run."""
    with open(directory / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    curves: dict[str, list[tuple[int, float]]] = {"val/acc": [], "rollout/reward": [], "rollout/acc": []}
    for row in rows:  # Lightning's logging step is the number of training batches (rollouts) done, minus one
        if row.get("warm_start/acc"):  # the starting policy, before any RL step
            curves["val/acc"].append((0, float(row["warm_start/acc"])))
            continue
        rollouts = int(row["step"]) + 1
        if row.get("rollout/reward"):
            curves["rollout/reward"].append((rollouts, float(row["rollout/reward"])))
            curves["rollout/acc"].append((rollouts, float(row["rollout/acc"])))
        if row.get("val/acc"):
            curves["val/acc"].append((rollouts, float(row["val/acc"])))
    return curves


def run_identity(directory: Path) -> tuple[str, int]:
    """(objective, seed) from the run's Hydra record (``.hydra/config.yaml``), else from a ``<objective>_<seed>``
    directory name."""
    config = directory / ".hydra" / "config.yaml"
    if config.is_file():
        import yaml

        values = yaml.safe_load(config.read_text())
        return str(values["rl"]["objective"]), int(values.get("seed") or 0)
    objective, _, seed = directory.name.rpartition("_")
    return objective, int(seed)


def steps_to(curve: list[tuple[int, float]], threshold: float) -> int | None:
    return next((step for step, value in curve if value >= threshold), None)


def mean_std(values: list[float]) -> tuple[float, float]:
    return statistics.fmean(values), statistics.stdev(values) if len(values) > 1 else 0.0


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("runs", type=Path)
    parser.add_argument("--threshold", type=float, default=0.9)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    runs: dict[str, dict[int, dict]] = {}
    for directory in sorted(p for p in args.runs.iterdir() if (p / "csv" / "metrics.csv").is_file()):
        objective, seed = run_identity(directory)
        runs.setdefault(objective, {})[seed] = read_run(directory)
    summary = {}
    print(f"| objective | seeds | start acc | final acc | best acc | steps to {args.threshold:.0%} | rollouts |")
    print("|---|---|---|---|---|---|---|")
    for objective, seeds in runs.items():
        vals = [s["val/acc"] for s in seeds.values() if s["val/acc"]]
        start = [v[0][1] for v in vals]
        final = [v[-1][1] for v in vals]
        best = [max(x for _, x in v) for v in vals]
        reach = [steps_to(v, args.threshold) for v in vals]
        rollouts = [s["rollout/reward"][-1][0] if s["rollout/reward"] else 0 for s in seeds.values()]
        summary[objective] = {
            "seeds": sorted(seeds), "start_acc": start, "final_acc": final, "best_acc": best,
            "steps_to_threshold": reach, "rollouts": rollouts,
            "curves": {seed: s for seed, s in seeds.items()},
        }  # fmt: skip
        reached = [r for r in reach if r is not None]
        reach_text = (
            f"{statistics.fmean(reached):.0f} ({len(reached)}/{len(reach)} seeds)" if reached else f"— (0/{len(reach)})"
        )
        m0, s0 = mean_std(start)
        m1, s1 = mean_std(final)
        m2, s2 = mean_std(best)
        print(
            f"| {objective} | {len(vals)} | {m0:.3f} ± {s0:.3f} | {m1:.3f} ± {s1:.3f} | {m2:.3f} ± {s2:.3f} | "
            f"{reach_text} | {min(rollouts)}–{max(rollouts)} |"
        )
    result = {"threshold": args.threshold, "objectives": summary}
    if args.output:
        write_json(args.output, result)
    if args.plot:
        plot(summary, args.plot)
    return result


def plot(summary: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    for objective, data in summary.items():
        for ax, key, label in (
            (axes[0], "val/acc", "held-out greedy accuracy"),
            (axes[1], "rollout/reward", "rollout reward"),
        ):
            curves = [c[key] for c in data["curves"].values() if c[key]]
            if not curves:
                continue
            length = min(len(c) for c in curves)
            steps = [s for s, _ in curves[0][:length]]
            values = [[v for _, v in c[:length]] for c in curves]
            mean = [statistics.fmean(col) for col in zip(*values)]
            std = [statistics.stdev(col) if len(col) > 1 else 0.0 for col in zip(*values)]
            if key == "rollout/reward":  # smooth the per-step reward over 10 steps
                k = 10
                mean = [statistics.fmean(mean[max(0, i - k + 1) : i + 1]) for i in range(len(mean))]
                std = [0.0] * len(std)
            (line,) = ax.plot(steps, mean, label=objective)
            ax.fill_between(steps, [m - s for m, s in zip(mean, std)], [m + s for m, s in zip(mean, std)],
                            color=line.get_color(), alpha=0.15)  # fmt: skip
            ax.set_xlabel("rollout step")
            ax.set_ylabel(label)
    axes[0].legend()
    for ax in axes:
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


if __name__ == "__main__":
    main()
