#!/usr/bin/env python
"""Generation throughput: the zoo's decode engine against transformers' ``MiniMaxForCausalLM.generate`` on the
same weights, in the same run.

    python tools/bench/generate.py --output docs/bench/generate_h200.json --plot docs/bench/generate_h200.png
    python tools/bench/generate.py --device cpu --layers 2 --width 128 --vocab 512 --cases 1x64 2x64 --new-tokens 8

The model is built in transformers (``MiniMaxForCausalLM``: 16 layers of width 768, ``LLLLLLLS``, 8 experts top-2,
vocabulary 32K by default) and converted with :func:`zoo.interop.minimax.from_hf`. Both generate greedily in bf16
(fp32 on the CPU), ``--new-tokens`` tokens after random prompts. For each ``batch × prompt`` case:

- ``tokens_per_s``: new tokens (batch × n) over the wall time of the whole ``generate`` call, prefill included;
- ``ms_per_step``: one decode step, ``(t(n) − t(1)) / (n − 1)`` from a second call with one new token;
- ``floor_ms``: the step's weight-bandwidth floor, bytes read (every non-expert weight, the LM head, the experts
  the batch can touch: ``min(E, batch·k)`` per layer; caches not counted) over the copy bandwidth measured here;
  ``floor_all_ms``: every weight read once (the issue's statement of the floor: 0.79 GB / copy bandwidth);
  ``floor_fraction`` and ``floor_all_fraction``: each floor over ``ms_per_step``.

``--ablate-compile``: the engine again with its decode step captured uncompiled (``compile=False``), rows
``uncompiled`` of the JSON. ``--profile``: the kernels of one batch-1 decode step (launched from the compiled step
without its graph, under ``torch.profiler``): their count, their summed device time and the largest by time.

Also ``--rl``: the rollout phase of ``experiment=rl_addition`` (32 prompts × G = 8 of the addition environment,
``rl_tiny``'s policy), sampled at temperature 1 with the same seeds through the decode engine and through the
dynamic path that rollouts used before it.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT))

from zoo.generation import DecodeEngine, generate, generate_dynamic  # noqa: E402
from zoo.io import write_json  # noqa: E402
from zoo.models import HybridLM, HybridLMConfig  # noqa: E402

#: The hybrid pattern, repeated; a stack shorter than 8 layers keeps its last layers (ending in softmax).
PATTERN = "LLLLLLLS"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def copy_bandwidth(device: torch.device) -> float:
    """Bytes/s of a large device-to-device copy (read + write), the floor's denominator."""
    n = (1 << 28) if device.type == "cuda" else (1 << 24)
    a = torch.empty(n, dtype=torch.float32, device=device)
    b = torch.empty_like(a)
    b.copy_(a)
    sync(device)
    best = float("inf")
    for _ in range(5):
        start = time.perf_counter()
        b.copy_(a)
        sync(device)
        best = min(best, time.perf_counter() - start)
    return 2 * a.numel() * a.element_size() / best


def step_bytes(model: HybridLM, batch: int) -> int:
    """Weight bytes one decode step of ``batch`` sequences must read."""
    c = model.config
    total = 0
    for name, p in model.named_parameters():
        if "embed_tokens" in name:
            continue  # a row per token
        if "experts" in name:
            total += p.numel() * p.element_size() * min(c.num_experts, batch * c.top_k) // c.num_experts
        else:
            total += p.numel() * p.element_size()
    return total


def weight_bytes(model: HybridLM) -> int:
    return sum(p.numel() * p.element_size() for p in model.parameters())


def build_pair(args, device: torch.device, dtype: torch.dtype):
    """(transformers model, zoo model) with the same weights."""
    from zoo.interop.minimax import config_to_hf, from_hf

    config = HybridLMConfig.from_dict({
        "vocab_size": args.vocab, "hidden_size": args.width, "num_layers": args.layers,
        "attention": PATTERN[-args.layers :],
        "num_heads": args.width // 64, "num_kv_heads": max(1, args.width // 256), "head_dim": 64,
        "rope_fraction": 1.0, "ffn": "moe", "intermediate_size": args.intermediate, "num_experts": args.experts,
        "top_k": 2, "norm": "post", "rope_theta": 10000.0,
    })  # fmt: skip
    from transformers import MiniMaxForCausalLM

    torch.manual_seed(0)
    hf = MiniMaxForCausalLM(config_to_hf(config)).eval()  # fp32 while converting: the decay rates are exact
    zoo = from_hf(hf, dtype=dtype, device=device).eval()
    hf = hf.to(device=device, dtype=dtype)
    return hf, zoo


def timed(fn, device: torch.device) -> float:
    sync(device)
    start = time.perf_counter()
    fn()
    sync(device)
    return time.perf_counter() - start


