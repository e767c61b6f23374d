"""Routed SwiGLU experts of a mixture-of-experts layer (MiniMax-01's MoE, ``zoo.ffn.moe``).

    y_t = Σ_{s<k} w[t, s] · down[e](SiLU(g) ⊙ u),   [g; u] = gate_up[e] · x_t,   e = top_k_index[t, s]

:func:`moe_experts` computes it for N tokens; :func:`swiglu` is the fused ``SiLU(g) ⊙ u`` alone (for rows that
arrive already sorted by expert, as under expert parallelism). Backends: ``"torch"`` (:mod:`.reference`: one
expert at a time, any dtype, host syncs), ``"triton"`` (:mod:`.triton`: grouped GEMMs with fused Triton passes, no
host sync), ``"auto"`` (Triton on CUDA tensors whose dtype and widths it takes, PyTorch otherwise; the reason is
logged once). ``ZOO_KERNELS=reference`` forces PyTorch everywhere. CPU tensors run the Triton code only when
``backend="triton"`` is asked for under ``TRITON_INTERPRET=1`` (tests).
"""

from __future__ import annotations

import torch

from kernels.backend import BACKENDS, accept_or_fall_back
from kernels.backend import resolve_backend as _resolve_backend
from kernels.moe.reference import moe_experts_reference, swiglu_reference

__all__ = [
    "ALIGN",
    "BACKENDS",
    "moe_experts",
    "moe_experts_reference",
    "resolve_backend",
    "swiglu",
    "swiglu_reference",
    "unsupported_reason",
]

#: ``grouped_mm`` needs 16-byte row strides: D and H multiples of 8 (bf16; the same rule is kept for fp32).
ALIGN = 8


def _grouped_mm_available() -> bool:
    return hasattr(torch.nn.functional, "grouped_mm") or hasattr(torch, "_grouped_mm")


def resolve_backend(backend: str, tensor: torch.Tensor, op: str = "moe_experts") -> str:
    """``"torch"`` or ``"triton"`` for a requested backend and the tensors it will run on
    (:func:`kernels.backend.resolve_backend`)."""
    return _resolve_backend(backend, tensor, op)


def unsupported_reason(
    device: torch.device, dtype: torch.dtype, widths: tuple[int, ...], grouped: bool = True
) -> str | None:
    """Why the Triton path cannot take this compute ``dtype`` or these row ``widths`` (D, H), or None.

    With ``grouped`` the path runs ``grouped_mm``: bf16 on CUDA (fp32, bf16 or fp16 on the CPU) and every width a
    multiple of :data:`ALIGN`. The SwiGLU kernel alone takes fp32, bf16 and fp16 at any width.
    """
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        return f"it computes in float32, bfloat16 or float16, not {dtype}"
    if not grouped:
        return None
    if not _grouped_mm_available():
        return f"torch {torch.__version__} has no grouped_mm"
    if device.type == "cuda" and dtype != torch.bfloat16:
        return f"grouped_mm on CUDA computes in bfloat16, not {dtype}"
    if any(w % ALIGN for w in widths):
        return f"grouped_mm needs widths that are multiples of {ALIGN} (16-byte rows), got {widths}"
    return None


def _use_triton(backend: str, x: torch.Tensor, dtype: torch.dtype, widths: tuple[int, ...], op: str, grouped: bool):
    """Whether to run the Triton ``op``; ``"auto"`` falls back to PyTorch (logged once) where it cannot,
    ``"triton"`` raises instead."""
    if resolve_backend(backend, x, op) != "triton":
        return False
    return accept_or_fall_back(backend, op, unsupported_reason(x.device, dtype, widths, grouped))


def _validate(x, top_k_index, top_k_weights, gate_up_proj, down_proj) -> None:
    if x.dim() != 2 or top_k_index.dim() != 2 or top_k_index.shape[0] != x.shape[0]:
        raise ValueError(
            f"x must be [N, D] and top_k_index [N, k], got {tuple(x.shape)} and {tuple(top_k_index.shape)}"
        )
    if top_k_weights.shape != top_k_index.shape:
        raise ValueError(f"top_k_weights must be [N, k] = {tuple(top_k_index.shape)}, got {tuple(top_k_weights.shape)}")
    if top_k_index.is_floating_point():
        raise ValueError(f"top_k_index must be an integer tensor, got {top_k_index.dtype}")
    e, h2, d = gate_up_proj.shape
    if d != x.shape[1] or h2 % 2 or down_proj.shape != (e, d, h2 // 2):
        raise ValueError(
            f"gate_up_proj must be [E, 2H, D] and down_proj [E, D, H] with D = {x.shape[1]}, got "
            f"{tuple(gate_up_proj.shape)} and {tuple(down_proj.shape)}"
        )


def moe_experts(
    x: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
    *,
    compute_dtype: torch.dtype | None = None,
    backend: str = "auto",
) -> torch.Tensor:
    """``y_t = Σ_s top_k_weights[t, s] · down_proj[e](SiLU(g) ⊙ u)``, ``[g; u] = gate_up_proj[e] · x_t``,
    ``e = top_k_index[t, s]``.

    Args:
        x: ``[N, D]`` tokens.
        top_k_index: ``[N, k]`` int64 experts in ``[0, E)`` (a token may repeat an expert).
        top_k_weights: ``[N, k]`` combine weights (0 for an assignment dropped by capacity: computed, adds 0).
        gate_up_proj: ``[E, 2H, D]`` (rows ``0..H-1`` gate, ``H..2H-1`` up).
        down_proj: ``[E, D, H]``.
        compute_dtype: dtype of the expert products (default ``x.dtype``): ``x`` and both expert tensors are cast
            to it; the combine sums in fp32.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``[N, D]`` in ``x``'s dtype, differentiable in ``x``, ``top_k_weights`` and both expert tensors. The
        Triton backend makes no host sync; ``N = 0`` always runs the PyTorch backend.
    """
    _validate(x, top_k_index, top_k_weights, gate_up_proj, down_proj)
    cdt = compute_dtype or x.dtype
    widths = (x.shape[1], down_proj.shape[-1])
    if x.shape[0] > 0 and _use_triton(backend, x, cdt, widths, "moe_experts", grouped=True):
        from kernels.moe.triton import moe_experts_triton

        return moe_experts_triton(x, top_k_index, top_k_weights, gate_up_proj.to(cdt), down_proj.to(cdt))
    y = moe_experts_reference(x.to(cdt), top_k_index, top_k_weights, gate_up_proj.to(cdt), down_proj.to(cdt))
    return y.to(x.dtype)


def swiglu(gu: torch.Tensor, *, backend: str = "auto") -> torch.Tensor:
    """``SiLU(g) ⊙ u`` with ``[g, u] = gu.chunk(2, -1)``: ``gu`` ``[..., 2H]`` → ``[..., H]`` (same dtype), fused in
    one Triton kernel forward and one backward (fp32 math), differentiable in ``gu``."""
    if gu.shape[-1] % 2:
        raise ValueError(f"swiglu needs an even last dim [..., 2H], got {tuple(gu.shape)}")
    if gu.numel() > 0 and _use_triton(backend, gu, gu.dtype, (), "swiglu", grouped=False):
        from kernels.moe.triton import swiglu_triton

        return swiglu_triton(gu)
    return swiglu_reference(gu)
