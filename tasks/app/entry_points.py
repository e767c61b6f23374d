"""Console entry points (``zoo-train``, ``zoo-cli``, ``zoo-list``, ``zoo-count-params``, ``zoo-generate``),
also used by the scripts in ``tools/``."""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import Any

from zoo.errors import ConfigError, exit_on_config_error


def config_dir() -> str:
    """The Hydra config directory: ``$ZOO_CONFIG_DIR``, else ``conf/`` of the checkout this package lives in."""
    explicit = os.environ.get("ZOO_CONFIG_DIR")
    candidate = Path(explicit) if explicit else Path(__file__).resolve().parents[2] / "conf"
    if not (candidate / "train.yaml").is_file():
        raise ConfigError(
            f"no Hydra configs at {candidate}: run from a clone of zoo (pip install -e .), or set ZOO_CONFIG_DIR "
            f"to a directory holding train.yaml"
        )
    return str(candidate)


#: What Hydra writes into a run directory before the job starts: a run that wrote nothing else left nothing of use.
HYDRA_ONLY = {".hydra", "train.log"}


def remove_if_nothing_ran(run_dir: str | os.PathLike) -> bool:
    """Delete ``run_dir`` when it holds only Hydra's own record (a configuration error stopped the job before it
    wrote anything); True if it was deleted."""
    import shutil

    path = Path(run_dir)
    if not path.is_dir() or {entry.name for entry in path.iterdir()} - HYDRA_ONLY:
        return False
    shutil.rmtree(path, ignore_errors=True)
    return True


def run_job(cfg) -> float | None:
    """Hydra's task function: train and test, print a configuration error as one paragraph and exit 2 (removing
    the run directory Hydra made for it, which would hold only Hydra's record)."""
    from tasks.app.runner import objective_value, train

    try:
        with exit_on_config_error():
            return objective_value(cfg, train(cfg))
    except SystemExit as exc:
        if exc.code == 2:
            remove_if_nothing_ran(cfg.paths.output_dir)
        raise


def train() -> None:
    """``zoo-train`` / ``python tools/train.py``: the Hydra front end."""
    import hydra

    with exit_on_config_error():
        path = config_dir()
    hydra.main(version_base="1.3", config_path=path, config_name="train")(run_job)()


def cli() -> None:
    """``zoo-cli`` / ``python tools/cli.py``: the LightningCLI front end."""
    from tasks.app.cli import make_cli

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
        matching = set(registry.names(args.pattern)) if args.pattern else None
        for name in registry.names(aliases=False):
            aliases = registry.aliases(name)
            if matching is not None and not matching & {name, *aliases}:
                continue
            entry = registry.entry(name)
            preset = f"  {entry.defaults}" if entry.defaults else ""
            also = f"  (alias: {', '.join(aliases)})" if aliases else ""
            print(f"  {name:<28} {getattr(entry.obj, '__qualname__', entry.obj)}{preset}{also}")


def _compose(overrides: list[str], defaults: list[str]):
    """``conf/train.yaml`` composed with ``defaults`` (where the user did not set that key) and ``overrides``."""
    from hydra import compose, initialize_config_dir

    from tasks.app.runner import register_resolvers

    register_resolvers()
    keys = {o.split("=", 1)[0].lstrip("+~") for o in overrides}
    extra = [d for d in defaults if d.split("=", 1)[0] not in keys]
    with initialize_config_dir(config_dir=config_dir(), version_base="1.3"):
        return compose(config_name="train", overrides=[*extra, *overrides])