@torch.no_grad()
def case(args, hf, zoo, device, batch: int, prompt: int, bandwidth: float) -> list[dict]:
    torch.manual_seed(batch * 100_003 + prompt)
    ids = torch.randint(0, args.vocab, (batch, prompt), device=device)
    lists = ids.tolist()
    n = args.new_tokens
    rows = []
    floor_ms = 1e3 * step_bytes(zoo, batch) / bandwidth
    floor_all_ms = 1e3 * weight_bytes(zoo) / bandwidth

    def run_zoo(k: int):
        return generate(zoo, lists, k)

    uncompiled = None

    def run_uncompiled(k: int):
        nonlocal uncompiled
        if uncompiled is None:
            uncompiled = DecodeEngine(zoo, batch, prompt + n, compile=False)
        return uncompiled.run(lists, k, temperature=0.0, top_p=1.0, top_k=0, eos=None,
                              seeds=torch.zeros(batch, dtype=torch.int64))  # fmt: skip

    def run_hf(k: int):
        return hf.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=k, min_new_tokens=k,
                           do_sample=False, pad_token_id=0)  # fmt: skip

    impls = [("zoo", run_zoo)]
    if hf is not None and batch * prompt <= args.hf_max_tokens:
        impls.append(("transformers", run_hf))
    if args.ablate_compile:
        impls.append(("zoo_uncompiled", run_uncompiled))
    for impl, fn in impls:
        try:
            fn(n)  # warm-up: kernels compiled, graphs captured, caches allocated
            full = min(timed(lambda f=fn: f(n), device) for _ in range(args.repeats))
            first = min(timed(lambda f=fn: f(1), device) for _ in range(args.repeats))
        except torch.OutOfMemoryError:
            torch.cuda.empty_cache()
            rows.append({"impl": impl, "batch": batch, "prompt": prompt, "new_tokens": n, "error": "out of memory"})
            continue
        ms_per_step = 1e3 * (full - first) / max(1, n - 1)
        rows.append({
            "impl": impl, "batch": batch, "prompt": prompt, "new_tokens": n, "tokens_per_s": batch * n / full,
            "ms_per_step": ms_per_step, "prefill_s": first, "floor_ms": floor_ms,
            "floor_fraction": floor_ms / ms_per_step if ms_per_step > 0 else None, "floor_all_ms": floor_all_ms,
            "floor_all_fraction": floor_all_ms / ms_per_step if ms_per_step > 0 else None,
        })  # fmt: skip
        print(json.dumps(rows[-1]), flush=True)
    del uncompiled
    return rows


