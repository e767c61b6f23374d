"""Console entry points (``zoo-train``, ``zoo-cli``, ``zoo-list``), also used by the scripts in ``tools/``."""

from __future__ import annotations

import argparse
import os
from pathlib import Path

from zoo.errors import ConfigError, exit_on_config_error


def config_dir() -> str:
    """The Hydra config directory: ``$ZOO_CONFIG_DIR``, else ``conf/`` of the checkout this package lives in."""
    explicit = os.environ.get("ZOO_CONFIG_DIR")
    candidate = Path(explicit) if explicit else Path(__file__).resolve().parents[1] / "conf"
    if not (candidate / "train.yaml").is_file():
        raise ConfigError(
            f"no Hydra configs at {candidate}: run from a clone of zoo (pip install -e .), or set ZOO_CONFIG_DIR "
            f"to a directory holding train.yaml"
        )
    return str(candidate)


def run_job(cfg) -> float | None:
    """Hydra's task function: train and test, print a configuration error as one paragraph and exit 2."""
    from tasks.runner import objective_value, train

    with exit_on_config_error():
        return objective_value(cfg, train(cfg))


def train() -> None:
    """``zoo-train`` / ``python tools/train.py``: the Hydra front end."""
    import hydra

    with exit_on_config_error():
        path = config_dir()
    hydra.main(version_base="1.3", config_path=path, config_name="train")(run_job)()


def cli() -> None:
    """``zoo-cli`` / ``python tools/cli.py``: the LightningCLI front end."""
    from tasks.cli import make_cli

    with exit_on_config_error():
        make_cli()


def list_components(argv: list[str] | None = None) -> None:
    """``zoo-list [kind] [pattern]``: the registered names of every registry (plugins included)."""
    from zoo.registries import ALL

    parser = argparse.ArgumentParser(prog="zoo-list", description="List registered zoo components.")
    parser.add_argument("kind", nargs="?", help=f"one of: {', '.join(ALL)}")
    parser.add_argument("pattern", nargs="?", help="shell-style filter, e.g. 'mca*'")
    args = parser.parse_args(argv)
    if args.kind and args.kind not in ALL:
        parser.error(f"unknown kind '{args.kind}'; valid: {', '.join(ALL)}")
    for kind, registry in ALL.items():
        if args.kind and kind != args.kind:
            continue
        print(f"{kind}:")
        for name, entry in registry.items():
            if args.pattern and name not in registry.names(args.pattern):
                continue
            preset = f"  {entry.defaults}" if entry.defaults else ""
            print(f"  {name:<28} {getattr(entry.obj, '__qualname__', entry.obj)}{preset}")
