"""Triton kernels for lightning attention: forward, backward, decode, packed sequences.

Notation per head: ``λ = exp(−s)``; a *segment* is a run of tokens of one sequence handled by one program, which
walks it in blocks of ``BT`` tokens keeping the running D×D state on chip (in registers), so q, k, v are read and
o written exactly once. When there are too few (sequence, head) pairs to fill the GPU, sequences are split into
several segments; a cheap pre-pass then gives every segment its starting state:

    summary[g] = Σ_{t∈g} λ^{e−1−t} k_tᵀ v_t         (segment g = [a, e))          _segment_summary_kernel
    state_in[g+1] = λ^{e−a} state_in[g] + summary[g]  (per sequence, in order)      _segment_scan_kernel

Forward (``_chunk_fwd_kernel``), one block of m ≤ BT tokens with state S (the state after the previous token):

    O   = ((Q Kᵀ) ⊙ Λ) V + (Q ⊙ λ^{i+1}) S           Λ_ij = λ^{i−j} for i ≥ j, else 0
    S  ← λ^m S + (K ⊙ λ^{m−1−j})ᵀ V

Backward. ``dq_t = do_t S_tᵀ`` is the forward applied to ``(do, v, k)`` with the transposed states, so the same
kernel computes it. ``dk`` and ``dv`` come from one reverse walk (``_chunk_bwd_dkdv_kernel``) with the reverse
state ``U_e = λ^{T−e} dS_final + Σ_{s≥e} λ^{s−e+1} q_sᵀ do_s``:

    dV  = ((K Qᵀ) ⊙ Λᵀ) dO + (K ⊙ λ^{m−1−i}) U
    dK  = ((V dOᵀ) ⊙ Λᵀ) Q + (V ⊙ λ^{m−1−i}) Uᵀ
    U  ← λ^m U + (Q ⊙ λ^{i+1})ᵀ dO                  and d initial_state = U at the sequence start.

Decode (``_decode_kernel``): one token, ``S ← λ S + kᵀ v``, ``o = q S``, one program per (batch, head, V tile).

Dots take bf16/fp16 operands with fp32 accumulation (the state is rounded to the input dtype for ``Q S``, as fla
does); fp32 inputs use exact fp32 dots. Under ``TRITON_INTERPRET=1`` (CPU tests) every dot runs in fp32, because
the interpreter computes bf16 dots wrongly.
"""

from __future__ import annotations

import itertools
import math
import os

import torch
import triton
import triton.language as tl

LOG2E = 1.4426950408889634
INTERPRET = os.environ.get("TRITON_INTERPRET", "0") == "1"

#: Launch parameters (tuned on an H100 with ``tools/bench/lightning_attention.py --tune``); ``ZOO_LA_CONFIG`` =
#: ``"fwd_bv=64,bwd_warps=4"`` overrides entries. Block sizes are in tokens. Sequences are cut into segments only
#: when there are fewer (sequence, head) pairs than SMs, and then into ``programs_per_sm`` programs per SM: the
#: segment pre-pass costs about one more read of k and v, which pays only when the GPU would otherwise idle.
CONFIG: dict[str, int] = {
    "fwd_block": 64,
    "fwd_bv": 128,
    "fwd_warps": 8,
    "fwd_stages": 2,
    "bwd_block": 64,
    "bwd_warps": 8,
    "bwd_stages": 2,
    "summary_block": 64,
    "summary_bv": 128,
    "scan_block": 1024,
    "programs_per_sm": 4,
}
#: The largest head dims (D and DV) each kernel takes: the chunk kernels keep a D×DV fp32 state tile in registers
#: (the backward the whole state), so beyond 128 they would spill; the decode kernel holds D×32 per program.
MAX_HEAD_DIM: dict[str, int] = {"chunk": 128, "decode": 256}
SUPPORTED_DTYPES = (torch.float32, torch.bfloat16, torch.float16)
for _item in filter(None, os.environ.get("ZOO_LA_CONFIG", "").split(",")):
    _key, _, _value = _item.partition("=")
    if _key.strip() not in CONFIG:
        raise ValueError(f"ZOO_LA_CONFIG: unknown key {_key!r}; valid: {', '.join(CONFIG)}")
    CONFIG[_key.strip()] = int(_value)


