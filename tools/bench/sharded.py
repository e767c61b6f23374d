"""The ``strategies`` and ``largest`` sections of ``tools/bench/lm.py``: the hybrid LM trained under the zoo's
parallelism plan (``zoo.parallel.parallelize``: FSDP2 ± activation checkpointing ± CPU offload) in one process
(world size 1), against the plain single-device step, and the largest model of a size ladder that trains on one
device.

- ``strategies``: one AdamW step per row on ``--tokens`` tokens at each ``--strategy-lengths`` T, for ``single`` (fp32
  parameters, bf16 autocast: what ``strategy=single`` with ``trainer=gpu`` runs) and ``fsdp2`` (bf16 compute
  parameters, fp32 sharded master weights and gradient reduction: ``strategy=fsdp2``) with
  ``activation_checkpointing`` ``none`` / ``selective`` / ``full``; tokens/s and the peak memory allocated.
- ``largest``: for each model of :data:`LADDER` (MiniMax's shape, smaller), a child process builds it on the meta
  device, shards it (FSDP2, full activation checkpointing, optionally CPU offload), initialises it shard by shard and
  trains ``--largest-steps`` steps; the ladder stops at the first size that runs out of memory. A child that dies
  (host memory) is recorded, not fatal.
"""

from __future__ import annotations

import multiprocessing as mp
import tempfile
import time
from typing import Any

import torch
import torch.nn.functional as F

from zoo.models import HybridLM, HybridLMConfig, training_flops_per_token

STRATEGIES = [("single", "none"), ("fsdp2", "none"), ("fsdp2", "selective"), ("fsdp2", "full")]


