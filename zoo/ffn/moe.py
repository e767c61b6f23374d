"""MiniMax-01's sparse mixture-of-experts feed-forward block (``FFN`` name ``moe``).

MiniMax-01 §2.1 and minimax.md §3: every layer has E = 32 SwiGLU experts, each token goes to its top-2 experts
with the two softmax probabilities renormalised to sum to 1, there is no shared expert, training adds a
load-balancing loss and drops tokens beyond each expert's capacity, and inference is dropless::

    logits = x·W_gᵀ                      (fp32)                    [N, E]
    p      = softmax(logits)                                        [N, E]
    w, idx = TopK(p, k);  w ← w / Σ_k w                             [N, k]
    y      = Σ_k w_k · FFN_{idx_k}(x),   FFN_e(x) = W_down,e( SiLU(W_gate,e·x) ⊙ W_up,e·x )

Parameter names and layouts are those of Hugging Face's ``MiniMaxSparseMoeBlock`` (transformers 5.x), so weights
map one to one: ``gate.weight`` ``[E, D]``; ``experts.gate_up_proj`` ``[E, 2H, D]`` (rows ``0..H-1`` are the gate
``w1``, rows ``H..2H-1`` the up projection ``w3``); ``experts.down_proj`` ``[E, D, H]`` (``w2``). MiniMax's own
checkpoints store ``block_sparse_moe.experts.{e}.{w1,w3,w2}.weight``; stacking ``[w1; w3]`` gives
``gate_up_proj[e]`` and ``w2`` is ``down_proj[e]``.
"""

from __future__ import annotations

import contextlib
import importlib.util
import math
from collections.abc import Callable, Iterator
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from zoo.registries import FFN

__all__ = [
    "AUX_LOSS_TYPES",
    "GROUPED_MM_ALIGN",
    "IMPLS",
    "MoE",
    "MoEExperts",
    "capacity_mask",
    "expert_capacity",
    "fused_available",
    "grouped_mm_available",
    "inverse_permutation",
    "load_balancing_loss",
    "router_z_loss",
]

IMPLS = ("auto", "dense", "fused", "grouped_mm", "loop")
AUX_LOSS_TYPES = ("switch", "gshard", "paper")
GROUPED_MM_ALIGN = 8
"""``grouped_mm`` needs every row stride to be a multiple of 16 bytes: ``dim`` and ``hidden_dim`` multiples of 8
(bf16)."""
#: ``impl="auto"`` computes every expert on every token (``"dense"``) on CUDA outside bf16 when E ≤ this × k: at
#: most this many times the routed FLOPs, and no host sync (the loop's group sizes) in the step.
DENSE_MAX_EXPERTS_PER_SLOT = 4
#: Tokens up to which :meth:`MoE.inference` computes the experts with :meth:`MoEExperts.decode` (fixed shapes).
DECODE_TOKENS = 256
_TRITON_FOUND = importlib.util.find_spec("triton") is not None  # at import: a constant under torch.compile


def _grouped_mm_fn() -> Callable[..., torch.Tensor] | None:
    return getattr(F, "grouped_mm", None) or getattr(torch, "_grouped_mm", None)


def grouped_mm_available() -> bool:
    """Whether this torch has ``torch.nn.functional.grouped_mm`` (or the older ``torch._grouped_mm``)."""
    return _grouped_mm_fn() is not None


def fused_available() -> bool:
    """Whether ``impl="fused"`` can run its Triton kernels here: ``grouped_mm`` exists and Triton is importable.
    (Without them ``"fused"`` still runs, on :mod:`kernels.moe`'s PyTorch reference.)"""
    return grouped_mm_available() and _TRITON_FOUND


def _autocast_dtype(device_type: str) -> torch.dtype | None:
    """Autocast's dtype if autocast is on for ``device_type``, else None."""
    try:
        if torch.is_autocast_enabled(device_type):
            return torch.get_autocast_dtype(device_type)
    except RuntimeError:  # a device type autocast does not know (meta)
        pass
    return None


@contextlib.contextmanager
def _autocast_off(device_type: str, enabled: bool) -> Iterator[None]:
    if enabled:
        with torch.autocast(device_type, enabled=False):
            yield
    else:
        yield


def _expert_counts(flat_index: torch.Tensor, num_experts: int) -> torch.Tensor:
    """Assignments per expert, int64 ``[E]``, without a host sync (``bincount`` syncs, ``histc`` is
    nondeterministic on CUDA)."""
    counts = torch.zeros(num_experts, dtype=torch.int64, device=flat_index.device)
    return counts.scatter_add_(0, flat_index, torch.ones_like(flat_index))