def count_params(argv: list[str] | None = None) -> dict[str, Any]:
    """``python tools/count_params.py [--json] [--world-size N] [overrides]``: total and active parameters of
    ``model``; with ``--world-size`` also what FSDP2 keeps per rank (:func:`sharded_bytes`)."""
    import json

    import torch
    from omegaconf import OmegaConf

    from zoo.registries import MODEL

    args = list(sys.argv[1:] if argv is None else argv)
    as_json = "--json" in args
    world_size = None
    if "--world-size" in args:
        at = args.index("--world-size")
        with exit_on_config_error():
            if at + 1 >= len(args) or not args[at + 1].isdigit() or int(args[at + 1]) < 1:
                raise ConfigError("--world-size needs a positive number of ranks, e.g. --world-size 64")
        world_size = int(args[at + 1])
        del args[at : at + 2]
    overrides = [a for a in args if a != "--json"]
    with exit_on_config_error():
        cfg = _compose(overrides, ["task=lm"])
        model_cfg = OmegaConf.to_container(cfg.model, resolve=True)
        with torch.device("meta"):
            model = MODEL.build(model_cfg.get("arch", "hybrid_lm"), model_cfg["config"])
    counts: dict[str, Any] = model.count_params()
    if world_size is not None:
        counts["per_rank"] = sharded_bytes(model, world_size)
    if as_json:
        print(json.dumps(counts))
    else:
        parts = [k for k in ("vision_tower", "projector", "language_model") if k in counts]  # vision-language
        width = 14 if parts else 10
        for key in ("total", "active", "embedding", "lm_head", *parts):
            print(f"{key:>{width}}: {counts[key]:>17,}  ({counts[key] / 1e9:.3f}B)")
        print("active = per-token parameters without the embedding and LM head (top-k of E experts)")
        if parts:
            print("active, embedding and lm_head are the language model's; projector includes image_newline")
        if world_size is not None:
            r = counts["per_rank"]
            print(
                f"FSDP2 over {world_size} ranks, per rank: {r['params']:,} parameters; fp32 parameters "
                f"{r['param_gib']:.2f} GiB + gradients {r['grad_gib']:.2f} GiB + AdamW states {r['adam_gib']:.2f} GiB"
                f" = {r['total_gib']:.2f} GiB; the largest gathered block in bf16 {r['largest_block_gib']:.2f} GiB"
            )
    return counts


