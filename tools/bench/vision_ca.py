#!/usr/bin/env python
"""Cost of each channel attention: parameters, FLOPs and training throughput, against timm's own SE and ECA.

    python tools/bench/vision_ca.py                          # CPU: ResNet-20 at 32 px, fp32
    python tools/bench/vision_ca.py --device cuda            # GPU: ResNet-50 at 224 px and ResNet-20 at 32 px, bf16
    python tools/bench/vision_ca.py --device cuda --output docs/bench/vision_ca_h100.json

Throughput is images/s of a full training step (forward, backward, SGD update) in channels-last memory format,
the median of ``--repeats`` timed steps after ``--warmup`` steps (CUDA events on the GPU). FLOPs are forward FLOPs
per image: convolution and linear layers from ``torch.utils.flop_counter`` (which does not see reductions and
element-wise work), plus the attention modules' own work counted analytically from their input shapes:

========== ===================================================================================================
module     FLOPs per block (N = H·W positions, C channels)
========== ===================================================================================================
SE         pool N·C + two 1×1 convs 2·(2·C·r) + gate C + rescale N·C
ECA        pool N·C + conv 2·k·C + gate C + rescale N·C
MCA        mean N·C + centre N·C + square N·C + its mean N·C (+ cube N·C + its mean N·C for skewness)
           + conv 2·K·k·C + gate C + rescale N·C
========== ===================================================================================================

The peers in the same run are timm's ``SEModule`` and ``EcaModule`` (``timm:se``, ``timm:eca``), built by timm
from its own ``attn_layer`` strings.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from zoo.channel_attention import EfficientChannelAttention, MomentChannelAttention, SqueezeExcite
from zoo.parallel.compile import compile_units
from zoo.registries import BACKBONE

VARIANTS = ("none", "se", "eca", "mca_e", "mca_s")
TIMM_PEERS = ("timm:se", "timm:eca")


def build(backbone: str, variant: str, num_classes: int) -> nn.Module:
    if variant.startswith("timm:"):
        import timm

        return timm.create_model(backbone, num_classes=num_classes, block_args=dict(attn_layer=variant[5:]))
    return BACKBONE.build(backbone, num_classes=num_classes, in_chans=3, ca=variant)


def attention_flops(model: nn.Module, image_size: int) -> int:
    """Analytic forward FLOPs of the channel-attention modules for one image (see the module docstring)."""
    import timm.layers

    total = 0
    hooks = []

    def count(module: nn.Module, inputs, _output) -> None:
        nonlocal total
        _, c, h, w = inputs[0].shape
        n = h * w
        if isinstance(module, (SqueezeExcite, timm.layers.SEModule)):
            total += 2 * n * c + 2 * 2 * c * module.fc1.out_channels + c
        elif isinstance(module, (EfficientChannelAttention, timm.layers.EcaModule)):
            total += 2 * n * c + 2 * module.conv.kernel_size[0] * c + c
        elif isinstance(module, MomentChannelAttention):
            third = any(m in module.moments for m in ("skew", "m3"))
            per_element = 4 + (2 if third else 0) + 1  # moments, then the rescale
            total += per_element * n * c + 2 * len(module.moments) * module.conv.kernel_size[0] * c + c

    types = (
        SqueezeExcite,
        EfficientChannelAttention,
        MomentChannelAttention,
        timm.layers.SEModule,
        timm.layers.EcaModule,
    )
    for module in model.modules():
        if isinstance(module, types):
            hooks.append(module.register_forward_hook(count))
    with torch.no_grad():
        model.eval()(torch.randn(1, 3, image_size, image_size))
    for hook in hooks:
        hook.remove()
    return total


def dense_flops(model: nn.Module, image_size: int) -> int:
    from torch.utils.flop_counter import FlopCounterMode

    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model.eval()(torch.randn(1, 3, image_size, image_size))
    return counter.get_total_flops()


COMPILE_MODES = ("none", "blocks", "whole")


def compile_model(model: nn.Module, mode: str) -> None:
    """``torch.compile`` in place: ``blocks`` each residual block as ``task=vision model.compile=true`` does (the
    children of the backbone's ``nn.Sequential`` stages, :func:`zoo.parallel.compile.compile_units`), ``whole``
    the network, ``none`` nothing."""
    if mode == "whole":
        model.compile()
    elif mode == "blocks":
        stages = [m for m in model.children() if isinstance(m, nn.Sequential)]
        compile_units(model, [block for stage in stages for block in stage.children()])


def throughput(
    model: nn.Module, *, batch: int, image_size: int, device: torch.device, bf16: bool, warmup: int, repeats: int,
    compile: str = "none",
) -> float:  # fmt: skip
    model = model.to(device).train().to(memory_format=torch.channels_last)
    compile_model(model, compile)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    images = torch.randn(batch, 3, image_size, image_size, device=device).contiguous(memory_format=torch.channels_last)
    labels = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=bf16):
            loss = F.cross_entropy(model(images), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()

    for _ in range(warmup):
        step()
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            step()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end) / 1000)
        else:
            t0 = time.perf_counter()
            step()
            times.append(time.perf_counter() - t0)
    return batch / statistics.median(times)


def plot(rows: list[dict], title: str, path: Path) -> None:
    """Bar chart of throughput relative to ``none``, one panel per backbone and image size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    def key(row: dict) -> tuple[str, int, str]:
        return row["backbone"], row["image_size"], row.get("compile", "none")

    panels = sorted({key(r) for r in rows}, key=lambda p: (-p[1], p[0], p[2]))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (backbone, size, mode) in zip(axes[0], panels):
        panel = [r for r in rows if key(r) == (backbone, size, mode)]
        base = next(r for r in panel if r["variant"] == "none")["images_per_s"]
        ratios = [r["images_per_s"] / base for r in panel]
        ax.bar(
            [r["variant"] for r in panel],
            ratios,
            color=["#888" if r["variant"].startswith("timm") else "#3a7" for r in panel],
        )
        for x, ratio in enumerate(ratios):
            ax.text(x, ratio + 0.01, f"{ratio:.2f}", ha="center", fontsize=8)
        compiled = "" if mode == "none" else f", compiled ({mode})"
        ax.set_title(f"{backbone}, {size} px, batch {panel[0]['batch']}{compiled}")
        ax.set_ylabel("training images/s relative to none")
        ax.set_ylim(0, 1.12)
        ax.tick_params(axis="x", rotation=30)
    fig.suptitle(title, fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--configs", nargs="*", help="backbone:size:batch entries (default depends on the device)")
    parser.add_argument("--variants", nargs="*", help=f"subset and order (default: {' '.join(VARIANTS + TIMM_PEERS)})")
    parser.add_argument(
        "--compile",
        nargs="+",
        default=["none"],
        choices=COMPILE_MODES,
        help="torch.compile: none | blocks (each residual block, as model.compile=true) | whole",
    )
    parser.add_argument("--warmup", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=None)
    parser.add_argument("--output", type=Path, help="write the rows as JSON here")
    parser.add_argument("--plot", type=Path, help="write a PNG of relative throughput here (needs matplotlib)")
    parser.add_argument("--replot", type=Path, help="only plot an earlier --output JSON (with --plot)")
    args = parser.parse_args()
    if args.replot:
        saved = json.loads(args.replot.read_text())
        plot(saved["rows"], f"{saved['device']}, torch {saved['torch']}", args.plot or args.replot.with_suffix(".png"))
        return
    device = torch.device(args.device)
    on_gpu = device.type == "cuda"
    configs = args.configs or (["resnet50:224:128", "resnet20:32:256"] if on_gpu else ["resnet20:32:128"])
    warmup = args.warmup if args.warmup is not None else (10 if on_gpu else 2)
    repeats = args.repeats if args.repeats is not None else (30 if on_gpu else 5)
    torch.backends.cudnn.benchmark = True
    rows = []
    for config in configs:
        backbone, size, batch = config.split(":")
        size, batch = int(size), int(batch)
        variants = args.variants or VARIANTS + (TIMM_PEERS if backbone.startswith("resnet") and size >= 64 else ())
        if "none" not in variants:
            variants = ["none", *variants]
        base_params = None
        for mode in args.compile:
            for variant in variants:
                torch.manual_seed(0)
                model = build(backbone, variant, 10)
                params = sum(p.numel() for p in model.parameters())
                base_params = params if variant == "none" else base_params
                dense = dense_flops(model, size)
                extra = attention_flops(model, size)
                speed = throughput(
                    model, batch=batch, image_size=size, device=device, bf16=on_gpu, warmup=warmup, repeats=repeats,
                    compile=mode,
                )  # fmt: skip
                rows.append(
                    {
                        "backbone": backbone,
                        "image_size": size,
                        "batch": batch,
                        "compile": mode,
                        "variant": variant,
                        "params": params,
                        "extra_params": params - base_params,
                        "gflops_conv_linear": dense / 1e9,
                        "gflops_attention": extra / 1e9,
                        "gflops_total": (dense + extra) / 1e9,
                        "images_per_s": speed,
                    }
                )
                del model
                if on_gpu:
                    torch.cuda.empty_cache()
                torch._dynamo.reset()
    device_name = torch.cuda.get_device_name(device) if on_gpu else platform.processor() or "cpu"
    print(
        f"\ndevice: {device_name} | torch {torch.__version__} | {'bf16 autocast' if on_gpu else 'fp32'}, "
        f"channels-last, median of {repeats} steps"
    )
    header = (
        f"{'backbone':<9} {'px':>4} {'compile':<7} {'variant':<9} {'params':>11} {'+params':>9} {'GFLOPs':>8} "
        f"{'+attn':>8} "
        f"{'img/s':>9} {'vs none':>8}"
    )
    print(header)
    print("-" * len(header))
    for row in rows:
        base = next(
            r
            for r in rows
            if r["backbone"] == row["backbone"] and r["variant"] == "none" and r["image_size"] == row["image_size"]
            and r.get("compile", "none") == row.get("compile", "none")
        )  # fmt: skip
        print(
            f"{row['backbone']:<9} {row['image_size']:>4} {row.get('compile', 'none'):<7} {row['variant']:<9} "
            f"{row['params']:>11,} "
            f"{row['extra_params']:>9,} {row['gflops_total']:>8.4f} {row['gflops_attention']:>8.4f} "
            f"{row['images_per_s']:>9.0f} {row['images_per_s'] / base['images_per_s']:>8.3f}"
        )
    if args.output:
        args.output.parent.mkdir(parents=True, exist_ok=True)
        args.output.write_text(
            json.dumps({"device": device_name, "torch": torch.__version__, "bf16": on_gpu, "rows": rows}, indent=2)
            + "\n"
        )
        print(f"wrote {args.output}")
    if args.plot:
        plot(rows, f"{device_name}, torch {torch.__version__}", args.plot)


if __name__ == "__main__":
    main()
