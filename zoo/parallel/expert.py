"""Expert parallelism: each MoE layer's experts split over the ranks of an ``ep`` group, tokens sent to the ranks
that own their experts with ``all_to_all_single`` and their outputs sent back (torchtitan's ``ExpertParallel``
design, scale.md §1.4).

The world of W ranks is viewed as a 2-D mesh ``(efsdp, ep)`` with ``ep`` the inner (consecutive-rank) dimension: an
``ep`` group of ranks ``[g·ep, (g+1)·ep)`` holds all E experts between them (E/ep whole experts each, a ``DTensor``
``Shard(0)`` on the ``ep`` mesh, so checkpoints keep the global ``[E, …]`` layout), and FSDP shards each expert
further over ``efsdp`` (the ranks holding the same experts). The dense parts stay sharded over all W ranks.

One MoE forward on a rank with N tokens and k experts per token::

    sort the N·k (token, slot) assignments by global expert (assignments a capacity limit drops go last, unsent)
    all_to_all  counts [E]            → counts [ep, E/ep]: what every rank of the group sends each of my experts
    all_to_all  rows   [Σ sent, D]    → rows [Σ received, D], source-rank-major    (one host sync for the splits)
    reorder rows expert-major, run my E/ep experts (the same grouped GEMM or loop as without EP), reorder back
    all_to_all  outputs back          → [Σ sent, D];  y_t = Σ_k w_tk · out_tk   (weights applied at the source)

Gradients are exact: the backward of each ``all_to_all`` is the reverse ``all_to_all``, every reorder is a gather
whose backward is the inverse gather (no atomics), and an expert's gradient sums the contributions of every rank's
tokens; FSDP then divides the expert gradients by the world size like every other gradient
(:func:`zoo.parallel.fsdp.apply_fsdp`), so the update equals that of the unsharded model on the global batch.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.distributed as dist
from torch.distributed.device_mesh import DeviceMesh, init_device_mesh

from zoo.errors import ConfigError

EP_MESH_DIMS = ("efsdp", "ep")


def expert_parallel_mesh(device_type: str, world_size: int, ep: int) -> DeviceMesh:
    """The ``(efsdp, ep)`` view of ``world_size`` ranks (``ep`` consecutive ranks per expert group); a collective
    call (every rank creates the same groups)."""
    if ep < 1 or world_size % ep:
        raise ConfigError(f"strategy.expert_parallel_size={ep} does not divide the world size {world_size}")
    return init_device_mesh(device_type, (world_size // ep, ep), mesh_dim_names=EP_MESH_DIMS)


def apply_expert_parallel(model: Any, ep_mesh: DeviceMesh) -> int:
    """Split the experts of every MoE layer of ``model`` (``model.moe_layers()``) over the 1-D ``ep_mesh``, in
    place: ``experts.gate_up_proj`` ``[E, 2H, D]`` and ``experts.down_proj`` ``[E, D, H]`` become ``DTensor`` s
    ``Shard(0)`` holding this rank's E/ep experts (taken from the local full tensors, no communication: every rank
    must hold the same initial weights, or be on the meta device), and the layer's tokens go through an
    :class:`ExpertDispatcher`.

    Returns:
        the number of MoE layers split.

    Raises:
        ConfigError: ``ep`` does not divide a layer's number of experts.
    """
    from torch import nn
    from torch.distributed.tensor import Shard, distribute_tensor

    ep = ep_mesh.size()
    layers = model.moe_layers()
    for layer in layers:
        experts = layer.experts
        if experts.num_experts % ep:
            raise ConfigError(
                f"strategy.expert_parallel_size={ep} does not divide the {experts.num_experts} experts per MoE layer"
            )
        for name in ("gate_up_proj", "down_proj"):
            full = getattr(experts, name)
            sharded = distribute_tensor(full.detach(), ep_mesh, [Shard(0)], src_data_rank=None)
            setattr(experts, name, nn.Parameter(sharded, requires_grad=full.requires_grad))
        experts.dispatcher = ExpertDispatcher(ep_mesh.get_group(), ep, experts.num_experts)
    return len(layers)


class ExpertDispatcher:
    """The all-to-all token exchange of one MoE layer over an expert-parallel group (see the module docstring);
    installed as ``MoEExperts.dispatcher`` by :func:`apply_expert_parallel`.

    Args:
        group: the ``ep`` process group (ranks that hold this layer's experts between them).
        ep: its size.
        num_experts: E, the layer's global number of experts (E/ep per rank).
    """

    def __init__(self, group: dist.ProcessGroup, ep: int, num_experts: int) -> None:
        self.group = group
        self.ep = ep
        self.num_experts = num_experts
        self.local_experts = num_experts // ep

    def __call__(
        self,
        experts: Any,
        x: torch.Tensor,
        top_k_index: torch.Tensor,
        top_k_weights: torch.Tensor,
        *,
        impl: str = "loop",
        compute_dtype: torch.dtype | None = None,
        keep: torch.Tensor | None = None,
    ) -> torch.Tensor:
        """``y_t = Σ_k w_tk · FFN_{idx_tk}(x_t)`` with the experts spread over the group; same arguments and result as
        :meth:`zoo.ffn.moe.MoEExperts.forward` (``keep``: assignments that are served; the others are not sent)."""
        from zoo.ffn.moe import (
            _autocast_dtype,
            _autocast_off,
            _CombineRows,
            _DispatchRows,
            _expert_counts,
            inverse_permutation,
        )

        cdt = compute_dtype or x.dtype
        E, k = self.num_experts, top_k_index.shape[-1]
        flat = top_k_index.reshape(-1)
        if keep is not None:
            flat = torch.where(keep.reshape(-1), flat, E)  # dropped assignments sort last and are not sent
        order = torch.argsort(flat, stable=True)
        inverse = inverse_permutation(order)
        send_counts = _expert_counts(flat, E + 1)[:E]
        recv_counts = torch.empty_like(send_counts)
        dist.all_to_all_single(recv_counts, send_counts, group=self.group)  # [ep · E/ep]: per source, my experts
        recv_counts = recv_counts.view(self.ep, self.local_experts)
        splits = torch.stack([send_counts.view(self.ep, -1).sum(1), recv_counts.sum(1)]).tolist()  # one host sync
        send_splits, recv_splits = splits
        sent = sum(send_splits)
        weight = top_k_weights.reshape(-1)[order].unsqueeze(-1)
        with _autocast_off(x.device.type, _autocast_dtype(x.device.type) is not None):
            rows = _DispatchRows.apply(x.to(cdt), order, inverse, k)  # [N·k, D], expert-sorted, dropped last
            received = _all_to_all(rows[:sent], recv_splits, send_splits, self.group)
            # source-rank-major → expert-major, run my experts, and back
            local_expert = torch.arange(self.local_experts, device=x.device).repeat(self.ep)
            local_expert = local_expert.repeat_interleave(recv_counts.reshape(-1), output_size=sum(recv_splits))
            by_expert = torch.argsort(local_expert, stable=True)
            back = inverse_permutation(by_expert)  # the reorders are gathers, each the other's backward (k = 1)
            sorted_rows = _DispatchRows.apply(received, by_expert, back, 1)
            outputs = experts.sorted_forward(sorted_rows, recv_counts.sum(0), impl, cdt)
            rank_major = _DispatchRows.apply(outputs, back, by_expert, 1)
            returned = _all_to_all(rank_major, send_splits, recv_splits, self.group)
            if sent < rows.shape[0]:  # dropped assignments: zero output
                returned = torch.cat([returned, returned.new_zeros(rows.shape[0] - sent, returned.shape[-1])])
            return _CombineRows.apply(returned * weight.to(cdt), order, inverse, k).to(x.dtype)


def _all_to_all(rows: torch.Tensor, out_splits: list[int], in_splits: list[int], group: Any) -> torch.Tensor:
    """``all_to_all_single`` with autograd (its backward is the reverse exchange): ``rows`` ``[Σ in_splits, D]``
    → ``[Σ out_splits, D]``."""
    from torch.distributed._functional_collectives import all_to_all_single_autograd, wait_tensor

    return wait_tensor(all_to_all_single_autograd(rows.contiguous(), out_splits, in_splits, group))
