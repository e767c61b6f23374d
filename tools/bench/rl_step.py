#!/usr/bin/env python
"""The whole RL step of ``experiment=rl_addition`` on the fast path (rollouts through the decode engine, updates
replayed as CUDA graphs) and on the path before it (dynamic rollouts, eager updates): seconds per step, rollout
tokens/s and the reward curves, same seeds.

    python tools/bench/rl_step.py --rollouts 30 --seeds 0 1 2 --output docs/bench/rl_step_h200.json \\
        --plot docs/bench/rl_step_h200.png
    python tools/bench/rl_step.py --rollouts 3 --seeds 0 --overrides rl.warm_start_steps=20 trainer.accelerator=cpu

Each (path, seed) is one ``tools/train.py experiment=rl_addition rl.decode_engine=<false|null>
rl.graph_update=<false|null> seed=<seed>`` run (``trainer.log_every_n_steps=1``, no test), read back from its
``csv/metrics.csv``:

- ``step_s``: ``time/rollout_s + time/update_s`` of a rollout step (sampling, scoring and the old log-probs; the μ
  optimizer steps), the median over the steps after the first ``--skip`` (the engine compiles and captures its
  decode step in the first one, the updates capture a graph per minibatch shape when it recurs);
- ``generate_s`` and ``tokens_per_s``: the sampling alone (``time/generate_s``, ``rollout/tokens_per_s``);
- ``reward`` and ``val_acc``: the rollout reward per step and the greedy held-out accuracy per validation, whose
  curves the two paths should share (both draw from the same hash of (seed, step); only rounding differs).
"""

from __future__ import annotations

import argparse
import csv
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from zoo.io import write_json  # noqa: E402

PATHS = {
    "dynamic": ["rl.decode_engine=false", "rl.graph_update=false"],  # before: dynamic rollouts, eager updates
    "engine": ["rl.decode_engine=null", "rl.graph_update=null"],  # after: the decode engine, graph-replayed updates
}


def run(path: str, seed: int, rollouts: int, overrides: list[str], directory: Path) -> dict:
    """One training run; its per-step metrics."""
    command = [
        sys.executable, str(ROOT / "tools" / "train.py"), "experiment=rl_addition", *PATHS[path],
        f"seed={seed}", f"rl.rollouts={rollouts}", "trainer.log_every_n_steps=1", "test=false",
        f"hydra.run.dir={directory}", *overrides,
    ]  # fmt: skip
    start = time.perf_counter()
    subprocess.run(command, check=True, cwd=ROOT)
    wall = time.perf_counter() - start
    with open(directory / "csv" / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))

    def series(key: str) -> list[float]:
        return [float(row[key]) for row in rows if row.get(key) not in (None, "")]

    return {
        "wall_s": wall,
        "rollout_s": series("time/rollout_s"),
        "update_s": series("time/update_s"),
        "generate_s": series("time/generate_s"),
        "tokens_per_s": series("rollout/tokens_per_s"),
        "reward": series("rollout/reward"),
        "val_acc": series("val/acc"),
    }


def summarise(runs: list[dict], skip: int) -> dict:
    """Medians over the steps after ``skip`` of every seed's run, and the curves' means."""

    def median(key: str) -> float:
        return statistics.median(v for r in runs for v in r[key][skip:])

    steps = [a + b for r in runs for a, b in zip(r["rollout_s"][skip:], r["update_s"][skip:], strict=True)]
    return {
        "step_s": statistics.median(steps),
        "rollout_s": median("rollout_s"),
        "update_s": median("update_s"),
        "generate_s": median("generate_s"),
        "tokens_per_s": median("tokens_per_s"),
        "mean_reward": statistics.mean(v for r in runs for v in r["reward"]),
        "final_val_acc": [r["val_acc"][-1] for r in runs if r["val_acc"]],
        "wall_s": [r["wall_s"] for r in runs],
    }


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for name, color in (("dynamic", "tab:gray"), ("engine", "tab:blue")):
        for i, r in enumerate(result["runs"][name]):
            label = name if i == 0 else None
            axes[0].plot(r["reward"], c=color, alpha=0.7, ls="-" if name == "engine" else "--", label=label)
        axes[1].bar(name, result["summary"][name]["step_s"], color=color)
    axes[0].set(xlabel="rollout step", ylabel="rollout reward", title="reward curves, same seeds")
    axes[1].set(ylabel="seconds per RL step (median)", title=f"speedup {result['speedup']:.2f}×")
    axes[0].legend()
    fig.suptitle(f"experiment=rl_addition, {result['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rollouts", type=int, default=30)
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--skip", type=int, default=2, help="first steps left out of the medians")
    parser.add_argument("--overrides", nargs="*", default=[], help="more Hydra overrides for every run")
    parser.add_argument("--workdir", type=Path, help="where the runs go (default: a temporary directory)")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    import torch

    device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    workdir = args.workdir or Path(tempfile.mkdtemp(prefix="rl_step_"))
    result: dict = {"device": device, "torch": torch.__version__, "rollouts": args.rollouts, "seeds": args.seeds,
                    "overrides": args.overrides, "runs": {}}  # fmt: skip
    for name in PATHS:
        result["runs"][name] = [
            run(name, seed, args.rollouts, args.overrides, workdir / f"{name}_{seed}") for seed in args.seeds
        ]
    result["summary"] = {name: summarise(runs, args.skip) for name, runs in result["runs"].items()}
    dynamic, engine = result["summary"]["dynamic"], result["summary"]["engine"]
    result["speedup"] = dynamic["step_s"] / engine["step_s"]
    result["generate_speedup"] = dynamic["generate_s"] / engine["generate_s"]
    print("\n| path | s/step | rollout s | update s | generate s | rollout tok/s | mean reward | final val acc |")
    print("|---|---|---|---|---|---|---|---|")
    for name, s in result["summary"].items():
        accs = ", ".join(f"{a:.3f}" for a in s["final_val_acc"])
        print(f"| {name} | {s['step_s']:.3f} | {s['rollout_s']:.3f} | {s['update_s']:.3f} | {s['generate_s']:.3f} "
              f"| {s['tokens_per_s']:,.0f} | {s['mean_reward']:.3f} | {accs} |")  # fmt: skip
    print(f"per step: {result['speedup']:.2f}× faster; sampling: {result['generate_speedup']:.2f}×")
    if args.output:
        write_json(args.output, result)
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
