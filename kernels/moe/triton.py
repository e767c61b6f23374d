"""Routed SwiGLU experts: two grouped GEMMs (``torch.nn.functional.grouped_mm``, cuBLAS/CUTLASS) with the memory
passes around them fused into three Triton kernels each way, all in one autograd Function (design "A", scale.md §3).

Notation: N tokens, k slots, M = N·k assignments, E experts, widths D (model) and H (expert). The assignments are
sorted by expert (stable: by token within an expert); sorted row j holds assignment ``order[j] = t·k + s`` and
``inverse[t·k + s] = j``; ``offs [E]`` int32 are the groups' end rows (``offs[-1] = M``). Routing metadata is built
on the device without a host sync (:func:`routing`).

Forward (each line one launch; the Triton kernels are named ``_moe_*``)::

    xs[inverse[t·k+s]] = x[t]                                   [M, D]   _moe_dispatch_kernel (cast to compute dtype)
    gu = grouped_mm(xs, gate_up_projᵀ, offs)                    [M, 2H]
    h  = SiLU(gu[:, :H]) ⊙ gu[:, H:]                            [M, H]   _moe_swiglu_fwd_kernel
    y  = grouped_mm(h, down_projᵀ, offs)                        [M, D]
    out[t] = Σ_s w[t, s] · y[inverse[t·k+s]]                    [N, D]   _moe_combine_kernel (fp32 sum, x's dtype)

Saved for backward: ``xs``, ``gu`` and ``y`` (``M·(2D + 2H)`` elements in the compute dtype) plus the routing;
``h`` is not saved but recomputed by the SwiGLU backward, which reads ``gu`` anyway (one more write of ``M·H``
instead of keeping it). Backward::

    dy[inverse[t·k+s]] = w[t, s] · dout[t];  dw[t, s] = ⟨dout[t], y[inverse[t·k+s]]⟩    _moe_combine_bwd_kernel
    dh = grouped_mm(dy, down_proj, offs)                        [M, H]
    dg = dh ⊙ u ⊙ SiLU'(g),  du = dh ⊙ SiLU(g),  h = SiLU(g) ⊙ u   [M, 2H], [M, H]   _moe_swiglu_bwd_kernel
    d down_proj    = grouped_mm(dyᵀ, h, offs)                   [E, D, H]   (2-D × 2-D, groups along M)
    dxs            = grouped_mm(dgu, gate_up_proj, offs)        [M, D]
    d gate_up_proj = grouped_mm(dguᵀ, xs, offs)                 [E, 2H, D]
    dx[t] = Σ_s dxs[inverse[t·k+s]]                             [N, D]   _moe_combine_kernel (fp32 sum, x's dtype)

Every row move is a gather or a store to a distinct row (``inverse`` is a permutation): no atomics, deterministic.
The kernels are memory-bound 2-D tiles (``BLOCK_M`` rows × ``BLOCK_D`` columns, masked at the edges, fp32 math);
each launch is a ``torch.library.triton_op`` (torch ≥ 2.6; ``custom_op`` with a fake implementation before), so
``torch.compile(fullgraph=True)`` traces the autograd Function through them, keeps the grouped GEMMs as
``aten._grouped_mm`` and launches the Triton kernels from Inductor's generated code, not through ``triton.jit``'s
Python launcher (about a hundred microseconds of host time per launch that eager mode pays).
"""

from __future__ import annotations

import os

import torch
import torch.nn.functional as F
import triton
import triton.language as tl

#: Launch parameters: ``block_d`` the widest column block, ``tile`` the elements per program (``BLOCK_M =
#: tile // BLOCK_D`` rows), ``warps`` per program. 4096 elements over 4 warps = 32 per thread (four 16-byte loads
#: in bf16). ``ZOO_MOE_CONFIG="tile=8192,warps=8"`` overrides entries; tests shrink them to exercise the masks.
CONFIG: dict[str, int] = {"block_d": 1024, "tile": 4096, "warps": 4}
for _item in filter(None, os.environ.get("ZOO_MOE_CONFIG", "").split(",")):
    _key, _, _value = _item.partition("=")
    if _key.strip() not in CONFIG:
        raise ValueError(f"ZOO_MOE_CONFIG: unknown key {_key!r}; valid: {', '.join(CONFIG)}")
    CONFIG[_key.strip()] = int(_value)


