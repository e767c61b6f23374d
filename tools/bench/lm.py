#!/usr/bin/env python
"""Throughput of the hybrid MoE language model: training tokens/s and MFU, cached generation, MoE vs dense FFN.

    python tools/bench/lm.py --output docs/bench/lm_h100.json --plot docs/bench/lm_h100.png           # GPU
    python tools/bench/lm.py --device cpu --preset tiny --lengths 256 --tokens 2048 --gen-prompt 256    # smoke

Sections (``--sections train generate moe``):

- ``train``: one AdamW step (forward, backward, optimizer) on ``--tokens`` tokens per step (B = tokens / T) at each
  length T, bf16 autocast, for three attention patterns of the same model: ``hybrid`` (``LLLLLLLS``),
  ``softmax`` (every layer softmax) and ``lightning`` (every layer lightning). Tokens/s is the median over timed
  steps; MFU = tokens/s · FLOPs per token (``zoo.models.training_flops_per_token``) / the bf16 matmul peak measured
  in the same run (and Lightning's datasheet peak where it knows the card).
- ``generate``: tokens/s of cached decoding at batch 1 and 32 after a ``--gen-prompt``-token prompt (prefilled in
  chunks through the kernels), hybrid vs all-softmax.
- ``moe``: the MoE layer against a dense SwiGLU of equal active FLOPs (``tools/bench/moe.py``).
- ``strategies``: the preset trained under ``strategy=fsdp2`` (world 1) ± activation checkpointing against the
  plain single-device step: tokens/s and peak memory (``tools/bench/sharded.py``).
- ``largest``: the largest model of a size ladder that trains on one device with FSDP2 and full activation
  checkpointing, with and without CPU offload (``tools/bench/sharded.py``).

    python tools/bench/lm.py --sections strategies largest --output docs/bench/lm_strategies_h200.json
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path
from typing import Any

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tools.bench import moe as moe_bench
from tools.bench import sharded
from tools.bench.moe import time_step
from zoo.io import write_json
from zoo.models import HybridLM, HybridLMConfig, training_flops_per_token

PATTERNS = {"hybrid": "LLLLLLLS", "softmax": "S", "lightning": "L"}
LOSSES = ("fused", "unfused")  # the LM head + CE fused and chunked (HybridLM.forward_loss) | logits, then CE
STEP_CATEGORIES = ("gemm", "attention", "moe_routing", "elementwise", "other")
ATTENTION_OPS = ("scaled_dot_product", "flash_attention", "efficient_attention", "cudnn_attention")
LIGHTNING_KERNELS = ("_chunk_fwd_kernel", "_chunk_bwd", "_segment_summary_kernel", "_segment_scan_kernel")
PRESETS = {
    # conf/model/small.yaml (vocab of a 32K BPE)
    "small": dict(
        vocab_size=32768, hidden_size=768, num_layers=16, num_heads=12, num_kv_heads=4, head_dim=64,
        intermediate_size=1024, num_experts=8, top_k=2, moe_kwargs={"aux_loss_coef": 0.001},
    ),
    "tiny": dict(
        vocab_size=257, hidden_size=128, num_layers=4, num_heads=4, num_kv_heads=2, head_dim=32,
        intermediate_size=256, num_experts=4, top_k=2,
    ),
}  # fmt: skip


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def matmul_peak(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    a = torch.randn(8192, 8192, device=device, dtype=torch.bfloat16)
    seconds = time_step(lambda: a @ a, device, 5, 20)
    return 2 * 8192**3 / seconds


def build(
    preset: str, pattern: str, device: torch.device, compile_layers: bool = False, mode: str | None = None
) -> HybridLM:
    shape = PRESETS[preset]
    letters = PATTERNS[pattern]
    if len(letters) > shape["num_layers"]:  # a shallow preset: the last layer softmax
        letters = "L" * (shape["num_layers"] - 1) + "S"
    config = HybridLMConfig(**shape, attention=letters)
    model = HybridLM(config).to(device)
    if compile_layers:  # torch.compile each decoder layer (fuses the norms, gates, residuals and casts)
        for layer in model.model.layers:
            layer.compile(**({} if mode in (None, "default") else {"mode": mode}))
    return model


def step_category(op: str, kernel: str) -> str:
    """The :data:`STEP_CATEGORIES` entry of a kernel of a training step (``kernel`` launched by ``op``, as
    :func:`tools.bench.moe.kernel_times` pairs them): softmax attention (SDPA / flash / cuDNN) and the
    lightning-attention kernels are ``attention``; the rest as :func:`tools.bench.moe.kernel_category` sorts it (its
    ``routing``: ``moe_routing``)."""
    if any(part in name for name in (op, kernel) for part in ATTENTION_OPS) or kernel.startswith(LIGHTNING_KERNELS):
        return "attention"
    category = moe_bench.kernel_category(op, kernel)
    return "moe_routing" if category == "routing" else category


def profile_train_step(step, device: torch.device, repeats: int, top: int = 0) -> dict[str, Any]:
    """Device milliseconds per training ``step`` by :data:`STEP_CATEGORIES` (CPU milliseconds on the CPU), from
    ``torch.profiler`` over ``repeats`` steps after one unprofiled step, each kernel counted once
    (:func:`tools.bench.moe.kernel_times`); ``total`` is their sum. With ``top``, ``"top"`` lists the ``top``
    costliest kernels: ``{"name", "op", "category", "ms", "calls"}`` per step."""
    from torch.profiler import ProfilerActivity, profile

    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for _ in range(max(repeats, 1)):
            step()
        sync(device)
    steps = max(repeats, 1)
    totals: dict[str, Any] = dict.fromkeys(STEP_CATEGORIES, 0.0)
    kernels: dict[tuple[str, str], list[float]] = {}
    for op, kernel, us in moe_bench.kernel_times(prof.events(), device.type == "cuda"):
        totals[step_category(op, kernel)] += us / 1e3 / steps
        kernels.setdefault((kernel, op), []).append(us / 1e3 / steps)
    totals["total"] = sum(totals[c] for c in STEP_CATEGORIES)
    if top:
        costly = [
            {"name": kernel[:100], "op": op[:60], "category": step_category(op, kernel), "ms": sum(ms),
             "calls": len(ms) / steps}
            for (kernel, op), ms in kernels.items()
        ]  # fmt: skip
        totals["top"] = sorted(costly, key=lambda e: -e["ms"])[:top]
    return totals


def train_case(args, pattern: str, length: int, peak: float | None, loss: str = "fused") -> dict:
    device = torch.device(args.device)
    model = build(args.preset, pattern, device, compile_layers=args.compile, mode=args.compile_mode)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    batch = max(1, args.tokens // length)
    ids = torch.randint(0, model.config.vocab_size, (batch, length + 1), device=device)
    step = sharded.train_step(model, optimizer, ids, autocast=device.type == "cuda", fused_loss=loss == "fused")
    if args.compile and args.compile_mode == "reduce-overhead":  # CUDA graphs: a new iteration's outputs each step
        graphed = step

        def step() -> None:
            torch.compiler.cudagraph_mark_step_begin()
            graphed()

    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    seconds = time_step(step, device, args.warmup, args.repeats)
    tokens_per_s = batch * length / seconds
    flops = training_flops_per_token(model.config, length)
    row = {
        "pattern": pattern, "loss": loss, "T": length, "B": batch, "ms_per_step": 1e3 * seconds,
        "tokens_per_s": tokens_per_s, "tflops": tokens_per_s * flops / 1e12,
        "mfu_measured_peak": tokens_per_s * flops / peak if peak else None,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
    }  # fmt: skip
    if length in args.profile_lengths:
        row["profile_ms"] = profile_train_step(step, device, max(1, args.repeats // 2), args.top_kernels)
    return row


@torch.no_grad()
def generate_case(args, pattern: str, batch: int) -> dict:
    device = torch.device(args.device)
    model = build(args.preset, pattern, device).eval()
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    model.to(dtype)
    prompt = torch.randint(0, model.config.vocab_size, (batch, args.gen_prompt), device=device)

    def prefill():
        cache = model.new_cache()
        for start in range(0, args.gen_prompt, args.prefill_chunk):
            logits = model(prompt[:, start : start + args.prefill_chunk], cache=cache)
        return cache, logits[:, -1].argmax(-1, keepdim=True)

    with torch.no_grad():  # warm-up: compile every kernel variant (prefill with a state, decode) first
        cache = model.new_cache()
        model(prompt[:, : min(args.prefill_chunk, args.gen_prompt)], cache=cache)
        model(prompt[:, :1], cache=cache)
        model(prompt[:, :1], cache=cache)
    sync(device)
    start = time.perf_counter()
    cache, token = prefill()
    sync(device)
    prefill_s = time.perf_counter() - start
    steps = args.gen_tokens
    start = time.perf_counter()
    for _ in range(steps):
        token = model(token, cache=cache)[:, -1].argmax(-1, keepdim=True)
    sync(device)
    decode_s = time.perf_counter() - start
    row = {
        "pattern": pattern, "batch": batch, "prompt": args.gen_prompt, "prefill_s": prefill_s,
        "prefill_tokens_per_s": batch * args.gen_prompt / prefill_s, "decode_tokens_per_s": batch * steps / decode_s,
        "ms_per_decode_step": 1e3 * decode_s / steps,
    }  # fmt: skip
    return row


def print_table(title: str, rows: list[dict], keys: list[str]) -> None:
    print(f"\n### {title}\n")
    print("| " + " | ".join(keys) + " |")
    print("|" + "---|" * len(keys))
    for row in rows:
        cells = []
        for key in keys:
            value = row.get(key)
            cells.append(f"{value:,.3g}" if isinstance(value, float) else str(value))
        print("| " + " | ".join(cells) + " |")


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 4))
    for pattern in PATTERNS:
        rows = [r for r in result.get("train", []) if r["pattern"] == pattern]
        if rows:
            ax.plot([r["T"] for r in rows], [r["tokens_per_s"] for r in rows], marker="o", label=pattern)
    ax.set_xscale("log", base=2)
    ax.set_xlabel("sequence length T")
    ax.set_ylabel("training tokens/s")
    ax.set_title(f"{result['preset']} LM training throughput, {result['device']}")
    ax.legend()
    ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--sections", nargs="+", default=["train", "generate", "moe"])
    parser.add_argument("--patterns", nargs="+", default=list(PATTERNS), choices=list(PATTERNS))
    parser.add_argument("--lengths", nargs="+", type=int, default=[2048, 8192, 32768])
    parser.add_argument("--tokens", type=int, default=32768, help="tokens per training step")
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--repeats", type=int, default=10)
    parser.add_argument("--gen-prompt", type=int, default=32768)
    parser.add_argument("--gen-tokens", type=int, default=64)
    parser.add_argument("--gen-batches", nargs="+", type=int, default=[1, 32])
    parser.add_argument("--prefill-chunk", type=int, default=4096)
    parser.add_argument("--compile", action="store_true", help="torch.compile each decoder layer (training)")
    parser.add_argument(
        "--compile-mode",
        default="default",
        choices=("default", "reduce-overhead", "max-autotune"),
        help="torch.compile mode of the layers (reduce-overhead: replayed as CUDA graphs)",
    )
    parser.add_argument("--losses", nargs="+", default=["fused"], choices=LOSSES, help="training: LM-head loss paths")
    parser.add_argument("--profile-lengths", nargs="*", type=int, default=[], help="training: profile these T")
    parser.add_argument("--top-kernels", type=int, default=0, help="profiled steps: list the N costliest ops/kernels")
    parser.add_argument("--strategy-lengths", nargs="+", type=int, default=[2048, 8192])
    parser.add_argument("--largest-models", nargs="+", default=list(sharded.LADDER), choices=list(sharded.LADDER))
    parser.add_argument("--largest-offload", nargs="+", type=int, default=[0, 1], help="1: with CPU offload")
    parser.add_argument("--largest-length", type=int, default=4096)
    parser.add_argument("--largest-tokens", type=int, default=8192)
    parser.add_argument("--largest-steps", type=int, default=2)
    parser.add_argument("--partial-output", type=Path, help="rewrite the results after every ladder case here")
    parser.add_argument("--output", type=Path)
    parser.add_argument("--plot", type=Path)
    args = parser.parse_args(argv)
    device = torch.device(args.device)
    torch.manual_seed(0)
    result: dict = {"preset": args.preset, "device": torch.cuda.get_device_name() if device.type == "cuda" else "cpu"}
    result["torch"] = torch.__version__
    result["compile"] = args.compile
    result["compile_mode"] = args.compile_mode
    if "largest" in args.sections:  # first: each size in a fresh process while this one holds no device memory
        args.largest_offload = [bool(x) for x in args.largest_offload]
        result["largest"] = sharded.largest(args)
        print_table(
            f"largest model on one device (FSDP2, full AC, T={args.largest_length}, {result['device']})",
            result["largest"],
            ["model", "cpu_offload", "status", "params_b", "active_b", "build_s", "ms_per_step", "tokens_per_s",
             "peak_gb"],
        )  # fmt: skip
    peak = matmul_peak(device)
    result["matmul_peak_tflops"] = peak / 1e12 if peak else None
    if "train" in args.sections:
        result["train"] = []
        for t in args.lengths:
            for p in args.patterns:
                for loss in args.losses:
                    result["train"].append(train_case(args, p, t, peak, loss))
                    if device.type == "cuda":
                        torch.cuda.empty_cache()
        by = {(r["pattern"], r["loss"], r["T"]): r["tokens_per_s"] for r in result["train"]}
        for row in result["train"]:
            soft = by.get(("softmax", row["loss"], row["T"]))
            row["vs_softmax"] = row["tokens_per_s"] / soft if soft else None
        print_table(
            f"training ({args.preset}, {args.tokens} tokens/step, {result['device']})",
            result["train"],
            [
                "pattern",
                "loss",
                "T",
                "B",
                "ms_per_step",
                "tokens_per_s",
                "vs_softmax",
                "tflops",
                "mfu_measured_peak",
                "peak_gb",
            ],
        )
        profiled = [r for r in result["train"] if "profile_ms" in r]
        if profiled:
            rows = [{"pattern": r["pattern"], "loss": r["loss"], "T": r["T"], **r["profile_ms"]} for r in profiled]
            print_table("training step by kind of work (device ms)", rows,
                        ["pattern", "loss", "T", *STEP_CATEGORIES, "total"])  # fmt: skip
            for r in profiled:
                if r["profile_ms"].get("top"):
                    print_table(f"costliest ops, {r['pattern']} {r['loss']} T={r['T']} (device ms per step)",
                                r["profile_ms"]["top"], ["name", "op", "category", "ms", "calls"])  # fmt: skip
    if "generate" in args.sections:
        patterns = [p for p in ("hybrid", "softmax") if p in args.patterns]
        result["generate"] = [generate_case(args, p, b) for b in args.gen_batches for p in patterns]
        print_table(
            f"generation after a {args.gen_prompt}-token prompt",
            result["generate"],
            ["pattern", "batch", "prefill_s", "prefill_tokens_per_s", "decode_tokens_per_s", "ms_per_decode_step"],
        )
    if "moe" in args.sections:
        shape = PRESETS[args.preset]
        moe_args = [
            "--device", args.device, "--dim", str(shape["hidden_size"]), "--hidden", str(shape["intermediate_size"]),
            "--experts", str(shape["num_experts"]), "--top-k", str(shape["top_k"]), "--tokens", str(args.tokens),
        ]  # fmt: skip
        result["moe"] = moe_bench.main(moe_args)
    if "strategies" in args.sections:
        result["strategies"] = sharded.strategies(args, PRESETS[args.preset])
        if args.partial_output:
            write_json(args.partial_output, result)
        print_table(
            f"strategies ({args.preset}, {args.tokens} tokens/step, world 1, {result['device']})",
            result["strategies"],
            ["strategy", "activation_checkpointing", "T", "B", "ms_per_step", "tokens_per_s", "vs_single", "peak_gb",
             "memory_vs_single"],
        )  # fmt: skip
    if args.output:
        write_json(args.output, result)
    if args.plot and result.get("train"):
        plot(result, args.plot)
    return result


if __name__ == "__main__":
    main()