@torch.no_grad()
def profile_step(zoo: HybridLM, device: torch.device, steps: int = 5) -> dict:
    """The kernels of one batch-1 greedy decode step: the engine's compiled step launched without its graph."""
    from torch.profiler import ProfilerActivity, profile

    generate(zoo, [[1, 2, 3]], 4)  # the batch-1 step exists (compiled, captured)
    engine = zoo.__dict__["_zoo_decode_engine"]
    step = next(fn for key, fn in engine.steps.items() if key[0] == 1 and key[2] is None)
    engine.step.zero_()
    step()
    sync(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        for _ in range(steps):
            engine.step.zero_()
            step()
        sync(device)
    kernels = [e for e in prof.events() if e.device_type == torch.autograd.DeviceType.CUDA]
    by_name: dict[str, list[float]] = {}
    for event in kernels:
        by_name.setdefault(event.name, []).append(event.device_time)
    top = sorted(by_name.items(), key=lambda item: -sum(item[1]))[:15]
    result = {
        "compiled": engine.compile,
        "kernels_per_step": len(kernels) / steps,
        "kernel_ms_per_step": sum(e.device_time for e in kernels) / steps / 1e3,
        "layers": zoo.config.num_layers,
        "top": [
            {"kernel": name[:120], "calls_per_step": len(times) / steps, "us_per_step": sum(times) / steps}
            for name, times in top
        ],
    }
    print("profile", json.dumps(result, indent=1), flush=True)
    return result


@torch.no_grad()
def rl_rollouts(args, device: torch.device) -> dict:
    """The rollout phase of ``experiment=rl_addition``: engine against the dynamic path, same seeds."""
    import random

    from tasks.data.tokenizer import ByteTokenizer
    from tasks.envs import AdditionEnv

    policy_config = {
        "vocab_size": 257, "hidden_size": 128, "num_layers": 4, "attention": "LLLS", "num_heads": 4,
        "num_kv_heads": 2, "head_dim": 32, "rope_fraction": 0.5, "ffn": "moe", "intermediate_size": 256,
        "num_experts": 4, "top_k": 2, "lm_head_fp32": True,
    }  # fmt: skip
    torch.manual_seed(0)
    policy = HybridLM(policy_config).to(device).eval()
    env, tokenizer = AdditionEnv(digits=2), ByteTokenizer()
    budget = env.max_answer_chars + 2
    prompts = [list(tokenizer.encode(p.prompt)) for p in env.sample(args.rl_prompts, random.Random(0))]
    rows = [p for p in prompts for _ in range(args.rl_group)]
    seeds = torch.arange(len(rows), device=device)
    result = {"prompts": args.rl_prompts, "group": args.rl_group, "max_new_tokens": budget}

    def engine():
        return generate(policy, rows, budget, temperature=1.0, eos=tokenizer.eos_id, seed=0)

    def dynamic():
        return generate_dynamic(policy, rows, budget, temperature=1.0, top_p=1.0, top_k=0, eos=tokenizer.eos_id,
                                seeds=seeds, device=device)  # fmt: skip

    for name, fn in (("engine", engine), ("dynamic", dynamic)):
        fn()
        seconds = min(timed(fn, device) for _ in range(args.repeats))
        out = fn()
        tokens = out.tokens if name == "engine" else out[0]
        result[name] = {"seconds": seconds, "tokens_per_s": sum(map(len, tokens)) / seconds,
                        "mean_length": sum(map(len, tokens)) / len(tokens)}  # fmt: skip
        print(name, json.dumps(result[name]), flush=True)
    result["speedup"] = result["dynamic"]["seconds"] / result["engine"]["seconds"]
    return result


def print_table(rows: list[dict]) -> None:
    keys = ["impl", "batch", "prompt", "new_tokens", "tokens_per_s", "ms_per_step", "floor_ms", "floor_fraction",
            "floor_all_fraction"]  # fmt: skip
    print("\n| " + " | ".join(keys) + " |\n|" + "---|" * len(keys))
    for row in rows:
        cells = [
            f"{row[k]:,.3g}" if isinstance(row.get(k), float) else str(row.get(k, row.get("error", ""))) for k in keys
        ]
        print("| " + " | ".join(cells) + " |")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    every = result["rows"] + result.get("uncompiled", [])
    for impl in ("zoo", "zoo_uncompiled", "transformers"):
        rows = sorted((r for r in every if r["impl"] == impl and "tokens_per_s" in r and r["prompt"] == 512),
                      key=lambda r: r["batch"])  # fmt: skip
        if rows:
            axes[0].plot([r["batch"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=impl)
        rows = sorted((r for r in every if r["impl"] == impl and "ms_per_step" in r and r["batch"] == 1),
                      key=lambda r: r["prompt"])  # fmt: skip
        if rows:
            axes[1].plot([r["prompt"] for r in rows], [r["ms_per_step"] for r in rows], marker="o", label=impl)
    floor = [r for r in result["rows"] if r["impl"] == "zoo" and r["batch"] == 1 and "floor_ms" in r]
    if floor:
        axes[1].axhline(floor[0]["floor_ms"], ls="--", c="gray", label="floor: the bytes a step reads")
        axes[1].axhline(floor[0]["floor_all_ms"], ls=":", c="gray", label="floor: every weight once")
    axes[0].set(xscale="log", yscale="log", xlabel="batch (prompt 512)", ylabel="generated tokens/s")
    axes[1].set(xscale="log", yscale="log", xlabel="prompt length (batch 1)", ylabel="ms per decode step")
    for ax in axes:
        ax.grid(alpha=0.3)
        ax.legend()
    fig.suptitle(f"greedy generation, {result['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--cases", nargs="+", default=["1x512", "32x512", "64x512", "256x512", "1x32768", "32x32768"],
                        help="BATCHxPROMPT")  # fmt: skip
    parser.add_argument("--new-tokens", type=int, default=128)
    parser.add_argument("--layers", type=int, default=16)
    parser.add_argument("--width", type=int, default=768)
    parser.add_argument("--intermediate", type=int, default=1024)
    parser.add_argument("--experts", type=int, default=8)
    parser.add_argument("--vocab", type=int, default=32000)
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--hf-max-tokens", type=int, default=1 << 17, help="skip transformers above batch·prompt")
    parser.add_argument("--no-hf", action="store_true")
    parser.add_argument("--ablate-compile", action="store_true", help="also the engine without torch.compile")
    parser.add_argument("--profile", action="store_true", help="the kernels of one batch-1 decode step")
    parser.add_argument("--rl", action="store_true", help="also the rl_addition rollout phase")
    parser.add_argument("--rl-prompts", type=int, default=32)
    parser.add_argument("--rl-group", type=int, default=8)
    parser.add_argument("--output", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    bandwidth = copy_bandwidth(device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    result = {"device": name, "torch": torch.__version__, "dtype": str(dtype), "copy_bandwidth_gb_s": bandwidth / 1e9}
    if args.rl:
        result["rl"] = rl_rollouts(args, device)
    hf, zoo = build_pair(args, device, dtype)
    if args.no_hf:
        hf = None
    if hf is not None:
        import transformers

        result["transformers"] = transformers.__version__
    result["weights_gb"] = weight_bytes(zoo) / 1e9
    if args.profile and device.type == "cuda":
        result["profile"] = profile_step(zoo, device)
    rows = []
    for spec in args.cases:
        batch, prompt = (int(v) for v in spec.split("x"))
        rows += case(args, hf, zoo, device, batch, prompt, bandwidth)
        result["rows"] = [r for r in rows if r["impl"] != "zoo_uncompiled"]
        result["uncompiled"] = [r for r in rows if r["impl"] == "zoo_uncompiled"]
        if args.output:  # what is done so far survives a later failure
            write_json(args.output, result)
    print_table(rows)
    if args.output:
        write_json(args.output, result)
    if args.plot:
        plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