def top_k(values: torch.Tensor, k: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``torch.topk(values, k, dim=-1)`` (largest first). Under ``torch.compile`` it is k max-reductions, which
    Inductor fuses into the router's kernels; its lowering of ``topk`` is a sort (two kernels, ≈ 8 µs per layer
    of a batch-1 decode step on an H200 for 8 experts). ``values`` ``[N, E]`` → ``([N, k], [N, k] int64)``."""
    if not torch.compiler.is_compiling():
        return torch.topk(values, k, dim=-1)
    columns = torch.arange(values.shape[-1], device=values.device)
    picked, where, rest = [], [], values
    for _ in range(k):
        value, index = rest.max(dim=-1)  # the first maximal column, as topk keeps ties in index order
        picked.append(value)
        where.append(index)
        rest = rest.masked_fill(columns == index[:, None], float("-inf"))
    return torch.stack(picked, dim=-1), torch.stack(where, dim=-1)


def expert_capacity(num_tokens: int, num_experts: int, top_k: int, capacity_factor: float) -> int:
    """``C = ⌈capacity_factor · N · k / E⌉`` assignments per expert."""
    return math.ceil(capacity_factor * num_tokens * top_k / num_experts)


def capacity_mask(top_k_index: torch.Tensor, num_experts: int, capacity: int) -> torch.Tensor:
    """Which (token, slot) assignments an expert of capacity ``capacity`` serves; ``[N, k]`` bool.

    Priority order (GShard / Switch): every token's first choice before any second choice, and within a slot by
    token order. An assignment is kept iff fewer than ``capacity`` assignments to the same expert precede it in
    that order. Computed with a stable sort and a cumulative count, on the device, without host syncs;
    deterministic.

    Args:
        top_k_index: ``[N, k]`` expert of each (token, slot).
        num_experts: E.
        capacity: C.
    """
    n, k = top_k_index.shape
    flat = top_k_index.t().reshape(-1)  # slot-major: position s·N + t is the priority of (t, s)
    order = torch.argsort(flat, stable=True)
    counts = _expert_counts(flat, num_experts)
    starts = counts.cumsum(0) - counts
    rank = torch.arange(flat.numel(), device=flat.device) - starts[flat[order]]  # rank within its expert
    keep = torch.empty_like(flat, dtype=torch.bool)
    keep[order] = rank < capacity
    return keep.view(k, n).t()


def load_balancing_loss(
    probs: torch.Tensor,
    top_k_index: torch.Tensor,
    num_experts: int,
    kind: str = "switch",
    group: Any = None,
) -> torch.Tensor:
    """The unweighted load-balancing loss of one layer's routing.

    ``f_e`` = fraction of tokens whose top-k contains expert e (the top-k one-hot summed over the k slots and
    averaged over tokens, so ``Σ_e f_e = k``); ``P_e`` = mean router probability of expert e.

    * ``"switch"``: ``E · Σ_e f_e·P_e`` — Switch Transformer's form as in Hugging Face's and MiniMax's released
      code (``load_balancing_loss_func``); k at perfect balance.
    * ``"gshard"`` / ``"paper"``: ``(1/E) · Σ_e f_e·P_e`` — the MiniMax-01 paper's eq. (§2.1, GShard-style),
      E² times smaller than ``"switch"`` (k/E² at perfect balance).

    Args:
        probs: ``[N, E]`` router softmax probabilities.
        top_k_index: ``[N, k]`` chosen experts.
        num_experts: E.
        kind: ``"switch"``, ``"gshard"`` or ``"paper"``.
        group: a process group: ``f`` counts the tokens of every rank in it (summed counts over summed tokens),
            ``P`` stays this rank's (see :func:`zoo.parallel.use_global_router_statistics`).

    Returns:
        a scalar in ``probs``' dtype, differentiable w.r.t. ``probs`` (``f`` is a count).
    """
    if kind not in AUX_LOSS_TYPES:
        raise ValueError(f"Unknown aux_loss_type '{kind}'. Valid choices: {', '.join(AUX_LOSS_TYPES)}.")
    counts = _expert_counts(top_k_index.reshape(-1), num_experts).to(probs.dtype)
    tokens = torch.full((1,), float(probs.shape[0]), dtype=probs.dtype, device=probs.device)
    if group is not None:
        import torch.distributed as dist

        totals = torch.cat([counts, tokens])
        dist.all_reduce(totals, group=group)
        counts, tokens = totals[:-1], totals[-1:]
    f = counts / tokens
    dot = (f * probs.mean(0)).sum()
    return dot * num_experts if kind == "switch" else dot / num_experts


def router_z_loss(logits: torch.Tensor) -> torch.Tensor:
    """ST-MoE's router z-loss ``mean_t( logsumexp_e(logits_te)² )`` (Zoph et al. 2022, eq. 5); ``logits`` ``[N, E]``."""
    return torch.logsumexp(logits, dim=-1).square().mean()