def _grouped_mm_fn():
    """``torch.nn.functional.grouped_mm`` (torch ≥ 2.9) or the older ``torch._grouped_mm``; None if neither."""
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def _blocks(width: int) -> tuple[int, int]:
    """``(BLOCK_M, BLOCK_D)`` for rows of ``width`` elements: the column block a power of two ≤ ``block_d``, halved
    down to 256 while it does not divide ``width`` (768 → 256: no masked lanes), and ``tile // BLOCK_D`` rows."""
    block_d = min(triton.next_power_of_2(max(width, 1)), CONFIG["block_d"])
    while block_d > 256 and width % block_d:
        block_d //= 2
    return max(1, CONFIG["tile"] // block_d), block_d


# ---------------------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _moe_dispatch_kernel(
    X,  # [N, D]
    INVERSE,  # [N·K] int64
    XS,  # [N·K, D] (compute dtype)
    N,
    D,
    stride_x,
    stride_xs,
    K: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``xs[inverse[t·K + s]] = x[t]`` for every slot s: each token row read once, written to its K sorted rows."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < N
    mask = rmask[:, None] & (cols < D)[None, :]
    rows64 = rows.to(tl.int64)
    tile = tl.load(X + rows64[:, None] * stride_x + cols[None, :], mask=mask, other=0.0)
    tile = tile.to(XS.dtype.element_ty)
    for s in tl.static_range(K):
        dst = tl.load(INVERSE + rows64 * K + s, mask=rmask, other=0)
        tl.store(XS + dst[:, None] * stride_xs + cols[None, :], tile, mask=mask)


@triton.jit
def _moe_combine_kernel(
    Y,  # [N·K, D] expert-sorted rows
    INVERSE,  # [N·K] int64
    W,  # [N·K] combine weights (token-major) or a dummy
    OUT,  # [N, D]
    N,
    D,
    stride_y,
    stride_out,
    K: tl.constexpr,
    HAS_WEIGHT: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``out[t] = Σ_s w[t·K + s] · y[inverse[t·K + s]]`` (``w = 1`` without weights), summed in fp32."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    rmask = rows < N
    mask = rmask[:, None] & (cols < D)[None, :]
    rows64 = rows.to(tl.int64)
    acc = tl.zeros([BLOCK_M, BLOCK_D], dtype=tl.float32)
    for s in tl.static_range(K):
        src = tl.load(INVERSE + rows64 * K + s, mask=rmask, other=0)
        tile = tl.load(Y + src[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
        if HAS_WEIGHT:
            w = tl.load(W + rows64 * K + s, mask=rmask, other=0.0).to(tl.float32)
            tile = tile * w[:, None]
        acc += tile
    tl.store(OUT + rows64[:, None] * stride_out + cols[None, :], acc.to(OUT.dtype.element_ty), mask=mask)


@triton.jit
def _moe_combine_bwd_kernel(
    DOUT,  # [N, D]
    Y,  # [N·K, D] expert-sorted rows (the forward's down-projection outputs)
    INVERSE,  # [N·K] int64
    W,  # [N·K] combine weights
    DY,  # [N·K, D] (compute dtype)
    DW,  # [N·K] fp32 or a dummy
    N,
    D,
    stride_dout,
    stride_y,
    stride_dy,
    K: tl.constexpr,
    HAS_DW: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``dy[inverse[t·K+s]] = w[t·K+s] · dout[t]`` and ``dw[t·K+s] = ⟨dout[t], y[inverse[t·K+s]]⟩`` (fp32): one
    program per ``BLOCK_M`` tokens walks the D columns in ``BLOCK_D`` steps for each slot."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    rmask = rows < N
    rows64 = rows.to(tl.int64)
    for s in tl.static_range(K):
        j = tl.load(INVERSE + rows64 * K + s, mask=rmask, other=0)
        w = tl.load(W + rows64 * K + s, mask=rmask, other=0.0).to(tl.float32)
        dot = tl.zeros([BLOCK_M], dtype=tl.float32)
        for start in range(0, D, BLOCK_D):
            cols = start + tl.arange(0, BLOCK_D)
            mask = rmask[:, None] & (cols < D)[None, :]
            g = tl.load(DOUT + rows64[:, None] * stride_dout + cols[None, :], mask=mask, other=0.0).to(tl.float32)
            tl.store(DY + j[:, None] * stride_dy + cols[None, :], (g * w[:, None]).to(DY.dtype.element_ty), mask=mask)
            if HAS_DW:
                y = tl.load(Y + j[:, None] * stride_y + cols[None, :], mask=mask, other=0.0).to(tl.float32)
                dot += tl.sum(g * y, axis=1)
        if HAS_DW:
            tl.store(DW + rows64 * K + s, dot, mask=rmask)


@triton.jit
def _moe_swiglu_fwd_kernel(
    GU,  # [M, 2H]: gate columns 0..H-1, up columns H..2H-1
    HOUT,  # [M, H]
    M,
    H,
    stride_gu,
    stride_h,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``h = SiLU(g) ⊙ u = g·σ(g)·u`` in fp32, written in ``h``'s dtype."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (rows < M)[:, None] & (cols < H)[None, :]
    base = GU + rows.to(tl.int64)[:, None] * stride_gu + cols[None, :]
    g = tl.load(base, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(base + H, mask=mask, other=0.0).to(tl.float32)
    h = g * tl.sigmoid(g) * u
    tl.store(HOUT + rows.to(tl.int64)[:, None] * stride_h + cols[None, :], h.to(HOUT.dtype.element_ty), mask=mask)


@triton.jit
def _moe_swiglu_bwd_kernel(
    GU,  # [M, 2H]
    DH,  # [M, H]
    DGU,  # [M, 2H]
    HOUT,  # [M, H] or a dummy
    M,
    H,
    stride_gu,
    stride_dh,
    stride_dgu,
    stride_h,
    STORE_H: tl.constexpr,
    BLOCK_M: tl.constexpr,
    BLOCK_D: tl.constexpr,
):
    """``dg = dh ⊙ u ⊙ σ(g)(1 + g(1 − σ(g)))``, ``du = dh ⊙ g σ(g)`` into ``dgu = [dg, du]``; with ``STORE_H`` also
    the forward's ``h = g σ(g) u`` (recomputed here instead of saved)."""
    rows = tl.program_id(0) * BLOCK_M + tl.arange(0, BLOCK_M)
    cols = tl.program_id(1) * BLOCK_D + tl.arange(0, BLOCK_D)
    mask = (rows < M)[:, None] & (cols < H)[None, :]
    rows64 = rows.to(tl.int64)[:, None]
    base = GU + rows64 * stride_gu + cols[None, :]
    g = tl.load(base, mask=mask, other=0.0).to(tl.float32)
    u = tl.load(base + H, mask=mask, other=0.0).to(tl.float32)
    dh = tl.load(DH + rows64 * stride_dh + cols[None, :], mask=mask, other=0.0).to(tl.float32)
    sig = tl.sigmoid(g)
    silu = g * sig
    dg = dh * u * sig * (1.0 + g * (1.0 - sig))
    du = dh * silu
    out = DGU + rows64 * stride_dgu + cols[None, :]
    tl.store(out, dg.to(DGU.dtype.element_ty), mask=mask)
    tl.store(out + H, du.to(DGU.dtype.element_ty), mask=mask)
    if STORE_H:
        tl.store(HOUT + rows64 * stride_h + cols[None, :], (silu * u).to(HOUT.dtype.element_ty), mask=mask)


# ---------------------------------------------------------------------------------------------------------------
# launches, each a custom op (opaque to Inductor, traceable by Dynamo through its fake implementation)
# ---------------------------------------------------------------------------------------------------------------
#: ``torch.library.triton_op`` where torch has it and the kernels are compiled (Triton's interpreter,
#: ``TRITON_INTERPRET=1``, runs kernels that only the opaque ``custom_op`` path can trace).
_TRITON_OP = None if os.environ.get("TRITON_INTERPRET") == "1" else getattr(torch.library, "triton_op", None)
_wrap = torch.library.wrap_triton if _TRITON_OP is not None else (lambda kernel: kernel)


def _op(name: str):
    """``torch.library.triton_op(name)`` where :data:`_TRITON_OP` is set (Inductor sees the kernels), else
    ``custom_op`` (opaque; its fake implementation is registered by :func:`_fake`)."""
    if _TRITON_OP is not None:
        return _TRITON_OP(name, mutates_args=())
    return torch.library.custom_op(name, mutates_args=())


def _fake(op):
    """Register a fake implementation under ``custom_op`` only (a ``triton_op`` is traced through its body)."""

    def register(fn):
        if _TRITON_OP is None:
            op.register_fake(fn)
        return fn

    return register


def _rows(t: torch.Tensor) -> torch.Tensor:
    """``t`` with unit column stride (the kernels index rows by their stride)."""
    return t if t.stride(-1) == 1 else t.contiguous()


@_op("zoo_moe::dispatch")
def dispatch(x: torch.Tensor, inverse: torch.Tensor, k: int, dtype: torch.dtype) -> torch.Tensor:
    """``xs[inverse[t·k + s]] = x[t]`` in ``dtype``: ``x`` ``[N, D]``, ``inverse`` ``[N·k]`` → ``xs`` ``[N·k, D]``."""
    x = _rows(x)
    n, d = x.shape
    xs = torch.empty(inverse.numel(), d, device=x.device, dtype=dtype)
    bm, bd = _blocks(d)
    _wrap(_moe_dispatch_kernel)[(triton.cdiv(n, bm), triton.cdiv(d, bd))](
        x, inverse, xs, n, d, x.stride(0), xs.stride(0), K=k, BLOCK_M=bm, BLOCK_D=bd, num_warps=CONFIG["warps"]
    )
    return xs


@_fake(dispatch)
def _(x, inverse, k, dtype):
    return x.new_empty(inverse.shape[0], x.shape[1], dtype=dtype)


@_op("zoo_moe::combine")
def combine(
    y: torch.Tensor, inverse: torch.Tensor, weights: torch.Tensor | None, k: int, dtype: torch.dtype
) -> torch.Tensor:
    """``out[t] = Σ_s w[t·k+s] · y[inverse[t·k+s]]`` (fp32 sum, stored in ``dtype``): ``y`` ``[N·k, D]``, ``weights``
    ``[N·k]`` contiguous or None (all 1) → ``[N, D]``."""
    y = _rows(y)
    d = y.shape[1]
    n = inverse.numel() // k
    out = torch.empty(n, d, device=y.device, dtype=dtype)
    bm, bd = _blocks(d)
    _wrap(_moe_combine_kernel)[(triton.cdiv(n, bm), triton.cdiv(d, bd))](
        y,
        inverse,
        weights if weights is not None else y,
        out,
        n,
        d,
        y.stride(0),
        out.stride(0),
        K=k,
        HAS_WEIGHT=weights is not None,
        BLOCK_M=bm,
        BLOCK_D=bd,
        num_warps=CONFIG["warps"],
    )
    return out


@_fake(combine)
def _(y, inverse, weights, k, dtype):
    return y.new_empty(inverse.shape[0] // k, y.shape[1], dtype=dtype)


@_op("zoo_moe::combine_backward")
def combine_backward(
    dout: torch.Tensor, y: torch.Tensor, inverse: torch.Tensor, weights: torch.Tensor, k: int, want_dw: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """The combine's backward: ``dy [N·k, D]`` in ``y``'s dtype (sorted rows) and ``dw [N·k]`` fp32 (token-major;
    empty unless ``want_dw``)."""
    dout, y = _rows(dout), _rows(y)
    n, d = dout.shape
    dy = torch.empty(y.shape, device=y.device, dtype=y.dtype)
    dw = torch.empty(n * k if want_dw else 0, device=y.device, dtype=torch.float32)
    bm, bd = _blocks(d)
    _wrap(_moe_combine_bwd_kernel)[(triton.cdiv(n, bm),)](
        dout,
        y,
        inverse,
        weights,
        dy,
        dw if want_dw else dy,
        n,
        d,
        dout.stride(0),
        y.stride(0),
        dy.stride(0),
        K=k,
        HAS_DW=want_dw,
        BLOCK_M=bm,
        BLOCK_D=bd,
        num_warps=CONFIG["warps"],
    )
    return dy, dw


@_fake(combine_backward)
def _(dout, y, inverse, weights, k, want_dw):
    return y.new_empty(y.shape), y.new_empty(inverse.shape[0] if want_dw else 0, dtype=torch.float32)


@_op("zoo_moe::swiglu_forward")
def swiglu_forward(gu: torch.Tensor) -> torch.Tensor:
    """``h = SiLU(gu[:, :H]) ⊙ gu[:, H:]``: ``[M, 2H]`` → ``[M, H]``, same dtype."""
    gu = _rows(gu)
    m, h2 = gu.shape
    hdim = h2 // 2
    h = torch.empty(m, hdim, device=gu.device, dtype=gu.dtype)
    bm, bd = _blocks(hdim)
    _wrap(_moe_swiglu_fwd_kernel)[(triton.cdiv(m, bm), triton.cdiv(hdim, bd))](
        gu, h, m, hdim, gu.stride(0), h.stride(0), BLOCK_M=bm, BLOCK_D=bd, num_warps=CONFIG["warps"]
    )
    return h


@_fake(swiglu_forward)
def _(gu):
    return gu.new_empty(gu.shape[0], gu.shape[1] // 2)


@_op("zoo_moe::swiglu_backward")
def swiglu_backward(gu: torch.Tensor, dh: torch.Tensor, want_h: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """``(dgu [M, 2H], h [M, H])`` from ``gu [M, 2H]`` and ``dh [M, H]``; ``h`` (the recomputed forward) is empty
    unless ``want_h``."""
    gu, dh = _rows(gu), _rows(dh)
    m, h2 = gu.shape
    hdim = h2 // 2
    dgu = torch.empty(m, h2, device=gu.device, dtype=gu.dtype)
    h = torch.empty(m if want_h else 0, hdim, device=gu.device, dtype=gu.dtype)
    bm, bd = _blocks(hdim)
    _wrap(_moe_swiglu_bwd_kernel)[(triton.cdiv(m, bm), triton.cdiv(hdim, bd))](
        gu,
        dh,
        dgu,
        h if want_h else dgu,
        m,
        hdim,
        gu.stride(0),
        dh.stride(0),
        dgu.stride(0),
        h.stride(0) if want_h else 0,
        STORE_H=want_h,
        BLOCK_M=bm,
        BLOCK_D=bd,
        num_warps=CONFIG["warps"],
    )
    return dgu, h


@_fake(swiglu_backward)
def _(gu, dh, want_h):
    return gu.new_empty(gu.shape), gu.new_empty(gu.shape[0] if want_h else 0, gu.shape[1] // 2)


# ---------------------------------------------------------------------------------------------------------------
# routing and autograd
# ---------------------------------------------------------------------------------------------------------------
def routing(top_k_index: torch.Tensor, num_experts: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(inverse [N·k] int64, offs [E] int32)`` on the device, without a host sync.

    ``order = argsort(top_k_index.flatten(), stable)`` (sorted row j ← assignment ``order[j] = t·k + s``),
    ``inverse[order[j]] = j`` by a scatter, ``counts[e] = #{assignments to e}`` by a ``scatter_add``, ``offs =
    cumsum(counts)`` (group end rows, ``offs[-1] = N·k``; an expert without rows repeats the previous offset).
    """
    flat = top_k_index.reshape(-1)
    order = torch.argsort(flat.to(torch.int32), stable=True)  # 32-bit keys: half the radix passes of int64
    rows = torch.arange(flat.numel(), device=flat.device)
    inverse = torch.empty_like(order).scatter_(0, order, rows)
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat.device)
    counts = counts.scatter_add_(0, flat, torch.ones_like(flat))
    return inverse, counts.cumsum(0).to(torch.int32)


class _SwiGLUFunction(torch.autograd.Function):
    """``h = SiLU(g) ⊙ u`` of ``gu = [g, u]`` ``[M, 2H]``; saves ``gu``, the backward is one kernel."""

    @staticmethod
    def forward(ctx, gu: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        ctx.save_for_backward(gu)
        return swiglu_forward(gu)

    @staticmethod
    def backward(ctx, dh: torch.Tensor):  # type: ignore[override]
        (gu,) = ctx.saved_tensors
        dgu, _ = swiglu_backward(gu, dh, False)
        return dgu


class _MoEExpertsFunction(torch.autograd.Function):
    """The routed experts of :mod:`kernels.moe.triton` (module docstring: the passes and what is saved)."""

    @staticmethod
    def forward(ctx, x, weights, gate_up_proj, down_proj, inverse, offs, k):  # type: ignore[override]
        gmm = _grouped_mm_fn()
        cdt = gate_up_proj.dtype
        xs = dispatch(x, inverse, k, cdt)  # [M, D]
        gu = gmm(xs, gate_up_proj.transpose(-2, -1), offs=offs)  # [M, 2H]
        y = gmm(swiglu_forward(gu), down_proj.transpose(-2, -1), offs=offs)  # [M, D]
        out = combine(y, inverse, weights, k, x.dtype)  # [N, D]
        ctx.save_for_backward(xs, gu, y, weights, gate_up_proj, down_proj, inverse, offs)
        ctx.k, ctx.x_dtype = k, x.dtype
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        xs, gu, y, weights, gate_up_proj, down_proj, inverse, offs = ctx.saved_tensors
        need_x, need_w, need_gate_up, need_down = ctx.needs_input_grad[:4]
        gmm = _grouped_mm_fn()
        dy, dw = combine_backward(dout, y, inverse, weights, ctx.k, need_w)  # [M, D], [N·k]
        dh = gmm(dy, down_proj, offs=offs)  # [M, H]
        dgu, h = swiglu_backward(gu, dh, need_down)  # [M, 2H], [M, H]
        d_down = gmm(dy.t(), h, offs=offs) if need_down else None  # [E, D, H]
        d_gate_up = gmm(dgu.t(), xs, offs=offs) if need_gate_up else None  # [E, 2H, D]
        dx = combine(gmm(dgu, gate_up_proj, offs=offs), inverse, None, ctx.k, ctx.x_dtype) if need_x else None
        return dx, (dw.to(weights.dtype) if need_w else None), d_gate_up, d_down, None, None, None


def moe_experts_triton(
    x: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """The Triton backend of :func:`kernels.moe.moe_experts`: the expert products in ``gate_up_proj``'s dtype
    (which ``down_proj`` shares), ``x [N, D]`` → ``[N, D]`` in ``x``'s dtype; no host sync."""
    n, k = top_k_index.shape
    inverse, offs = routing(top_k_index, gate_up_proj.shape[0])
    weights = top_k_weights.reshape(n * k).contiguous()
    out = _MoEExpertsFunction.apply(x, weights, gate_up_proj, down_proj, inverse, offs, k)
    return out


def swiglu_triton(gu: torch.Tensor) -> torch.Tensor:
    """The Triton backend of :func:`kernels.moe.swiglu`: ``gu [..., 2H]`` → ``[..., H]``."""
    shape = gu.shape
    h = _SwiGLUFunction.apply(gu.reshape(-1, shape[-1]))
    return h.reshape(*shape[:-1], shape[-1] // 2)
