#!/usr/bin/env python
"""MiniMax-01's MoE layer against a dense SwiGLU of the same active FLOPs: training throughput of one layer.

    python tools/bench/moe.py --device cuda --output docs/bench/moe_h100.json     # E=32, top-2, bf16, 16K tokens
    python tools/bench/moe.py --device cpu --tokens 256 --dim 64 --hidden 128 --experts 4 --dtype fp32

Each row times forward + backward of one layer on ``--tokens`` tokens (``[tokens, dim]``, a fixed random output
gradient; the MoE's auxiliary ``loss`` is back-propagated too): the median of ``--repeats`` iterations after
``--warmup``, timed with CUDA events on the GPU and ``time.perf_counter`` on the CPU. Rows:

* ``dense``: ``SwiGLU(dim, top_k · hidden)`` — the same active expert FLOPs per token as the MoE;
* ``loop``: ``MoE(impl="loop")`` — one expert at a time (one host sync per step);
* ``grouped_mm``: ``MoE(impl="grouped_mm")`` — two grouped GEMMs over all experts, no host sync;
* ``fused``: ``MoE(impl="fused")`` — the same grouped GEMMs with the permutation, SwiGLU, weighting and k-sum fused
  into Triton kernels around them (:mod:`kernels.moe`; on the CPU its PyTorch reference);
* with ``--compile``, ``dense+compile``, ``grouped_mm+compile`` and ``fused+compile``: the same modules under
  ``torch.compile(fullgraph=True)`` (the loop cannot compile: it reads the group sizes on the host).
* with ``--cudagraphs`` (CUDA), ``dense+cudagraphs``, ``grouped_mm+cudagraphs`` and ``fused+cudagraphs``: the same
  under ``torch.compile(mode="reduce-overhead")``, forward and backward replayed as CUDA graphs (no per-launch host
  time; possible because neither path synchronises with the host). They get no ``--profile`` split.

Parameters and inputs are in ``--dtype`` (bf16 by default; the router always computes in fp32). TFLOP/s counts
the expert (or dense) matrix products only: 3 × 2 × tokens × 3 · dim · top_k · hidden for forward + backward.
``rel_err_vs_loop`` is ‖y − y_loop‖ / ‖y_loop‖ of the layer output on the same weights and input.

With ``--profile`` each row also gets ``profile_ms``: the device time of one step (CPU time on the CPU), from
``torch.profiler`` over ``--repeats`` steps, split by :func:`op_category` into ``gemm`` (dense and grouped matrix
products), ``routing`` (top-k, sorts, counts, gathers and scatters; :mod:`kernels.moe`'s row-moving kernels
``_moe_dispatch_kernel``, ``_moe_combine_kernel``, ``_moe_combine_bwd_kernel``, which also weight and sum over the k
slots), ``elementwise`` (activations, products, sums, casts, copies; in a compiled row, Inductor's fused kernels;
``_moe_swiglu_*`` kernels) and ``other`` — where the MoE's time goes besides its GEMMs — and ``syncs_per_step``: the
host synchronisations per step, CPU-side CUDA runtime calls that block the host (:data:`SYNC_EVENTS`; a device-to-host
copy such as ``.item()`` or ``.tolist()`` is a ``cudaMemcpyAsync`` followed by a ``cudaStreamSynchronize``) issued
inside a step (0 on the CPU).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from zoo.ffn import MoE, SwiGLU, grouped_mm_available
from zoo.io import write_json

DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}
CATEGORIES = ("gemm", "routing", "elementwise", "other")
# fmt: off
_GEMM = frozenset({"mm", "bmm", "addmm", "matmul", "_grouped_mm", "linear"})
_ROUTING = frozenset({
    "topk", "sort", "argsort", "bincount", "histc", "cumsum", "gather", "scatter", "scatter_", "scatter_add",
    "scatter_add_", "index_select", "index_add", "index_add_", "index", "index_put_", "_index_put_impl_", "nonzero",
    "repeat_interleave", "searchsorted", "arange", "floor_divide",
})
_ELEMENTWISE = frozenset({
    "mul", "add", "sub", "div", "silu", "silu_backward", "sigmoid", "sigmoid_backward", "softmax", "_softmax",
    "_softmax_backward_data", "logsumexp", "sum", "mean", "copy_", "to", "_to_copy", "fill_", "zero_", "neg", "exp",
    "log", "pow", "where", "clamp", "masked_fill", "cat",
})
# fmt: on
#: CUDA runtime calls that block the host until the device catches up (``cudaMemcpy`` is the synchronous copy).
SYNC_EVENTS = frozenset({"cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize", "cudaMemcpy"})
STEP_RANGE = "moe_bench_step"
IMPLS = ("loop", "grouped_mm", "fused")


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--dtype", choices=sorted(DTYPES), default="bf16")
    parser.add_argument("--dim", type=int, default=1024)
    parser.add_argument("--hidden", type=int, default=2048, help="each expert's hidden width")
    parser.add_argument("--experts", type=int, default=32)
    parser.add_argument("--top-k", type=int, default=2)
    parser.add_argument("--tokens", type=int, default=16384)
    parser.add_argument("--capacity-factor", type=float, default=None, help="default: dropless")
    parser.add_argument("--impls", nargs="+", default=list(IMPLS), choices=IMPLS)
    parser.add_argument(
        "--compile", action="store_true", help="also time torch.compile'd dense, grouped_mm and fused (fullgraph)"
    )
    parser.add_argument(
        "--cudagraphs",
        action="store_true",
        help="also time dense, grouped_mm and fused as CUDA graphs (compile mode reduce-overhead)",
    )
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--repeats", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="split each row's step time by kind of op")
    parser.add_argument("--output", default=None, help="write the results as JSON here")
    return parser.parse_args(argv)


def time_step(step: Callable[[], None], device: torch.device, warmup: int, repeats: int) -> float:
    """Median seconds of ``step`` over ``repeats`` calls after ``warmup`` calls."""
    for _ in range(warmup):
        step()
    times = []
    for _ in range(max(repeats, 1)):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            end.synchronize()
            times.append(start.elapsed_time(end) / 1e3)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return statistics.median(times)


def op_category(name: str) -> str:
    """The :data:`CATEGORIES` entry of an ``aten::`` op name, of an Inductor kernel (``triton_poi_…``,
    ``triton_red_…``, ``triton_per_…``: fused pointwise and reduction work, ``elementwise``) or of a
    :mod:`kernels.moe` kernel (``_moe_swiglu_…``: ``elementwise``; the other ``_moe_…`` kernels move rows through
    the expert permutation: ``routing``); ``other`` for anything unlisted."""
    if name.startswith("triton_") or name.startswith("_moe_swiglu"):
        return "elementwise"
    if name.startswith("_moe_"):
        return "routing"
    op = name.removeprefix("aten::")
    for category, ops in (("gemm", _GEMM), ("routing", _ROUTING), ("elementwise", _ELEMENTWISE)):
        if op in ops:
            return category
    return "other"


def count_syncs(events: list, window: str = STEP_RANGE) -> int:
    """How many :data:`SYNC_EVENTS` in the profiler ``events`` start inside a CPU-side ``record_function`` range
    named ``window`` (the profiler's own synchronisation at the end falls outside every step)."""
    ranges = [
        (e.time_range.start, e.time_range.end)
        for e in events
        if e.name == window and e.device_type == torch.autograd.DeviceType.CPU
    ]
    return sum(1 for e in events if e.name in SYNC_EVENTS and any(a <= e.time_range.start <= b for a, b in ranges))


_LAUNCHERS = ("aten::", "triton_", "_moe_", "_chunk_", "_segment_", "_Lightning")  # the ops a kernel is named by


def kernel_times(events: list, cuda: bool) -> list[tuple[str, str, float]]:
    """``[(op, kernel, microseconds), ...]`` from profiler ``events`` (``prof.events()``). On CUDA every device
    kernel once, with the innermost CPU-side op that launched it (an ``aten::`` op, the ``record_function`` range
    of an Inductor or ``triton_op`` kernel, a lightning-attention autograd function; else the runtime event it
    hangs from): counting kernels through their launcher, rather
    than summing ``key_averages()``, counts a Triton kernel once although the profiler reports it both as a host
    range and as a device kernel of the same name. On the CPU every ``aten::`` op, Inductor kernel (``triton_…``)
    and :mod:`kernels.moe` kernel (``_moe_…``) with its self CPU time (kernel = op)."""
    out = []
    for event in events:
        if event.device_type != torch.autograd.DeviceType.CPU:
            continue
        if cuda and event.kernels:
            launcher = event  # a runtime event (e.g. "Command Buffer Full") stands for the op around it
            while not launcher.name.startswith(_LAUNCHERS) and launcher.cpu_parent is not None:
                launcher = launcher.cpu_parent
            op = launcher.name if launcher.name.startswith(_LAUNCHERS) else event.name
            out += [(op, kernel.name, kernel.duration) for kernel in event.kernels]
        elif event.name.startswith(("aten::", "triton_", "_moe_")):
            out.append((event.name, event.name, event.self_cpu_time_total))
    return out


def kernel_category(op: str, kernel: str) -> str:
    """:func:`op_category` of a kernel by its own name when it is an Inductor or :mod:`kernels.moe` kernel, else by
    the op that launched it."""
    return op_category(kernel if kernel.startswith(("triton_", "_moe_")) else op)


def profile_step(step: Callable[[], None], device: torch.device, repeats: int) -> tuple[dict[str, float], float]:
    """``(milliseconds per step by category, host syncs per step)`` over ``repeats`` profiled steps, after one
    unprofiled step. The milliseconds are by :data:`CATEGORIES` (:func:`kernel_category` of every kernel of
    :func:`kernel_times`): device time on CUDA, CPU time on the CPU; the syncs by :func:`count_syncs`."""
    from torch.profiler import ProfilerActivity, profile, record_function

    step()
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    steps = max(repeats, 1)
    with profile(activities=activities) as prof:
        for _ in range(steps):
            with record_function(STEP_RANGE):
                step()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
    totals = dict.fromkeys(CATEGORIES, 0.0)
    events = prof.events()
    for op, kernel, us in kernel_times(events, device.type == "cuda"):
        totals[kernel_category(op, kernel)] += us / 1e3 / steps
    return totals, count_syncs(events) / steps


def make_step(module: nn.Module, x: torch.Tensor, grad: torch.Tensor, mark_step: bool = False) -> Callable[[], None]:
    """One forward + backward of ``module`` on ``x`` with output gradient ``grad``; ``mark_step``: tell CUDA-graph
    trees a new iteration begins (the previous step's graph outputs are dead)."""

    def step() -> None:
        if mark_step:
            torch.compiler.cudagraph_mark_step_begin()
        module.zero_grad(set_to_none=True)
        x.grad = None
        y = module(x)
        loss = getattr(module, "loss", None)
        if loss is None:
            y.backward(grad)
        else:
            torch.autograd.backward([y, loss], [grad, torch.ones_like(loss)])

    return step


def run(args: argparse.Namespace) -> dict:
    """Time every row; return ``{"config", "env", "rows"}`` (also written to ``args.output`` if set)."""
    device = torch.device(args.device)
    dtype = DTYPES[args.dtype]
    factory = {"device": device, "dtype": dtype}
    torch.manual_seed(args.seed)
    x = torch.randn(args.tokens, args.dim, **factory).requires_grad_()
    grad = torch.randn(args.tokens, args.dim, **factory)
    flops = 3 * 2 * args.tokens * 3 * args.dim * args.top_k * args.hidden

    dense = SwiGLU(args.dim, args.top_k * args.hidden, **factory)
    for p in dense.parameters():
        nn.init.normal_(p, std=0.02)
    kw = dict(num_experts=args.experts, top_k=args.top_k, capacity_factor=args.capacity_factor, **factory)
    modules: dict[str, nn.Module] = {"dense": dense}
    reference = None
    for impl in args.impls:
        if impl in ("grouped_mm", "fused") and not grouped_mm_available():
            print(f"skipping {impl}: torch {torch.__version__} has no grouped_mm", file=sys.stderr)
            continue
        moe = MoE(args.dim, args.hidden, impl=impl, **kw)
        if reference is None:
            reference = moe
        else:
            moe.load_state_dict(reference.state_dict())
        modules[impl] = moe
    if args.compile:
        for name in [n for n in modules if n != "loop"]:  # the loop syncs on the group sizes: it cannot compile
            modules[f"{name}+compile"] = torch.compile(modules[name], fullgraph=True)
    if args.cudagraphs and device.type == "cuda":
        for name in [n for n in list(modules) if n in ("dense", "grouped_mm", "fused")]:
            modules[f"{name}+cudagraphs"] = torch.compile(modules[name], fullgraph=True, mode="reduce-overhead")
    elif args.cudagraphs:
        print("skipping --cudagraphs: CUDA graphs need a CUDA device", file=sys.stderr)

    outputs = {}
    with torch.no_grad():
        for name, module in modules.items():
            if not name.startswith("dense"):
                outputs[name] = module(x).float()
    rows = []
    for name, module in modules.items():
        graphed = name.endswith("+cudagraphs")
        step = make_step(module, x, grad, mark_step=graphed)
        seconds = time_step(step, device, args.warmup, args.repeats)
        row = {
            "impl": name,
            "ms": seconds * 1e3,
            "tokens_per_s": args.tokens / seconds,
            "tflops": flops / seconds / 1e12,
        }
        if name in outputs and "loop" in outputs:
            ref = outputs["loop"]
            row["rel_err_vs_loop"] = float((outputs[name] - ref).norm() / ref.norm())
        if not name.startswith("dense"):
            row["dropped_fraction"] = float(module.dropped_fraction)
        if args.profile and not graphed:  # a graph replay has no aten:: ops to attribute its kernels to
            row["profile_ms"], row["syncs_per_step"] = profile_step(step, device, args.repeats)
        rows.append(row)
    for row in rows:
        row["ratio_vs_dense"] = row["tokens_per_s"] / rows[0]["tokens_per_s"]

    env = {
        "torch": torch.__version__,
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
    }
    result = {"config": {k: v for k, v in vars(args).items() if k != "output"}, "env": env, "rows": rows}
    print(
        f"MoE E={args.experts} top-{args.top_k}, dim={args.dim}, hidden={args.hidden}, {args.tokens} tokens, "
        f"{args.dtype}, {env['device']}, torch {env['torch']}; dense hidden = {args.top_k * args.hidden}\n"
    )
    print("| impl | ms (fwd+bwd) | tokens/s | TFLOP/s | vs dense | rel. err vs loop |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        err = f"{r['rel_err_vs_loop']:.1e}" if "rel_err_vs_loop" in r else "—"
        print(
            f"| {r['impl']} | {r['ms']:.3f} | {r['tokens_per_s']:,.0f} | {r['tflops']:.2f} | "
            f"{r['ratio_vs_dense']:.3f} | {err} |"
        )
    if args.profile:
        print(f"\n| impl | {' | '.join(f'{c} ms' for c in CATEGORIES)} | syncs / step |")
        print("|---|" + "---|" * (len(CATEGORIES) + 1))
        for r in (r for r in rows if "profile_ms" in r):
            cells = " | ".join(f"{r['profile_ms'][c]:.3f}" for c in CATEGORIES)
            print(f"| {r['impl']} | {cells} | {r['syncs_per_step']:g} |")
    if args.output:
        write_json(args.output, result)
    return result


def main(argv: list[str] | None = None) -> dict:
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