class MoEExperts(nn.Module):
    """E SwiGLU experts stored as two stacked tensors (Hugging Face's ``MiniMaxExperts`` layout).

    ``FFN_e(x) = down_proj[e] · ( SiLU(g) ⊙ u )`` with ``[g; u] = gate_up_proj[e] · x``.

    Args:
        num_experts: E.
        dim: D.
        hidden_dim: H.

    Parameters: ``gate_up_proj`` ``[E, 2H, D]``, ``down_proj`` ``[E, D, H]``.
    """

    def __init__(self, num_experts: int, dim: int, hidden_dim: int, *, device=None, dtype=None) -> None:
        super().__init__()
        factory = {"device": device, "dtype": dtype}
        self.num_experts = num_experts
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.gate_up_proj = nn.Parameter(torch.empty(num_experts, 2 * hidden_dim, dim, **factory))
        self.down_proj = nn.Parameter(torch.empty(num_experts, dim, hidden_dim, **factory))
        self.dispatcher: Callable[..., torch.Tensor] | None = None  # expert parallelism (zoo.parallel.expert)
        self.reset_parameters()

    def reset_parameters(self, std: float = 0.02) -> None:
        nn.init.normal_(self.gate_up_proj, std=std)
        nn.init.normal_(self.down_proj, std=std)

    def extra_repr(self) -> str:
        return f"num_experts={self.num_experts}, dim={self.dim}, hidden_dim={self.hidden_dim}"

    def forward(
        self,
        x: torch.Tensor,
        top_k_index: torch.Tensor,
        top_k_weights: torch.Tensor,
        *,
        impl: str = "loop",
        compute_dtype: torch.dtype | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``y_t = Σ_k top_k_weights[t, k] · FFN_{top_k_index[t, k]}(x_t)``.

        The (token, slot) assignments are sorted by expert (stable, so by token within an expert); ``"loop"`` runs
        one expert at a time (one host sync for the group sizes), ``"grouped_mm"`` runs two grouped GEMMs over all
        groups at once (no host sync). ``"fused"`` is :func:`kernels.moe.moe_experts`: the same two grouped GEMMs
        with the row permutation, cast, SiLU·up, weighting and k-sum (and their backwards) fused into Triton
        kernels around them, in one autograd Function, no host sync; where the kernels cannot run (CPU tensors,
        other dtypes, ``ZOO_KERNELS=reference``) its PyTorch reference, one expert at a time. ``"dense"`` sorts
        nothing: every expert runs on every token and the outputs are summed with the combine weights scattered to
        ``[N, E]`` (zero for the unchosen experts), in fp32 — E/k times the routed FLOPs, fixed shapes, no host sync
        (:meth:`all_experts`). The loop scales each expert output by its weight in the weights' dtype and
        ``index_add_`` s it into an output of ``x``'s dtype, as Hugging Face's ``MiniMaxExperts`` does;
        ``grouped_mm`` scales in the compute dtype and moves rows with gathers only (:class:`_DispatchRows`,
        :class:`_CombineRows`: no atomics, deterministic); ``"fused"`` weights and sums the k slots in fp32 and moves
        rows through the inverse permutation (gathers and stores to distinct rows: no atomics, deterministic).
        Autocast is off inside: the matrix products run in ``compute_dtype`` (default ``x.dtype``).

        Args:
            x: ``[N, D]`` tokens.
            top_k_index: ``[N, k]`` int64 experts.
            top_k_weights: ``[N, k]`` combine weights (0 for an assignment dropped by capacity).
            impl: ``"loop"``, ``"grouped_mm"``, ``"fused"`` or ``"dense"``.
            compute_dtype: dtype of the expert matrix products.
            keep: ``[N, k]`` bool, the assignments a capacity limit serves (None: all). Here the dropped ones are
                computed with their zero weight; an expert-parallel :attr:`dispatcher` does not send them.

        Returns:
            ``[N, D]`` in ``x.dtype``.
        """
        if self.dispatcher is not None:
            return self.dispatcher(
                self, x, top_k_index, top_k_weights, impl=impl, compute_dtype=compute_dtype, keep=keep
            )
        cdt = compute_dtype or x.dtype
        if impl == "dense":
            with _autocast_off(x.device.type, _autocast_dtype(x.device.type) is not None):
                return self.all_experts(x.to(cdt), top_k_index, top_k_weights).to(x.dtype)
        if impl == "fused":
            from kernels.moe import moe_experts

            gate_up_proj, down_proj = self.local_weights()
            with _autocast_off(x.device.type, _autocast_dtype(x.device.type) is not None):
                return moe_experts(x, top_k_index, top_k_weights, gate_up_proj, down_proj, compute_dtype=cdt)
        k = top_k_index.shape[-1]
        flat = top_k_index.reshape(-1)
        order = torch.argsort(flat, stable=True)
        token = order // k
        weight = top_k_weights.reshape(-1)[order].unsqueeze(-1)
        counts = _expert_counts(flat, self.num_experts)
        out = x.new_zeros(x.shape)
        with _autocast_off(x.device.type, _autocast_dtype(x.device.type) is not None):
            if impl == "grouped_mm":
                # gathers only (no atomics): dispatch row j = x[order[j] // k]; combine by the inverse permutation
                inverse = inverse_permutation(order)
                xs = _DispatchRows.apply(x.to(cdt), order, inverse, k)
                h = self._grouped(xs, counts, cdt) * weight.to(cdt)
                return _CombineRows.apply(h, order, inverse, k).to(x.dtype)
            if impl == "loop":
                start = 0
                for e, end in enumerate(counts.cumsum(0).tolist()):
                    if end > start:
                        rows = token[start:end]
                        h = self._expert(e, x[rows].to(cdt), cdt)
                        self._combine(out, rows, h, weight[start:end])
                    start = end
            else:
                raise ValueError(f"Unknown MoE impl '{impl}'. Valid choices: {', '.join(IMPLS[1:])}.")
        return out

    def sorted_forward(self, xs: torch.Tensor, counts: torch.Tensor, impl: str, cdt: torch.dtype) -> torch.Tensor:
        """The unweighted expert outputs of rows already sorted by expert: rows ``counts[:e].sum()`` up to
        ``counts[:e+1].sum()`` of ``xs`` ``[M, D]`` go through this module's e-th (local) expert; ``[M, D]``.
        ``counts`` ``[E_local]`` must sum to M. Used by expert parallelism, whose rows arrive sorted: ``"grouped_mm"``
        runs the two grouped GEMMs, ``"fused"`` the same with :func:`kernels.moe.swiglu` (one Triton kernel each way)
        between them, ``"loop"`` and ``"dense"`` one expert at a time."""
        if impl in ("grouped_mm", "fused"):
            return self._grouped(xs, counts, cdt, fused=impl == "fused")
        if impl not in ("loop", "dense"):  # rows arrive sorted: "dense" has nothing to save here
            raise ValueError(f"Unknown MoE impl '{impl}'. Valid choices: {', '.join(IMPLS[1:])}.")
        parts, start = [], 0
        for e, end in enumerate(counts.cumsum(0).tolist()):
            if end > start:
                parts.append(self._expert(e, xs[start:end], cdt))
            start = end
        return torch.cat(parts) if parts else xs.new_zeros(0, self.dim).to(cdt)

    def local_weights(self) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gate_up_proj, down_proj)`` of the experts this rank holds: the local shard of expert-parallel
        ``DTensor`` s (whole experts, ``[E/ep, …]``), else the parameters themselves."""
        return tuple(w.to_local() if hasattr(w, "to_local") else w for w in (self.gate_up_proj, self.down_proj))

    def decode(self, x: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        """The experts for the few tokens of a decode step, with fixed shapes and no host sync (CUDA-graph safe).

        ``x`` ``[N, D]``, ``top_k_index`` / ``top_k_weights`` ``[N, k]`` → ``Σ_j w_j · FFN_{e_j}(x)`` ``[N, D]``.
        With fewer assignments than experts (``N·k < E``) the chosen experts' weights are gathered and applied by
        batched matmuls (gpt-fast's MoE decode: only ``N·k`` experts are read); otherwise every expert runs on every
        token and the unchosen outputs get weight 0 — at decode batch sizes every expert is read once either way,
        which is what bounds the step.
        """
        gate_up_proj, down_proj = self.local_weights()
        n, k = top_k_index.shape
        if n * k < gate_up_proj.shape[0] and torch.compiler.is_compiling():
            # the same products as reductions: Inductor reads the chosen experts' rows straight from the weights
            # (an indirect load in the reduction kernel) instead of copying them out first
            chosen = top_k_index.reshape(-1)
            rows = x.repeat_interleave(k, dim=0).float()  # [N·k, D]
            gate, up = (gate_up_proj[chosen].float() * rows[:, None, :]).sum(-1).to(x.dtype).chunk(2, dim=-1)
            act = (F.silu(gate) * up).float()  # [N·k, I]
            h = (down_proj[chosen].float() * act[:, None, :]).sum(-1)  # [N·k, D]
            return (h.view(n, k, -1) * top_k_weights[..., None].float()).sum(1).to(x.dtype)
        if n * k < gate_up_proj.shape[0]:
            chosen = top_k_index.reshape(-1)
            rows = x.repeat_interleave(k, dim=0)[:, :, None]  # [N·k, D, 1]
            gate, up = torch.bmm(gate_up_proj[chosen].to(x.dtype), rows)[..., 0].chunk(2, dim=-1)
            h = torch.bmm(down_proj[chosen].to(x.dtype), (F.silu(gate) * up)[:, :, None])[..., 0]  # [N·k, D]
            return (h.view(n, k, -1).float() * top_k_weights[..., None].float()).sum(1).to(x.dtype)
        return self.all_experts(x, top_k_index, top_k_weights).to(x.dtype)

    def all_experts(self, x: torch.Tensor, top_k_index: torch.Tensor, top_k_weights: torch.Tensor) -> torch.Tensor:
        """Every expert on every token, combined with the routed weights: ``y_t = Σ_e c_te · FFN_e(x_t)`` with
        ``c = scatter(top_k_index, top_k_weights)`` ``[N, E]`` (zero where e is not among t's experts).

        Through views of the weights (no copy): one GEMM for all experts' gate and up projections, one batched GEMM
        over experts for the down projections, computed in ``x``'s dtype; the weighted sum in fp32, differentiable
        in ``x``, the weights and ``top_k_weights``. ``x`` ``[N, D]`` → ``[N, D]`` fp32 (fp64 for fp64 ``x``).
        """
        gate_up_proj, down_proj = self.local_weights()
        n, e, d = x.shape[0], gate_up_proj.shape[0], x.shape[-1]
        gate, up = F.linear(x, gate_up_proj.to(x.dtype).reshape(-1, d)).view(n, e, -1).chunk(2, dim=-1)
        h = torch.bmm((F.silu(gate) * up).transpose(0, 1), down_proj.to(x.dtype).transpose(1, 2))  # [E, N, D]
        acc = torch.promote_types(x.dtype, torch.float32)
        combine = torch.zeros(n, e, device=x.device, dtype=acc).scatter(1, top_k_index, top_k_weights.to(acc))
        return (h.to(acc) * combine.t()[..., None]).sum(0)

    @staticmethod
    def _combine(out: torch.Tensor, rows: torch.Tensor, h: torch.Tensor, weight: torch.Tensor) -> None:
        out.index_add_(0, rows, (h * weight).to(out.dtype))

    def _expert(self, e: int, x: torch.Tensor, cdt: torch.dtype) -> torch.Tensor:
        gate_up_proj, down_proj = self.local_weights()
        gate, up = F.linear(x, gate_up_proj[e].to(cdt)).chunk(2, dim=-1)
        return F.linear(F.silu(gate) * up, down_proj[e].to(cdt))

    def _grouped(self, xs: torch.Tensor, counts: torch.Tensor, cdt: torch.dtype, fused: bool = False) -> torch.Tensor:
        """``down[e](SiLU(g) ⊙ u)`` with ``[g; u] = gate_up[e] · xs_j`` for the sorted rows ``xs`` ``[M, D]`` (group
        sizes ``counts`` ``[E]``) by two grouped GEMMs; the SwiGLU by :func:`kernels.moe.swiglu` when ``fused``."""
        # offs[-1] must equal the number of rows: grouped_mm leaves the gradient of rows past it uninitialised.
        gmm = _grouped_mm_fn()
        assert gmm is not None
        gate_up_proj, down_proj = self.local_weights()
        offs = counts.cumsum(0).to(torch.int32)
        gu = gmm(xs, gate_up_proj.to(cdt).transpose(-2, -1), offs=offs)  # [M, 2H]
        if fused:
            from kernels.moe import swiglu

            h = swiglu(gu)
        else:
            gate, up = gu.chunk(2, dim=-1)
            h = F.silu(gate) * up
        return gmm(h, down_proj.to(cdt).transpose(-2, -1), offs=offs)


def inverse_permutation(permutation: torch.Tensor) -> torch.Tensor:
    """``inverse`` with ``inverse[permutation[j]] = j`` (1-D int64)."""
    inverse = torch.empty_like(permutation)
    inverse[permutation] = torch.arange(permutation.numel(), device=permutation.device)
    return inverse


class _DispatchRows(torch.autograd.Function):
    """``xs[j] = x[order[j] // k]`` (each token copied to its k expert-sorted slots); the backward sums each token's
    k slot gradients by gathering through the inverse permutation — no scatter, no atomics."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, k: int) -> torch.Tensor:
        ctx.save_for_backward(inverse)
        ctx.k = k
        return x.index_select(0, order // k)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (inverse,) = ctx.saved_tensors
        n = inverse.numel() // ctx.k
        return grad.index_select(0, inverse).view(n, ctx.k, grad.shape[-1]).sum(1), None, None, None


class _CombineRows(torch.autograd.Function):
    """``y[t] = Σ_s h[inverse[t·k + s]]``: the expert-sorted outputs back to token order, summed over the k slots;
    the backward gathers the token gradient into the sorted slots."""

    @staticmethod
    def forward(ctx, h: torch.Tensor, order: torch.Tensor, inverse: torch.Tensor, k: int) -> torch.Tensor:
        ctx.save_for_backward(order)
        ctx.k = k
        return h.index_select(0, inverse).view(inverse.numel() // k, k, -1).sum(1)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        (order,) = ctx.saved_tensors
        return grad.index_select(0, order // ctx.k), None, None, None


@FFN.register("moe")
class MoE(nn.Module):
    """MiniMax-01's top-k mixture of SwiGLU experts (MiniMax-01 §2.1, minimax.md §3).

    Router, in fp32 (fp64 for fp64 inputs) with autocast off, exactly Hugging Face's ``MiniMaxSparseMoeBlock``::

        logits = x·W_gᵀ;  p = softmax(logits);  w, idx = TopK(p, k);  w ← w / Σ_k w
        y = Σ_k w_k · FFN_{idx_k}(x),   FFN_e(x) = down_e( SiLU(gate_e·x) ⊙ up_e·x )

    **Load balancing.** Every forward (training and eval) computes, with ``f_e`` the fraction of tokens whose
    top-k contains e (``Σ_e f_e = k``) and ``P_e`` the mean router probability:

    * ``aux_loss_type="switch"`` (default): ``L_aux = E · Σ_e f_e·P_e``, the form of MiniMax's and Hugging Face's
      released code; MiniMax's released config pairs it with ``aux_loss_coef = router_aux_loss_coef = 0.001``.
    * ``"gshard"`` or its alias ``"paper"``: ``L_aux = (1/E) · Σ_i f_i·m_i`` (m = P), the MiniMax-01 paper's
      formula (§2.1), whose pretraining used α_aux = 0.01 with it (§4.2). At equal f and P it is E² times smaller than
      ``"switch"``, so the two coefficients are not interchangeable.
    * Router z-loss (ST-MoE): ``L_z = mean_t( logsumexp(logits_t)² )``, weighted by ``z_loss_coef`` (0: off).

    **Capacity.** ``capacity_factor=None`` is dropless (MiniMax's inference, HF, vLLM). Otherwise each expert
    serves at most ``C = ⌈capacity_factor · N · k / E⌉`` of the N tokens of the call, in priority order (all first
    choices before any second choice, by token order within a slot); the rest are dropped: they contribute zero
    and the kept weights are not renormalised (MiniMax-01 §2.1 token drop; the factor is not disclosed). Dropping
    changes the output, not the cost: dropped assignments are still computed, with weight zero.

    **Statistics for the task to log** (replaced by every forward):

    ============================ ==================================================================================
    ``aux_loss``                 unweighted ``L_aux``, scalar fp32, differentiable w.r.t. the router weight
    ``z_loss``                   unweighted ``L_z``, scalar fp32
    ``loss``                     ``aux_loss_coef · aux_loss + z_loss_coef · z_loss``: add it to the task's loss
    ``expert_load``              detached fp32 ``[E]``: each expert's share of the N·k routed assignments
                                 (before capacity), sums to 1
    ``dropped_fraction``         detached scalar: share of the N·k assignments dropped by capacity (0 if dropless)
    ``router_prob_mean``         ``P`` ``[E]`` fp32 with grad; with ``f = k · expert_load`` it lets a task build
                                 Hugging Face's model-level loss ``E · Σ_e mean_l(f_l) · mean_l(P_l)`` over layers
                                 l instead of summing the per-layer ``aux_loss``
    ============================ ==================================================================================

    Under activation checkpointing the recomputed forward overwrites them with the same values (jitter aside).

    **Expert compute** (``impl``): ``"loop"`` runs one expert at a time and is the reference; ``"grouped_mm"``
    sorts the assignments by expert and runs two grouped GEMMs (``torch.nn.functional.grouped_mm``) with no host
    sync. On CUDA ``grouped_mm`` computes in bf16: it takes bf16 inputs or bf16 autocast as they are, and casts
    other inputs to bf16 (only when asked for explicitly). On the CPU it computes in the input's dtype (fp32, bf16
    or fp16; not fp64). It needs ``dim`` and ``hidden_dim`` to be multiples of 8. ``"fused"``
    (:func:`kernels.moe.moe_experts`) runs the same grouped GEMMs with every memory pass around them fused into
    Triton kernels (dispatch gather with the cast, SiLU·up, weighted k-sum; in backward the weighting with the
    combine weights' gradient, the SwiGLU backward, the k-sum of the input gradient), in one autograd Function, no
    host sync; it computes in bf16 on CUDA as ``grouped_mm`` does, needs the same aligned widths, and elsewhere
    (CPU, ``ZOO_KERNELS=reference``) runs the kernels' PyTorch reference in the input's dtype. ``"auto"`` picks
    ``"fused"`` on CUDA when the computation is bf16 (bf16 inputs or bf16 autocast), the widths are aligned and
    Triton is importable (``"grouped_mm"`` without Triton); else, on CUDA with few experts (E ≤ 4k,
    :data:`DENSE_MAX_EXPERTS_PER_SLOT`) and no expert parallelism, ``"dense"`` (every expert on every token,
    weighted by the routed weights: E/k times the FLOPs, no host sync — the launch-bound small models of RL, where
    the loop's sync per layer stalls the step); else ``"loop"``. Under expert parallelism (a
    :attr:`MoEExperts.dispatcher`) the dispatcher moves the rows and ``"fused"`` runs the grouped GEMMs with the
    fused SwiGLU between them (:meth:`MoEExperts.sorted_forward`).

    Args:
        dim: model width D.
        hidden_dim: each expert's inner width H.
        num_experts: E.
        top_k: k, experts per token.
        capacity_factor: None (dropless) or the factor of ``C`` above.
        aux_loss_coef: weight of ``aux_loss`` in ``loss``.
        aux_loss_type: ``"switch"``, ``"gshard"`` or ``"paper"`` (see above).
        z_loss_coef: weight of ``z_loss`` in ``loss``.
        jitter_noise: in training, the router input is multiplied by U(1 − ε, 1 + ε) noise (the experts see the
            clean input).
        impl: ``"auto"``, ``"dense"``, ``"fused"``, ``"grouped_mm"`` or ``"loop"``.

    Shapes: ``x`` ``[..., D]`` → ``[..., D]`` in ``x``'s dtype (also under autocast).
    """

    def __init__(
        self,
        dim: int,
        hidden_dim: int,
        *,
        num_experts: int = 32,
        top_k: int = 2,
        capacity_factor: float | None = None,
        aux_loss_coef: float = 0.001,
        aux_loss_type: str = "switch",
        z_loss_coef: float = 0.0,
        jitter_noise: float = 0.0,
        impl: str = "auto",
        device=None,
        dtype=None,
    ) -> None:
        super().__init__()
        if aux_loss_type not in AUX_LOSS_TYPES:
            raise ValueError(f"Unknown aux_loss_type '{aux_loss_type}'. Valid choices: {', '.join(AUX_LOSS_TYPES)}.")
        if impl not in IMPLS:
            raise ValueError(f"Unknown impl '{impl}'. Valid choices: {', '.join(IMPLS)}.")
        if not 1 <= top_k <= num_experts:
            raise ValueError(f"top_k must be in [1, num_experts={num_experts}], got {top_k}")
        if capacity_factor is not None and capacity_factor <= 0:
            raise ValueError(f"capacity_factor must be positive or None (dropless), got {capacity_factor}")
        if not 0 <= jitter_noise < 1:
            raise ValueError(f"jitter_noise must be in [0, 1), got {jitter_noise}")
        aligned = dim % GROUPED_MM_ALIGN == 0 and hidden_dim % GROUPED_MM_ALIGN == 0
        if impl in ("grouped_mm", "fused") and not aligned:
            raise ValueError(
                f"impl='{impl}' needs dim and hidden_dim to be multiples of {GROUPED_MM_ALIGN} "
                f"(16-byte rows), got dim={dim}, hidden_dim={hidden_dim}; use impl='loop' or 'auto'"
            )
        if impl in ("grouped_mm", "fused") and not grouped_mm_available():
            raise ValueError(f"impl='{impl}' needs torch.nn.functional.grouped_mm (torch {torch.__version__})")
        factory = {"device": device, "dtype": dtype}
        self.dim = dim
        self.hidden_dim = hidden_dim
        self.num_experts = num_experts
        self.top_k = top_k
        self.capacity_factor = capacity_factor
        self.aux_loss_coef = aux_loss_coef
        self.aux_loss_type = aux_loss_type
        self.z_loss_coef = z_loss_coef
        self.jitter_noise = jitter_noise
        self.impl = impl
        self._aligned = aligned
        self.gate = nn.Linear(dim, num_experts, bias=False, **factory)
        self.experts = MoEExperts(num_experts, dim, hidden_dim, **factory)
        self.reset_parameters()
        self.aux_loss: torch.Tensor | None = None
        self.balance_group: Any = None  # a process group: global router statistics (zoo.parallel)
        self.z_loss: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None
        self.expert_load: torch.Tensor | None = None
        self.dropped_fraction: torch.Tensor | None = None
        self.router_prob_mean: torch.Tensor | None = None

    def reset_parameters(self, std: float = 0.02) -> None:
        """Normal(0, ``std``) router and expert weights."""
        nn.init.normal_(self.gate.weight, std=std)
        self.experts.reset_parameters(std)

    def extra_repr(self) -> str:
        cap = "dropless" if self.capacity_factor is None else f"capacity_factor={self.capacity_factor}"
        return (
            f"dim={self.dim}, hidden_dim={self.hidden_dim}, num_experts={self.num_experts}, top_k={self.top_k}, "
            f"{cap}, aux={self.aux_loss_type}×{self.aux_loss_coef}, z×{self.z_loss_coef}, impl={self.impl}"
        )

    def plan(self, x: torch.Tensor) -> tuple[str, torch.dtype]:
        """The expert implementation and compute dtype this module uses for ``x`` under the current autocast."""
        autocast = _autocast_dtype(x.device.type)
        cdt = autocast or x.dtype
        on_cuda = x.device.type == "cuda"
        if self.impl == "auto":
            if on_cuda and cdt == torch.bfloat16 and self._aligned and grouped_mm_available():
                return ("fused" if fused_available() else "grouped_mm"), cdt
            few = self.num_experts <= DENSE_MAX_EXPERTS_PER_SLOT * self.top_k
            dense = on_cuda and few and self.experts.dispatcher is None
            return ("dense" if dense else "loop"), cdt
        if self.impl == "fused" and on_cuda:
            return "fused", torch.bfloat16  # grouped_mm's CUDA dtype; autocast's bf16 or a cast
        if self.impl == "grouped_mm":
            if on_cuda:
                return "grouped_mm", (cdt if cdt in (torch.bfloat16, torch.float16) else torch.bfloat16)
            if cdt not in (torch.float32, torch.bfloat16, torch.float16):
                raise ValueError(f"impl='grouped_mm' computes in float32, bfloat16 or float16, not {cdt}")
        return self.impl, cdt

    def route(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
        """The router on ``x`` ``[N, D]``: ``(logits [N, E], probs [N, E], weights [N, k], index [N, k])``, fp32
        (fp64 for fp64 inputs), autocast off; weights renormalised over the top k."""
        dtype = torch.float64 if x.dtype == torch.float64 else torch.float32
        with _autocast_off(x.device.type, _autocast_dtype(x.device.type) is not None):
            h = x.to(dtype)
            if self.training and self.jitter_noise > 0:
                h = h * torch.empty_like(h).uniform_(1.0 - self.jitter_noise, 1.0 + self.jitter_noise)
            logits = F.linear(h, self.gate.weight.to(dtype))
            probs = logits.softmax(dim=-1)
            weights, index = top_k(probs, self.top_k)
            weights = weights / weights.sum(dim=-1, keepdim=True)
        return logits, probs, weights, index

    @torch.no_grad()
    def inference(self, x: torch.Tensor) -> torch.Tensor:
        """The layer for generation: dropless (no capacity), no losses or statistics; a decode step's few tokens
        (``N ≤ DECODE_TOKENS``) go through :meth:`MoEExperts.decode`, with no host sync, larger batches through
        the training path's experts. ``x`` ``[..., D]`` → ``[..., D]``."""
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        _, _, weights, index = self.route(x)
        if x.shape[0] <= DECODE_TOKENS and self.experts.dispatcher is None:
            return self.experts.decode(x, index, weights).reshape(shape)
        impl, cdt = self.plan(x)
        return self.experts(x, index, weights, impl=impl, compute_dtype=cdt).reshape(shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        shape = x.shape
        x = x.reshape(-1, shape[-1])
        n, k = x.shape[0], self.top_k
        logits, probs, weights, index = self.route(x)
        if n == 0:
            zero = logits.sum()
            self.aux_loss = self.z_loss = self.loss = zero
            self.expert_load = torch.zeros(self.num_experts, device=x.device)
            self.dropped_fraction = zero.detach().float()
            self.router_prob_mean = probs.sum(0)
            return x.clone().reshape(shape)
        self.router_prob_mean = probs.mean(0)
        self.aux_loss = load_balancing_loss(probs, index, self.num_experts, self.aux_loss_type, self.balance_group)
        self.z_loss = router_z_loss(logits)
        self.loss = self.aux_loss_coef * self.aux_loss + self.z_loss_coef * self.z_loss
        with torch.no_grad():
            counts = _expert_counts(index.reshape(-1), self.num_experts)
            self.expert_load = counts.float() / (n * k)
        keep = None
        if self.capacity_factor is None:
            self.dropped_fraction = torch.zeros((), device=x.device)
        else:
            capacity = expert_capacity(n, self.num_experts, k, self.capacity_factor)
            keep = capacity_mask(index, self.num_experts, capacity)
            weights = weights.masked_fill(~keep, 0.0)
            self.dropped_fraction = (~keep).sum().float().div(n * k).detach()
        impl, cdt = self.plan(x)
        return self.experts(x, index, weights, impl=impl, compute_dtype=cdt, keep=keep).reshape(shape)
