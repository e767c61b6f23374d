#!/usr/bin/env python
"""Lightning attention against fla and PyTorch SDPA on one GPU: one table, one JSON, one plot.

    python tools/bench/lightning_attention.py --output docs/bench/lightning_attention_h100.json \
        --plot docs/bench/lightning_attention_h100.png

Shapes (kernels.md §6): bf16, causal, B·T = 32K tokens, H = 16, D = 128, T ∈ {1K … 32K}, MiniMax's decay at layer 0
(strong) and at the last layers (weak); plus H = 64 at T = 8K. Methods, timed in the same run:

* ``zoo``: ``kernels.lightning_attention`` with ``backend="triton"``;
* ``fla``: ``fla.ops.simple_gla.chunk_simple_gla(q, k, v, g_gamma=-s, scale=1.0)`` (PyPI ``fla-core``: the
  ``[bench]`` extra; ``--without-fla`` times without it);
* ``sdpa_flash`` / ``sdpa_cudnn``: ``F.scaled_dot_product_attention(is_causal=True)`` with that backend only;
* ``torch``: our block-256 PyTorch reference (``backend="torch"``).

Timing: ``triton.testing.do_bench`` (median, L2 flushed between repeats). Forward under ``no_grad``;
forward+backward with a fixed random output gradient. roof% = byte floor / measured time, where the floor is 4
(forward) or 11 (forward+backward) bf16 tensors of B·T·H·D at the device-to-device copy bandwidth measured in the
same run. Head dims that are not powers of two (``head_dims``, padded and masked in the kernels): D, DV ∈ {128,
96, 80, 64, 48} at T = 8K, B = 4, H = 16. Decode: one token at (B, H, D) ∈ {(64, 64, 128), (64, 16, 128),
(8, 64, 128)}, bf16 q/k/v, fp32 state; ours replayed from a CUDA graph (the step allocates nothing and never
synchronises), against fla's ``fused_recurrent_simple_gla`` and a plain PyTorch step; TB/s counts the state read
+ written. Correctness: bf16 relative L2 error of o, dq, dk, dv against an fp64 reference at smaller shapes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from kernels.lightning_attention import lightning_attention, lightning_attention_decode
from kernels.lightning_attention.reference import lightning_attention_blockwise
from zoo.errors import exit_on_config_error
from zoo.extras import require

NO_FLA = "Or pass --without-fla to time without it"

TOKENS = 32768
LAYERS = 80


def minimax_rates(heads: int, layer: int, layers: int = LAYERS) -> torch.Tensor:
    """``s_h = 2^{−8(h+1)/H} · (1 − l/(L−1) + 1e−5)`` (minimax.md §1.3), H a power of two."""
    base = torch.tensor([2 ** (-8 * (h + 1) / heads) for h in range(heads)])
    return base * (1 - layer / (layers - 1) + 1e-5)


def bench(fn, warmup: int = 25, rep: int = 100) -> float:
    import triton.testing

    return float(triton.testing.do_bench(fn, warmup=warmup, rep=rep, return_mode="median"))


def ceilings() -> dict[str, float]:
    a = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    b = torch.randn(8192, 8192, device="cuda", dtype=torch.bfloat16)
    matmul_ms = bench(lambda: a @ b)
    src = torch.randn(2**28, device="cuda", dtype=torch.float32)  # 1 GiB
    dst = torch.empty_like(src)
    copy_ms = bench(lambda: dst.copy_(src))
    return {"matmul_tflops": 2 * 8192**3 / matmul_ms / 1e9, "copy_gbps": 2 * src.numel() * 4 / copy_ms / 1e6}


def methods(have_fla: bool):
    def zoo(q, k, v, s):
        return lightning_attention(q, k, v, s, backend="triton")

    def torch_ref(q, k, v, s):
        return lightning_attention(q, k, v, s, backend="torch")

    def sdpa(kind):
        from torch.nn.attention import SDPBackend, sdpa_kernel

        backend = {"flash": SDPBackend.FLASH_ATTENTION, "cudnn": SDPBackend.CUDNN_ATTENTION}[kind]

        def run(q, k, v, s):
            with sdpa_kernel(backend):
                out = F.scaled_dot_product_attention(
                    q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), is_causal=True
                )
            return out.transpose(1, 2)

        return run

    table = {"zoo": zoo}
    if have_fla:
        from fla.ops.simple_gla import chunk_simple_gla

        table["fla"] = lambda q, k, v, s: chunk_simple_gla(q, k, v, g_gamma=-s, scale=1.0)[0]
    table |= {"sdpa_flash": sdpa("flash"), "sdpa_cudnn": sdpa("cudnn"), "torch": torch_ref}
    return table


def time_method(fn, b: int, t: int, h: int, d: int, rates: torch.Tensor, dv: int | None = None) -> dict[str, float]:
    q, k = (torch.randn(b, t, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(2))
    v = torch.randn(b, t, h, dv or d, device="cuda", dtype=torch.bfloat16)
    s = rates.cuda()
    with torch.no_grad():
        fwd = bench(lambda: fn(q, k, v, s))
    leaves = [x.requires_grad_() for x in (q, k, v)]
    grad = torch.randn_like(v)

    def step():
        for x in leaves:
            x.grad = None
        fn(*leaves, s).backward(grad)

    torch.cuda.reset_peak_memory_stats()
    base = torch.cuda.memory_allocated()
    fwd_bwd = bench(step)
    peak = (torch.cuda.max_memory_allocated() - base) / 1e9
    return {"fwd_ms": fwd, "fwd_bwd_ms": fwd_bwd, "peak_extra_gb": peak}


def sweep(args, caps, have_fla) -> list[dict]:
    rows = []
    shapes = [(TOKENS // t, t, 16) for t in args.lengths] + [(TOKENS // 8192, 8192, 64)]
    table = methods(have_fla)
    for strength, layer in (("layer 0", 0), ("last layers", LAYERS - 2)):
        for b, t, h in shapes:
            if strength != "layer 0" and h != 16:
                continue
            rates = minimax_rates(h, layer)
            tensor_bytes = b * t * h * 128 * 2
            for name, fn in table.items():
                if name == "torch" and not args.with_torch:
                    continue
                if name.startswith("sdpa") and strength != "layer 0":
                    continue  # softmax attention ignores the decay
                try:
                    r = time_method(fn, b, t, h, 128, rates)
                except Exception as exc:  # a peer that cannot run this shape is reported, not fatal
                    print(f"  {name} T={t} H={h}: {type(exc).__name__}: {exc}", file=sys.stderr)
                    continue
                r |= {
                    "method": name,
                    "decay": strength,
                    "B": b,
                    "T": t,
                    "H": h,
                    "D": 128,
                    "fwd_roof_pct": 100 * 4 * tensor_bytes / (caps["copy_gbps"] * 1e6) / r["fwd_ms"],
                    "fwd_bwd_roof_pct": 100 * 11 * tensor_bytes / (caps["copy_gbps"] * 1e6) / r["fwd_bwd_ms"],
                    "ns_per_token_fwd_bwd": 1e6 * r["fwd_bwd_ms"] / (b * t),
                }
                rows.append(r)
                print(
                    f"  {strength:<11} T={t:>5} H={h:<2} {name:<10} fwd {r['fwd_ms']:8.3f} ms  "
                    f"fwd+bwd {r['fwd_bwd_ms']:8.3f} ms",
                    flush=True,
                )
    return rows


HEAD_DIMS = ((128, 128), (96, 96), (80, 80), (64, 64), (128, 64), (48, 96))


def head_dims(have_fla: bool) -> list[dict]:
    """Head dims that are not powers of two (padded to one and masked in the kernels): B·T = 32K at T = 8K, H = 16,
    layer-0 decay; per token and head dim, against D = 128 and against fla / the PyTorch reference."""
    rows = []
    table = {name: fn for name, fn in methods(have_fla).items() if name in ("zoo", "fla", "torch")}
    rates = minimax_rates(16, 0)
    for d, dv in HEAD_DIMS:
        for name, fn in table.items():
            try:
                r = time_method(fn, 4, 8192, 16, d, rates, dv=dv)
            except Exception as exc:  # a peer that cannot run this shape is reported, not fatal
                print(f"  {name} D={d} DV={dv}: {type(exc).__name__}: {exc}", file=sys.stderr)
                continue
            rows.append({"method": name, "D": d, "DV": dv, "B": 4, "T": 8192, "H": 16, **r})
            print(
                f"  D={d:>3} DV={dv:>3} {name:<6} fwd {r['fwd_ms']:8.3f} ms  fwd+bwd {r['fwd_bwd_ms']:8.3f} ms",
                flush=True,
            )
    return rows


def decode_case(b: int, h: int, d: int, have_fla: bool) -> dict[str, float]:
    """Milliseconds of one decode step per method at batch b, h heads, head dim d."""
    q, k, v = (torch.randn(b, h, d, device="cuda", dtype=torch.bfloat16) for _ in range(3))
    s = minimax_rates(h, 0).cuda()
    state = torch.randn(b, h, d, d, device="cuda", dtype=torch.float32)
    work = state.clone()

    def ours():
        lightning_attention_decode(q, k, v, s, work, inplace=True, backend="triton")

    stream = torch.cuda.Stream()  # warm up (compile) off the capture, then capture one step
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            ours()
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        ours()
    lam = torch.exp(-s).view(1, h, 1, 1)

    def torch_step():
        new = lam * state + k.float().unsqueeze(-1) * v.float().unsqueeze(-2)
        return (q.float().unsqueeze(-2) @ new).squeeze(-2).to(q.dtype), new

    results = {"zoo (graph)": bench(graph.replay), "zoo": bench(ours), "torch": bench(torch_step)}
    if have_fla:
        from fla.ops.simple_gla import fused_recurrent_simple_gla

        q1, k1, v1, g = q.unsqueeze(1), k.unsqueeze(1), v.unsqueeze(1), -s
        results["fla"] = bench(
            lambda: fused_recurrent_simple_gla(
                q1, k1, v1, g_gamma=g, scale=1.0, initial_state=state, output_final_state=True
            )
        )
    return results


def decode_bench(have_fla: bool) -> list[dict]:
    rows = []
    for b, h, d in ((64, 64, 128), (64, 16, 128), (8, 64, 128)):
        state_bytes = b * h * d * d * 4
        for name, ms in decode_case(b, h, d, have_fla).items():
            rows.append({"method": name, "B": b, "H": h, "D": d, "ms": ms, "state_tbps": 2 * state_bytes / ms / 1e9})
    return rows


def accuracy() -> list[dict]:
    """bf16 kernel vs the fp64 block reference: relative L2 error of o, dq, dk, dv (and the final state)."""
    rows = []
    for b, t, h, layer in ((2, 2048, 16, 0), (1, 8192, 16, LAYERS - 2), (1, 3000, 8, 40)):
        s = minimax_rates(h, layer).cuda()
        q, k, v = (torch.randn(b, t, h, 128, device="cuda", dtype=torch.float64) for _ in range(3))
        ref_leaves = [x.clone().requires_grad_() for x in (q, k, v)]
        o_ref, f_ref = lightning_attention_blockwise(*ref_leaves, s.double())
        grad = torch.randn_like(o_ref)
        o_ref.backward(grad)
        leaves = [x.to(torch.bfloat16).requires_grad_() for x in (q, k, v)]
        o, final = lightning_attention(*leaves, s, output_final_state=True, backend="triton")
        o.backward(grad.to(torch.bfloat16))

        def rel(a, ref):
            return float((a.double() - ref).norm() / ref.norm())

        rows.append(
            {
                "B": b,
                "T": t,
                "H": h,
                "layer": layer,
                "o": rel(o, o_ref),
                "final_state": rel(final, f_ref),
                **{n: rel(x.grad, r.grad) for n, x, r in zip(("dq", "dk", "dv"), leaves, ref_leaves)},
            }
        )
    return rows


TUNE_GRID = {
    "fwd": [
        dict(fwd_block=bt, fwd_bv=bv, fwd_warps=w, fwd_stages=st)
        for bt in (32, 64)
        for bv in (64, 128)
        for w in (4, 8)
        for st in (2, 3)
    ],
    "bwd": [dict(bwd_block=bt, bwd_warps=w, bwd_stages=st) for bt in (32, 64) for w in (4, 8) for st in (1, 2)],
    "split": [dict(programs_per_sm=p) for p in (1, 2, 4)],
    "wide": [
        dict(fwd_block=128, fwd_bv=bv, fwd_warps=w, fwd_stages=st, summary_block=128)
        for bv in (64, 128)
        for w in (8,)
        for st in (1, 2)
    ]
    + [dict(bwd_block=128, bwd_warps=8, bwd_stages=st) for st in (1, 2)],
    "prepass": [
        dict(summary_block=sb, summary_bv=bv, scan_block=scan, programs_per_sm=p)
        for sb in (64, 128)
        for bv in (64, 128)
        for scan in (256, 1024)
        for p in (2, 4)
    ],
}


def tune(lengths: list[int], groups: list[str]) -> list[dict]:
    """Time our kernels under each launch configuration of TUNE_GRID (one group at a time, others at default)."""
    from kernels.lightning_attention import triton as la_triton

    default = dict(la_triton.CONFIG)
    rows = []
    for group in groups:
        for cfg in TUNE_GRID[group]:
            la_triton.CONFIG.clear()
            la_triton.CONFIG.update(default | cfg)
            for t in lengths:
                try:
                    r = time_method(methods(False)["zoo"], TOKENS // t, t, 16, 128, minimax_rates(16, 0))
                except Exception as exc:  # e.g. out of shared memory for this tile shape
                    print(f"  {group} {cfg} T={t}: {type(exc).__name__}: {str(exc)[:120]}", file=sys.stderr)
                    continue
                rows.append({"group": group, "config": cfg, "T": t, **r})
                print(
                    f"  {group:<5} {cfg} T={t:>5}: fwd {r['fwd_ms']:.3f} ms, fwd+bwd {r['fwd_bwd_ms']:.3f} ms",
                    flush=True,
                )
    la_triton.CONFIG.clear()
    la_triton.CONFIG.update(default)
    return rows


def print_tables(result: dict) -> None:
    print(f"\n{result['device']} | torch {result['torch']} | triton {result['triton']} | fla {result['fla']}")
    print(
        f"ceilings: matmul {result['ceilings']['matmul_tflops']:.0f} TFLOP/s, copy "
        f"{result['ceilings']['copy_gbps']:.0f} GB/s"
    )
    print(
        f"\n{'decay':<11} {'T':>6} {'B':>3} {'H':>3} {'method':<11} {'fwd ms':>8} {'×fla':>6} {'roof%':>6} "
        f"{'f+b ms':>8} {'×fla':>6} {'roof%':>6} {'ns/tok':>7} {'GB':>5}"
    )
    for r in result["sweep"]:
        fla = next(
            (
                x
                for x in result["sweep"]
                if x["method"] == "fla" and x["T"] == r["T"] and x["H"] == r["H"] and x["decay"] == r["decay"]
            ),
            None,
        )
        ratio_f = f"{r['fwd_ms'] / fla['fwd_ms']:.2f}" if fla else "—"
        ratio_b = f"{r['fwd_bwd_ms'] / fla['fwd_bwd_ms']:.2f}" if fla else "—"
        print(
            f"{r['decay']:<11} {r['T']:>6} {r['B']:>3} {r['H']:>3} {r['method']:<11} {r['fwd_ms']:>8.3f} "
            f"{ratio_f:>6} {r['fwd_roof_pct']:>6.1f} {r['fwd_bwd_ms']:>8.3f} {ratio_b:>6} "
            f"{r['fwd_bwd_roof_pct']:>6.1f} {r['ns_per_token_fwd_bwd']:>7.2f} {r['peak_extra_gb']:>5.2f}"
        )
    print(f"\n{'decode B,H,D':<14} {'method':<12} {'ms':>8} {'state TB/s':>10}")
    for r in result["decode"]:
        print(f"{r['B']},{r['H']},{r['D']:<8} {r['method']:<12} {r['ms']:>8.4f} {r['state_tbps']:>10.2f}")
    print(f"\n{'accuracy (bf16 vs fp64)':<26} {'o':>8} {'dq':>8} {'dk':>8} {'dv':>8} {'state':>8}")
    for r in result["accuracy"]:
        print(
            f"B={r['B']} T={r['T']} H={r['H']} l={r['layer']:<3}   {r['o']:>8.1e} {r['dq']:>8.1e} {r['dk']:>8.1e} "
            f"{r['dv']:>8.1e} {r['final_state']:>8.1e}"
        )
    rows = result.get("head_dims", [])
    if rows:
        print(
            f"\n{'head dims D,DV':<15} {'method':<7} {'fwd ms':>8} {'f+b ms':>8} {'f+b ps/(tok·dim)':>17} {'×torch':>7}"
        )
    for r in rows:
        ref = next((x for x in rows if x["method"] == "torch" and (x["D"], x["DV"]) == (r["D"], r["DV"])), None)
        per_dim = 1e9 * r["fwd_bwd_ms"] / (r["B"] * r["T"] * r["H"] * (r["D"] + r["DV"]) / 2)
        speedup = f"{ref['fwd_bwd_ms'] / r['fwd_bwd_ms']:.2f}" if ref else "—"
        print(
            f"{r['D']},{r['DV']:<11} {r['method']:<7} {r['fwd_ms']:>8.3f} {r['fwd_bwd_ms']:>8.3f} {per_dim:>17.2f} "
            f"{speedup:>7}"
        )


def plot(result: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    rows = [r for r in result["sweep"] if r["H"] == 16 and r["decay"] == "layer 0"]
    for ax, key, title in ((axes[0], "fwd_ms", "forward"), (axes[1], "fwd_bwd_ms", "forward + backward")):
        for method in dict.fromkeys(r["method"] for r in rows):
            pts = sorted((r["T"], r[key]) for r in rows if r["method"] == method)
            ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", label=method)
        ax.set_xscale("log", base=2)
        ax.set_yscale("log")
        ax.set_xlabel("T (B·T = 32K tokens, H = 16, D = 128, bf16)")
        ax.set_ylabel("ms")
        ax.set_title(title)
        ax.grid(alpha=0.3, which="both")
        ax.legend()
    fig.suptitle(f"lightning attention, {result['device']}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--lengths", type=int, nargs="*", default=[1024, 2048, 4096, 8192, 16384, 32768])
    parser.add_argument("--with-torch", action="store_true", help="also time the PyTorch reference")
    parser.add_argument("--without-fla", action="store_true", help="time without the fla peer (no ×fla columns)")
    parser.add_argument("--skip", nargs="*", default=[], choices=["sweep", "decode", "accuracy", "head_dims"])
    parser.add_argument("--tune", type=int, nargs="*", help="only time launch configurations at these T")
    parser.add_argument("--tune-groups", nargs="*", default=list(TUNE_GRID), choices=list(TUNE_GRID))
    parser.add_argument("--output", type=Path)
    parser.add_argument("--plot", type=Path)
    parser.add_argument("--replot", type=Path, help="print and plot an earlier --output JSON")
    args = parser.parse_args()
    if args.replot:
        result = json.loads(args.replot.read_text())
        print_tables(result)
        if args.plot:
            plot(result, args.plot)
        return
    have_fla, fla_version = False, None
    if not args.without_fla and not args.tune:
        with exit_on_config_error():
            fla = require("fla", "bench", needed_for="the lightning-attention benchmark's peer (fla)", hint=NO_FLA)
        have_fla, fla_version = True, getattr(fla, "__version__", "?")
    if not torch.cuda.is_available():
        sys.exit("this benchmark needs a CUDA GPU")
    import triton

    if args.tune:
        rows = tune(args.tune, args.tune_groups)
        if args.output:
            args.output.parent.mkdir(parents=True, exist_ok=True)
            args.output.write_text(json.dumps({"device": torch.cuda.get_device_name(), "tune": rows}, indent=2))
        return
    caps = ceilings()
    result = {
        "device": torch.cuda.get_device_name(),
        "torch": torch.__version__,
        "triton": triton.__version__,
        "fla": fla_version,
        "ceilings": caps,
    }
    result["accuracy"] = [] if "accuracy" in args.skip else accuracy()
    result["sweep"] = [] if "sweep" in args.skip else sweep(args, caps, have_fla)
    result["decode"] = [] if "decode" in args.skip else decode_bench(have_fla)
    result["head_dims"] = [] if "head_dims" in args.skip else head_dims(have_fla)
    print_tables(result)
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(json.dumps(result, indent=2) + "\n")
    if args.plot:
        plot(result, args.plot)


if __name__ == "__main__":
    main()
