"""Pure-PyTorch lightning attention: the specification, the CPU path and the test oracle.

Per head h with decay rate ``s_h > 0`` and ``λ_h = exp(−s_h)`` (MiniMax-01 §2.2, no 1/√D scale, no normaliser):

    S_t = λ S_{t−1} + k_tᵀ v_t        (state D×D, S_{−1} = initial_state or 0)
    o_t = q_t S_t                      =  Σ_{j≤t} λ^{t−j} (q_t·k_j) v_j  +  λ^{t+1} q_t S_{−1}

Three forms of the same function, all taking ``q, k, v: [B, T, H, D]``, ``decay: [H]`` and an optional fp32
``initial_state: [B, H, D, D]``, and returning ``(o [B, T, H, D], final_state [B, H, D, D] fp32)``:

* :func:`lightning_attention_quadratic` — the parallel form ``O = ((Q Kᵀ) ⊙ D) V``; O(T²); tests only.
* :func:`lightning_attention_recurrent` — the token recurrence above; O(T D²); tests only.
* :func:`lightning_attention_blockwise` — MiniMax's block algorithm (block 256: quadratic inside a block, the
  recurrent state across blocks), differentiable, with packed sequences (``cu_seqlens``). This is the ``"torch"``
  backend of :func:`kernels.lightning_attention.lightning_attention`.

All compute in float32 (or float64 when given float64) and return ``o`` in the dtype of ``q``.
"""

from __future__ import annotations

import torch

from kernels.varlen import equal_length_groups

BLOCK = 256


def _compute_dtype(q: torch.Tensor) -> torch.dtype:
    return torch.float64 if q.dtype == torch.float64 else torch.float32