def _shape(hidden: int, layers: int, experts: int, inner: int) -> dict[str, Any]:
    heads = hidden // 128
    return dict(
        vocab_size=32768, hidden_size=hidden, num_layers=layers, num_heads=heads, num_kv_heads=max(1, heads // 4),
        head_dim=128, intermediate_size=inner, num_experts=experts, top_k=2,
        attention="LLLLLLLS" if layers >= 8 else "L" * (layers - 1) + "S",
        moe_kwargs={"aux_loss_coef": 0.001},
    )  # fmt: skip


#: MiniMax-Text-01's shape (head 128, GQA 4:1, LLLLLLLS, top-2 experts), scaled down; total parameters in the name.
LADDER = {
    "0.06b": _shape(512, 4, 8, 512),  # a CPU smoke test's size
    "2.1b": _shape(1536, 16, 16, 1536),
    "3.7b": _shape(2048, 16, 16, 2048),
    "5.7b": _shape(2048, 16, 26, 2048),
    "7.7b": _shape(2048, 18, 32, 2048),
    "8.6b": _shape(2048, 20, 32, 2048),
    "10.3b": _shape(2048, 24, 32, 2048),
}


def ensure_process_group(device: torch.device) -> None:
    """A world of one process (FSDP2 needs a process group and a mesh even then)."""
    import torch.distributed as dist

    if dist.is_initialized():
        return
    path = tempfile.mktemp(prefix="zoo_bench_pg_")
    backend = "nccl" if device.type == "cuda" else "gloo"
    dist.init_process_group(backend, init_method=f"file://{path}", rank=0, world_size=1)


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize()


def _timed_steps(step, device: torch.device, warmup: int, repeats: int) -> float:
    """Median wall seconds of ``step`` (synchronised; CPU-offloaded optimizer steps run on the host)."""
    for _ in range(warmup):
        step()
    _sync(device)
    times = []
    for _ in range(max(1, repeats)):
        start = time.perf_counter()
        step()
        _sync(device)
        times.append(time.perf_counter() - start)
    times.sort()
    return times[len(times) // 2]


def build_sharded(
    shape: dict[str, Any], device: torch.device, ac: str, offload: bool, on_meta: bool
) -> tuple[HybridLM, Any]:
    """The hybrid LM of ``shape`` under the zoo's FSDP2 plan on a world of one; built on the meta device and
    initialised shard by shard when ``on_meta``."""
    from torch.distributed.device_mesh import init_device_mesh

    from zoo.parallel import ParallelPlan, materialize_, parallelize

    ensure_process_group(device)
    config = HybridLMConfig(**shape)
    if on_meta:
        with torch.device("meta"):
            model = HybridLM(config)
    else:
        model = HybridLM(config).to(device)
    plan = ParallelPlan(activation_checkpointing=ac, cpu_offload=offload, param_dtype="bf16")
    parallelize(model, init_device_mesh(device.type, (1,)), plan)
    if on_meta:
        materialize_(model, device, param_device="cpu" if offload else None)
    return model, plan


def train_step(model: HybridLM, optimizer: Any, ids: torch.Tensor, autocast: bool, fused_loss: bool = False):
    """One AdamW step of next-token CE + the MoE loss on ``ids`` ``[B, T+1]`` (bf16 autocast if ``autocast``);
    ``fused_loss``: the LM head and CE fused (:meth:`HybridLM.forward_loss`, no ``[B, T, vocab]`` logits)."""

    def step() -> None:
        with torch.autocast(ids.device.type, dtype=torch.bfloat16, enabled=autocast):
            if fused_loss:
                loss = model.forward_loss(ids[:, :-1], ids[:, 1:])
            else:
                logits = model(ids[:, :-1])
                loss = F.cross_entropy(logits.flatten(0, 1).float(), ids[:, 1:].flatten())
            aux = model.moe_loss()
            if aux is not None:
                loss = loss + aux
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)

    return step


def strategy_case(args: Any, shape: dict[str, Any], strategy: str, ac: str, length: int) -> dict[str, Any]:
    device = torch.device(args.device)
    torch.manual_seed(0)
    if strategy == "single":
        model = HybridLM(HybridLMConfig(**shape)).to(device)
    else:
        model, _ = build_sharded(shape, device, ac, offload=False, on_meta=False)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), fused=device.type == "cuda")
    batch = max(1, args.tokens // length)
    ids = torch.randint(0, shape["vocab_size"], (batch, length + 1), device=device)
    step = train_step(model, optimizer, ids, autocast=strategy == "single" and device.type == "cuda")
    if device.type == "cuda":
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    seconds = _timed_steps(step, device, args.warmup, args.repeats)
    tokens_per_s = batch * length / seconds
    return {
        "strategy": strategy, "activation_checkpointing": ac, "T": length, "B": batch, "ms_per_step": 1e3 * seconds,
        "tokens_per_s": tokens_per_s,
        "tflops": tokens_per_s * training_flops_per_token(HybridLMConfig(**shape), length) / 1e12,
        "peak_gb": torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
    }  # fmt: skip


def strategies(args: Any, shape: dict[str, Any]) -> list[dict[str, Any]]:
    rows = []
    for length in args.strategy_lengths:
        for strategy, ac in STRATEGIES:
            rows.append(strategy_case(args, shape, strategy, ac, length))
            if torch.cuda.is_available():
                torch.cuda.empty_cache()
        single = next(r for r in rows if r["T"] == length and r["strategy"] == "single")
        for row in rows:
            if row["T"] == length:
                row["vs_single"] = row["tokens_per_s"] / single["tokens_per_s"]
                row["memory_vs_single"] = row["peak_gb"] / single["peak_gb"] if single["peak_gb"] else None
    return rows


def _largest_child(name: str, offload: bool, args: dict[str, Any], queue: Any) -> None:
    device = torch.device(args["device"])
    shape = LADDER[name]
    row: dict[str, Any] = {"model": name, "cpu_offload": offload, "T": args["length"]}
    try:
        torch.manual_seed(0)
        start = time.perf_counter()
        model, _ = build_sharded(shape, device, "full", offload=offload, on_meta=True)
        row["build_s"] = time.perf_counter() - start
        counts = model.count_params()
        row["params_b"], row["active_b"] = counts["total"] / 1e9, counts["active"] / 1e9
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-4, betas=(0.9, 0.95), foreach=True)
        batch = max(1, args["tokens"] // args["length"])
        ids = torch.randint(0, shape["vocab_size"], (batch, args["length"] + 1), device=device)
        if device.type == "cuda":
            torch.cuda.reset_peak_memory_stats()
        seconds = _timed_steps(train_step(model, optimizer, ids, autocast=False), device, 1, args["steps"])
        row.update(
            status="trains", ms_per_step=1e3 * seconds, tokens_per_s=batch * args["length"] / seconds,
            peak_gb=torch.cuda.max_memory_allocated() / 1e9 if device.type == "cuda" else None,
        )  # fmt: skip
    except torch.OutOfMemoryError as exc:
        row.update(status="out of device memory", error=str(exc).splitlines()[0][:200])
    except RuntimeError as exc:
        row.update(status="failed", error=str(exc).splitlines()[0][:300])
    queue.put(row)


def largest(args: Any) -> list[dict[str, Any]]:
    """Walk the ladder with and without CPU offload; each size in its own process."""
    rows: list[dict[str, Any]] = []
    context = mp.get_context("spawn")
    child_args = {"device": args.device, "length": args.largest_length, "tokens": args.largest_tokens}
    child_args["steps"] = args.largest_steps
    for offload in args.largest_offload:
        for name in args.largest_models:
            queue = context.Queue()
            process = context.Process(target=_largest_child, args=(name, offload, child_args, queue))
            process.start()
            process.join()
            if queue.empty():
                row = {"model": name, "cpu_offload": offload, "status": f"process died (exit {process.exitcode})"}
            else:
                row = queue.get()
            rows.append(row)
            print(row, flush=True)
            if args.partial_output:
                from zoo.io import write_json

                write_json(args.partial_output.with_suffix(".largest.json"), {"largest": rows})
            if row["status"] != "trains":
                break
    return rows