# ---------------------------------------------------------------------------------------------------------------
# kernels
# ---------------------------------------------------------------------------------------------------------------
@triton.jit
def _segment(SEG, g):
    """Row ``g`` of the segment table: (sequence, start token, end token, flags: 1 first, 2 last)."""
    row = SEG + g * 4
    return tl.load(row), tl.load(row + 1), tl.load(row + 2), tl.load(row + 3)


@triton.jit
def _pow_lambda(c, n):
    """λ^n = exp2(−c·n) with c = s·log2(e); n ≥ 0."""
    return tl.exp2(-c * n.to(tl.float32))


@triton.jit
def _segment_summary_kernel(
    A,  # [NT, H, DA]  (forward: k; reverse: q)
    Bm,  # [NT, H, DB]  (forward: v; reverse: do)
    OUT,  # [NS, H, DA, DB] fp32
    SEG,  # [NS, 4] int32: sequence, start, end, flags
    C,  # [H] fp32: s·log2(e)
    stride_at,
    stride_ah,
    stride_bt,
    stride_bh,
    H: tl.constexpr,
    DA: tl.constexpr,
    DB: tl.constexpr,
    BA: tl.constexpr,
    BT: tl.constexpr,
    BB: tl.constexpr,
    REVERSE: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    """Forward: Σ_t λ^{e−1−t} a_tᵀ b_t.  Reverse: Σ_t λ^{t−a+1} a_tᵀ b_t.  One program per (segment, head, BB
    columns of b); ``BA ≥ DA`` is the padded width of a (masked)."""
    g = tl.program_id(0)
    h = tl.program_id(1)
    _, a, e, _ = _segment(SEG, g)
    c = tl.load(C + h)
    offs_a = tl.arange(0, BA)
    offs_b = tl.program_id(2) * BB + tl.arange(0, BB)
    amask = offs_a < DA
    bmask = offs_b < DB
    rows = tl.arange(0, BT)
    acc = tl.zeros([BA, BB], dtype=tl.float32)
    for start in range(a, e, BT):
        t = start + rows
        valid = t < e
        t64 = t[:, None].to(tl.int64)
        xa = tl.load(
            A + t64 * stride_at + h * stride_ah + offs_a[None, :], mask=valid[:, None] & amask[None, :], other=0.0
        )
        xb = tl.load(
            Bm + t64 * stride_bt + h * stride_bh + offs_b[None, :], mask=valid[:, None] & bmask[None, :], other=0.0
        )
        xa = xa.to(tl.float32)
        if REVERSE:
            w = tl.exp2(-c * (t - a + 1).to(tl.float32))
        else:
            w = tl.exp2(-c * tl.maximum(e - 1 - t, 0).to(tl.float32))
        w = tl.where(valid, w, 0.0)
        xa = (xa * w[:, None]).to(DOT_DTYPE)
        acc = tl.dot(tl.trans(xa), xb.to(DOT_DTYPE), acc=acc, input_precision=PRECISION)
    out = OUT + (g * H + h).to(tl.int64) * DA * DB
    tl.store(out + offs_a[:, None] * DB + offs_b[None, :], acc, mask=amask[:, None] & bmask[None, :])


@triton.jit
def _segment_scan_kernel(
    SUM,  # [NS, H, DA, DB] fp32
    INIT,  # [N, H, DA, DB] fp32 or dummy
    STATE_IN,  # [NS, H, DA, DB] fp32: the state each segment starts from
    SEG,  # [NS, 4]
    SEQ,  # [N, 2] int32: first segment, number of segments
    C,
    H: tl.constexpr,
    DA: tl.constexpr,
    DB: tl.constexpr,
    BLOCK: tl.constexpr,
    HAS_INIT: tl.constexpr,
    REVERSE: tl.constexpr,
):
    """Per sequence: state_in[first] = init; state_in[g+1] = λ^{len g} state_in[g] + sum[g] (reverse: from the end).
    The DA·DB state entries are cut into tiles of BLOCK (the last one masked)."""
    n = tl.program_id(0)
    h = tl.program_id(1)
    tile = tl.program_id(2)
    first = tl.load(SEQ + n * 2)
    count = tl.load(SEQ + n * 2 + 1)
    c = tl.load(C + h)
    offs = tile * BLOCK + tl.arange(0, BLOCK)
    inside = offs < DA * DB
    if HAS_INIT:
        state = tl.load(INIT + (n * H + h).to(tl.int64) * DA * DB + offs, mask=inside, other=0.0)
    else:
        state = tl.zeros([BLOCK], dtype=tl.float32)
    for i in range(count):
        if REVERSE:
            g = first + count - 1 - i
        else:
            g = first + i
        base = (g * H + h).to(tl.int64) * DA * DB
        tl.store(STATE_IN + base + offs, state, mask=inside)
        _, start, end, _ = _segment(SEG, g)
        length = end - start
        state = state * _pow_lambda(c, length) + tl.load(SUM + base + offs, mask=inside, other=0.0)


@triton.jit
def _chunk_fwd_kernel(
    Q,  # [NT, H, D]
    K,  # [NT, H, D]
    V,  # [NT, H, DV]
    Out,  # [NT, H, DV]
    STATE_IN,  # [NS, H, D, DV] fp32 (or [N, H, ...] when STATE_PER_SEQ), possibly read transposed
    FINAL,  # [N, H, D, DV] fp32
    SEG,  # [NS, 4]
    C,  # [H]
    stride_t,
    stride_h,
    stride_vt,
    stride_vh,
    H: tl.constexpr,
    D: tl.constexpr,
    DV: tl.constexpr,
    BD: tl.constexpr,
    BT: tl.constexpr,
    BV: tl.constexpr,
    HAS_STATE: tl.constexpr,
    STATE_PER_SEQ: tl.constexpr,
    TRANS_STATE: tl.constexpr,
    STORE_FINAL: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    g = tl.program_id(0)
    h = tl.program_id(1)
    vt = tl.program_id(2)
    seq, a, e, flags = _segment(SEG, g)
    c = tl.load(C + h)
    offs_d = tl.arange(0, BD)  # BD ≥ D: padded to a power of two, the padding masked to zero
    offs_v = vt * BV + tl.arange(0, BV)
    dmask = offs_d < D
    vmask = offs_v < DV
    smask = dmask[:, None] & vmask[None, :]
    rows = tl.arange(0, BT)

    if HAS_STATE:
        owner = seq if STATE_PER_SEQ else g
        base = STATE_IN + (owner * H + h).to(tl.int64) * D * DV
        if TRANS_STATE:  # the stored state is [DV, D]: read its transpose
            state = tl.load(base + offs_v[None, :] * D + offs_d[:, None], mask=smask, other=0.0)
        else:
            state = tl.load(base + offs_d[:, None] * DV + offs_v[None, :], mask=smask, other=0.0)
    else:
        state = tl.zeros([BD, BV], dtype=tl.float32)

    causal = rows[:, None] >= rows[None, :]
    gap = tl.where(causal, rows[:, None] - rows[None, :], 0)
    block_mask = tl.where(causal, tl.exp2(-c * gap.to(tl.float32)), 0.0)  # Λ for a full block
    q_decay = tl.exp2(-c * (rows + 1).to(tl.float32))  # λ^{i+1}

    for start in range(a, e, BT):
        t = start + rows
        valid = t < e
        m = tl.minimum(e - start, BT)
        ptr = t[:, None].to(tl.int64) * stride_t + h * stride_h
        vptr = t[:, None].to(tl.int64) * stride_vt + h * stride_vh
        qk_mask = valid[:, None] & dmask[None, :]
        v_mask = valid[:, None] & vmask[None, :]
        q = tl.load(Q + ptr + offs_d[None, :], mask=qk_mask, other=0.0)
        k = tl.load(K + ptr + offs_d[None, :], mask=qk_mask, other=0.0)
        v = tl.load(V + vptr + offs_v[None, :], mask=v_mask, other=0.0)
        scores = tl.dot(q.to(DOT_DTYPE), tl.trans(k.to(DOT_DTYPE)), input_precision=PRECISION) * block_mask
        out = tl.dot(scores.to(DOT_DTYPE), v.to(DOT_DTYPE), input_precision=PRECISION)
        qd = (q.to(tl.float32) * q_decay[:, None]).to(DOT_DTYPE)
        out = tl.dot(qd, state.to(DOT_DTYPE), acc=out, input_precision=PRECISION)
        tl.store(Out + vptr + offs_v[None, :], out.to(Out.dtype.element_ty), mask=v_mask)
        k_decay = tl.where(valid, tl.exp2(-c * tl.maximum(m - 1 - rows, 0).to(tl.float32)), 0.0)
        kd = (k.to(tl.float32) * k_decay[:, None]).to(DOT_DTYPE)
        state = tl.dot(tl.trans(kd), v.to(DOT_DTYPE), acc=state * _pow_lambda(c, m), input_precision=PRECISION)

    if STORE_FINAL:  # noqa: SIM102 (a constexpr test, then a runtime one)
        if flags & 2:  # the sequence's last segment
            out_state = FINAL + (seq * H + h).to(tl.int64) * D * DV
            tl.store(out_state + offs_d[:, None] * DV + offs_v[None, :], state, mask=smask)


@triton.jit
def _chunk_bwd_dkdv_kernel(
    Q,  # [NT, H, D]
    K,  # [NT, H, D]
    V,  # [NT, H, DV]
    DO,  # [NT, H, DV]
    DK,  # [NT, H, D]
    DVo,  # [NT, H, DV]
    U_IN,  # [NS, H, D, DV] fp32 (or [N, H, ...] when U_PER_SEQ): reverse state at each segment's end
    DS0,  # [N, H, D, DV] fp32: gradient of the initial state
    SEG,
    C,
    stride_t,
    stride_h,
    stride_vt,
    stride_vh,
    H: tl.constexpr,
    D: tl.constexpr,
    DV: tl.constexpr,
    BD: tl.constexpr,
    BDV: tl.constexpr,
    BT: tl.constexpr,
    HAS_U: tl.constexpr,
    U_PER_SEQ: tl.constexpr,
    STORE_DS0: tl.constexpr,
    DOT_DTYPE: tl.constexpr,
    PRECISION: tl.constexpr,
):
    g = tl.program_id(0)
    h = tl.program_id(1)
    seq, a, e, flags = _segment(SEG, g)
    c = tl.load(C + h)
    offs_d = tl.arange(0, BD)  # BD ≥ D and BDV ≥ DV: powers of two, the padding masked to zero
    offs_v = tl.arange(0, BDV)
    dmask = offs_d < D
    vmask = offs_v < DV
    umask = dmask[:, None] & vmask[None, :]
    rows = tl.arange(0, BT)

    if HAS_U:
        owner = seq if U_PER_SEQ else g
        u_ptr = U_IN + (owner * H + h).to(tl.int64) * D * DV + offs_d[:, None] * DV + offs_v[None, :]
        u = tl.load(u_ptr, mask=umask, other=0.0)
    else:
        u = tl.zeros([BD, BDV], dtype=tl.float32)

    anti = rows[:, None] <= rows[None, :]  # Λᵀ: s ≥ i
    gap = tl.where(anti, rows[None, :] - rows[:, None], 0)
    block_mask_t = tl.where(anti, tl.exp2(-c * gap.to(tl.float32)), 0.0)
    q_decay = tl.exp2(-c * (rows + 1).to(tl.float32))  # λ^{i+1}

    n_blocks = tl.cdiv(e - a, BT)
    for b in range(n_blocks - 1, -1, -1):
        start = a + b * BT
        t = start + rows
        valid = t < e
        m = tl.minimum(e - start, BT)
        ptr = t[:, None].to(tl.int64) * stride_t + h * stride_h
        vptr = t[:, None].to(tl.int64) * stride_vt + h * stride_vh
        qk_mask = valid[:, None] & dmask[None, :]
        v_mask = valid[:, None] & vmask[None, :]
        q = tl.load(Q + ptr + offs_d[None, :], mask=qk_mask, other=0.0)
        k = tl.load(K + ptr + offs_d[None, :], mask=qk_mask, other=0.0)
        v = tl.load(V + vptr + offs_v[None, :], mask=v_mask, other=0.0)
        do = tl.load(DO + vptr + offs_v[None, :], mask=v_mask, other=0.0)
        carry = tl.where(valid, tl.exp2(-c * tl.maximum(m - 1 - rows, 0).to(tl.float32)), 0.0)  # λ^{m−1−i}
        u_dot = u.to(DOT_DTYPE)

        kq = tl.dot(k.to(DOT_DTYPE), tl.trans(q.to(DOT_DTYPE)), input_precision=PRECISION) * block_mask_t
        dv = tl.dot(kq.to(DOT_DTYPE), do.to(DOT_DTYPE), input_precision=PRECISION)
        dv = tl.dot((k.to(tl.float32) * carry[:, None]).to(DOT_DTYPE), u_dot, acc=dv, input_precision=PRECISION)
        tl.store(DVo + vptr + offs_v[None, :], dv.to(DVo.dtype.element_ty), mask=v_mask)

        vdo = tl.dot(v.to(DOT_DTYPE), tl.trans(do.to(DOT_DTYPE)), input_precision=PRECISION) * block_mask_t
        dk = tl.dot(vdo.to(DOT_DTYPE), q.to(DOT_DTYPE), input_precision=PRECISION)
        dk = tl.dot(
            (v.to(tl.float32) * carry[:, None]).to(DOT_DTYPE), tl.trans(u_dot), acc=dk, input_precision=PRECISION
        )
        tl.store(DK + ptr + offs_d[None, :], dk.to(DK.dtype.element_ty), mask=qk_mask)

        qd = (q.to(tl.float32) * tl.where(valid, q_decay, 0.0)[:, None]).to(DOT_DTYPE)
        u = tl.dot(tl.trans(qd), do.to(DOT_DTYPE), acc=u * _pow_lambda(c, m), input_precision=PRECISION)

    if STORE_DS0:  # noqa: SIM102
        if flags & 1:  # the sequence's first segment: u is now the gradient of the initial state
            ds0_ptr = DS0 + (seq * H + h).to(tl.int64) * D * DV + offs_d[:, None] * DV + offs_v[None, :]
            tl.store(ds0_ptr, u, mask=umask)


@triton.jit
def _load_f32(ptr, mask, MASKED: tl.constexpr):
    """``tl.load`` as fp32, masked (zeros outside) only when ``MASKED``: unmasked accesses stay vectorised."""
    if MASKED:
        x = tl.load(ptr, mask=mask, other=0.0)
    else:
        x = tl.load(ptr)
    return x.to(tl.float32)


@triton.jit
def _store(ptr, value, mask, MASKED: tl.constexpr):
    """``tl.store``, masked only when ``MASKED``."""
    if MASKED:
        tl.store(ptr, value, mask=mask)
    else:
        tl.store(ptr, value)


@triton.jit
def _decode_kernel(
    Q,  # [B, H, D]
    K,
    V,  # [B, H, DV]
    S_IN,  # [B, H, D, DV] fp32
    S_OUT,  # [B, H, D, DV] fp32 (may alias S_IN)
    Out,  # [B, H, DV]
    C,
    H: tl.constexpr,
    D: tl.constexpr,
    DV: tl.constexpr,
    BD: tl.constexpr,
    BV: tl.constexpr,
    MASKED: tl.constexpr,
):
    """One program per (batch·head, BV columns of the state); ``BD ≥ D`` padded to a power of two. Masks only when
    the tiles overhang (``MASKED``: D < BD or BV does not divide DV), so the power-of-two case runs the plain
    accesses of the previous kernel (the step is latency-bound at small batches)."""
    bh = tl.program_id(0)
    vt = tl.program_id(1)
    h = bh % H
    offs_d = tl.arange(0, BD)
    offs_v = vt * BV + tl.arange(0, BV)
    lam = tl.exp2(-tl.load(C + h))
    ptr = bh.to(tl.int64) * D * DV + offs_d[:, None] * DV + offs_v[None, :]
    dmask = offs_d < D
    vmask = offs_v < DV
    smask = dmask[:, None] & vmask[None, :]
    q = _load_f32(Q + bh * D + offs_d, dmask, MASKED)
    k = _load_f32(K + bh * D + offs_d, dmask, MASKED)
    v = _load_f32(V + bh * DV + offs_v, vmask, MASKED)
    state = _load_f32(S_IN + ptr, smask, MASKED) * lam + k[:, None] * v[None, :]
    _store(S_OUT + ptr, state, smask, MASKED)
    o = tl.sum(q[:, None] * state, axis=0)
    _store(Out + bh * DV + offs_v, o.to(Out.dtype.element_ty), vmask, MASKED)


# ---------------------------------------------------------------------------------------------------------------
# host side
# ---------------------------------------------------------------------------------------------------------------
def _dot_dtype(dtype: torch.dtype):
    if INTERPRET or dtype == torch.float32:
        return tl.float32
    return tl.float16 if dtype == torch.float16 else tl.bfloat16


def _dot_args(dtype: torch.dtype) -> dict:
    """Operand dtype of the dots, and exact ("ieee") fp32 products for fp32 inputs instead of TF32."""
    return {"DOT_DTYPE": _dot_dtype(dtype), "PRECISION": "ieee" if dtype == torch.float32 else "tf32"}


def _pieces_per_sequence(device: torch.device, pairs: int) -> int:
    """Segments per sequence: 1 when (sequence, head) pairs fill the SMs, else enough for programs_per_sm per SM."""
    if device.type != "cuda":
        return 1
    sms = torch.cuda.get_device_properties(device).multi_processor_count
    return 1 if pairs >= sms else math.ceil(CONFIG["programs_per_sm"] * sms / pairs)


class Segments:
    """How the flat token axis is cut: sequences, and segments of them that programs walk.

    Attributes:
        table: int32 ``[NS, 4]`` (sequence, start, end, flags: 1 = first segment of its sequence, 2 = last).
        seqs: int32 ``[N, 2]`` (first segment, number of segments).
        split: whether any sequence has more than one segment (the scan pre-pass is needed).
    """

    def __init__(
        self, bounds: list[tuple[int, int]], heads: int, device: torch.device, block: int, seg_len: int | None = None
    ):
        if seg_len is None:  # enough segments for ~2 programs per SM, in whole blocks
            longest = max((end - start for start, end in bounds), default=0)
            pieces = _pieces_per_sequence(device, max(1, len(bounds) * heads))
            seg_len = max(block, math.ceil(math.ceil(max(longest, 1) / pieces) / block) * block)
        self.num_seqs = len(bounds)
        length = bounds[0][1] - bounds[0][0] if bounds else 0
        if bounds and all(b == (n * length, (n + 1) * length) for n, b in enumerate(bounds)):
            self.table, self.seqs = self._equal_lengths(self.num_seqs, length, seg_len, device)
        else:
            table, seqs = [], []
            for n, (start, end) in enumerate(bounds):
                first = len(table)
                cuts = list(range(start, end, seg_len)) or [start]
                for i, a in enumerate(cuts):
                    e = min(a + seg_len, end)
                    table.append((n, a, e, (1 if i == 0 else 0) | (2 if i == len(cuts) - 1 else 0)))
                seqs.append((first, len(table) - first))
            self.table = torch.tensor(table, dtype=torch.int32, device=device)
            self.seqs = torch.tensor(seqs, dtype=torch.int32, device=device)
        self.num_segments = self.table.shape[0]
        self.split = self.num_segments > self.num_seqs

    @staticmethod
    def _equal_lengths(n: int, length: int, seg_len: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The tables of ``n`` sequences of ``length`` tokens each (a ``[B, T]`` batch), made on the device: no
        host-to-device copy, so a CUDA graph can capture them. The same rows as the general loop."""
        pieces = max(1, math.ceil(length / seg_len))
        row = torch.arange(n * pieces, device=device)
        seq, piece = row // pieces, row % pieces
        start = seq * length + piece * seg_len
        end = torch.minimum(start + seg_len, (seq + 1) * length)
        flags = (piece == 0).long() | ((piece == pieces - 1).long() << 1)
        table = torch.stack([seq, start, end, flags], dim=1).to(torch.int32)
        first = torch.arange(n, device=device) * pieces
        seqs = torch.stack([first, torch.full_like(first, pieces)], dim=1).to(torch.int32)
        return table, seqs


def _block_size(kind: str) -> int:
    """Tokens per block of a kernel (``fwd``, ``bwd``, ``summary``); 16 under the CPU interpreter."""
    return 16 if INTERPRET else CONFIG[f"{kind}_block"]


def _padded(size: int) -> int:
    """The power-of-two tile width (≥ 16, ``tl.dot``'s minimum) that holds a head dim of ``size``; the rest masked."""
    return max(16, triton.next_power_of_2(size))


def unsupported_reason(d: int, dv: int, dtype: torch.dtype, kind: str = "chunk") -> str | None:
    """Why the Triton kernels of ``kind`` (``"chunk"``: whole sequences, ``"decode"``: one step) cannot take key
    dim ``d``, value dim ``dv`` and ``dtype``, or None when they can. Any head dim from 1 to the kernel's maximum
    works (padded and masked)."""
    limit = MAX_HEAD_DIM[kind]
    if dtype not in SUPPORTED_DTYPES:
        return (
            f"the Triton kernels take {', '.join(str(t).removeprefix('torch.') for t in SUPPORTED_DTYPES)}, not {dtype}"
        )
    for name, size in (("D", d), ("DV", dv)):
        if not 1 <= size <= limit:
            return f"head dim {name}={size} is outside the Triton {kind} kernel's range 1…{limit}"
    return None


def _check(q: torch.Tensor, v: torch.Tensor, kind: str) -> None:
    reason = unsupported_reason(q.shape[-1], v.shape[-1], q.dtype, kind)
    if reason is not None:
        raise ValueError(f"lightning attention: {reason}; use backend='torch'")


def _scan(
    a: torch.Tensor,
    b: torch.Tensor,
    segs: Segments,
    c: torch.Tensor,
    init: torch.Tensor | None,
    reverse: bool,
) -> torch.Tensor:
    """State each segment starts from (forward: after its predecessor; reverse: the reverse state at its end)."""
    H, da, db = a.shape[1], a.shape[2], b.shape[2]
    block = _block_size("summary")
    sums = torch.empty(segs.num_segments, H, da, db, device=a.device, dtype=torch.float32)
    bb = _padded(db) if INTERPRET else min(_padded(db), CONFIG["summary_bv"])
    _segment_summary_kernel[(segs.num_segments, H, triton.cdiv(db, bb))](
        a,
        b,
        sums,
        segs.table,
        c,
        a.stride(0),
        a.stride(1),
        b.stride(0),
        b.stride(1),
        H=H,
        DA=da,
        DB=db,
        BA=_padded(da),
        BT=block,
        BB=bb,
        REVERSE=reverse,
        **_dot_args(a.dtype),
    )
    state_in = torch.empty_like(sums)
    tile = min(CONFIG["scan_block"], triton.next_power_of_2(da * db))
    _segment_scan_kernel[(segs.num_seqs, H, triton.cdiv(da * db, tile))](
        sums,
        init if init is not None else sums,
        state_in,
        segs.table,
        segs.seqs,
        c,
        H=H,
        DA=da,
        DB=db,
        BLOCK=tile,
        HAS_INIT=init is not None,
        REVERSE=reverse,
    )
    return state_in


def _forward_pass(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    c: torch.Tensor,
    segs: Segments,
    state: torch.Tensor | None,
    state_per_seq: bool,
    trans_state: bool,
    want_final: bool,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """One causal pass over flat ``[NT, H, ·]`` tensors (the forward, or dq with ``(do, v, k)``)."""
    NT, H, D = q.shape
    DV = v.shape[-1]
    o = torch.empty(NT, H, DV, device=q.device, dtype=q.dtype)
    final = torch.empty(segs.num_seqs, H, D, DV, device=q.device, dtype=torch.float32) if want_final else None
    bv = _padded(DV) if INTERPRET else min(_padded(DV), CONFIG["fwd_bv"])
    _chunk_fwd_kernel[(segs.num_segments, H, triton.cdiv(DV, bv))](
        q,
        k,
        v,
        o,
        state if state is not None else o,
        final if final is not None else o,
        segs.table,
        c,
        q.stride(0),
        q.stride(1),
        v.stride(0),
        v.stride(1),
        H=H,
        D=D,
        DV=DV,
        BD=_padded(D),
        BT=_block_size("fwd"),
        BV=bv,
        HAS_STATE=state is not None,
        STATE_PER_SEQ=state_per_seq,
        TRANS_STATE=trans_state,
        STORE_FINAL=want_final,
        **_dot_args(q.dtype),
        num_warps=CONFIG["fwd_warps"],
        num_stages=CONFIG["fwd_stages"],
    )
    return o, final


class _LightningAttentionFunction(torch.autograd.Function):
    @staticmethod
    def forward(ctx, q, k, v, c, initial_state, bounds, want_final, seg_len):  # type: ignore[override]
        H = q.shape[1]
        segs = Segments(bounds, H, q.device, _block_size("fwd"), seg_len)
        init = initial_state.contiguous() if initial_state is not None else None
        if segs.split:
            states, per_seq = _scan(k, v, segs, c, init, reverse=False), False
        else:
            states, per_seq = init, True
        o, final = _forward_pass(q, k, v, c, segs, states, per_seq, trans_state=False, want_final=want_final)
        ctx.save_for_backward(q, k, v, c, states if states is not None else torch.empty(0, device=q.device))
        ctx.segs, ctx.per_seq, ctx.has_states = segs, per_seq, states is not None
        ctx.needs_init_grad = initial_state is not None and ctx.needs_input_grad[4]
        return o, final

    @staticmethod
    def backward(ctx, do, dfinal):  # type: ignore[override]
        q, k, v, c, states = ctx.saved_tensors
        segs: Segments = ctx.segs
        do = do.contiguous()
        states = states if ctx.has_states else None
        # dq_t = do_t S_tᵀ: the forward pass over (do, v, k) reading the saved states transposed
        dq, _ = _forward_pass(do, v, k, c, segs, states, ctx.per_seq, trans_state=True, want_final=False)
        dfinal = dfinal.contiguous() if dfinal is not None else None
        if segs.split:
            u_in, u_per_seq = _scan(q, do, segs, c, dfinal, reverse=True), False
        else:
            u_in, u_per_seq = dfinal, True
        _, H, D = q.shape
        DV = v.shape[-1]
        dk = torch.empty_like(k)
        dv = torch.empty_like(v)
        ds0 = (
            torch.empty(segs.num_seqs, H, D, DV, device=q.device, dtype=torch.float32) if ctx.needs_init_grad else None
        )
        _chunk_bwd_dkdv_kernel[(segs.num_segments, H)](
            q,
            k,
            v,
            do,
            dk,
            dv,
            u_in if u_in is not None else dk,
            ds0 if ds0 is not None else dk,
            segs.table,
            c,
            q.stride(0),
            q.stride(1),
            v.stride(0),
            v.stride(1),
            H=H,
            D=D,
            DV=DV,
            BD=_padded(D),
            BDV=_padded(DV),
            BT=_block_size("bwd"),
            HAS_U=u_in is not None,
            U_PER_SEQ=u_per_seq,
            STORE_DS0=ds0 is not None,
            **_dot_args(q.dtype),
            num_warps=CONFIG["bwd_warps"],
            num_stages=CONFIG["bwd_stages"],
        )
        return dq, dk, dv, None, ds0, None, None, None


def lightning_attention_triton(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    decay: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    output_final_state: bool = False,
    segment_len: int | None = None,
) -> tuple[torch.Tensor, torch.Tensor | None]:
    """The Triton backend of :func:`kernels.lightning_attention.lightning_attention` (same arguments).

    ``segment_len`` fixes how many tokens one program walks (default: enough segments to fill the GPU); tests use
    it to exercise the segment pre-pass on the CPU.
    """
    _check(q, v, "chunk")
    B, T, H, _ = q.shape
    if cu_seqlens is None:
        bounds = [(b * T, (b + 1) * T) for b in range(B)]
    else:
        edges = [int(x) for x in cu_seqlens.tolist()]
        bounds = list(itertools.pairwise(edges))
    flat = [x.reshape(B * T, H, x.shape[-1]) for x in (q.contiguous(), k.contiguous(), v.contiguous())]
    c = (decay.detach().float() * LOG2E).contiguous()
    o, final = _LightningAttentionFunction.apply(*flat, c, initial_state, bounds, output_final_state, segment_len)
    return o.view(B, T, H, v.shape[-1]), final


def lightning_attention_decode_triton(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, state: torch.Tensor, inplace: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """One decode step, ``q, k: [B, H, D]``, ``v: [B, H, DV]``, ``state: [B, H, D, DV]`` fp32 contiguous; no host
    synchronisation, no allocation when ``inplace``."""
    _check(q, v, "decode")
    B, H, D = q.shape
    DV = v.shape[-1]
    out_state = state if inplace else torch.empty_like(state)
    o = torch.empty(B, H, DV, device=q.device, dtype=q.dtype)
    bv = min(triton.next_power_of_2(DV), 32)
    bd = triton.next_power_of_2(D)
    c = decay.float() * LOG2E if decay.dtype != torch.float32 else decay * LOG2E
    _decode_kernel[(B * H, triton.cdiv(DV, bv))](
        q, k, v, state, out_state, o, c, H=H, D=D, DV=DV, BD=bd, BV=bv, MASKED=bd != D or DV % bv != 0, num_warps=4
    )
    return o, out_state
