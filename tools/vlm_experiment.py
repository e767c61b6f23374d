#!/usr/bin/env python
"""MiniMax-VL-01's two stages (``align``, then ``instruct`` from the aligned weights) for several variants and seeds
of ``task=vlm``, run side by side as ``tools/train.py`` processes, and the held-out exact match per question type
as a table (mean ± std over seeds, and each seed's value) and JSON.

    python tools/vlm_experiment.py --out runs/vlm_small --seeds 0 1 2 --parallel 9 \\
        --align trainer.max_epochs=2 --instruct trainer.max_epochs=6 -- model=vlm_small trainer=gpu data.image_size=192

A variant is ``NAME=override,override,...`` (``--variant``, repeatable; the overrides go to both stages); the default
variants are ``dynamic`` (the config as given), ``thumbnail`` (``model.config.tiling.dynamic=false``: each image its
thumbnail alone, fixed resolution) and ``blind`` (``vlm.blind=true``: every image blank, the answers from the text
alone). Run ``<out>/<variant>/seed<k>/{align,instruct}`` is a normal run folder (``metrics.json``, checkpoints, logs);
a run whose ``instruct/metrics.json`` exists is not run again. ``<out>/summary.json`` holds every value.
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from zoo.io import atomic_write  # noqa: E402

DEFAULT_VARIANTS = {"dynamic": [], "thumbnail": ["model.config.tiling.dynamic=false"], "blind": ["vlm.blind=true"]}
METRICS = ("test/acc_count", "test/acc_presence", "test/acc_leftmost", "test/acc_quadrant", "test/acc_detail",
           "test/acc", "test/loss")  # fmt: skip


def parse_variant(text: str) -> tuple[str, list[str]]:
    """``NAME=a=1,b=2`` → ``("NAME", ["a=1", "b=2"])`` (``NAME=`` alone: no overrides)."""
    name, sep, rest = text.partition("=")
    if not sep or not name:
        raise argparse.ArgumentTypeError(f"--variant must be NAME=override,override,... got {text!r}")
    return name, [item for item in rest.split(",") if item]


def stage_commands(run: Path, seed: int, common: list[str], variant: list[str], align: list[str],
                   instruct: list[str]) -> list[list[str]]:  # fmt: skip
    """The two ``tools/train.py`` command lines of one run: align (no test), then instruct from its last
    checkpoint."""
    train = [sys.executable, str(ROOT / "tools" / "train.py"), "task=vlm", f"seed={seed}", *common, *variant]
    first = [*train, "vlm.stage=align", "test=false", *align, f"hydra.run.dir={run / 'align'}"]
    second = [*train, "vlm.stage=instruct", f"vlm.init_checkpoint={run / 'align' / 'checkpoints' / 'last.ckpt'}",
              *instruct, f"hydra.run.dir={run / 'instruct'}"]  # fmt: skip
    return [first, second]


def run_one(run: Path, commands: list[list[str]], threads: int) -> dict:
    """Both stages of one run (skipped when its instruct metrics exist); its instruct ``metrics.json``."""
    done = run / "instruct" / "metrics.json"
    if not done.is_file():
        run.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "OMP_NUM_THREADS": str(threads), "PYTHONUNBUFFERED": "1"}
        for stage, command in zip(("align", "instruct"), commands, strict=True):
            start = time.time()
            with open(run / f"{stage}.log", "w") as log:
                code = subprocess.run(command, cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT).returncode
            print(f"{run} {stage}: exit {code} after {time.time() - start:.0f} s", flush=True)
            if code:
                raise RuntimeError(f"{run} {stage} failed (exit {code}); see {run / (stage + '.log')}")
    return json.loads(done.read_text())


def summarize(results: dict[str, dict[int, dict]]) -> dict[str, dict[str, dict]]:
    """``{variant: {metric: {"mean", "std", "values"}}}`` over the seeds (sample std; 0 for one seed)."""
    out: dict[str, dict[str, dict]] = {}
    for variant, by_seed in results.items():
        out[variant] = {}
        for metric in METRICS:
            values = [float(m[metric]) for _, m in sorted(by_seed.items()) if metric in m]
            out[variant][metric] = {
                "mean": statistics.fmean(values) if values else None,
                "std": statistics.stdev(values) if len(values) > 1 else 0.0,
                "values": values,
            }
    return out


def to_markdown(summary: dict[str, dict[str, dict]]) -> str:
    names = [m.split("/", 1)[1].removeprefix("acc_") for m in METRICS]
    lines = ["| variant | " + " | ".join(names) + " |", "|---|" + "---|" * len(METRICS)]
    for variant, stats in summary.items():
        cells = []
        for metric in METRICS:
            s = stats[metric]
            if s["mean"] is None:
                cells.append("n/a")
                continue
            seeds = " / ".join(f"{v:.3f}" for v in s["values"])
            cells.append(f"{s['mean']:.3f} ± {s['std']:.3f} ({seeds})")
        lines.append(f"| {variant} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    common = argv[argv.index("--") + 1 :] if "--" in argv else []
    argv = argv[: argv.index("--")] if "--" in argv else argv
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                     formatter_class=argparse.RawDescriptionHelpFormatter)  # fmt: skip
    parser.add_argument("--out", type=Path, required=True, help="the experiment's folder")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--variant", type=parse_variant, action="append", help="NAME=override,... (repeatable)")
    parser.add_argument("--align", nargs="*", default=[], help="overrides of the align stage only")
    parser.add_argument("--instruct", nargs="*", default=[], help="overrides of the instruct stage only")
    parser.add_argument("--parallel", type=int, default=1, help="runs at a time")
    parser.add_argument("--threads", type=int, default=1, help="CPU threads per run (OMP_NUM_THREADS)")
    args = parser.parse_args(argv)
    variants = dict(args.variant) if args.variant else DEFAULT_VARIANTS
    out = args.out.resolve()
    jobs = {
        (name, seed): stage_commands(out / name / f"seed{seed}", seed, common, overrides, args.align, args.instruct)
        for name, overrides in variants.items()
        for seed in args.seeds
    }
    results: dict[str, dict[int, dict]] = {name: {} for name in variants}
    failures = []
    with concurrent.futures.ThreadPoolExecutor(max(1, args.parallel)) as pool:
        futures = {pool.submit(run_one, out / n / f"seed{s}", c, args.threads): (n, s) for (n, s), c in jobs.items()}
        for future in concurrent.futures.as_completed(futures):
            name, seed = futures[future]
            try:
                results[name][seed] = future.result()
            except RuntimeError as error:
                failures.append(str(error))
    summary = summarize(results)
    out.mkdir(parents=True, exist_ok=True)
    record = {"common": common, "variants": variants, "seeds": args.seeds, "align": args.align,
              "instruct": args.instruct, "summary": summary, "failures": failures}  # fmt: skip
    with atomic_write(out / "summary.json", "w") as handle:
        handle.write(json.dumps(record, indent=1, sort_keys=True) + "\n")
    print(to_markdown(summary))
    if failures:
        print("\n".join(failures), file=sys.stderr)
        raise SystemExit(1)
    return record


if __name__ == "__main__":
    main()
