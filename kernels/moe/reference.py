"""Pure-PyTorch routed SwiGLU experts: the specification, the CPU path and the test oracle.

N tokens ``x [N, D]``, each routed to k of E experts (``top_k_index [N, k]``) with combine weights
``top_k_weights [N, k]``; expert e has ``gate_up_proj[e] [2H, D]`` (rows ``0..H-1`` the gate, ``H..2H-1`` the up
projection) and ``down_proj[e] [D, H]``::

    [g; u]  = gate_up_proj[e] · x_t                       g, u ∈ R^H
    FFN_e(x_t) = down_proj[e] · ( SiLU(g) ⊙ u )            SiLU(g) = g · σ(g)
    y_t     = Σ_{s<k} top_k_weights[t, s] · FFN_{top_k_index[t, s]}(x_t)

A token may name the same expert in several slots (each slot counts); an assignment with weight 0 (dropped by a
capacity limit) contributes nothing. :func:`moe_experts_reference` is the ``"torch"`` backend of
:func:`kernels.moe.moe_experts`; :func:`swiglu_reference` that of :func:`kernels.moe.swiglu`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F


def swiglu_reference(gu: torch.Tensor) -> torch.Tensor:
    """``h = SiLU(g) ⊙ u`` with ``[g, u] = gu.chunk(2, -1)``: ``gu`` ``[M, 2H]`` → ``[M, H]`` (same dtype)."""
    gate, up = gu.chunk(2, dim=-1)
    return F.silu(gate) * up


def moe_experts_reference(
    x: torch.Tensor,
    top_k_index: torch.Tensor,
    top_k_weights: torch.Tensor,
    gate_up_proj: torch.Tensor,
    down_proj: torch.Tensor,
) -> torch.Tensor:
    """``y_t = Σ_s w[t, s] · down[e](SiLU(g) ⊙ u)``, ``[g; u] = gate_up[e] · x_t``, ``e = top_k_index[t, s]``.

    One expert at a time: the (token, slot) pairs routed to it, its SwiGLU on those tokens, the weighted outputs
    added into their tokens' rows. The products run in ``x``'s dtype (fp64 for tests), the weighting and the sum in
    at least fp32. Differentiable in ``x``, ``top_k_weights`` and both expert tensors. Reads the routing on the
    host (a sync per expert): a specification, not a fast path.

    Args:
        x: ``[N, D]`` tokens.
        top_k_index: ``[N, k]`` int64 experts in ``[0, E)``.
        top_k_weights: ``[N, k]`` combine weights.
        gate_up_proj: ``[E, 2H, D]``.
        down_proj: ``[E, D, H]``.

    Returns:
        ``[N, D]`` in ``x``'s dtype.
    """
    acc = torch.promote_types(x.dtype, torch.float32)
    out = torch.zeros(x.shape, dtype=acc, device=x.device)
    for e in range(gate_up_proj.shape[0]):
        token, slot = (top_k_index == e).nonzero(as_tuple=True)
        if token.numel() == 0:
            continue
        h = swiglu_reference(x[token] @ gate_up_proj[e].to(x.dtype).t())  # [n_e, H]
        y = h @ down_proj[e].to(x.dtype).t()  # [n_e, D]
        out = out.index_add(0, token, y.to(acc) * top_k_weights[token, slot].to(acc)[:, None])
    return out.to(x.dtype)