def lightning_attention_quadratic(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """``o = ((Q Kᵀ) ⊙ D) V + λ^{t+1} Q S₀`` with ``D_tj = λ^{t−j}`` for ``t ≥ j``; the final state in closed form."""
    dtype = _compute_dtype(q)
    qf, kf, vf = (x.to(dtype).transpose(1, 2) for x in (q, k, v))  # [B, H, T, D]
    T = q.shape[1]
    log_lambda = -decay.to(dtype).view(1, -1, 1, 1)  # [1, H, 1, 1]
    t = torch.arange(T, device=q.device, dtype=dtype)
    gap = t.view(-1, 1) - t.view(1, -1)  # t − j
    mask = torch.exp(log_lambda * gap.clamp(min=0)) * (gap >= 0)  # [1, H, T, T]
    o = (qf @ kf.transpose(-1, -2) * mask) @ vf
    to_end = torch.exp(log_lambda * (T - 1 - t).view(1, 1, -1, 1))  # λ^{T−1−j}
    final = (kf * to_end).transpose(-1, -2) @ vf
    if initial_state is not None:
        s0 = initial_state.to(dtype)
        o = o + torch.exp(log_lambda * (t + 1).view(1, 1, -1, 1)) * (qf @ s0)
        final = final + torch.exp(log_lambda * T) * s0
    return o.transpose(1, 2).to(q.dtype), final.to(torch.float32 if dtype == torch.float32 else dtype)


def lightning_attention_recurrent(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, initial_state: torch.Tensor | None = None
) -> tuple[torch.Tensor, torch.Tensor]:
    """The token recurrence ``S_t = λ S_{t−1} + k_tᵀ v_t``, ``o_t = q_t S_t``, one token at a time."""
    dtype = _compute_dtype(q)
    B, T, H, D = q.shape
    lam = torch.exp(-decay.to(dtype)).view(1, H, 1, 1)
    state = (
        initial_state.to(dtype).clone() if initial_state is not None else q.new_zeros(B, H, D, v.shape[-1], dtype=dtype)
    )
    outputs = []
    for t in range(T):
        kt, vt, qt = k[:, t].to(dtype), v[:, t].to(dtype), q[:, t].to(dtype)  # [B, H, D]
        state = lam * state + kt.unsqueeze(-1) * vt.unsqueeze(-2)
        outputs.append((qt.unsqueeze(-2) @ state).squeeze(-2))
    o = torch.stack(outputs, dim=1) if outputs else q.new_zeros(B, 0, H, v.shape[-1], dtype=dtype)
    return o.to(q.dtype), state.to(torch.float32 if dtype == torch.float32 else dtype)


def _blockwise_one(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, state: torch.Tensor, block: int
) -> tuple[torch.Tensor, torch.Tensor]:
    """One batch of equal-length sequences: ``q, k: [B, H, T, D]``, ``v: [B, H, T, DV]`` in the compute dtype,
    ``state: [B, H, D, DV]``. ``T = 0`` returns an empty output and the state unchanged."""
    T = q.shape[2]
    if T == 0:
        return v.new_zeros(v.shape), state
    log_lambda = -decay.view(1, -1, 1, 1)
    idx = torch.arange(block, device=q.device, dtype=q.dtype)
    gap = idx.view(-1, 1) - idx.view(1, -1)
    diag_full = torch.exp(log_lambda * gap.clamp(min=0)) * (gap >= 0)  # [1, H, block, block]
    outputs = []
    for start in range(0, T, block):
        m = min(block, T - start)
        qb, kb, vb = q[:, :, start : start + m], k[:, :, start : start + m], v[:, :, start : start + m]
        i = idx[:m].view(1, 1, -1, 1)
        q_decay = torch.exp(log_lambda * (i + 1))  # λ^{i+1}: from the previous block's last token
        k_decay = torch.exp(log_lambda * (m - 1 - i))  # λ^{m−1−j}: to this block's last token
        intra = (qb @ kb.transpose(-1, -2) * diag_full[..., :m, :m]) @ vb
        inter = (qb * q_decay) @ state
        outputs.append(intra + inter)
        state = torch.exp(log_lambda * m) * state + (kb * k_decay).transpose(-1, -2) @ vb
    return torch.cat(outputs, dim=2), state


def lightning_attention_blockwise(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    decay: torch.Tensor,
    initial_state: torch.Tensor | None = None,
    cu_seqlens: torch.Tensor | None = None,
    block: int = BLOCK,
) -> tuple[torch.Tensor, torch.Tensor]:
    """MiniMax's block algorithm (minimax.md §1.4), differentiable.

    Inside a block of ``m ≤ block`` tokens: ``O = ((Q Kᵀ) ⊙ diag) V + (Q ⊙ λ^{i+1}) S``; across blocks:
    ``S ← λ^m S + (K ⊙ λ^{m−1−j})ᵀ V``. With ``cu_seqlens`` (int ``[N+1]``, ``B = 1``) each packed sequence starts
    from its own state (``initial_state[n]`` or 0) and ``final_state`` is ``[N, H, D, D]``.
    """
    dtype = _compute_dtype(q)
    B, _, H, D = q.shape
    qf, kf, vf = (x.to(dtype).transpose(1, 2) for x in (q, k, v))
    decay = decay.to(dtype)
    if cu_seqlens is None:
        state = initial_state.to(dtype) if initial_state is not None else qf.new_zeros(B, H, D, v.shape[-1])
        o, final = _blockwise_one(qf, kf, vf, decay, state, block)
        return o.transpose(1, 2).to(q.dtype), final.float() if dtype == torch.float32 else final
    if B != 1:
        raise ValueError(f"cu_seqlens needs a packed batch of size 1, got B={B}")
    # Sequences of equal length run as one batch (an RL batch's prompts have few distinct lengths).
    pieces, token_order, finals, doc_order = [], [], [], []
    for length, docs, rows in equal_length_groups(cu_seqlens.tolist(), q.device):
        q_n, k_n, v_n = (x[0][:, rows].view(H, len(docs), length, x.shape[-1]).transpose(0, 1) for x in (qf, kf, vf))
        if initial_state is not None:
            state = initial_state[torch.tensor(docs, device=initial_state.device)].to(dtype)
        else:
            state = qf.new_zeros(len(docs), H, D, v.shape[-1])
        o, final = _blockwise_one(q_n, k_n, v_n, decay, state, block)  # [n, H, L, DV], [n, H, D, DV]
        pieces.append(o.transpose(0, 1).reshape(H, len(docs) * length, o.shape[-1]))
        token_order.append(rows)
        finals.append(final)
        doc_order += docs
    order = torch.cat(token_order)
    inverse = torch.empty_like(order)
    inverse[order] = torch.arange(order.numel(), device=order.device)
    o = torch.cat(pieces, dim=1)[:, inverse][None].transpose(1, 2).to(q.dtype)  # [1, ΣT, H, DV] in packed order
    doc_inverse = torch.empty(len(doc_order), dtype=torch.long, device=q.device)
    doc_inverse[torch.tensor(doc_order, device=q.device)] = torch.arange(len(doc_order), device=q.device)
    final = torch.cat(finals, dim=0)[doc_inverse]
    return o, final.float() if dtype == torch.float32 else final


def lightning_attention_decode_reference(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, decay: torch.Tensor, state: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """One token: ``q, k, v: [B, H, D]`` (or ``[B, 1, H, D]``), ``state: [B, H, D, D]`` fp32 (fp64 in tests) →
    ``(o [B, H, D] in q's dtype, new_state)`` with ``S' = λ S + kᵀ v``, ``o = q S'``."""
    squeeze = q.dim() == 4
    if squeeze:
        q, k, v = q[:, 0], k[:, 0], v[:, 0]
    dtype = torch.float64 if state.dtype == torch.float64 else torch.float32
    lam = torch.exp(-decay.to(dtype)).view(1, -1, 1, 1)
    new_state = lam * state.to(dtype) + k.to(dtype).unsqueeze(-1) * v.to(dtype).unsqueeze(-2)
    # o_j = Σ_i q_i S'_ij as a reduction: under torch.compile Inductor computes S' and o in one kernel
    o = (q.to(dtype).unsqueeze(-1) * new_state).sum(-2).to(q.dtype)
    return (o.unsqueeze(1) if squeeze else o), new_state
