"""The main job when the CPU cores are shared: one run alone against two side by side, three thread policies.

    python tools/bench/cpu_sharing.py                                   # 100 steps per run, ~9 min on 2 cores
    python tools/bench/cpu_sharing.py --steps 100 --output docs/bench/cpu_sharing.json

Each run is ``python tools/train.py task=vision model.ca=mca trainer.max_steps=<steps>`` (2 validation batches, no
test) in its own process; a pair starts two at once. Policies:

=============== ==================================================================================================
``adaptive``    the default: ``callbacks.cpu_threads`` sets the intra-op threads to the cores other processes leave
                free, checked every 10 s (:class:`tasks.callbacks.CpuThreads`)
``fixed``       ``~callbacks.cpu_threads``: PyTorch's default, one thread per core, whatever else runs
``passive``     ``fixed`` with ``OMP_WAIT_POLICY=PASSIVE``: OpenMP threads sleep at barriers instead of spinning
=============== ==================================================================================================

Reported per scenario: the fit time of each run (``time/fit_s`` of its ``metrics.json``; the process's start-up is
not in it) and its ratio to the first scenario's (by default the ``adaptive`` run alone). Timings are wall-clock
seconds on whatever machine runs it: quote them with the CPU model (printed first).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
POLICIES = {
    "adaptive": ([], {}),
    "fixed": (["~callbacks.cpu_threads"], {}),
    "passive": (["~callbacks.cpu_threads"], {"OMP_WAIT_POLICY": "PASSIVE"}),
}
SCENARIOS = [("adaptive", 1), ("passive", 1), ("fixed", 2), ("passive", 2), ("adaptive", 2)]


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def run_together(policy: str, copies: int, steps: int, workdir: Path, extra: list[str]) -> list[float]:
    """Start ``copies`` runs at once (``extra``: further Hydra overrides); return each one's fit seconds."""
    overrides, env = POLICIES[policy]
    processes = []
    for copy in range(copies):
        out = workdir / f"{policy}_{copies}_{copy}"
        command = [
            sys.executable, str(ROOT / "tools" / "train.py"), "task=vision", "model.ca=mca",
            f"trainer.max_steps={steps}", "trainer.limit_val_batches=2", "test=false", "logger=csv",
            f"hydra.run.dir={out}", *overrides, *extra,
        ]  # fmt: skip
        log = (workdir / f"{out.name}.log").open("w")
        processes.append(
            (out, log, subprocess.Popen(command, cwd=ROOT, env={**os.environ, **env}, stdout=log, stderr=log))
        )
    seconds = []
    for out, log, process in processes:
        process.wait()
        log.close()
        if process.returncode != 0:
            raise SystemExit(f"{out.name} failed: see {log.name}")
        seconds.append(json.loads((out / "metrics.json").read_text())["time/fit_s"])
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=100, help="training steps per run")
    parser.add_argument("--output", type=Path, help="write the results as JSON here")
    parser.add_argument(
        "--scenarios",
        default=",".join(f"{p}:{n}" for p, n in SCENARIOS),
        help="policy:runs_at_once, comma-separated; the first is the reference (default: %(default)s)",
    )
    parser.add_argument("--override", nargs="*", default=[], help="further Hydra overrides of every run")
    args = parser.parse_args(argv)
    scenarios = []
    for item in args.scenarios.split(","):
        policy, _, copies = item.partition(":")
        if policy not in POLICIES or not copies.isdigit() or int(copies) < 1:
            parser.error(f"--scenarios: {item!r} is not policy:count with policy one of {', '.join(POLICIES)}")
        scenarios.append((policy, int(copies)))
    machine = {"cpu": cpu_model(), "cores": len(os.sched_getaffinity(0)), "python": platform.python_version()}
    print(f"{machine['cpu']}, {machine['cores']} cores usable; {args.steps} steps of the main job per run")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for policy, copies in scenarios:
            seconds = run_together(policy, copies, args.steps, Path(tmp), args.override)
            rows.append({"policy": policy, "runs_at_once": copies, "fit_s": seconds})
    alone = sum(rows[0]["fit_s"]) / len(rows[0]["fit_s"])
    reference = f"vs {rows[0]['policy']} ×{rows[0]['runs_at_once']}"
    print(f"{'policy':<10} {'runs at once':>12} {'fit s (each)':>20} {reference:>18}")
    for row in rows:
        mean = sum(row["fit_s"]) / len(row["fit_s"])
        row["vs_reference"] = mean / alone
        each = ", ".join(f"{s:.1f}" for s in row["fit_s"])
        print(f"{row['policy']:<10} {row['runs_at_once']:>12} {each:>20} {row['vs_reference']:>17.2f}×")
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps({"machine": machine, "steps": args.steps, "rows": rows}, indent=2) + "\n")
        print(f"wrote {args.output}")


if __name__ == "__main__":
    main()
