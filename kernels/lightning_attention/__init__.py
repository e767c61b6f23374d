"""Lightning attention (MiniMax-01): causal linear attention with a per-head exponential decay.

    o_t = q_t S_t,   S_t = λ_h S_{t−1} + k_tᵀ v_t,   λ_h = exp(−s_h)        (no 1/√D scale, no normaliser)

:func:`lightning_attention` computes a whole sequence (prefill / training) and :func:`lightning_attention_decode`
one generation step. Backends: ``"torch"`` (MiniMax's block-256 algorithm in PyTorch, :mod:`.reference`),
``"triton"`` (:mod:`.triton`), ``"auto"`` (Triton on CUDA tensors whose dtype and head dims the kernels take,
PyTorch otherwise; the reason is logged once). The kernels take any head dims from 1 to 128 (decode: 256), padded
to a power of two and masked. ``ZOO_KERNELS=reference`` forces PyTorch everywhere.
"""

from __future__ import annotations

import itertools

import torch

from kernels.backend import accept_or_fall_back
from kernels.backend import resolve_backend as _resolve_backend
from kernels.lightning_attention.reference import (
    lightning_attention_blockwise,
    lightning_attention_decode_reference,
    lightning_attention_quadratic,
    lightning_attention_recurrent,
)

__all__ = [
    "lightning_attention",
    "lightning_attention_blockwise",
    "lightning_attention_decode",
    "lightning_attention_quadratic",
    "lightning_attention_recurrent",
    "resolve_backend",
]


def resolve_backend(backend: str, tensor: torch.Tensor) -> str:
    """``"torch"`` or ``"triton"`` for a requested backend and the tensors it will run on
    (:func:`kernels.backend.resolve_backend`)."""
    return _resolve_backend(backend, tensor, "lightning_attention")


def _use_triton(backend: str, q: torch.Tensor, v: torch.Tensor, kind: str) -> bool:
    """Whether to run the Triton ``kind`` kernel (``"chunk"`` or ``"decode"``) on these tensors.

    ``"auto"`` falls back to PyTorch (logged once) for a dtype or head dim the kernels do not take;
    ``"triton"`` raises instead.
    """
    if resolve_backend(backend, q) != "triton":
        return False
    from kernels.lightning_attention.triton import unsupported_reason

    return accept_or_fall_back(
        backend, "lightning_attention", unsupported_reason(q.shape[-1], v.shape[-1], q.dtype, kind)
    )