def sharded_bytes(model: Any, world_size: int) -> dict[str, float]:
    """What FSDP2 (``fully_shard`` per block, the shard dimension padded to a multiple of the ranks,
    :func:`zoo.parallel.fsdp.shard_dim`) keeps per rank for ``model``
    (counted on the meta device: nothing is allocated): fp32 parameters and gradients, AdamW's two fp32 states,
    and the largest block gathered in bf16 during its forward."""
    import math

    from zoo.parallel.fsdp import shard_dim

    def local(param) -> int:
        if not param.dim():
            return 1
        dim = shard_dim(param.shape, world_size)
        return math.ceil(param.shape[dim] / world_size) * (param.numel() // param.shape[dim])

    params = sum(local(p) for p in model.parameters())
    largest = max((sum(p.numel() for p in b.parameters()) for b in model.blocks()), default=0)
    gib = 2**30
    return {
        "world_size": world_size,
        "params": params,
        "param_gib": 4 * params / gib,
        "grad_gib": 4 * params / gib,
        "adam_gib": 8 * params / gib,
        "total_gib": 16 * params / gib,
        "largest_block_gib": 2 * largest / gib,
    }


def generate(argv: list[str] | None = None) -> list[str]:
    """``python tools/generate.py CKPT [--prompt …] [--image PATH …]``: sample continuations
    (:func:`zoo.generation.generate`); with a ``task=vlm`` checkpoint, answer ``--prompt`` about the ``--image`` s
    (their tiles' features in the prefill)."""
    import time

    import torch

    from tasks.data.tokenizer import ByteTokenizer, tokenizer_from_checkpoint
    from tasks.lm import LMTask
    from zoo.generation import generate as generate_tokens

    parser = argparse.ArgumentParser(prog="zoo-generate", description="Sample from a task=lm or task=vlm checkpoint.")
    parser.add_argument("checkpoint", help="a .ckpt file written by tools/train.py task=lm or task=vlm")
    parser.add_argument("--prompt", default="", help="text to continue (default: start of a document); with "
                        "--image: the user's question")  # fmt: skip
    parser.add_argument("--image", action="append", default=[], help="an image for a task=vlm checkpoint (may be "
                        "repeated; each becomes one <image> before the prompt)")  # fmt: skip
    parser.add_argument("--max-new-tokens", type=int, default=200)
    parser.add_argument("--temperature", type=float, default=0.8, help="0 = greedy")
    parser.add_argument("--top-p", type=float, default=0.95)
    parser.add_argument("--top-k", type=int, default=0, help="0 = off")
    parser.add_argument("--num-samples", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args(argv)
    with exit_on_config_error():
        if not Path(args.checkpoint).is_file():
            raise ConfigError(f"checkpoint {args.checkpoint} does not exist")
        checkpoint = torch.load(args.checkpoint, map_location="cpu", weights_only=False)
        vision = checkpoint.get("zoo_task_class") == "VLMTask"
        if args.image and not vision:
            raise ConfigError(f"--image needs a task=vlm checkpoint; {args.checkpoint} is not one")
        tokenizer = ByteTokenizer() if vision else tokenizer_from_checkpoint(checkpoint)
    if vision:
        from tasks.vlm import VLMTask

        model = VLMTask.load_from_checkpoint(args.checkpoint, map_location=args.device).model.eval()
        with exit_on_config_error():
            ids, embeds = _vision_prompt(model, args.prompt, args.image, tokenizer)
        embeds = [embeds] * args.num_samples
    else:
        model = LMTask.load_from_checkpoint(args.checkpoint, map_location=args.device).model.eval()
        ids = tokenizer.encode(args.prompt) if args.prompt else [tokenizer.eos_id]
        embeds = None
    start = time.perf_counter()
    out = generate_tokens(
        model, [ids] * args.num_samples, args.max_new_tokens, temperature=args.temperature, top_p=args.top_p,
        top_k=args.top_k, eos=tokenizer.eos_id, seed=args.seed, inputs_embeds=embeds,
    )  # fmt: skip
    seconds = time.perf_counter() - start
    texts = []
    for new in out.tokens:
        if tokenizer.eos_id in new:
            new = new[: new.index(tokenizer.eos_id)]
        texts.append(("" if vision else args.prompt) + tokenizer.decode(new))
    for i, text in enumerate(texts):
        print(f"--- sample {i} ---\n{text}")
    generated = sum(len(new) for new in out.tokens)
    print(
        f"--- {generated} tokens in {seconds:.2f} s ({generated / seconds:.0f} tokens/s, {args.device})",
        file=sys.stderr,
    )
    return texts


def _vision_prompt(model: Any, prompt: str, images: list[str], tokenizer: Any) -> tuple[list[int], Any]:
    """The prompt ids of a one-turn conversation about ``images`` (``USER: <image>…\n{prompt}\nASSISTANT: ``, as
    :mod:`tasks.data.vlm` renders it) and their embeddings ``[L, d]`` with the images' features spliced in."""
    import torch
    from PIL import Image

    from tasks.data.vlm import IMAGE_TAG, encode_prompt
    from zoo.vision_language.tiling import image_token_count

    tiles, grids = [], []
    for path in images:
        if not Path(path).is_file():
            raise ConfigError(f"--image {path} does not exist")
        with Image.open(path) as image:
            t, grid = model.tiling(image)
        tiles.append(t)
        grids.append(grid)
    record = {"id": "prompt", "conversations": [{"from": "human", "value": IMAGE_TAG * len(images) + "\n" + prompt},
                                                {"from": "gpt", "value": ""}]}  # fmt: skip
    counts = [image_token_count(grid, model.patches_per_tile) for grid in grids]
    ids, _ = encode_prompt(record, counts, tokenizer, model.image_token_id)
    device = next(model.parameters()).device
    with torch.no_grad():
        pixels = torch.cat(tiles).to(device) if tiles else None
        grid_tensor = torch.tensor(grids, dtype=torch.int64, device=device) if grids else None
        embeds = model.embed(torch.tensor([ids], device=device), pixels, grid_tensor)[0]
    return ids, embeds


def consolidate(argv: list[str] | None = None) -> dict[str, str]:
    """``python tools/consolidate.py CKPT_DIR --output model.safetensors [--ckpt one.ckpt] [--hf DIR]``: turn a
    distributed checkpoint of ``strategy=fsdp2`` (a directory of shards and ``meta.pt``) into one safetensors file
    of the model's weights, optionally a single-file Lightning checkpoint (for ``tools/generate.py`` and
    ``ckpt_path=``) and a Hugging Face ``transformers`` export (``task=lm`` with the hybrid LM). Runs in one
    process on the CPU; every file is written atomically."""
    import tempfile

    import torch
    from safetensors.torch import save as safetensors_bytes
    from torch.distributed.checkpoint.format_utils import dcp_to_torch_save

    from zoo.io import atomic_write

    parser = argparse.ArgumentParser(prog="zoo-consolidate", description="Consolidate a sharded checkpoint.")
    parser.add_argument("checkpoint", help="a distributed checkpoint directory (e.g. checkpoints/last.ckpt)")
    parser.add_argument("--output", required=True, help="the safetensors file of the model's weights")
    parser.add_argument("--ckpt", help="also write a single-file Lightning checkpoint here")
    parser.add_argument("--hf", help="also export to a transformers directory here (task=lm, hybrid_lm)")
    args = parser.parse_args(argv)
    with exit_on_config_error():
        source = Path(args.checkpoint)
        if not (source / "meta.pt").is_file():
            raise ConfigError(f"{source} is not a distributed checkpoint (no meta.pt inside); nothing to consolidate")
        with tempfile.TemporaryDirectory() as tmp:
            dcp_to_torch_save(source, Path(tmp) / "full.pt")
            shards = torch.load(Path(tmp) / "full.pt", weights_only=False)
        checkpoint = {**torch.load(source / "meta.pt", weights_only=False), "state_dict": shards["state_dict"]}
        checkpoint["optimizer_states"] = [shards[k] for k in sorted(shards) if k.startswith("optimizer_")]
        task = _task_from_checkpoint(checkpoint)
    written = {}
    weights = {k: v.contiguous() for k, v in _model_of(task).state_dict().items()}
    with atomic_write(args.output, "wb") as handle:
        handle.write(safetensors_bytes(weights))
    written["safetensors"] = args.output
    if args.ckpt:
        with atomic_write(args.ckpt, "wb") as handle:
            torch.save(checkpoint, handle)
        written["ckpt"] = args.ckpt
    if args.hf:
        from zoo.interop import to_hf

        written["hf"] = str(to_hf(_model_of(task), args.hf))
    for kind, path in written.items():
        print(f"{kind}: {path}")
    return written


def _task_from_checkpoint(checkpoint: dict) -> Any:
    """The LightningModule a consolidated checkpoint describes, with its weights loaded (strictly): the task class
    the checkpoint names (``zoo_task_class``, written by every zoo task), else the one task whose ``__init__``
    takes all of its hyperparameters."""
    import inspect

    from zoo.registries import TASK

    hparams = dict(checkpoint.get("hyper_parameters") or {})
    classes = [TASK.get(name) for name in TASK.names(aliases=False)]
    named = [cls for cls in classes if cls.__name__ == checkpoint.get("zoo_task_class")]
    fitting = [cls for cls in classes if hparams and set(hparams) <= set(inspect.signature(cls.__init__).parameters)]
    chosen = named or fitting
    if len(chosen) != 1:
        raise ConfigError("the checkpoint's task cannot be told: it names no registered task and its hyperparameters "
                          f"fit {len(chosen)} of them")  # fmt: skip
    task = chosen[0](**hparams)
    task.load_state_dict(checkpoint["state_dict"])
    return task


def _model_of(task: Any) -> Any:
    modules = task.parallel_modules() if hasattr(task, "parallel_modules") else []
    return modules[0] if modules else task