def _validate(q, k, v, decay, initial_state, cu_seqlens) -> None:
    if q.dim() != 4 or k.shape != q.shape or v.dim() != 4 or v.shape[:3] != q.shape[:3]:
        raise ValueError(
            f"q, k must be [B, T, H, D] and v [B, T, H, DV], got {tuple(q.shape)}, {tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, T, H, D = q.shape
    if decay.shape != (H,):
        raise ValueError(f"decay must be [H] = [{H}], got {tuple(decay.shape)}")
    n = B if cu_seqlens is None else cu_seqlens.numel() - 1
    if cu_seqlens is not None:
        if B != 1:
            raise ValueError(f"cu_seqlens packs sequences into a batch of size 1, got B={B}")
        if cu_seqlens.dim() != 1 or cu_seqlens.numel() < 2 or cu_seqlens.is_floating_point():
            raise ValueError("cu_seqlens must be a 1-D integer tensor of N+1 offsets")
        edges = cu_seqlens.tolist()
        if edges[0] != 0 or edges[-1] != T or any(a > b for a, b in itertools.pairwise(edges)):
            raise ValueError(f"cu_seqlens must rise from 0 to T={T} without decreasing, got {edges}")
    if initial_state is not None and initial_state.shape != (n, H, D, v.shape[-1]):
        raise ValueError(f"initial_state must be [{n}, {H}, {D}, {v.shape[-1]}], got {tuple(initial_state.shape)}")


def lightning_attention(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    decay: torch.Tensor,
    *,
    initial_state: torch.Tensor | None = None,
    output_final_state: bool = False,
    cu_seqlens: torch.Tensor | None = None,
    backend: str = "auto",
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Decayed causal linear attention over whole sequences.

    Args:
        q, k: ``[B, T, H, D]``; v: ``[B, T, H, DV]`` (fp32, bf16 or fp16; fp64 runs the PyTorch backend). ``T = 0``
            is allowed.
        decay: ``[H]`` positive rates ``s_h``; the per-step decay is ``λ_h = exp(−s_h)``. It gets no gradient.
        initial_state: ``[B, H, D, DV]`` fp32, the state ``S_{−1}`` before the first token (``[N, ...]`` with
            ``cu_seqlens``); differentiable.
        output_final_state: also return the fp32 state after the last token, ``[B, H, D, DV]`` (``[N, ...]``); for
            an empty sequence it is the initial state (or zeros).
        cu_seqlens: int32 ``[N+1]`` offsets of N sequences packed into a ``B = 1`` batch (empty sequences
            allowed); the state restarts at every sequence.
        backend: ``"auto"``, ``"torch"`` or ``"triton"``.

    Returns:
        ``o`` ``[B, T, H, DV]`` in the dtype of ``q``, or ``(o, final_state)`` when ``output_final_state``.
    """
    _validate(q, k, v, decay, initial_state, cu_seqlens)
    if _use_triton(backend, q, v, "chunk"):
        if decay.requires_grad:
            raise ValueError("the Triton lightning attention gives decay no gradient; pass decay.detach()")
        from kernels.lightning_attention.triton import lightning_attention_triton

        o, final = lightning_attention_triton(q, k, v, decay, initial_state, cu_seqlens, output_final_state)
    else:
        o, final = lightning_attention_blockwise(q, k, v, decay, initial_state, cu_seqlens)
    return (o, final) if output_final_state else o


def lightning_attention_decode(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    decay: torch.Tensor,
    state: torch.Tensor,
    *,
    inplace: bool = False,
    backend: str = "auto",
) -> tuple[torch.Tensor, torch.Tensor]:
    """One generation step for a batch: ``S' = λ S + kᵀ v``, ``o = q S'``.

    Args:
        q, k: ``[B, H, D]`` or ``[B, 1, H, D]``; v: ``[B, H, DV]`` or ``[B, 1, H, DV]``.
        decay: ``[H]`` rates.
        state: ``[B, H, D, DV]`` fp32 (fp64 runs the PyTorch step, for fp64 checks).
        inplace: update ``state`` in place (no allocation: CUDA-graph friendly) and return it.

    Returns:
        ``(o, new_state)``: ``o`` shaped like ``v``, ``new_state`` fp32 ``[B, H, D, DV]``.
    """
    squeeze = q.dim() == 4
    q3, k3, v3 = (x[:, 0] if squeeze else x for x in (q, k, v))
    if q3.dim() != 3 or k3.shape != q3.shape or v3.dim() != 3 or v3.shape[:2] != q3.shape[:2]:
        raise ValueError(
            f"q, k must be [B, H, D] and v [B, H, DV] (or with a length-1 time axis), got {tuple(q.shape)}, "
            f"{tuple(k.shape)}, {tuple(v.shape)}"
        )
    B, H, D = q3.shape
    if state.shape != (B, H, D, v3.shape[-1]):
        raise ValueError(f"the decode state must be [{B}, {H}, {D}, {v3.shape[-1]}], got {tuple(state.shape)}")
    if decay.shape != (H,):
        raise ValueError(f"decay must be [H] = [{H}], got {tuple(decay.shape)}")
    if state.dtype not in (torch.float32, torch.float64):
        raise ValueError(f"the decode state must be fp32 (fp64 for fp64 checks), got {state.dtype}")
    kernel_state = state.dtype == torch.float32 and state.is_contiguous()  # what the Triton step reads and writes
    # Under torch.compile the PyTorch step, which Inductor fuses with its neighbours (the SiLU on q, k, v before it)
    if kernel_state and not torch.compiler.is_compiling() and _use_triton(backend, q3, v3, "decode"):
        from kernels.lightning_attention.triton import lightning_attention_decode_triton

        o, new_state = lightning_attention_decode_triton(
            q3.contiguous(), k3.contiguous(), v3.contiguous(), decay, state, inplace
        )
    else:
        o, new_state = lightning_attention_decode_reference(q3, k3, v3, decay, state)
        if inplace:
            state.copy_(new_state)
            new_state = state
    return (o.unsqueeze(1) if squeeze else o), new_state
